"""Train stage: pin the ``user_sequences`` version, run the DDP loop with TorchDistributor, log the model.

The driver resolves the parquet files of the exact Delta version and snapshot
it trains on (Spark's ``inputFiles`` on ``VERSION AS OF``) and hands the list
to the workers, which read them directly (see ``profiling.train.data``).

Checkpoints live in ``<workdir>/checkpoints/<snapshot>-<fingerprint>``, the
fingerprint covering everything that shapes training (files, spec, settings): a
rerun after a crash finds the interrupted run's ``last.pt`` and resumes it; a
finished run's folder is cleared and training starts afresh.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pyspark.ml.torch.distributor import TorchDistributor
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from profiling import progress, tracking
from profiling.config import ProfilingConfig, TrainConfig
from profiling.exceptions import ConfigError, MissingStageOutput, NotEnoughData, TrainingFailed
from profiling.model.encoder import EncoderSpec, ProfileEncoder
from profiling.model.inputs import GAP_BUCKETS, VALUE_BUCKETS
from profiling.model.vocabulary import KEYED, Vocabulary
from profiling.refresh import REFRESHES
from profiling.tables import TableVersion, current_version, missing_table, qualified, read_snapshot
from profiling.train.loop import TrainingJob, train_worker

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_version: str
    best_epoch: int
    epochs_run: int
    metrics: dict[str, float]
    read: list[TableVersion] = field(default_factory=list)
    resumed_after_epoch: int = 0


def snapshot_vocabulary(
    spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date
) -> tuple[Vocabulary, TableVersion]:
    """The snapshot's vocabulary, which the model trained on it keeps (profiling.model.vocabulary)."""
    vocab, version = read_snapshot(spark, config, "vocabularies", snapshot_date)
    vocabulary = Vocabulary.from_rows(r.asDict() for r in vocab.select("dimension", "key", "idx").toLocalIterator())
    missing = [f for f in KEYED if f not in vocabulary.keys]
    if missing:
        raise MissingStageOutput(f"vocabularies for {snapshot_date} lack dimensions {missing}: rerun the sequences stage")
    return vocabulary, version


def check_enough_data(sequences: DataFrame, train: TrainConfig, snapshot_date: dt.date) -> None:
    """Refuse, in one line, to fit and register a model on less data than the configured floors."""
    row = sequences.agg(F.coalesce(F.sum("n_behaviour"), F.lit(0)).alias("events"),
                        F.count(F.when(F.col("valid_pos") >= 0, 1)).alias("users")).first()
    if row["events"] < train.min_behaviour_events or row["users"] < train.min_users:
        raise NotEnoughData(
            f"train: the sequences of {snapshot_date} hold {row['events']:,} behaviour events (floor "
            f"train.min_behaviour_events: {train.min_behaviour_events:,}) and {row['users']:,} users with a "
            f"validation target (floor train.min_users: {train.min_users:,}); no model is fitted or registered: "
            "check the behaviour log's quarantine (profiling.quarantine) or lower the floors")


def distributor_args(train: TrainConfig, cuda_devices: int | None = None) -> dict:
    """TorchDistributor's arguments, checked against the GPUs this driver sees in local mode.

    On a cluster (``local_mode: false``) the executors hold the GPUs and Spark's
    ``spark.task.resource.gpu.amount`` hands one to each process; the driver cannot count them.
    """
    if train.use_gpu and train.local_mode:
        found = torch.cuda.device_count() if cuda_devices is None else cuda_devices
        if found < train.num_processes:
            raise ConfigError(
                f"train.use_gpu is true with train.local_mode and train.num_processes={train.num_processes}, "
                f"but the driver sees {found} CUDA device(s): lower train.num_processes, set "
                f"train.local_mode=false to train on GPU executors, or set train.use_gpu=false")
    return {"num_processes": train.num_processes, "local_mode": train.local_mode, "use_gpu": train.use_gpu}


def training_fingerprint(
    train: TrainConfig, spec: EncoderSpec, files: tuple[str, ...], eval_batch_size: int
) -> str:
    """12 hex digits naming what shapes training: the files, the encoder and every train setting but
    ``train.max_minutes`` (a rerun with another time budget resumes the same checkpoints)."""
    shaping = {"train": train.model_dump(exclude={"max_minutes"}), "spec": spec.to_dict(), "files": files,
               "eval_batch_size": eval_batch_size}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:12]


def full_refresh_of(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date
                    ) -> tuple[DataFrame, TableVersion]:
    """Partition ``snapshot_date`` of ``user_sequences``, pinned, once it is known to hold every user (a full
    refresh): the feed reads its parquet files as they are."""
    full = qualified(config, "user_sequences")
    if not spark.catalog.tableExists(full):
        raise missing_table(config, "user_sequences")
    refreshes = qualified(config, REFRESHES)
    refresh = spark.table(refreshes).where(F.col("snapshot_date") == F.lit(snapshot_date)).first() \
        if spark.catalog.tableExists(refreshes) else None
    if refresh is not None and not refresh["full"]:
        raise MissingStageOutput(
            f"{full} holds the users the daily refresh of {snapshot_date} rebuilt, not all of them: training "
            f"reads a full refresh, run `profiling sequences --full-refresh --snapshot-date {snapshot_date}` first")
    version = current_version(spark, full)
    return (spark.sql(f"SELECT * FROM {full} VERSION AS OF {version} WHERE snapshot_date = DATE'{snapshot_date}'"),
            TableVersion(full, version))


def train_encoder(
    spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date, run_id: str | None = None
) -> TrainResult:
    """Train on ``user_sequences`` of ``snapshot_date`` and register the best epoch's model."""
    launch = distributor_args(config.train)  # a GPU setting that cannot work fails before any reading
    sequences, seq_version = full_refresh_of(spark, config, snapshot_date)
    files = tuple(sorted(sequences.inputFiles()))
    if not files:
        raise MissingStageOutput(f"user_sequences has no rows for {snapshot_date}: run the sequences stage first")
    check_enough_data(sequences, config.train, snapshot_date)
    vocabulary, vocab_version = snapshot_vocabulary(spark, config, snapshot_date)
    sources = vocabulary.indices("source")
    behaviour_idx = sources.get("behaviour", -1)
    spec = EncoderSpec(
        vocab_sizes={**vocabulary.sizes(), "gap_bucket": GAP_BUCKETS, "value_bucket": VALUE_BUCKETS},
        max_len=config.model.max_len, dim=config.model.dim, heads=config.model.heads,
        layers=config.model.layers, interests=config.model.interests, dropout=config.model.dropout,
        negatives=config.train.negatives, behaviour_idx=behaviour_idx, social_idx=sources.get("social", -1),
        interest_diversity=config.train.interest_diversity,
    )
    fingerprint = training_fingerprint(config.train, spec, files, config.infer.batch_size)
    checkpoints = config.workdir_path / "checkpoints" / f"{snapshot_date}-{fingerprint}"
    if (checkpoints / "result.json").exists():  # that run finished: this one trains anew
        shutil.rmtree(checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)
    job = TrainingJob(train=config.train, spec=spec, files=files, eval_batch_size=config.infer.batch_size,
                      checkpoint_dir=checkpoints, tracking_uri=config.tracking_uri, mlflow_run_id=run_id)
    log.info("training on %s version %d (%d files), %d processes, local_mode=%s, use_gpu=%s",
             seq_version.name, seq_version.version, len(files), config.train.num_processes,
             config.train.local_mode, config.train.use_gpu)
    distributor = TorchDistributor(**launch)
    try:
        with progress.worker_lines("[train] ", log):  # the epochs rank 0 prints
            distributor.run(train_worker, job)
    except Exception as exc:  # a process died or raised: its own output above says which
        last = checkpoints / "last.pt"
        where = (f"rerun the train stage to resume after epoch "
                 f"{torch.load(last, map_location='cpu', weights_only=False)['epoch'] + 1} ({last})"
                 if last.exists() else "no epoch finished; rerun the train stage to start again")
        raise TrainingFailed(f"training failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
                             f"{where}") from exc
    # Whatever rank's return value the distributor hands back, rank 0's file is the record.
    result = json.loads((checkpoints / "result.json").read_text())
    model = load_checkpoint(Path(result["checkpoint"]))
    model.vocabulary = vocabulary  # registered with the model: whoever scores with it maps keys through it
    version = tracking.log_encoder(model, config)
    ndcg = f"ndcg@{config.train.eval_k[0]}"
    log.info("registered %s version %s (best epoch %d of %d, validation %s %.4f%s)", config.mlflow.registered_model,
             version, result["best_epoch"] + 1, result["epochs_run"], ndcg, result["metrics"][f"val_{ndcg}"],
             f", resumed after epoch {result['resumed_after_epoch']}" if result["resumed_after_epoch"] else "")
    return TrainResult(version, result["best_epoch"], result["epochs_run"], result["metrics"],
                       read=[seq_version, vocab_version], resumed_after_epoch=result["resumed_after_epoch"])


def load_checkpoint(path: Path) -> ProfileEncoder:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = ProfileEncoder(EncoderSpec(**state["spec"]))
    model.load_state_dict(state["model"])
    return model.eval()
