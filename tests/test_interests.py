"""Interests are clusters of a user's own events, near-duplicates merged, before the profile tables are
written (profiling.interests)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from profiling.evaluate import interest_count_fidelity
from profiling.interests import clustered_interests, merge_interests, merged_attention


def _attention(rng, k: int, n: int) -> np.ndarray:
    return rng.dirichlet(np.ones(n), size=k)


def test_copies_of_one_interest_become_one_and_the_profile_is_unchanged():
    rng = np.random.default_rng(0)
    taste = rng.normal(size=8)
    vectors = np.stack([taste + rng.normal(scale=1e-3, size=8) for _ in range(4)])
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    attention = _attention(rng, 4, 6)
    kept = merge_interests(vectors, weights, attention, 0.95)
    assert kept.members == ((0, 1, 2, 3),)
    assert kept.weights == pytest.approx([1.0])
    assert np.allclose(kept.vectors[0] * kept.weights[0], (vectors * weights[:, None]).sum(0))
    assert np.allclose(kept.attention[0], (attention * weights[:, None]).sum(0))
    assert kept.attention[0].sum() == pytest.approx(1.0)
    # explain's merge of the raw output gives another count (here: none merged): each raw interest then
    # counts towards the kept interest closest to it
    assert np.allclose(merged_attention(vectors, weights, attention, kept.vectors, None), kept.attention)


def _tastes(rng, sizes: list[int], dim: int = 16) -> np.ndarray:
    """Event contents around ``len(sizes)`` orthogonal tastes, ``sizes[i]`` events each, in taste order."""
    axes = np.eye(dim)[:len(sizes)] * 3
    return np.concatenate([axes[i] + rng.normal(scale=0.2, size=(n, dim)) for i, n in enumerate(sizes)])


def test_each_taste_of_a_users_own_events_is_one_interest_weighted_by_its_decayed_share():
    rng = np.random.default_rng(1)
    content = _tastes(rng, [6, 3, 3])
    own = np.ones(12, dtype=bool)
    decay = np.r_[np.full(6, 0.5), np.ones(6)]
    kept = clustered_interests(content, own, decay, 4, 2.0, 0.95)
    assert len(kept.weights) == 3
    assert kept.weights == pytest.approx([3 / 9, 3 / 9, 3 / 9])  # 6 events at half weight count as 3
    for m, events in enumerate((range(0, 6), range(6, 9), range(9, 12))):
        assert set(np.flatnonzero(kept.attention[m])) == set(events)  # each rests on its own events
        assert kept.attention[m].sum() == pytest.approx(1.0)
        assert np.allclose(kept.vectors[m], (decay[list(events), None] * content[list(events)]).sum(0)
                           / decay[list(events)].sum())


def test_more_tastes_than_interests_are_joined_down_to_k_and_others_events_never_count():
    rng = np.random.default_rng(2)
    content = _tastes(rng, [3] * 6)
    own = np.ones(18, dtype=bool)
    own[[0, 4]] = False  # the circle's events, say
    kept = clustered_interests(content, own, np.ones(18), 4, 2.0, 0.95)
    assert len(kept.weights) == 4 and kept.weights.sum() == pytest.approx(1.0)
    assert not kept.attention[:, [0, 4]].any()
    assert kept.weights.sum() * 16 == pytest.approx(sum(len(np.flatnonzero(a)) for a in kept.attention))
    assert clustered_interests(content, own, np.ones(18), 4, 1e6, 0.95).weights == pytest.approx([1.0])  # one cut
    one_own = np.zeros(18, dtype=bool)
    one_own[3] = True
    assert clustered_interests(content, one_own, np.ones(18), 4, 2.0, 0.95) is None  # the head's interests serve


def test_different_interests_are_kept_in_order_and_none_keeps_every_one():
    vectors = np.eye(3)
    weights = np.array([0.2, 0.5, 0.3])
    attention = _attention(np.random.default_rng(1), 3, 4)
    for threshold in (0.95, None):
        kept = merge_interests(vectors, weights, attention, threshold)
        assert kept.members == ((0,), (1,), (2,))
        assert np.allclose(kept.vectors, vectors) and np.allclose(kept.weights, weights)
    near = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])  # cosine 0.994 between the first two
    apart = np.eye(3)  # each on an event of its own
    assert merge_interests(near, np.full(3, 1 / 3), apart, None).members == ((0,), (1,), (2,))
    assert merge_interests(near, np.full(3, 1 / 3), apart, 0.95).members == ((0, 1), (2,))


def test_interests_that_rest_on_the_same_events_are_one():
    vectors = np.array([[1.0, 0.0], [0.5, 0.8]])  # cosine 0.53
    attention = np.array([[0.6, 0.3, 0.1], [0.58, 0.32, 0.1]])  # the same evidence
    kept = merge_interests(vectors, np.array([0.7, 0.3]), attention, 0.95)
    assert kept.members == ((0, 1),)
    elsewhere = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]])  # cosine 0.57
    assert merge_interests(vectors, np.array([0.7, 0.3]), elsewhere, 0.95).members == ((0,), (1,))


@pytest.mark.parametrize("seed", range(20))
def test_no_two_kept_interests_are_as_close_as_the_threshold(seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(2, 6))
    vectors = np.stack([base[k % 2] + rng.normal(scale=0.3, size=6) for k in range(8)])  # chains of near ones
    weights = rng.dirichlet(np.ones(8))
    attention = rng.dirichlet(np.full(12, 0.3), size=8)  # each on a few of 12 events
    kept = merge_interests(vectors, weights, attention, 0.9)
    for rows in (kept.vectors, kept.attention):
        unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        cosine = unit @ unit.T
        np.fill_diagonal(cosine, -1)
        assert cosine.max() < 0.9
    assert 1 <= len(kept.weights) <= 8
    assert sorted(k for group in kept.members for k in group) == list(range(8))
    assert kept.weights.sum() == pytest.approx(1.0)
    assert np.allclose((kept.vectors * kept.weights[:, None]).sum(0), (vectors * weights[:, None]).sum(0))
    # explain rebuilds the merged attention from the raw output and the kept vectors alone
    assert np.allclose(merged_attention(vectors, weights, attention, kept.vectors, 0.9), kept.attention)


def test_kept_interests_are_counted_against_the_planted_categories():
    truth = pd.DataFrame({"user_id": ["a", "b", "b", "c", "c", "c"], "category": list("xxyxyz"),
                          "weight": [1, 0.5, 0.5, 0.4, 0.3, 0.3]})
    profiles = pd.DataFrame({"user_id": ["a", "b", "c"],
                             "interest_embeddings": [[[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]],
                                                     [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]]})
    got = interest_count_fidelity(profiles, truth)
    assert got["interests_spearman"] == pytest.approx(1.0)
    assert got["interests_mean"] == pytest.approx(2.0)
    assert got["interests_max_cosine"] == pytest.approx(0.8)
    same = interest_count_fidelity(profiles.assign(interest_embeddings=[[[1.0, 0.0]]] * 3), truth)
    assert np.isnan(same["interests_spearman"]) and same["interests_max_cosine"] == -1.0
