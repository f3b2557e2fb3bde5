"""The stages as tracked units, and the whole pipeline.

Each ``run_*`` function is one progress step (its start, end and wall time on
the console), opens the stage's MLflow run (nested under the pipeline's run when
there is one), calls the stage, and records what it read and wrote. The CLI, the
spark-submit jobs and the tests all call these.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

from profiling import progress, tracking
from profiling.config import ProfilingConfig
from profiling.exceptions import DataQualityError
from profiling.ingest import IngestResult, ingest_logs
from profiling.sequences import SequencesResult, build_user_sequences

if TYPE_CHECKING:
    from profiling.infer import InferResult
    from profiling.promotion import PromotionDecision

log = logging.getLogger(__name__)


def run_ingest(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date) -> IngestResult:
    """Ingest, with the data-quality report in the stage's MLflow run also when a gate stops it."""
    with progress.step("ingest"), tracking.stage_run(config, "ingest", snapshot_date) as run_id:
        try:
            result = ingest_logs(spark, config, snapshot_date, run_id)
        except DataQualityError as stopped:
            if stopped.result is not None:
                tracking.record_tables(written=stopped.result.written)
                tracking.log_quality_report(stopped.result.report)
            raise
        tracking.record_tables(written=result.written)
        tracking.log_quality_report(result.report)
    return result


def run_sequences(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date,
                  full_refresh: bool = False) -> SequencesResult:
    with progress.step("sequences"), tracking.stage_run(config, "sequences", snapshot_date) as run_id:
        result = build_user_sequences(spark, config, snapshot_date, run_id, full_refresh)
        tracking.record_tables(read=result.read, written=result.written)
        tracking.log_metrics({"users": result.users, "full_refresh": int(result.full), "users_ended": result.ended})
    return result


def run_train(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date):
    from profiling.train.launch import train_encoder  # torch and the distributor load only when training

    with progress.step("train"), tracking.stage_run(config, "train", snapshot_date) as run_id:
        result = train_encoder(spark, config, snapshot_date, run_id)
        tracking.record_tables(read=result.read)
        tracking.log_metrics({"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                              "resumed_after_epoch": result.resumed_after_epoch,
                              **{f"best_{k}": v for k, v in result.metrics.items()}})
        tracking.mlflow.set_tag("model_version", result.model_version)
    return result


def run_infer(
    spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date, model_version: str | None = None,
    full_refresh: bool = False,
) -> InferResult:
    from profiling.explain import log_run_explanations
    from profiling.infer import infer_profiles

    version = tracking.registered_version(config, model_version)
    with progress.step("infer"), tracking.stage_run(config, "infer", snapshot_date) as run_id:
        result = infer_profiles(spark, config, snapshot_date, version, run_id, full_refresh)
        tracking.record_tables(read=result.read, written=result.written)
        tracking.log_metrics({"users_scored": result.users, "full_refresh": int(result.full),
                              "unseen_items": result.unseen_items,
                              "unseen_share": result.unseen_share})
        with progress.step(f"infer: explaining {config.explain.sample_users} sample users in the MLflow run"):
            log_run_explanations(spark, config, snapshot_date)
    return result


def run_gate(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date,
             own_run: bool = False) -> PromotionDecision | None:
    """The promotion gate on a version train left as challenger (None: none awaits), in the active MLflow
    run, or in a stage run of its own (``own_run``) opened only when there is something to decide."""
    from profiling.promotion import gate_challenger

    pending = tracking.pending_challenger(config)
    if pending is None:
        return None
    run = tracking.stage_run(config, "gate", snapshot_date) if own_run else contextlib.nullcontext()
    with run, progress.step("promotion gate: the new version against the current one, on the test targets"):
        return gate_challenger(spark, config, snapshot_date, pending)


def run_evaluate(
    spark: SparkSession,
    config: ProfilingConfig,
    snapshot_date: dt.date,
    model_version: str | None = None,
    ground_truth: Path | None = None,
):
    """Test metrics of the registered encoder and the baselines (and fidelity), logged to MLflow. Without a
    ``model_version``, a version awaiting the promotion gate is decided on first, and the version then
    carrying ``current`` is measured."""
    from profiling.evaluate import evaluate_profiles

    with progress.step("evaluate"), tracking.stage_run(config, "evaluate", snapshot_date):
        decision = run_gate(spark, config, snapshot_date) if model_version is None else None
        version = tracking.registered_version(config, model_version)
        result = evaluate_profiles(spark, config, snapshot_date, tracking.load_encoder(config, version), ground_truth)
        tracking.record_tables(read=result.read)
        tracking.mlflow.set_tags({"dataset": result.dataset, "model_version": version})
        tracking.log_metrics({"users_evaluated": result.users_evaluated})
        for model, metrics in result.models.items():
            tracking.log_metrics({f"test_{model}_{k}": v for k, v in (metrics or {}).items()})
        cold = result.cold_start or {}
        tracking.log_metrics({"cold_start_users": cold.get("users", 0)})
        for model in ("profiling", "popularity"):
            tracking.log_metrics({f"cold_start_{model}_{k}": v for k, v in cold.get(model, {}).items()})
        if result.fidelity:
            tracking.log_metrics({f"fidelity_{k}": v for k, v in result.fidelity.items()})
    result.promotion = decision
    return result


def run_maintain(spark: SparkSession, config: ProfilingConfig, retain_days: float | None = None):
    """OPTIMIZE and VACUUM every table (profiling.maintenance), as an MLflow run with what it removed."""
    from profiling.maintenance import maintain_tables

    today = dt.datetime.now(dt.timezone.utc).date()
    with progress.step("maintain"), tracking.stage_run(config, "maintain", today):
        result = maintain_tables(spark, config, retain_days)
        tracking.record_tables(written=result.written)
        tracking.log_metrics({"retain_days": result.retain_days, **result.totals()})
    return result


@dataclass
class PipelineResult:
    run_id: str
    ingest: IngestResult
    sequences: SequencesResult
    train: object
    infer: InferResult
    promotion: PromotionDecision | None = None  # the gate's decision on the version trained (None: the first)


def run_pipeline(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date) -> PipelineResult:
    """ingest -> sequences -> train -> promotion gate -> infer, under one parent MLflow run (training reads a
    full refresh of the sequences; infer then rescores everyone under the version ``current`` carries)."""
    with tracking.pipeline_run(config, snapshot_date) as run_id:
        ingest = run_ingest(spark, config, snapshot_date)
        sequences = run_sequences(spark, config, snapshot_date, full_refresh=True)
        train = run_train(spark, config, snapshot_date)
        promotion = run_gate(spark, config, snapshot_date, own_run=True)  # None: the model's first version
        infer = run_infer(spark, config, snapshot_date)
        tracking.log_metrics({"users_profiled": infer.users})
    log.info("pipeline run %s done: %d users profiled for %s", run_id, infer.users, snapshot_date)
    return PipelineResult(run_id, ingest, sequences, train, infer, promotion)
