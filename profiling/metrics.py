"""Full-ranking metrics for next-item prediction (Recall@K, NDCG@K, HitRate@K).

Every item of the vocabulary is a candidate; only the indices below
``FIRST_KEY`` (padding, "no item") are excluded. With one target per user,
Recall@K equals HitRate@K. Sums are returned so ranks can add them up
across processes before dividing.
"""

from __future__ import annotations

import torch

from profiling.model.inputs import FIRST_KEY


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all real items (ties count against the target)."""
    scores = scores.clone()
    scores[:, :FIRST_KEY] = float("-inf")
    target_scores = scores.gather(1, targets[:, None])
    return (scores >= target_scores).sum(1) - 1


def ranking_sums(ranks: torch.Tensor, ks: list[int]) -> dict[str, float]:
    """Sums over users of recall@k and ndcg@k, plus the user count under ``n``."""
    out: dict[str, float] = {"n": float(ranks.numel())}
    gain = 1.0 / torch.log2(ranks.double() + 2.0)
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.sum())
        out[f"ndcg@{k}"] = float((gain * hit).sum())
    return out


def finalize(sums: dict[str, float]) -> dict[str, float]:
    """Means from sums; hit rate equals recall with one target per user."""
    n = max(sums.get("n", 0.0), 1.0)
    out = {key: value / n for key, value in sums.items() if key != "n"}
    out.update({key.replace("recall", "hit"): value for key, value in out.items() if key.startswith("recall")})
    return out
