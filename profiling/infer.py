"""Infer stage: score every user in a distributed pass and write the profile tables.

``mapInPandas`` feeds Arrow batches of ``user_sequences`` to Python workers;
the driver reads the registered encoder from MLflow and broadcasts its weights,
each worker builds it once and keeps it for the batches that follow. One pass produces three tables: ``user_profile_embeddings``,
the long-format ``user_interest_weights`` (category, event_type and source
weights, per user and dimension summing to 1, of two horizons: ``short``, the
encoder's event importance summed per key, and ``long``, the decayed counts
over the user's whole history that the sequences stage keeps) and ``user_interest_evidence`` (per interest, the events its
evidence attention is highest on: why the user has that interest).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from profiling import tracking
from profiling.config import ProfilingConfig
from profiling.exceptions import ConfigError, MissingStageOutput
from profiling.model.profiles import WEIGHT_DIMENSIONS, ProfileSettings, profile_rows
from profiling.model.vocabulary import Translation, Vocabulary
from profiling.refresh import REFRESHES, end_users
from profiling.schemas import table
from profiling.tables import TableVersion, current_version, missing_table, qualified, read_snapshot, write_snapshot

log = logging.getLogger(__name__)

SCORED_SCHEMA = (
    "user_id string, embedding array<float>, interest_embeddings array<array<float>>, "
    "interest_weights array<float>, "
    "dimension_weights array<struct<dimension:string,key:string,weight:double,rank:int>>, "
    "evidence array<struct<interest:int,interest_weight:double,interest_category:string,position:int,item:int,"
    "category:string,event_type:string,source:string,attribute:int,ts:bigint,attention:double,rank:int>>"
)
_MODELS: dict[str, object] = {}


@dataclass
class InferResult:
    users: int
    model_version: str
    unseen_items: int = 0  # items of the snapshot the model never saw (scored as unknown)
    unseen_share: float = 0.0  # their share of the snapshot's item events
    full: bool = True  # everyone scored, or the users whose sequences were rebuilt since the last run
    read: list[TableVersion] = field(default_factory=list)
    written: list[TableVersion] = field(default_factory=list)


def scoring_device(use_gpu: bool, assigned: list[str] | None = None):
    """The CPU, or the GPU Spark assigned to this task (``assigned``: its addresses; first GPU if none)."""
    import torch

    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("infer.use_gpu is true but torch sees no CUDA device on this Spark worker")
    return torch.device("cuda", int(assigned[0]) if assigned else 0)


def check_scoring_device(config: ProfilingConfig, cuda_devices: int | None = None) -> None:
    """In local mode the tasks run on the driver: with ``infer.use_gpu`` it must see a GPU, or fail now."""
    if config.infer.use_gpu and config.spark.master.startswith("local"):
        import torch

        found = torch.cuda.device_count() if cuda_devices is None else cuda_devices
        if found == 0:
            raise ConfigError(f"infer.use_gpu is true and spark.master is {config.spark.master!r}, but the driver "
                              f"sees no CUDA device: set infer.use_gpu=false or run on GPU executors")


def _task_gpus() -> list[str] | None:
    from pyspark import TaskContext

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context is not None else None
    return list(gpus.addresses) if gpus is not None else None


def _load_model(key: str, packed, use_gpu: bool):
    """Once per Python worker: the encoder from the broadcast weights, on its device, in eval mode.

    The driver reads the registered model from MLflow once; workers get its weights as a Spark
    broadcast (fetched once per executor), so none of them imports MLflow or opens its store.
    """
    if key not in _MODELS:
        import torch

        from profiling.model.encoder import unpack_encoder

        device = scoring_device(use_gpu, _task_gpus() if use_gpu else None)
        if device.type == "cpu":
            torch.set_num_threads(1)  # one thread per Spark task slot
        _MODELS[key] = unpack_encoder(packed.value, device)
    return _MODELS[key]


def broadcast_encoder(spark: SparkSession, model):
    """The encoder's spec and weights as one Spark broadcast (``pack_encoder``: loads with weights_only;
    the workers need no vocabulary, the driver translates the indices)."""
    from profiling.model.encoder import pack_encoder

    return spark.sparkContext.broadcast(pack_encoder(model, vocabulary=False))


def score_partitions(model_key: str, packed, translation, names: dict[str, dict[int, str]],
                     settings: ProfileSettings, use_gpu: bool = False):
    """The function ``mapInPandas`` runs: sequences in (the snapshot's indices, turned into the model's by the
    broadcast ``translation``), profiles out (``profiling.model.profiles``)."""

    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _load_model(model_key, packed, use_gpu)
        to_model = translation.value
        for frame in frames:
            for start in range(0, len(frame), settings.batch_size):
                part = frame.iloc[start:start + settings.batch_size]
                rows = [to_model.apply(r) for r in part.to_dict("records")]
                yield pd.DataFrame({"user_id": part["user_id"].to_numpy(),
                                    **profile_rows(model, rows, names, settings)})

    return score


def score_sequences(config: ProfilingConfig, sequences: DataFrame, snapshot_vocab: DataFrame, model, packed,
                    model_key: str) -> tuple[DataFrame, Translation]:
    """Every sequence's profile (``SCORED_SCHEMA``), scored in Spark tasks by the broadcast encoder
    ``packed`` (``model``'s weights; ``model_key`` names it in the workers' model cache), after the
    snapshot's indices (``snapshot_vocab``) are mapped to the model's through their keys. Lazy: nothing
    runs until read. Also returns that mapping, with what the model did not know."""
    translation = Translation.from_table(model.vocabulary, snapshot_vocab)
    names = {d: model.vocabulary.names(d) for d in WEIGHT_DIMENSIONS}
    shipped = sequences.sparkSession.sparkContext.broadcast(translation)
    return sequences.select("user_id", "length", *WEIGHT_DIMENSIONS, "item", "attribute", "gap_bucket",
                            "value_bucket", "ts").mapInPandas(
        score_partitions(model_key, packed, shipped, names, ProfileSettings.of(config), config.infer.use_gpu),
        SCORED_SCHEMA), translation


PROFILE_TABLES = ("user_profile_embeddings", "user_interest_weights", "user_interest_evidence")


@dataclass(frozen=True)
class Rescoring:
    """Which sequences an infer run scores: everyone's (``full``) or those rebuilt since the last run."""

    full: bool
    reason: str
    since: dt.date | None = None  # the infer run this one continues


def plan_rescoring(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date, model_version: str,
                   full_refresh: bool = False) -> Rescoring:
    """Everyone under a new model version, on the first run, on a date before the newest run, or when
    asked; otherwise the users whose sequences were rebuilt after the last run's date."""
    table_name = qualified(config, "user_profile_embeddings")
    if full_refresh:
        return Rescoring(True, "--full-refresh")
    if not spark.catalog.tableExists(table_name):
        return Rescoring(True, "no earlier profiles")
    dates = {r["snapshot_date"]: r["model_version"] for r in spark.table(table_name)
             .groupBy("snapshot_date").agg(F.max("model_version").alias("model_version")).collect()}
    before = [d for d in dates if d < snapshot_date]
    if not before:
        return Rescoring(True, "no earlier profiles")
    newest, since = max(dates), max(before)
    if newest > snapshot_date:
        return Rescoring(True, f"a date before the newest profiles ({newest})")
    if dates[since] != model_version:
        return Rescoring(True, f"model version {model_version}, the profiles of {since} are of {dates[since]}")
    return Rescoring(False, f"sequences rebuilt since {since}", since)


def _sequences_to_score(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date,
                        rescoring: Rescoring) -> tuple[DataFrame, TableVersion]:
    """The snapshot's sequences, all of them or those of partitions after ``rescoring.since``."""
    full = qualified(config, "user_sequences")
    if not spark.catalog.tableExists(full):
        raise missing_table(config, "user_sequences")
    version = current_version(spark, full)
    refreshes = qualified(config, REFRESHES)
    refreshed = spark.catalog.tableExists(refreshes) and not spark.table(refreshes).where(
        F.col("snapshot_date") == F.lit(snapshot_date)).isEmpty()
    if not refreshed and spark.sql(f"SELECT 1 FROM {full} VERSION AS OF {version} "
                                   f"WHERE snapshot_date = DATE'{snapshot_date}'").isEmpty():
        raise MissingStageOutput(f"{full} holds no refresh of {snapshot_date}: run the sequences stage for that "
                                 "date first")
    source = f"{full} VERSION AS OF {version}"
    if not rescoring.full:
        source = f"(SELECT * FROM {source} WHERE snapshot_date > DATE'{rescoring.since}')"
    rows = spark.sql(table("user_sequences").snapshot_sql(source, f"DATE'{snapshot_date}'"))
    return rows, TableVersion(full, version)


def infer_profiles(
    spark: SparkSession,
    config: ProfilingConfig,
    snapshot_date: dt.date,
    model_version: str,
    run_id: str,
    full_refresh: bool = False,
) -> InferResult:
    """Write ``user_profile_embeddings``, ``user_interest_weights`` and ``user_interest_evidence``: for the
    users whose sequences were rebuilt since the last infer run, or for everyone (:func:`plan_rescoring`).
    Users whose sequences ended (gone from every log) have their profiles ended too."""
    check_scoring_device(config)
    rescoring = plan_rescoring(spark, config, snapshot_date, model_version, full_refresh)
    sequences, seq_version = _sequences_to_score(spark, config, snapshot_date, rescoring)
    vocab, vocab_version = read_snapshot(spark, config, "vocabularies", snapshot_date)
    model_uri = f"models:/{config.mlflow.registered_model}/{model_version}"
    model = tracking.load_encoder(config, model_version)
    packed = broadcast_encoder(spark, model)
    scored, translation = score_sequences(config, sequences, vocab, model, packed,
                                          f"{config.tracking_uri} {model_uri}")
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    stamp = F.current_timestamp()
    ends = F.lit(None).cast("date").alias("removed_on")
    embeddings = scored.select(
        "user_id", "embedding", "interest_embeddings", "interest_weights", F.lit("short").alias("horizon"),
        F.lit(model_version).alias("model_version"), F.lit(run_id).alias("mlflow_run_id"),
        stamp.alias("computed_at"), ends,
    )
    v_emb = write_snapshot(spark, config, "user_profile_embeddings", embeddings, snapshot_date, run_id)
    short = scored.select("user_id", F.explode("dimension_weights").alias("w"), F.lit("short").alias("horizon"))
    long = sequences.select("user_id", F.explode("long_term_weights").alias("w"), F.lit("long").alias("horizon"))
    weights = short.unionByName(long).select(
        "user_id", "horizon", "w.dimension", "w.key", "w.weight", "w.rank",
        F.lit(model_version).alias("model_version"), ends)
    v_w = write_snapshot(spark, config, "user_interest_weights", weights, snapshot_date, run_id)
    v_ev = write_snapshot(spark, config, "user_interest_evidence",
                          _evidence_rows(scored, model.vocabulary).withColumns(
                              {"model_version": F.lit(model_version), "removed_on": ends}),
                          snapshot_date, run_id)
    users = scored.count()
    scored.unpersist()
    packed.destroy()
    # Sequences ended since the last run (by any date, when rescoring everyone) end the profiles too.
    newly = f" AND removed_on > DATE'{rescoring.since}'" if rescoring.since else ""
    ended = spark.sql(f"SELECT DISTINCT user_id, removed_on FROM {seq_version.name} VERSION AS OF "
                      f"{seq_version.version} WHERE removed_on <= DATE'{snapshot_date}'{newly}").persist()
    written = [v_emb, v_w, v_ev]
    if not ended.isEmpty():
        for i, name in enumerate(PROFILE_TABLES):
            end_users(spark, config, name, ended, run_id)
            written[i] = TableVersion(written[i].name, current_version(spark, written[i].name))
    ended.unpersist()
    log.info("scored %d users with %s (%s: %s)", users, model_uri, "everyone" if rescoring.full else "daily",
             rescoring.reason)
    if translation.unseen_items:
        log.info("infer: %d items of %s (%.2f %% of its item events) are unknown to model version %s and scored "
                 "as unknown", translation.unseen_items, snapshot_date, 100 * translation.unseen_share, model_version)
    return InferResult(users, model_version, translation.unseen_items, translation.unseen_share,
                       full=rescoring.full, read=[seq_version, vocab_version], written=written)


def _evidence_rows(scored: DataFrame, vocabulary: Vocabulary) -> DataFrame:
    """Explode the evidence and name its items and preference attributes from the model's vocabulary."""
    spark = scored.sparkSession

    def keys(dimension: str, column: str) -> DataFrame:
        named = pd.DataFrame(list(vocabulary.names(dimension).items()), columns=[f"{dimension}_idx", column])
        return spark.createDataFrame(named.astype({f"{dimension}_idx": "int32", column: "object"}),
                                     f"{dimension}_idx int, {column} string")

    events = scored.select("user_id", F.explode("evidence").alias("e")).select(
        "user_id", "e.*").withColumnsRenamed({"item": "item_idx", "attribute": "attribute_idx"})
    return (events.join(keys("item", "item_id"), "item_idx", "left")
            .join(F.broadcast(keys("attribute", "attribute")), "attribute_idx", "left"))
