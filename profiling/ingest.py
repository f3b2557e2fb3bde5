"""Ingest stage: read the raw logs, validate them against ``schemas/inputs.yaml``, write Delta.

Rows that fail validation are not dropped: they go to the ``quarantine`` table
with a reason code and a message, and for every source
``read = accepted + quarantined`` holds and is logged. Exact duplicate events
are kept (real logs have them, e.g. CiaoDVD's 106 re-reviewed ratings): they
are events, and the sequence stage orders them by ``event_order``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from profiling.config import ProfilingConfig
from profiling.exceptions import ConfigError, InputError
from profiling.schemas import InputContract, input_contracts
from profiling.tables import TableVersion, write_snapshot

log = logging.getLogger(__name__)

SOURCE_TABLES = {
    "behaviour": "behaviour_events",
    "preference": "preference_events",
    "social": "social_edges",
    "items": "items",
}
_FILE_SUFFIXES = (".csv.gz", ".csv", ".parquet", "")


@dataclass
class SourceCounts:
    path: str | None
    read: int
    accepted: int
    quarantined: int


@dataclass
class IngestResult:
    counts: dict[str, SourceCounts] = field(default_factory=dict)
    written: list[TableVersion] = field(default_factory=list)


def resolve_input_paths(config: ProfilingConfig) -> dict[str, Path | None]:
    """Find each log: the path set for it, else ``<input.dir>/<source>{.csv.gz,.csv,.parquet,/}``."""
    paths: dict[str, Path | None] = {}
    base = Path(config.input.dir) if config.input.dir else None
    if base is not None and not base.is_dir():
        raise ConfigError(f"input.dir: {base} is not a folder")
    for source, contract in input_contracts().items():
        explicit = getattr(config.input, source)
        if explicit:
            path = Path(explicit)
            if not path.exists():
                raise ConfigError(f"input.{source}: {path} does not exist")
            paths[source] = path
            continue
        found = None
        if base is not None:
            found = next((base / f"{source}{s}" for s in _FILE_SUFFIXES if (base / f"{source}{s}").exists()), None)
        if found is None and not contract.optional:
            where = f"in {base} " if base else ""
            raise ConfigError(
                f"input.{source}: no {source} log found {where}(looked for {source}.csv.gz, {source}.csv, "
                f"{source}.parquet, {source}/); set input.dir or input.{source}"
            )
        paths[source] = found
    return paths


def _detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "_delta_log").is_dir():
            return "delta"
        if any(path.glob("*.parquet")):
            return "parquet"
        return "csv"
    return "parquet" if path.suffix == ".parquet" else "csv"


def read_raw(spark: SparkSession, path: Path, contract: InputContract) -> DataFrame:
    """Read one log with every contract column as a string (casting is validation's job)."""
    fmt = _detect_format(path)
    if fmt == "csv":
        df = spark.read.options(header=True, inferSchema=False, mode="PERMISSIVE", multiLine=False).csv(str(path))
    else:
        df = spark.read.format(fmt).load(str(path))
    missing = [c.name for c in contract.columns if c.name not in df.columns]
    required_missing = [c for c in missing if next(x for x in contract.columns if x.name == c).required]
    if required_missing:
        raise InputError(
            f"{path}: {contract.source} log lacks required column(s) {', '.join(required_missing)} "
            f"(found: {', '.join(df.columns) or 'no columns'})"
        )
    for name in missing:
        df = df.withColumn(name, F.lit(None).cast("string"))
    original = df.columns
    return df.select(
        *[F.col(f"`{c}`").cast("string").alias(c) for c in contract.names],
        F.to_json(F.struct(*[F.col(f"`{c}`").cast("string").alias(c) for c in original])).alias("raw_record"),
        F.monotonically_increasing_id().alias("event_order"),
    )


def _parse_ts(name: str) -> Column:
    """Unix seconds (integer text) or a timestamp string, as unix seconds."""
    return F.expr(f"coalesce(try_cast(trim(`{name}`) AS BIGINT), unix_timestamp(try_to_timestamp(trim(`{name}`))))")


def validate(df: DataFrame, contract: InputContract) -> DataFrame:
    """Add typed columns plus ``reason_code`` / ``message`` (null when the row is accepted)."""
    checks: list[tuple[Column, str, Column]] = []
    typed: dict[str, Column] = {}
    for c in contract.columns:
        raw = F.col(c.name)
        blank = raw.isNull() | (F.trim(raw) == "")
        if c.required:
            checks.append((blank, "missing_value", F.lit(f"{c.name} is null or empty")))
        if c.type == "ts":
            value = _parse_ts(c.name)
            checks.append((~blank & value.isNull(), "bad_timestamp",
                           F.format_string(f"{c.name} %s is neither unix seconds nor a timestamp", raw)))
        elif c.type == "double":
            value = F.expr(f"try_cast(trim(`{c.name}`) AS DOUBLE)")
            checks.append((~blank & value.isNull(), "bad_type",
                           F.format_string(f"{c.name} %s is not a number", raw)))
            checks.append((value.isNotNull() & (F.isnan(value) | (F.abs(value) == float("inf"))), "non_finite_value",
                           F.format_string(f"{c.name} %s is not a finite number", raw)))
        else:
            value = F.when(~blank, F.trim(raw))
        typed[c.name] = value
    if contract.source == "social":
        checks.append((F.trim(F.col("user_id")) == F.trim(F.col("other_user_id")), "self_loop",
                       F.lit("social edge from a user to themselves")))
    reason = F.lit(None).cast("string")
    message = F.lit(None).cast("string")
    for condition, code, text in reversed(checks):
        reason = F.when(condition, F.lit(code)).otherwise(reason)
        message = F.when(condition, text).otherwise(message)
    return df.select(
        *[typed[c.name].alias(c.name) for c in contract.columns],
        "raw_record",
        "event_order",
        reason.alias("reason_code"),
        message.alias("message"),
    )


def ingest_logs(
    spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date, run_id: str | None = None
) -> IngestResult:
    """Validate every log and write the accepted rows and the quarantine for ``snapshot_date``."""
    result = IngestResult()
    ingested_at = F.current_timestamp()
    rejected: list[DataFrame] = []
    cached: list[DataFrame] = []
    for source, path in resolve_input_paths(config).items():
        contract = input_contracts()[source]
        if path is None:
            log.info("%s: no file given, writing an empty snapshot", source)
            checked = spark.createDataFrame([], "raw_record string").select(
                *[F.lit(None).cast("string").alias(c) for c in contract.names],
                "raw_record", F.lit(0).cast("bigint").alias("event_order"),
                F.lit(None).cast("string").alias("reason_code"), F.lit(None).cast("string").alias("message"),
            )
        else:
            checked = validate(read_raw(spark, path, contract), contract).persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(checked)
        accepted = checked.where(F.col("reason_code").isNull())
        if source == "items":
            accepted = accepted.withColumn("category", F.split(F.col("category"), r"\|").getItem(0))
        version = write_snapshot(
            spark, config, SOURCE_TABLES[source], accepted.withColumn("ingested_at", ingested_at),
            snapshot_date, run_id,
        )
        result.written.append(version)
        bad = checked.where(F.col("reason_code").isNotNull())
        rejected.append(bad.select(F.lit(source).alias("source"), "raw_record", "reason_code", "message"))
        totals = checked.agg(
            F.count("*").alias("read"), F.count(F.when(F.col("reason_code").isNull(), 1)).alias("accepted")
        ).first()
        counts = SourceCounts(str(path) if path else None, totals["read"], totals["accepted"],
                              totals["read"] - totals["accepted"])
        result.counts[source] = counts
        log.info("%s: read %d = accepted %d + quarantined %d (%s)", source, counts.read, counts.accepted,
                 counts.quarantined, path)
    quarantine = rejected[0]
    for more in rejected[1:]:
        quarantine = quarantine.unionByName(more)
    result.written.append(
        write_snapshot(spark, config, "quarantine", quarantine.withColumn("ingested_at", ingested_at),
                       snapshot_date, run_id)
    )
    runs = spark.createDataFrame(
        [(s, c.path, c.read, c.accepted, c.quarantined) for s, c in result.counts.items()],
        "source string, path string, read bigint, accepted bigint, quarantined bigint",
    )
    result.written.append(
        write_snapshot(spark, config, "ingest_runs", runs.withColumn("ingested_at", ingested_at), snapshot_date, run_id)
    )
    for df in cached:
        df.unpersist()
    return result
