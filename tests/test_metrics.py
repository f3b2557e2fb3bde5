"""Full-ranking metrics on hand-checkable scores."""

from __future__ import annotations

import math

import torch

from profiling.metrics import finalize, ranking_sums, target_ranks


def test_ranks_exclude_special_items_and_count_ties_against_the_target():
    scores = torch.tensor([
        [9.0, 9.0, 0.1, 0.5, 0.3],  # target 3 is best among real items 2..4
        [0.0, 0.0, 0.7, 0.7, 0.1],  # target 3 ties with item 2
        [0.0, 0.0, 0.9, 0.8, 0.1],  # target 4 is last
    ])
    ranks = target_ranks(scores, torch.tensor([3, 3, 4]))
    assert ranks.tolist() == [0, 1, 2]


def test_recall_and_ndcg_sums_and_means():
    sums = ranking_sums(torch.tensor([0, 1, 2, 30]), [1, 3])
    assert sums["n"] == 4
    assert sums["recall@1"] == 1 and sums["recall@3"] == 3
    assert math.isclose(sums["ndcg@3"], 1 + 1 / math.log2(3) + 1 / math.log2(4))
    means = finalize(sums)
    assert means["recall@3"] == 0.75 and means["hit@3"] == 0.75
    assert math.isclose(means["ndcg@1"], 0.25)
