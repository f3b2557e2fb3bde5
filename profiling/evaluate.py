"""Evaluate stage: one protocol for the encoder and its baselines, plus interest-weight fidelity.

Protocol (leave-last-out, full ranking): per user, ordered by time with ties in
input file order, the last behaviour event is the test target and everything
before it is input. Users with fewer than 3 behaviour events are profiled but
not evaluated. Every item of the vocabulary is a candidate; only padding and
the "no item" index are excluded. Baselines see the same split: most-popular
and Spark ML ALS (implicit feedback) are fitted on every behaviour event except
the users' test targets and score every item.

The test targets are read here only; hyper-parameters are chosen on the
validation target (the event before) during training.

Cold start: a random tenth of the evaluated users (a hash of the id picks them, the same on every run)
are ranked again with every behaviour event before their test target hidden, so the encoder reads their
preference and social events alone, as it would a user who has done nothing yet; the time since each
event's predecessor is hidden too (it could tell when the hidden events were). Most-popular ranks the
same targets. Users with no preference or social event before the target are counted and left out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from profiling import progress
from profiling.config import ProfilingConfig
from profiling.exceptions import NotEnoughData
from profiling.metrics import finalize, ranking_sums, target_ranks
from profiling.model.inputs import FEATURES, GAP_UNKNOWN, collate, target_window
from profiling.model.vocabulary import Translation
from profiling.sequences import MIN_BEHAVIOUR_EVENTS
from profiling.tables import TableVersion, read_snapshot

log = logging.getLogger(__name__)

KS = [10, 20, 50]
COLD_START_SHARE = 0.1
ALS_PARAMS = {"rank": 64, "maxIter": 15, "regParam": 0.05, "alpha": 10.0, "seed": 42}


@dataclass
class EvaluationResult:
    dataset: str
    users_evaluated: int
    models: dict[str, dict[str, float] | None]  # None: the baseline could not be fitted (see ``missing``)
    fidelity: dict[str, float] | None = None
    cold_start: dict | None = None  # evaluate_cold_start
    read: list[TableVersion] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # why a model has no figures
    promotion: object = None  # the promotion gate's decision taken before (profiling.promotion), if any

    def to_dict(self) -> dict:
        out = {"dataset": self.dataset, "users_evaluated": self.users_evaluated, "models": self.models}
        if self.missing:
            out["missing"] = self.missing
        if self.cold_start is not None:
            out["cold_start"] = self.cold_start
        if self.fidelity is not None:
            out["fidelity"] = self.fidelity
        if self.promotion is not None:
            out["promotion"] = {"challenger": self.promotion.challenger, "champion": self.promotion.champion,
                                "challenger_ndcg@10": self.promotion.challenger_ndcg,
                                "champion_ndcg@10": self.promotion.champion_ndcg,
                                "tolerance": self.promotion.tolerance, "promoted": self.promotion.promoted}
        return out


def _metrics(scores_by_batch) -> dict[str, float]:
    totals: dict[str, float] = {}
    for scores, targets in scores_by_batch:
        for key, value in ranking_sums(target_ranks(scores, targets), KS).items():
            totals[key] = totals.get(key, 0.0) + value
    return {k: round(v, 6) for k, v in sorted(finalize(totals).items())}


def _batches(n: int, size: int = 512):
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def evaluate_encoder(model, test: pd.DataFrame) -> dict[str, float]:
    """Full-ranking test metrics of the encoder: the state after the events before each test target."""
    window = model.spec.max_len

    def scored():
        for start, stop in _batches(len(test)):
            rows = [r for _, r in test.iloc[start:stop].iterrows()]
            pairs = [target_window(r, int(r["test_pos"]), window, model.spec.behaviour_idx) for r in rows]
            batch = collate([w for w, _ in pairs])
            with torch.no_grad():
                scores = model.score_next(batch)
            yield scores, torch.tensor([t for _, t in pairs])

    model.eval()
    return _metrics(scored())


def in_cold_start_sample(user_id: str, share: float = COLD_START_SHARE) -> bool:
    """Whether ``user_id`` is among the cold-start users: a hash of the id below ``share``, so the same users
    on every run and for every model."""
    digest = hashlib.sha256(f"cold-start:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def cold_window(row, position: int, window: int, behaviour_idx: int) -> dict[str, np.ndarray] | None:
    """The last ``window`` events before ``position`` that are not behaviour (preference, social), each with
    its gap unknown and no item history: what the encoder knows of a user with no behaviour yet. None when
    there is no such event."""
    source = np.asarray(row["source"][:position])
    kept = np.flatnonzero(source != behaviour_idx)[-window:]
    if not len(kept):
        return None
    out = {name: np.asarray(row[name], dtype=np.int64)[kept] for name in FEATURES}
    out["gap_bucket"] = np.full(len(kept), GAP_UNKNOWN, dtype=np.int64)
    out["history"] = np.zeros(0, dtype=np.int64)
    return out


def evaluate_cold_start(model, test: pd.DataFrame, popularity: np.ndarray, snapshot_targets: torch.Tensor) -> dict:
    """The encoder and most-popular on the cold-start users (see the module's docstring). ``test``: the
    evaluated rows in the model's indices; ``popularity``: ``item_popularity``, by snapshot index."""
    sampled = [i for i, user in enumerate(test["user_id"]) if in_cold_start_sample(user)]
    windows, targets, kept = [], [], []
    for i in sampled:
        row = test.iloc[i]
        position = int(row["test_pos"])
        found = cold_window(row, position, model.spec.max_len, model.spec.behaviour_idx)
        if found is not None:
            windows.append(found)
            targets.append(int(row["item"][position]))
            kept.append(i)
    out = {"sampled": len(sampled), "users": len(kept)}
    if not kept:
        return out

    def scored():
        for start, stop in _batches(len(windows)):
            with torch.no_grad():
                yield model.score_next(collate(windows[start:stop])), torch.tensor(targets[start:stop])

    model.eval()
    return {**out, "profiling": _metrics(scored()), "popularity": evaluate_popularity(popularity, snapshot_targets[kept])}


def _training_interactions(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date,
                           item_index: DataFrame) -> tuple[DataFrame, TableVersion]:
    """(user_id, item idx) of every behaviour event except each evaluated user's test target."""
    behaviour, version = read_snapshot(spark, config, "behaviour_events", snapshot_date)
    newest_first = Window.partitionBy("user_id").orderBy(F.desc("ts"), F.desc("snapshot_date"), F.desc("event_order"))
    events = behaviour.select(
        "user_id", "item_id",
        F.row_number().over(newest_first).alias("newest"),
        F.count("*").over(Window.partitionBy("user_id")).alias("n"),
    )
    train = events.where((F.col("n") < MIN_BEHAVIOUR_EVENTS) | (F.col("newest") > 1))
    return train.join(item_index, "item_id").select("user_id", "idx"), version


def item_popularity(train: DataFrame, n_items: int) -> np.ndarray:
    """Training events per item index: most-popular's scores, read once for every user it ranks."""
    counts = np.zeros(n_items)
    for row in train.groupBy("idx").count().collect():
        counts[row["idx"]] = row["count"]
    return counts


def evaluate_popularity(counts: np.ndarray, targets: torch.Tensor) -> dict[str, float]:
    # Ties between equally popular items count against the target (see metrics.target_ranks).
    scores = torch.as_tensor(counts, dtype=torch.float32)
    return _metrics((scores.expand(stop - start, -1), targets[start:stop])
                    for start, stop in _batches(len(targets)))


def evaluate_als(spark: SparkSession, train: DataFrame, users: list[str], n_items: int,
                 targets: torch.Tensor) -> dict[str, float]:
    """Spark ML ALS (implicit), scored by full ranking: user factors times every item's factors."""
    from pyspark.ml.recommendation import ALS

    user_ids = spark.createDataFrame([(u, i) for i, u in enumerate(users)], "user_id string, uid int")
    all_users = train.select("user_id").distinct().join(user_ids, "user_id", "left")
    top = len(users)
    extra = all_users.where(F.col("uid").isNull()).select(
        "user_id", (F.row_number().over(Window.orderBy("user_id")) + top - 1).cast("int").alias("uid"))
    uid = all_users.where(F.col("uid").isNotNull()).unionByName(extra)
    ratings = train.join(uid, "user_id").groupBy("uid", "idx").agg(F.count("*").cast("float").alias("n"))
    als = ALS(userCol="uid", itemCol="idx", ratingCol="n", implicitPrefs=True, coldStartStrategy="nan",
              nonnegative=False, **ALS_PARAMS)
    fitted = als.fit(ratings)
    item_f = np.zeros((n_items, ALS_PARAMS["rank"]), dtype=np.float32)
    known = np.zeros(n_items, dtype=bool)
    for row in fitted.itemFactors.collect():
        item_f[row["id"]] = row["features"]
        known[row["id"]] = True
    user_f = np.zeros((top, ALS_PARAMS["rank"]), dtype=np.float32)
    for row in fitted.userFactors.where(F.col("id") < top).collect():
        user_f[row["id"]] = row["features"]
    item_t = torch.from_numpy(item_f)
    unseen = torch.from_numpy(~known)

    def scored():
        for start, stop in _batches(top):
            scores = torch.from_numpy(user_f[start:stop]) @ item_t.T
            scores[:, unseen] = float("-inf")
            yield scores, targets[start:stop]

    return _metrics(scored())


def interest_fidelity(weights: pd.DataFrame, truth: pd.DataFrame, categories: list[str]) -> dict[str, float]:
    """Top-3 match and mean Spearman between category weights and planted mixtures.

    ``top3_match``: share of users whose three heaviest categories equal the
    planted three as a set. ``spearman``: per user, rank correlation over every
    category of the vocabulary (absent = 0), averaged over users.
    """
    pred = weights.pivot_table(index="user_id", columns="key", values="weight", fill_value=0.0)
    true = truth.pivot_table(index="user_id", columns="category", values="weight", fill_value=0.0)
    users = pred.index.intersection(true.index)
    pred = pred.reindex(index=users, columns=categories, fill_value=0.0)
    true = true.reindex(index=users, columns=categories, fill_value=0.0)
    top3 = [set(pred.columns[np.argsort(-p, kind="stable")[:3]]) == set(true.columns[np.argsort(-t, kind="stable")[:3]])
            for p, t in zip(pred.to_numpy(), true.to_numpy())]
    spearman = pred.rank(axis=1).corrwith(true.rank(axis=1), axis=1, method="pearson")
    return {"users": int(len(users)), "top3_match": round(float(np.mean(top3)), 4),
            "spearman": round(float(spearman.mean()), 4)}


def interest_count_fidelity(profiles: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Do users keep as many interests as they were planted categories?

    ``interests_spearman``: rank correlation, over users, between the interests a profile kept (after
    near-duplicates were merged: ``infer.merge_interests_cosine``) and the categories planted in the user
    (NaN when every user kept as many).
    ``interests_max_cosine``: the highest cosine between two kept interests of one user.
    """
    planted = truth[truth["weight"] > 0].groupby("user_id")["category"].nunique()
    kept = profiles.set_index("user_id")["interest_embeddings"].map(len)
    users = kept.index.intersection(planted.index)
    closest = [_max_cosine(np.asarray(list(v), dtype=np.float64)) for v in profiles["interest_embeddings"]]
    varied = kept[users].nunique() > 1 and planted[users].nunique() > 1  # else no rank correlation exists
    rho = kept[users].rank().corr(planted[users].rank()) if varied else float("nan")
    return {"interests_spearman": round(float(rho), 4), "interests_mean": round(float(kept.mean()), 4),
            "interests_max_cosine": round(max(closest, default=-1.0), 4)}


def drift_fidelity(weights: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Do the two horizons follow a user whose taste moved from mixture A to mixture B?

    ``truth``: the drifting users' rows of the ground truth (B: ``weight`` > 0, the current mixture; A: the
    categories of ``lifetime_weight`` > 0 that are not current). ``weights``: category weights of both
    horizons. ``drift_top1_short``: share of drifting users whose heaviest short-term category is in B;
    ``drift_top1_long``: share whose three heaviest long-term categories hold one of A and one of B.
    """
    current = truth[truth["weight"] > 0].groupby("user_id")["category"].agg(set)
    former = truth[(truth["weight"] <= 0) & (truth["lifetime_weight"] > 0)].groupby("user_id")["category"].agg(set)
    ranked = weights.sort_values(["user_id", "horizon", "weight", "key"], ascending=[True, True, False, True])
    top = {h: ranked[ranked["horizon"] == h].groupby("user_id")["key"].agg(list) for h in ("short", "long")}
    users = current.index.intersection(former.index).intersection(top["short"].index)
    if not len(users):
        return {"drift_users": 0}
    short = [top["short"][u][0] in current[u] for u in users]
    long = [bool(set(top["long"].get(u, [])[:3]) & current[u]) and bool(set(top["long"].get(u, [])[:3]) & former[u])
            for u in users]
    return {"drift_users": int(len(users)), "drift_top1_short": round(float(np.mean(short)), 4),
            "drift_top1_long": round(float(np.mean(long)), 4)}


def _max_cosine(vectors: np.ndarray) -> float:
    """The highest cosine between two of the vectors; -1 (none lower) when there are fewer than two."""
    if len(vectors) < 2:
        return -1.0
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    return float(cosine.max())


def evidence_fidelity(evidence: pd.DataFrame, truth: pd.DataFrame, agree: int = 4, top: int = 5) -> dict[str, float]:
    """Do an interest's evidence events show what it is named after?

    Among (user, interest) pairs whose interest is named (``interest_category``) by a planted
    category of the user: the share with at least ``agree`` of its ``top`` evidence events
    from that category.
    """
    shown = evidence[evidence["rank"] <= top]
    agreeing = (shown["category"] == shown["interest_category"]).groupby(
        [shown["user_id"], shown["interest"], shown["interest_category"]]).sum().reset_index(name="agreeing")
    planted = truth[["user_id", "category"]].rename(columns={"category": "interest_category"})
    mapped = agreeing.merge(planted, on=["user_id", "interest_category"])
    return {"evidence_pairs": int(len(mapped)),
            "evidence_4of5": round(float((mapped["agreeing"] >= agree).mean()), 4) if len(mapped) else 0.0}


@dataclass
class HeldOutTargets:
    """The test targets of a snapshot: every evaluated user's sequence, and the snapshot's vocabulary."""

    test: pd.DataFrame
    vocab: DataFrame
    read: list[TableVersion]

    def for_model(self, model) -> pd.DataFrame:
        """The sequences in ``model``'s indices: it reads the snapshot through its own vocabulary (a target it
        never saw cannot be ranked)."""
        to_model = Translation.from_table(model.vocabulary, self.vocab)
        return pd.DataFrame([to_model.apply(r) for r in self.test.to_dict("records")])


def held_out_targets(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date) -> HeldOutTargets:
    """The users with a test target in the snapshot, or one line saying why there are none."""
    sequences, seq_version = read_snapshot(spark, config, "user_sequences", snapshot_date)
    vocab, vocab_version = read_snapshot(spark, config, "vocabularies", snapshot_date)
    test = sequences.where(F.col("test_pos") >= 0).select("user_id", "length", "test_pos", *FEATURES) \
        .orderBy("user_id").toPandas()
    if test.empty:
        raise NotEnoughData(
            f"nothing to evaluate in snapshot {snapshot_date}: no user of {seq_version.name} has the "
            f"{MIN_BEHAVIOUR_EVENTS} behaviour events a test target needs (run the sequences stage for that "
            "date, or check its behaviour log)")
    return HeldOutTargets(test, vocab, [seq_version, vocab_version])


def evaluate_profiles(
    spark: SparkSession,
    config: ProfilingConfig,
    snapshot_date: dt.date,
    model,
    ground_truth: Path | None = None,
) -> EvaluationResult:
    """Test metrics of the encoder, most-popular and ALS on one split; fidelity if a ground truth is given."""
    split = held_out_targets(spark, config, snapshot_date)
    test, vocab, seq_version, vocab_version = split.test, split.vocab, split.read[0], split.read[1]
    item_index = vocab.where(F.col("dimension") == "item").select(F.col("key").alias("item_id"), "idx")
    n_items = int(vocab.where(F.col("dimension") == "item").agg(F.max("idx")).first()[0]) + 1
    targets = torch.tensor([int(r["item"][int(r["test_pos"])]) for _, r in test.iterrows()], dtype=torch.long)
    train, behaviour_version = _training_interactions(spark, config, snapshot_date, item_index)
    train = train.cache()
    models: dict[str, dict[str, float] | None] = {}
    missing: dict[str, str] = {}
    with progress.step(f"evaluate: ranking {len(test):,} test targets with the encoder"):
        in_model = split.for_model(model)
        models["profiling"] = evaluate_encoder(model, in_model)
    popularity = item_popularity(train, n_items)
    baselines = {"popularity": lambda: evaluate_popularity(popularity, targets),
                 "als": lambda: evaluate_als(spark, train, list(test["user_id"]), n_items, targets)}
    for name, fit in baselines.items():
        with progress.step(f"evaluate: fitting and ranking the {name} baseline"):
            try:
                models[name] = fit()
            except Exception as exc:  # noqa: BLE001 - a baseline that cannot be fitted is reported, not fatal
                models[name] = None
                missing[name] = f"could not be fitted: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
                log.warning("evaluate: the %s baseline %s", name, missing[name])
    with progress.step("evaluate: cold start, a tenth of the users from their preference and social events"):
        cold_start = evaluate_cold_start(model, in_model, popularity, targets)
    train.unpersist()
    runs, _ = read_snapshot(spark, config, "ingest_runs", snapshot_date)
    path = runs.where(F.col("source") == "behaviour").select("path").first()
    dataset = Path(path["path"]).parent.name if path and path["path"] else "unknown"
    result = EvaluationResult(dataset, len(test), models, cold_start=cold_start,
                              read=[seq_version, vocab_version, behaviour_version], missing=missing)
    if ground_truth is not None:
        weights, _ = read_snapshot(spark, config, "user_interest_weights", snapshot_date)
        weights = weights.where(F.col("dimension") == "category").select(
            "user_id", "horizon", "key", "weight").toPandas()
        truth = pd.read_csv(ground_truth, dtype={"user_id": str, "category": str})
        if "drifting" not in truth:  # a ground truth from before drift was planted: every user is stable
            truth = truth.assign(drifting=False, lifetime_weight=truth["weight"])
        drift = drift_fidelity(weights, truth[truth["drifting"]])
        truth = truth[~truth["drifting"]]
        weights = weights[weights["horizon"] == "short"]
        categories = sorted(set(truth["category"]) | set(weights["key"]))
        evidence, _ = read_snapshot(spark, config, "user_interest_evidence", snapshot_date)
        evidence = evidence.select("user_id", "interest", "interest_category", "category", "rank").toPandas()
        profiles, _ = read_snapshot(spark, config, "user_profile_embeddings", snapshot_date)
        profiles = profiles.select("user_id", "interest_embeddings").toPandas()
        result.fidelity = {**interest_fidelity(weights, truth, categories), **evidence_fidelity(evidence, truth),
                           **interest_count_fidelity(profiles, truth), **drift}
    log.info("evaluated %d users of %s: %s", len(test), dataset,
             {m: (v["recall@10"], v["ndcg@10"]) for m, v in models.items() if v})
    return result
