"""Explain profiles: what a user's interests are, how strong, and which of their events show them.

An explanation is a plain dict (the JSON of ``profiling explain --format json``,
contract ``schemas/explain.schema.json``) built from one snapshot's tables (the
rows it needs, through :mod:`profiling.snapshots`: no JVM with the embedded
catalog) and the registered encoder that wrote them: interest weights and vectors from
``user_profile_embeddings``, evidence events from ``user_interest_evidence``,
dimension weights of both horizons from ``user_interest_weights``. The encoder is re-run on the
user's newest window for the evidence-attention heat map and the interests'
category shares (the same computation as the infer stage), and scores the catalogue
against each interest vector for its top items. Pictures are drawn from the
dict alone (:mod:`profiling.figures`).
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from profiling import tracking
from profiling.config import ProfilingConfig
from profiling.exceptions import MissingStageOutput
from profiling.interests import merged_attention
from profiling.model.inputs import FEATURES, FIRST_KEY
from profiling.model.profiles import (WEIGHT_DIMENSIONS, ProfileSettings, interest_category_mass, kept_interests,
                                      window_decay)
from profiling.model.vocabulary import KEYED, Translation, Vocabulary
from profiling.snapshots import SnapshotReader, session_snapshot_reader
from profiling.tables import qualified, read_snapshot

log = logging.getLogger(__name__)

NEAREST_USERS = 5
TOP_ITEMS = 10
INTEREST_CATEGORIES = 3
NEAR_DUPLICATE = 0.95  # interest vectors this close say the same thing (the text output flags them)
NEAREST_BATCH = 65_536  # profiles compared at once in the nearest-user search: what bounds its memory


class UnknownUser(MissingStageOutput):
    """The user has no profile in the snapshot asked for."""


def newest_snapshot(tables: SnapshotReader, config: ProfilingConfig) -> dt.date:
    """The newest snapshot of ``user_profile_embeddings`` (what ``--snapshot-date`` defaults to)."""
    newest = tables.newest_snapshot("user_profile_embeddings")
    if newest is None:
        raise MissingStageOutput(f"table {qualified(config, 'user_profile_embeddings')} holds no profiles in "
                                 f"{config.workdir_path}: run the infer stage first")
    return newest


def _for_users(tables: SnapshotReader, name: str, snapshot_date: dt.date, ids: list[str], columns: list[str],
               order: tuple[str, ...] = ()) -> list[dict]:
    """The rows of ``ids`` in the snapshot, by user and then ``order``."""
    rows = tables.rows(name, snapshot_date, columns, [{"user_id": ids}])
    return rows.sort_by([(c, "ascending") for c in ("user_id", *order)]).to_pylist()


def _nearest_users(tables: SnapshotReader, snapshot_date: dt.date, embeddings: dict[str, np.ndarray],
                   n: int) -> dict[str, list[dict]]:
    """For each user of ``embeddings``, the ``n`` other users whose profile embedding is closest (cosine).

    One pass over the snapshot's ``user_id`` and ``embedding`` columns, ``NEAREST_BATCH`` profiles at a
    time, keeping each user's best ``n`` so far: memory stays bounded however many users there are.
    """
    ids = list(embeddings)
    queries = np.stack([embeddings[u] / max(float(np.linalg.norm(embeddings[u])), 1e-12) for u in ids])
    best = [(np.empty(0, dtype=object), np.empty(0)) for _ in ids]
    for batch in tables.batches("user_profile_embeddings", snapshot_date, ["user_id", "embedding"], NEAREST_BATCH):
        users = batch.column("user_id").to_numpy(zero_copy_only=False)
        vectors = np.asarray(batch.column("embedding").flatten(), dtype=np.float64).reshape(len(users), -1)
        cosine = vectors @ queries.T / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)[:, None]
        for q, uid in enumerate(ids):
            others = users != uid
            best[q] = _top(np.concatenate([best[q][0], users[others]]),
                           np.concatenate([best[q][1], cosine[others, q]]), n)
    return {uid: [{"user_id": u, "cosine": round(float(c), 4)} for u, c in zip(*best[q])]
            for q, uid in enumerate(ids)}


def _top(users: np.ndarray, cosine: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` highest cosines, highest first; equal cosines in order of user id."""
    if len(cosine) > n:
        keep = cosine >= np.partition(cosine, len(cosine) - n)[len(cosine) - n]
        users, cosine = users[keep], cosine[keep]
    order = sorted(range(len(users)), key=lambda i: (-cosine[i], users[i]))[:n]
    return users[order], cosine[order]


class _Names:
    """The keys of a model's indices, and the titles of the items one explanation shows (one read)."""

    def __init__(self, tables: SnapshotReader, snapshot_date: dt.date, vocabulary: Vocabulary, item_ids: set[str]):
        self.vocabulary = vocabulary
        self.items = {r["item_id"]: (r["title"], r["category"]) for r in tables.rows(
            "items", snapshot_date, ["item_id", "title", "category"], [{"item_id": sorted(item_ids)}]).to_pylist()}

    def key(self, dimension: str, idx: int) -> str | None:
        return self.vocabulary.key(dimension, int(idx))

    def title(self, item_id: str | None) -> str | None:
        return self.items.get(item_id, (None, None))[0] if item_id else None

    def item_category(self, item_id: str | None) -> str | None:
        return self.items.get(item_id, (None, None))[1] if item_id else None


def _snapshot_keys(tables: SnapshotReader, snapshot_date: dt.date, rows: list[dict]) -> dict[str, dict[int, str]]:
    """The snapshot's key of every index in ``rows`` (``user_sequences`` rows), per keyed dimension."""
    wanted = [{"dimension": [d], "idx": sorted({int(i) for r in rows for i in r[d]})} for d in KEYED]
    keys: dict[str, dict[int, str]] = {d: {} for d in KEYED}
    for r in tables.rows("vocabularies", snapshot_date, ["dimension", "idx", "key"], wanted).to_pylist():
        keys[r["dimension"]][r["idx"]] = r["key"]
    return keys


def _iso(ts: int | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


def explain_users(
    tables: SnapshotReader, config: ProfilingConfig, user_ids: list[str], snapshot_date: dt.date | None = None
) -> list[dict]:
    """One explanation per user id, ids as the tables hold them (see ``privacy.table_user_ids``)."""
    import torch

    from profiling.model.inputs import collate, profile_window

    snapshot_date = snapshot_date or newest_snapshot(tables, config)
    ids = list(user_ids)
    found = {r["user_id"]: r for r in _for_users(
        tables, "user_profile_embeddings", snapshot_date, ids,
        ["user_id", "embedding", "interest_embeddings", "interest_weights", "model_version"])}
    for uid in ids:
        if uid not in found:
            hashed = " (ids are pseudonymised: privacy.hash_user_ids)" if config.privacy.hash_user_ids else ""
            raise UnknownUser(f"user {uid!r}{hashed} has no profile in "
                              f"{qualified(config, 'user_profile_embeddings')} for snapshot {snapshot_date} "
                              f"({config.workdir_path})")
    sequences = {r["user_id"]: r for r in _for_users(
        tables, "user_sequences", snapshot_date, ids, ["user_id", "length", "ts", *FEATURES])}
    weights = _for_users(tables, "user_interest_weights", snapshot_date, ids,
                         ["user_id", "horizon", "dimension", "key", "weight", "rank"], ("rank",))
    evidence = _for_users(tables, "user_interest_evidence", snapshot_date, ids,
                          ["user_id", "interest", "rank", "position", "item_id", "category", "event_type", "source",
                           "attribute", "ts", "attention"], ("interest", "rank"))
    near = _nearest_users(tables, snapshot_date, {u: np.asarray(found[u]["embedding"], dtype=np.float64) for u in ids},
                          NEAREST_USERS)
    models = {v: tracking.load_encoder(config, v) for v in {found[u]["model_version"] for u in ids}}
    snapshot_keys = _snapshot_keys(tables, snapshot_date, list(sequences.values()))

    recent, top_items = {}, {}
    for uid in ids:
        model = models[found[uid]["model_version"]]
        to_model = Translation({d: model.vocabulary.translation(d, snapshot_keys[d]) for d in KEYED})
        row = to_model.apply(sequences[uid])
        window = profile_window(row, model.spec.max_len, model.spec.behaviour_idx)
        n = len(window["item"])
        window["decay"] = window_decay(row, int(row["length"]) - n, n, config.profile.half_life_days)
        with torch.no_grad():
            out = {k: v[0].numpy() for k, v in model(collate([window])).items()}
        kept = np.asarray(found[uid]["interest_embeddings"])  # the interests infer kept
        again = kept_interests(out, window, model.spec.behaviour_idx, model.spec.interests, ProfileSettings.of(config))
        attention = again.attention if len(again.weights) == len(kept) else merged_attention(
            out["interest_embeddings"], out["interest_weights"], out["evidence_attention"], kept,
            config.infer.merge_interests_cosine)
        shown = min(len(window["item"]), config.explain.recent_events)
        start = len(window["item"]) - shown
        recent[uid] = (window, attention, start)
        vectors = torch.tensor(np.asarray(found[uid]["interest_embeddings"], dtype=np.float32))
        with torch.no_grad():
            scores = vectors @ model.item_embedding.T
        scores[:, :FIRST_KEY] = float("-inf")
        k = min(TOP_ITEMS, scores.shape[1] - FIRST_KEY)
        top_items[uid] = [(s.numpy(), i.numpy()) for s, i in zip(*torch.topk(scores, k, dim=1))]

    names = {}
    for version, model in models.items():
        users = {u for u in ids if found[u]["model_version"] == version}
        shown = {model.vocabulary.key("item", int(i)) for u in users
                 for i in [*recent[u][0]["item"][recent[u][2]:], *(i for _, idx in top_items[u] for i in idx)]}
        shown |= {e["item_id"] for e in evidence if e["user_id"] in users}
        names[version] = _Names(tables, snapshot_date, model.vocabulary, shown - {None})

    docs = []
    for uid in ids:
        docs.append(_document(uid, snapshot_date, found[uid], sequences[uid], recent[uid], top_items[uid],
                              [r for r in weights if r["user_id"] == uid],
                              [r for r in evidence if r["user_id"] == uid], near[uid],
                              names[found[uid]["model_version"]]))
    return docs


def _document(uid, snapshot_date, profile, sequence, recent, top_items, weights, evidence, near, names) -> dict:
    window, attention, start = recent
    n = len(window["item"])
    own_items = set(int(i) for i in window["item"]) | set(int(i) for i in window["history"])
    mass = interest_category_mass(attention, window["category"])
    vectors = np.asarray(profile["interest_embeddings"], dtype=float)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    interests = []
    for k, weight in enumerate(profile["interest_weights"]):
        total = mass[k].sum()
        cats = [c for c in np.argsort(-mass[k], kind="stable")[:INTEREST_CATEGORIES] if mass[k][c] > 0]
        scores, idx = top_items[k]
        interests.append({
            "interest": k,
            "weight": round(float(weight), 4),
            "closest_interest": None if len(vectors) < 2 else {
                "interest": int(np.argmax(cosine[k])), "cosine": round(float(cosine[k].max()), 4)},
            "categories": [{"category": names.key("category", c), "share": round(float(mass[k][c] / total), 4)}
                           for c in cats],
            "evidence": [{
                "rank": e["rank"], "position": e["position"], "item_id": e["item_id"], "title": names.title(e["item_id"]),
                "category": e["category"], "event_type": e["event_type"], "source": e["source"],
                "attribute": e["attribute"], "ts": e["ts"], "time": _iso(e["ts"]),
                "attention": round(float(e["attention"]), 4),
            } for e in evidence if e["interest"] == k],
            "top_items": [{
                "item_id": names.key("item", i), "title": names.title(names.key("item", i)),
                "category": names.item_category(names.key("item", i)), "score": round(float(s), 4),
                "seen": int(i) in own_items,
            } for s, i in zip(scores, idx)],
        })
    interests.sort(key=lambda i: -i["weight"])
    first = int(sequence["length"]) - n
    events = []
    for t in range(start, n):
        item = names.key("item", window["item"][t])
        ts = int(sequence["ts"][first + t]) or None
        events.append({
            "position": first + t, "item_id": item, "title": names.title(item),
            "category": names.key("category", window["category"][t]),
            "event_type": names.key("event_type", window["event_type"][t]),
            "source": names.key("source", window["source"][t]),
            "attribute": names.key("attribute", window["attribute"][t]), "ts": ts, "time": _iso(ts),
        })
    return {
        "user_id": uid,
        "snapshot_date": str(snapshot_date),
        "model_version": profile["model_version"],
        "events_in_profile": int(sequence["length"]),
        "interests": interests,
        **{field: {d: [{"key": r["key"], "weight": round(float(r["weight"]), 4)} for r in weights
                       if r["dimension"] == d and r["horizon"] == horizon] for d in WEIGHT_DIMENSIONS}
           for field, horizon in (("dimensions", "short"), ("long_term_dimensions", "long"))},
        "nearest_users": near,
        "recent_events": {"events": events,
                          "attention": [[round(float(a), 4) for a in row[start:n]] for row in attention]},
    }


def _event_label(e: dict) -> str:
    what = e.get("title") or e.get("item_id") or e.get("attribute") or "-"
    return f"{what} [{e['category'] or '-'}]"


def format_text(doc: dict) -> str:
    """The explanation as a page of text: interests and evidence first, then weights and neighbours."""
    lines = [f"user {doc['user_id']}  snapshot {doc['snapshot_date']}  model version {doc['model_version']}  "
             f"({doc['events_in_profile']} events in the profile)", "",
             "interests (weight = share of the user's events the interest accounts for):"]
    for i in doc["interests"]:
        named = ", ".join(f"{c['category']} {c['share']:.0%}" for c in i["categories"]) or "no category"
        close = i["closest_interest"]
        twin = f"  (near-duplicate of interest {close['interest']}: cosine {close['cosine']:.2f})" \
            if close and close["cosine"] >= NEAR_DUPLICATE else ""
        lines.append(f"  interest {i['interest']}  weight {i['weight']:.3f}  {named}{twin}")
        for e in i["evidence"]:
            when = (e["time"] or "time unknown").replace("T", " ").replace("Z", "")
            lines.append(f"    {e['rank']}. {when:<19}  {e['source']:<10} {e['event_type']:<18} "
                         f"{_event_label(e):<40} attention {e['attention']:.3f}")
        top = ", ".join(f"{t['title'] or t['item_id']}" + (" (seen)" if t["seen"] else "") for t in i["top_items"])
        lines.append(f"    top items: {top}")
    for d in ("source", "event_type", "category"):
        lines.append("")
        for field, when in (("dimensions", "now"), ("long_term_dimensions", "over time")):
            shown = doc[field][d][:8]
            lines.append(f"{d} weights {when}: " + ", ".join(f"{w['key']} {w['weight']:.3f}" for w in shown))
    lines.append("")
    lines.append("nearest users (cosine of profile embeddings): "
                 + ", ".join(f"{n['user_id']} {n['cosine']:.3f}" for n in doc["nearest_users"]))
    return "\n".join(lines)


def log_run_explanations(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date) -> list[str]:
    """Into the active MLflow run: the explain figure and JSON of a few sample users and a summary figure.

    Sample users are the first ``explain.sample_users`` with events in hash order of their id: a stable,
    spread-out pick. Returns the artifact paths written. The tables are found through ``spark``'s catalog,
    which knows where they live, whatever the config's workdir says.
    """
    from profiling.figures import profile_figure, run_summary_figure

    profiles, _ = read_snapshot(spark, config, "user_profile_embeddings", snapshot_date)
    sequences, _ = read_snapshot(spark, config, "user_sequences", snapshot_date)
    paths = []
    n = config.explain.sample_users
    if n:
        sample = [r["user_id"] for r in sequences.where(F.col("length") > 0).select("user_id")
                  .orderBy(F.xxhash64("user_id"), "user_id").limit(n).collect()]
        if sample:
            for i, doc in enumerate(explain_users(session_snapshot_reader(spark, config), config, sample,
                                                  snapshot_date)):
                paths += tracking.log_explanation(doc, profile_figure(doc), f"explain/sample_user_{i + 1}")
    threshold = config.explain.strong_interest
    strong = {r["n"]: r["count"] for r in profiles.select(
        F.size(F.filter("interest_weights", lambda w: w >= threshold)).alias("n")).groupBy("n").count().collect()}
    weights, _ = read_snapshot(spark, config, "user_interest_weights", snapshot_date)
    users = sum(strong.values())
    keep = max(1, min(1000, int(1000 * 20_000 / max(users, 1))))  # about 20,000 users at most
    source_weights: dict[str, list[float]] = {}
    for r in weights.where((F.col("dimension") == "source") & (F.col("horizon") == "short")
                           & (F.abs(F.xxhash64("user_id")) % 1000 < keep)) \
            .select("key", "weight").collect():
        source_weights.setdefault(r["key"], []).append(float(r["weight"]))
    fig = run_summary_figure(strong, source_weights, threshold, config.model.interests)
    paths.append(tracking.log_figure(fig, "explain/summary.png"))
    if users:
        tracking.log_metrics({"strong_interests_mean": sum(k * c for k, c in strong.items()) / users})
    return paths


def remove_users_from_logged_explanations(config: ProfilingConfig, user_ids: list[str]) -> tuple[int, int]:
    """Take ``user_ids`` (as the tables hold them) out of the sample explanations of every run of the experiment.

    A forgotten user's own explanation (JSON and PNG) is deleted; another user's is rewritten without them in
    ``nearest_users`` (the remaining neighbours keep their cosines; none is added in their place) and its PNG
    redrawn from the rewritten JSON. Returns (artifacts deleted, artifacts rewritten).
    """
    from profiling.figures import profile_figure

    forgotten = set(user_ids)
    deleted = rewritten = 0
    for logged in tracking.logged_explanations(config):
        if logged.doc["user_id"] in forgotten:
            deleted += tracking.delete_explanation(config, logged)
        elif any(n["user_id"] in forgotten for n in logged.doc["nearest_users"]):
            doc = {**logged.doc, "nearest_users": [n for n in logged.doc["nearest_users"]
                                                   if n["user_id"] not in forgotten]}
            rewritten += tracking.replace_explanation(config, logged, doc, profile_figure(doc))
    return deleted, rewritten
