"""Interests that are really different: clusters of a user's own events, or the head's K vectors merged.

The multi-interest head always yields K vectors, and a user with one taste gets K copies of it
(cosine ~1.00), each with a share of the weight: an explanation then lists the same interest K times.
Two interests can also differ in vector (cosine 0.91, say) and still rest on the same events in the
same proportions (evidence attention at cosine 0.997): an explanation then shows the same evidence
twice. Interests are therefore merged by centroid linkage before the profile tables are written
(:func:`merge_interests`): while two of them have a cosine of at least ``infer.merge_interests_cosine``
between their vectors or between their evidence attentions, the closest two become one, whose vector is
their weight-weighted mean, whose weight is the sum and whose evidence attention is the weight-weighted
mean of theirs. The total weight is unchanged, a user keeps between 1 and K interests, and no two kept
interests are as close as the threshold in either.

Merged, the head's K interests still mostly split a user's big categories (for two thirds of generated
users they are named by one or two categories), so how many survive says little about how many tastes
a user has (Spearman 0.21 against the planted number of categories). So, as PinnerSage does (Pal et al.
2020), infer finds interests by clustering the user's own events (:func:`clustered_interests`, with
``infer.interest_cluster_distance``): Ward's clustering of their content embeddings, one interest per
cluster, at most K, then the same merge. The count then follows the planted number (Spearman 0.63 on
5,000 generated users, where the cut was chosen; 0.57 on 5,000 of another seed). Those vectors lie among the item embeddings (they score items as the head's
do); the profile embedding stays the encoder's own. Users with fewer than two events of their own keep
the head's interests, merged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MergedInterests:
    vectors: np.ndarray  # (M, dim), M <= K
    weights: np.ndarray  # (M,), sums to the raw weights' sum
    attention: np.ndarray  # (M, events): evidence attention, each row a weighted mean of its members'
    members: tuple[tuple[int, ...], ...]  # the raw interests each kept one holds


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def merge_interests(vectors: np.ndarray, weights: np.ndarray, attention: np.ndarray,
                    min_cosine: float | None) -> MergedInterests:
    """Merge the closest pair while its cosine is at least ``min_cosine`` (None: keep all K). Kept
    interests are ordered by their first member, so an unmerged profile keeps its order."""
    vectors = np.asarray(vectors, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    attention = np.asarray(attention, dtype=np.float64)
    groups = [[k] for k in range(len(weights))]
    mean = list(vectors)
    mass = list(weights)
    seen = list(attention * weights[:, None])  # attention mass, divided by the weight at the end
    while min_cosine is not None and len(groups) > 1:
        unit, shown = _unit(np.stack(mean)), _unit(np.stack(seen))
        cosine = np.maximum(unit @ unit.T, shown @ shown.T)  # alike in vector or in evidence
        np.fill_diagonal(cosine, -np.inf)
        a, b = np.unravel_index(int(np.argmax(cosine)), cosine.shape)
        if cosine[a, b] < min_cosine:
            break
        a, b = min(a, b), max(a, b)
        total = mass[a] + mass[b]
        share = mass[a] / total if total > 0 else 0.5
        mean[a] = share * mean[a] + (1 - share) * mean[b]
        mass[a] = total
        seen[a] = seen[a] + seen[b]
        groups[a] += groups[b]
        for column in (groups, mean, mass, seen):
            del column[b]
    kept_attention = np.stack([s / m if m > 0 else s for s, m in zip(seen, mass)])
    return MergedInterests(np.stack(mean), np.asarray(mass), kept_attention, tuple(tuple(sorted(g)) for g in groups))


def clustered_interests(content: np.ndarray, own: np.ndarray, decay: np.ndarray, max_interests: int,
                        distance: float, min_cosine: float | None) -> MergedInterests | None:
    """Interests as PinnerSage finds them: the user's own events of the window (``own``, a mask), by their
    content (item and category embeddings, ``content`` (events, dim)), grouped by Ward's clustering of the
    unit vectors cut at ``distance`` (the merge height ``scipy.cluster.hierarchy.linkage`` reports), at most
    ``max_interests`` groups. An interest's vector is its events' decayed mean content, its weight their
    decayed share of the own events, its evidence attention a softmax over its events of their match with
    that vector. Interests still alike are merged as :func:`merge_interests` does (``min_cosine``). None
    with fewer than two own events (the head's interests serve then); ``members`` are cluster numbers."""
    from scipy.cluster.hierarchy import fcluster, linkage

    idx = np.flatnonzero(own)
    if len(idx) < 2:
        return None
    content = np.asarray(content, dtype=np.float64)
    tree = linkage(_unit(content[idx]), method="ward")
    labels = fcluster(tree, t=distance, criterion="distance")
    if labels.max() > max_interests:
        labels = fcluster(tree, t=max_interests, criterion="maxclust")
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]  # clusters in order of their first event
    weight = np.maximum(np.asarray(decay, dtype=np.float64)[idx], 1e-12)
    vectors, weights = [], []
    attention = np.zeros((len(order), len(content)))
    for m, label in enumerate(order):
        rows, w = idx[labels == label], weight[labels == label]
        vectors.append((w[:, None] * content[rows]).sum(0) / w.sum())
        weights.append(w.sum())
        match = content[rows] @ vectors[-1]
        attention[m, rows] = np.exp(match - match.max()) / np.exp(match - match.max()).sum()
    return merge_interests(np.stack(vectors), np.asarray(weights) / sum(weights), attention, min_cosine)


def merged_attention(raw_vectors: np.ndarray, raw_weights: np.ndarray, raw_attention: np.ndarray,
                     kept_vectors: np.ndarray, min_cosine: float | None) -> np.ndarray:
    """Evidence attention for the interests infer kept (``kept_vectors``, as the profile table holds them),
    from the encoder's raw output for the same window: the same merge again. Should batch arithmetic
    have moved a pair across the threshold (another count of interests), each raw interest counts towards
    the kept interest its vector is closest to instead."""
    again = merge_interests(raw_vectors, raw_weights, raw_attention, min_cosine)
    if len(again.weights) == len(kept_vectors):
        return again.attention
    owner = np.argmax(_unit(np.asarray(raw_vectors, dtype=np.float64))
                      @ _unit(np.asarray(kept_vectors, dtype=np.float64)).T, axis=1)
    out = np.zeros((len(kept_vectors), raw_attention.shape[1]))
    for m in range(len(kept_vectors)):
        w = np.where(owner == m, raw_weights, 0.0)
        if w.sum() > 0:
            out[m] = (w[:, None] * raw_attention).sum(0) / w.sum()
    return out
