"""Train stage: pin the ``user_sequences`` version, run the DDP loop with TorchDistributor, log the model.

The driver resolves the parquet files of the exact Delta version and snapshot
it trains on (Spark's ``inputFiles`` on ``VERSION AS OF``) and hands the list
to the workers, which read them directly (see ``profiling.train.data``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pyspark.ml.torch.distributor import TorchDistributor
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from profiling import tracking
from profiling.config import ProfilingConfig
from profiling.exceptions import MissingStageOutput
from profiling.model.encoder import EncoderSpec, ProfileEncoder
from profiling.model.inputs import FEATURES, GAP_BUCKETS, VALUE_BUCKETS, collate, profile_window
from profiling.tables import TableVersion, read_snapshot
from profiling.train.data import read_rows, plan_shards
from profiling.train.loop import train_worker

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_version: str
    best_epoch: int
    epochs_run: int
    metrics: dict[str, float]
    read: list[TableVersion] = field(default_factory=list)


def vocabulary_sizes(
    spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date
) -> tuple[dict[str, int], dict[str, int], TableVersion]:
    """Embedding table sizes per event dimension, and the indices of the sources."""
    vocab, version = read_snapshot(spark, config, "vocabularies", snapshot_date)
    rows = vocab.groupBy("dimension").agg(F.max("idx").alias("top")).collect()
    sizes = {r["dimension"]: int(r["top"]) + 1 for r in rows}
    sizes.update({"gap_bucket": GAP_BUCKETS, "value_bucket": VALUE_BUCKETS})
    missing = [f for f in FEATURES if f not in sizes]
    if missing:
        raise MissingStageOutput(f"vocabularies for {snapshot_date} lack dimensions {missing}: rerun the sequences stage")
    sources = {r["key"]: int(r["idx"]) for r in vocab.where(F.col("dimension") == "source").collect()}
    return sizes, sources, version


def train_encoder(
    spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date, run_id: str | None = None
) -> TrainResult:
    """Train on ``user_sequences`` of ``snapshot_date`` and register the best epoch's model."""
    sequences, seq_version = read_snapshot(spark, config, "user_sequences", snapshot_date)
    files = sorted(sequences.inputFiles())
    if not files:
        raise MissingStageOutput(f"user_sequences has no rows for {snapshot_date}: run the sequences stage first")
    sizes, sources, vocab_version = vocabulary_sizes(spark, config, snapshot_date)
    behaviour_idx = sources.get("behaviour", -1)
    spec = EncoderSpec(
        vocab_sizes=sizes, max_len=config.model.max_len, dim=config.model.dim, heads=config.model.heads,
        layers=config.model.layers, interests=config.model.interests, dropout=config.model.dropout,
        negatives=config.train.negatives, behaviour_idx=behaviour_idx, social_idx=sources.get("social", -1),
    )
    checkpoints = config.workdir_path / "checkpoints" / (run_id or f"snapshot-{snapshot_date}")
    checkpoints.mkdir(parents=True, exist_ok=True)
    t = config.train
    job = {
        "spec": spec.to_dict(), "files": files, "behaviour_idx": behaviour_idx,
        "use_gpu": t.use_gpu, "seed": t.seed, "epochs": t.epochs, "patience": t.patience,
        "max_minutes": t.max_minutes,
        "batch_size": t.batch_size, "eval_batch_size": config.infer.batch_size,
        "learning_rate": t.learning_rate, "weight_decay": t.weight_decay, "warmup_steps": t.warmup_steps,
        "interest_loss_weight": t.interest_loss_weight, "shuffle_buffer": t.shuffle_buffer,
        "loader_workers": 0, "eval_k": t.eval_k, "checkpoint_dir": str(checkpoints),
        "tracking_uri": config.tracking_uri, "mlflow_run_id": run_id,
    }
    log.info("training on %s version %d (%d files), %d processes, local_mode=%s, use_gpu=%s",
             seq_version.name, seq_version.version, len(files), t.num_processes, t.local_mode, t.use_gpu)
    distributor = TorchDistributor(num_processes=t.num_processes, local_mode=t.local_mode, use_gpu=t.use_gpu)
    distributor.run(train_worker, job)
    # Whatever rank's return value the distributor hands back, rank 0's file is the record.
    result = json.loads((checkpoints / "result.json").read_text())
    model = load_checkpoint(Path(result["checkpoint"]))
    rows = [row for row, _ in zip(read_rows(plan_shards(files, 1)[0]), range(2))]
    example = collate([profile_window(row, spec.max_len, behaviour_idx) for row in rows])
    version = tracking.log_encoder(model, {k: v.numpy() for k, v in example.items()}, config.mlflow.registered_model)
    log.info("registered %s version %s (best epoch %d of %d)", config.mlflow.registered_model, version,
             result["best_epoch"] + 1, result["epochs_run"])
    return TrainResult(version, result["best_epoch"], result["epochs_run"], result["metrics"],
                       read=[seq_version, vocab_version])


def load_checkpoint(path: Path) -> ProfileEncoder:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = ProfileEncoder(EncoderSpec(**state["spec"]))
    model.load_state_dict(state["model"])
    return model.eval()
