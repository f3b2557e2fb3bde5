"""A batch of user sequences to profiles: the encoder's outputs turned into what the profile tables hold.

Infer runs this in its Spark tasks, and the registered model's pyfunc (``profiling.model.portable``) runs
the same code wherever the model is loaded, so both score a user alike. Pure numpy and torch: no Spark.

Per user: the profile embedding and the kept interests (near-duplicates merged: ``profiling.interests``)
read the newest window; the category, event type and source weights sum the encoder's event importance
over every window of the kept history, each event decayed by its age (``profiling.decay``); each
interest's evidence is the events of the newest window its attention rests on most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from profiling.decay import decay_factors
from profiling.interests import MergedInterests, clustered_interests, merge_interests
from profiling.model.inputs import FIRST_KEY, collate, profile_chunks

WEIGHT_DIMENSIONS = ("category", "event_type", "source")


@dataclass(frozen=True)
class ProfileSettings:
    """What shapes a profile besides the encoder: ``infer.*`` and ``profile.half_life_days``."""

    evidence_events: int
    merge_interests_cosine: float | None
    interest_cluster_distance: float | None
    half_life_days: float | None
    batch_size: int

    @classmethod
    def of(cls, config) -> ProfileSettings:
        """From a ``ProfilingConfig``."""
        return cls(evidence_events=config.infer.evidence_events,
                   merge_interests_cosine=config.infer.merge_interests_cosine,
                   interest_cluster_distance=config.infer.interest_cluster_distance,
                   half_life_days=config.profile.half_life_days, batch_size=config.infer.batch_size)


def window_decay(row: Mapping, first: int, n: int, half_life_days: float | None) -> np.ndarray:
    """The decay factors (``profiling.decay``) of events ``first .. first + n`` of a sequence row."""
    return decay_factors(row["ts"][:int(row["length"])], half_life_days)[first:first + n]


def kept_interests(out: Mapping[str, np.ndarray], window: Mapping[str, np.ndarray], behaviour_idx: int,
                   max_interests: int, settings: ProfileSettings) -> MergedInterests:
    """The interests a profile keeps from the encoder's output ``out`` for one ``window`` (with its ``decay``):
    clusters of the user's own events (``profiling.interests.clustered_interests``), or the head's K
    interests merged (``interest_cluster_distance`` null, or fewer than two own events)."""
    n = len(window["item"])
    if settings.interest_cluster_distance is not None:
        own = (np.asarray(window["source"]) == behaviour_idx) & (np.asarray(window["item"]) >= FIRST_KEY)
        found = clustered_interests(out["event_content"][:n], own, window["decay"], max_interests,
                                    settings.interest_cluster_distance, settings.merge_interests_cosine)
        if found is not None:
            width = out["evidence_attention"].shape[-1]
            return MergedInterests(found.vectors, found.weights,
                                   np.pad(found.attention, ((0, 0), (0, width - found.attention.shape[1]))),
                                   found.members)
    return merge_interests(out["interest_embeddings"], out["interest_weights"], out["evidence_attention"],
                           settings.merge_interests_cosine)


def dimension_weights(row: Mapping, importance: np.ndarray, names: dict[str, dict[int, str]],
                       social_idx: int) -> list[dict]:
    """Long-format weights: per dimension, the event importance summed per key, normalised to 1.

    Category weights count the user's own events (behaviour, preference); the
    circle's items count only for users who have no categorised events of their own.
    """
    length = int(row["length"])
    out = []
    for dim in WEIGHT_DIMENSIONS:
        idx = np.asarray(row[dim][:length], dtype=np.int64)
        if length == 0:
            continue
        weights = importance
        if dim == "category":
            own = np.asarray(row["source"][:length]) != social_idx
            if (importance * own * (idx >= FIRST_KEY)).sum() > 0:
                weights = importance * own
        mass = np.bincount(idx, weights=weights)
        mass[:FIRST_KEY] = 0.0  # padding and "<none>" carry no key
        keys = np.flatnonzero(mass > 0)
        order = keys[np.argsort(-mass[keys], kind="stable")]
        total = mass.sum()
        if total <= 0:
            continue
        for rank, key in enumerate(order, start=1):
            out.append({"dimension": dim, "key": names[dim].get(int(key), "<none>"),
                        "weight": float(mass[key] / total), "rank": rank})
    return out


def interest_category_mass(attention: np.ndarray, category: np.ndarray) -> np.ndarray:
    """(K, C) attention mass of each interest on each category index (padding and "<none>" get none).

    An interest is named by its heaviest categories: the ones its attention rests on.
    """
    n = len(category)
    mass = np.stack([np.bincount(category, weights=a[:n], minlength=FIRST_KEY) for a in attention]) if n else \
        np.zeros((len(attention), FIRST_KEY))
    mass[:, :FIRST_KEY] = 0.0
    return mass


def interest_evidence(row: Mapping, window: dict[str, np.ndarray], first: int, attention: np.ndarray,
                       interest_weights: np.ndarray, names: dict[str, dict[int, str]], top_n: int) -> list[dict]:
    """Per interest, the ``top_n`` events of the newest window with the highest evidence attention.

    Ties (repeats of an item score alike) go to the newest event.
    """
    n = len(window["item"])
    if n == 0 or top_n == 0:
        return []
    category = window["category"]
    mass = interest_category_mass(attention, category)
    ts = np.asarray(row["ts"][first:first + n], dtype=np.int64)
    out = []
    for k, a in enumerate(attention):
        a = a[:n]
        if a.sum() <= 0:  # no event with an item or a category
            continue
        top = int(np.argmax(mass[k])) if mass[k].max() > 0 else None
        label = names["category"].get(top) if top is not None else None
        newest_first = n - 1 - np.argsort(-a[::-1], kind="stable")
        shown = [t for t in newest_first if a[t] > 0][:top_n]
        for rank, t in enumerate(shown, start=1):
            out.append({
                "interest": k, "interest_weight": float(interest_weights[k]), "interest_category": label,
                "position": first + int(t), "item": int(window["item"][t]),
                "category": names["category"].get(int(category[t])) if category[t] >= FIRST_KEY else None,
                "event_type": names["event_type"].get(int(window["event_type"][t]), "<none>"),
                "source": names["source"].get(int(window["source"][t]), "<none>"),
                "attribute": int(window["attribute"][t]), "ts": int(ts[t]) if ts[t] > 0 else None,
                "attention": float(a[t]), "rank": rank,
            })
    return out


def profile_rows(model, rows: Sequence[Mapping], names: dict[str, dict[int, str]],
                 settings: ProfileSettings) -> dict[str, list]:
    """Profiles of ``rows`` (``user_sequences`` rows in the model's indices; ``names``: index to key per
    weight dimension) as columns: ``embedding``, ``interest_embeddings``, ``interest_weights``,
    ``dimension_weights`` and ``evidence``, one entry per row."""
    import torch

    device = next(model.parameters()).device
    window, behaviour_idx = model.spec.max_len, model.spec.behaviour_idx
    decay = [window_decay(r, 0, int(r["length"]), settings.half_life_days) for r in rows]
    chunks = [(i, first, {**w, "decay": decay[i][first:first + len(w["item"])]})
              for i, r in enumerate(rows) for first, w in profile_chunks(r, window, behaviour_idx)]
    with torch.no_grad():
        batch = {k: v.to(device) for k, v in collate([w for _, _, w in chunks]).items()}
        out = {k: v.float().cpu().numpy() for k, v in model(batch).items()}
    newest = {}
    importance = [np.zeros(int(r["length"])) for r in rows]
    for j, (i, first, w) in enumerate(chunks):
        newest.setdefault(i, j)
        n = len(w["item"])
        # Each window's importance sums to 1; weight it by its share of the history.
        importance[i][first:first + n] = out["event_importance"][j][:n] * n / max(len(importance[i]), 1)
    importance = [share * d for share, d in zip(importance, decay)]
    pick = [newest[i] for i in range(len(rows))]
    interests = [kept_interests({k: v[j] for k, v in out.items()}, chunks[j][2], behaviour_idx, model.spec.interests,
                                settings) for j in pick]
    return {
        "embedding": list(out["embedding"][pick].astype(np.float32)),
        "interest_embeddings": [list(kept.vectors.astype(np.float32)) for kept in interests],
        "interest_weights": [kept.weights.astype(np.float32) for kept in interests],
        "dimension_weights": [dimension_weights(r, importance[i], names, model.spec.social_idx)
                              for i, r in enumerate(rows)],
        "evidence": [interest_evidence(r, chunks[j][2], chunks[j][1], kept.attention, kept.weights, names,
                                       settings.evidence_events) for r, j, kept in zip(rows, pick, interests)],
    }
