"""Ingest stage: read the raw logs, validate them against ``schemas/inputs.yaml``, write Delta.

Rows that fail validation are not dropped: they go to the ``quarantine`` table
with a reason code and a message, and for every source
``read = accepted + quarantined`` holds and is logged. Reason codes, first match wins:
missing_value, id_too_long, bad_encoding, bad_timestamp, negative_timestamp,
timestamp_in_milliseconds, future_timestamp, bad_type, non_finite_value,
self_loop, unknown_event_type, then duplicate_row for the second and later copies
of a row identical in every contract column (the first copy is kept). A file that
cannot be read at all (empty, truncated gzip, wrong delimiter, missing columns)
stops the stage with one line naming the file and the problem.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from profiling.config import ProfilingConfig
from profiling.exceptions import ConfigError, InputError
from profiling.ids import normalised
from profiling.privacy import USER_COLUMNS, id_key, pseudonymise
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
# 1e11 seconds is the year 5138; as milliseconds it is March 1973. Values above it are milliseconds.
MILLISECONDS_FROM = 100_000_000_000
# What Spark's UTF-8 decoder puts where the bytes were not UTF-8.
REPLACEMENT_CHARACTER = "\ufffd"
# Messages of the JVM errors that mean "this compressed file is cut short or corrupt".
_UNREADABLE_MARKERS = ("Unexpected end of input stream", "Unexpected end of ZLIB input stream", "EOFException",
                       "Not in GZIP format", "invalid block type", "incorrect header check", "Corrupt GZIP trailer",
                       "invalid distance", "invalid stored block lengths")


@dataclass(frozen=True)
class ValidationRules:
    """What makes a row valid beyond its contract: from the config and the snapshot date."""

    event_types: tuple[str, ...] | None
    convert_milliseconds: bool
    latest_ts: int

    @classmethod
    def for_snapshot(cls, config: ProfilingConfig, snapshot_date: dt.date) -> ValidationRules:
        day_end = dt.datetime.combine(snapshot_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
        latest = day_end + dt.timedelta(hours=config.input.future_tolerance_hours)
        types = config.input.event_types
        return cls(tuple(types) if types is not None else None,
                   config.input.millisecond_timestamps == "convert", int(latest.timestamp()))


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
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: {contract.source} log is an empty file (not even a header row)")
    if fmt == "csv":
        df = spark.read.options(header=True, inferSchema=False, mode="PERMISSIVE", multiLine=False).csv(str(path))
    else:
        df = spark.read.format(fmt).load(str(path))
    missing = [c.name for c in contract.columns if c.name not in df.columns]
    required_missing = [c for c in missing if next(x for x in contract.columns if x.name == c).required]
    if required_missing:
        hint = ""
        if len(df.columns) == 1:
            delimiter = next((d for d in (";", "\t", "|") if d in df.columns[0]), None)
            if delimiter is not None:
                hint = f"; the header looks delimited by {delimiter!r}, and profiling reads comma-separated CSV"
        raise InputError(
            f"{path}: {contract.source} log lacks required column(s) {', '.join(required_missing)} "
            f"(found: {', '.join(df.columns) or 'no columns'}){hint}"
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
    text = normalised(F.col(name))
    return F.coalesce(text.try_cast("bigint"), F.unix_timestamp(F.try_to_timestamp(text)))


def validate(df: DataFrame, contract: InputContract, rules: ValidationRules) -> DataFrame:
    """Add typed columns plus ``reason_code`` / ``message`` (null when the row is accepted)."""
    checks: list[tuple[Column, str, Column]] = []
    typed: dict[str, Column] = {}
    for c in contract.columns:
        raw = F.col(c.name)
        blank = raw.isNull() | (normalised(raw) == "")
        if c.required:
            checks.append((blank, "missing_value", F.lit(f"{c.name} is null or empty")))
        if c.max_length is not None:
            checks.append((F.length(raw) > c.max_length, "id_too_long",
                           F.format_string(f"{c.name} is %d characters long (at most {c.max_length})",
                                           F.length(raw))))
        checks.append((F.instr(raw, REPLACEMENT_CHARACTER) > 0, "bad_encoding",
                       F.lit(f"{c.name} holds bytes that are not UTF-8")))
        if c.type == "ts":
            parsed = _parse_ts(c.name)
            millis = parsed >= MILLISECONDS_FROM
            value = F.when(millis, F.floor(parsed / 1000)).otherwise(parsed) if rules.convert_milliseconds else parsed
            checks.append((~blank & parsed.isNull(), "bad_timestamp",
                           F.format_string(f"{c.name} %s is neither unix seconds nor a timestamp", raw)))
            checks.append((parsed < 0, "negative_timestamp", F.format_string(f"{c.name} %s is before 1970", raw)))
            if not rules.convert_milliseconds:
                checks.append((millis, "timestamp_in_milliseconds", F.format_string(
                    f"{c.name} %s looks like milliseconds (as seconds: %s); set input.millisecond_timestamps: "
                    "convert to accept it", raw, F.date_format(F.timestamp_millis(F.least(parsed, F.lit(253402300799999))), "yyyy-MM-dd'T'HH:mm:ss'Z'"))))
            checks.append((value > rules.latest_ts, "future_timestamp", F.format_string(
                f"{c.name} %s (%s) is after the snapshot day (tolerance: input.future_tolerance_hours)",
                raw, F.date_format(F.timestamp_seconds(F.least(value, F.lit(253402300799))), "yyyy-MM-dd'T'HH:mm:ss'Z'"))))
        elif c.type == "double":
            value = normalised(raw).try_cast("double")
            checks.append((~blank & value.isNull(), "bad_type",
                           F.format_string(f"{c.name} %s is not a number", raw)))
            checks.append((value.isNotNull() & (F.isnan(value) | (F.abs(value) == float("inf"))), "non_finite_value",
                           F.format_string(f"{c.name} %s is not a finite number", raw)))
        else:
            value = F.when(~blank, normalised(raw))
        typed[c.name] = value
    if contract.source == "social":
        checks.append((normalised(F.col("user_id")) == normalised(F.col("other_user_id")), "self_loop",
                       F.lit("social edge from a user to themselves")))
    if contract.source == "behaviour" and rules.event_types is not None:
        allowed = ", ".join(rules.event_types)
        checks.append((~normalised(F.col("event_type")).isin(*rules.event_types), "unknown_event_type",
                       F.format_string(f"event_type %s is not one of input.event_types ({allowed})",
                                       F.col("event_type"))))
    reason = F.lit(None).cast("string")
    message = F.lit(None).cast("string")
    for condition, code, text in reversed(checks):
        reason = F.when(F.coalesce(condition, F.lit(False)), F.lit(code)).otherwise(reason)
        message = F.when(F.coalesce(condition, F.lit(False)), text).otherwise(message)
    return df.select(
        *[typed[c.name].alias(c.name) for c in contract.columns],
        "raw_record",
        "event_order",
        reason.alias("reason_code"),
        message.alias("message"),
    )


def quarantine_duplicates(checked: DataFrame, contract: InputContract) -> DataFrame:
    """Mark the second and later copies of an accepted row (equal in every contract column) duplicate_row."""
    copies = Window.partitionBy("reason_code", *contract.names).orderBy("event_order")
    duplicate = F.col("reason_code").isNull() & (F.row_number().over(copies) > 1)
    return checked.select(
        *[c for c in checked.columns if c not in ("reason_code", "message")],
        F.when(duplicate, F.lit("duplicate_row")).otherwise(F.col("reason_code")).alias("reason_code"),
        F.when(duplicate, F.lit("an identical earlier row was kept")).otherwise(F.col("message")).alias("message"),
    )


def _count(checked: DataFrame, path: Path, source: str):
    """Read = accepted + quarantined; the first action on the file, so unreadable files fail here."""
    try:
        return checked.agg(
            F.count("*").alias("read"), F.count(F.when(F.col("reason_code").isNull(), 1)).alias("accepted")
        ).first()
    except Exception as exc:  # a Py4JJavaError whose text names the JVM's cause
        text = str(exc)
        marker = next((m for m in _UNREADABLE_MARKERS if m in text), None)
        if marker is None:
            raise
        raise InputError(f"{path}: {source} log cannot be read to the end ({marker}): "
                         "a truncated or corrupt compressed file") from None


def ingest_logs(
    spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date, run_id: str | None = None
) -> IngestResult:
    """Validate every log and write the accepted rows and the quarantine for ``snapshot_date``."""
    result = IngestResult()
    rules = ValidationRules.for_snapshot(config, snapshot_date)
    key = id_key(config)
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
            checked = quarantine_duplicates(validate(read_raw(spark, path, contract), contract, rules), contract)
            user_columns = [c for c in USER_COLUMNS if c in contract.names]
            if key is not None and user_columns:
                checked = pseudonymise(checked, user_columns, key)
            checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(checked)
        totals = _count(checked, path, source)
        if path is not None and totals["read"] == 0:
            log.warning("%s: %s holds no rows", source, path)
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
