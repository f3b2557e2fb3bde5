"""Promotion gate: a newly trained encoder serves only once it ranks as well as the one serving.

Train registers each new version with the alias ``challenger`` (the first version of a registered model,
with nothing to compare it with, becomes ``current`` at once). The gate ranks one snapshot's test targets
with the challenger and with the champion (the version carrying ``current``) and moves ``current`` to the
challenger only if its NDCG@10 is at least the champion's minus ``mlflow.promotion_tolerance``. Either way
the challenger alias is cleared, so each version is decided once; ``profiling promote --version N`` moves
``current`` by hand. Infer scores with ``current``, so a worse model never reaches the profile tables.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pyspark.sql import SparkSession

from profiling import tracking
from profiling.config import ProfilingConfig
from profiling.evaluate import evaluate_encoder, held_out_targets

log = logging.getLogger(__name__)

METRIC = "ndcg@10"


@dataclass(frozen=True)
class PromotionDecision:
    challenger: str
    champion: str
    challenger_ndcg: float
    champion_ndcg: float
    tolerance: float

    @property
    def promoted(self) -> bool:
        return self.challenger_ndcg >= self.champion_ndcg - self.tolerance

    def line(self) -> str:
        verdict = "promoted to @current" if self.promoted else f"rejected, @current stays version {self.champion}"
        return (f"promotion gate: challenger version {self.challenger} {METRIC} {self.challenger_ndcg:.4f}, "
                f"current version {self.champion} {self.champion_ndcg:.4f}, tolerance {self.tolerance:g}: {verdict}")

    def metrics(self) -> dict[str, float]:
        return {"gate_challenger_version": float(self.challenger), "gate_champion_version": float(self.champion),
                f"gate_challenger_{METRIC}": self.challenger_ndcg, f"gate_champion_{METRIC}": self.champion_ndcg,
                "gate_tolerance": self.tolerance, "gate_promoted": float(self.promoted)}


def gate_challenger(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date,
                    pending: tuple[str, str]) -> PromotionDecision:
    """Decide on ``pending`` (challenger, champion: ``tracking.pending_challenger``), on ``snapshot_date``'s
    test targets. Logs the decision in the active MLflow run."""
    challenger, champion = pending
    targets = held_out_targets(spark, config, snapshot_date)
    figures = {}
    for version in pending:
        model = tracking.load_encoder(config, version)
        figures[version] = evaluate_encoder(model, targets.for_model(model))[METRIC]
    decision = PromotionDecision(challenger, champion, figures[challenger], figures[champion],
                                 config.mlflow.promotion_tolerance)
    if decision.promoted:
        tracking.promote(config, challenger)
    else:
        tracking.clear_challenger(config, challenger)
    tracking.log_metrics(decision.metrics())
    tracking.mlflow.set_tag("gate_decision", "promoted" if decision.promoted else "rejected")
    log.info(decision.line())
    return decision
