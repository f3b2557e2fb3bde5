"""Ingest stage: read the raw logs, validate them against ``schemas/inputs.yaml``, write Delta.

Rows that fail validation are not dropped: they go to the ``quarantine`` table
with a reason code (``profiling.quality.REASONS``) and a message, and for every
source ``read = accepted + quarantined`` holds and is logged. CSV is read as
RFC 4180 (quoted fields may hold delimiters, doubled quotes and line breaks), so
``read`` counts records, not lines. A log that loses more of its rows to the
quarantine than the quality gates allow stops the run after the quarantine and
``ingest_runs`` are written, and before any event table is. A file that cannot be
read at all (empty, truncated gzip, wrong delimiter, missing columns) stops the
stage with one line naming the file and the problem.

Every row written carries the run's ``ingest_id``, and ``ingest_runs`` is written
last: the later stages read a snapshot only when every table's rows come from the
run ``ingest_runs`` records as complete (:func:`complete_ingest_id`), so an ingest
killed between its commits cannot hand them a mix of two runs.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from profiling import progress
from profiling.config import ProfilingConfig
from profiling.exceptions import ConfigError, DataQualityError, IncompleteIngest, InputError, MissingStageOutput
from profiling.ids import normalised
from profiling.privacy import USER_COLUMNS, id_key, pseudonymise
from profiling.quality import EVENT_TYPES_SHOWN, TOP_VALUES, LogQuality, QualityReport
from profiling.schemas import InputColumn, InputContract, input_contracts
from profiling.tables import TableVersion, merge_log, missing_table, qualified, write_snapshot

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
GZIP_MAGIC = b"\x1f\x8b"
# A CSV record with more fields than this cannot be parsed at all (the parser's buffer); records
# with more fields than the header but fewer than this are quarantined as malformed_row.
MAX_CSV_FIELDS = 1 << 20
_MALFORMED = "_corrupt_record"
# RFC 4180: fields quoted with ", a quote inside a quoted field doubled, line breaks allowed in quotes.
CSV_OPTIONS = {"header": "true", "multiLine": "true", "quote": '"', "escape": '"', "inferSchema": "false"}
# Messages of the JVM errors that mean "this compressed file is cut short or corrupt".
_UNREADABLE_MARKERS = ("Unexpected end of input stream", "Unexpected end of ZLIB input stream", "EOFException",
                       "Not in GZIP format", "invalid block type", "incorrect header check", "Corrupt GZIP trailer",
                       "invalid distance", "invalid stored block lengths")
# Reasons whose offending value is an id: the report names the column, never the id.
_ID_REASONS = {"missing_value", "id_too_long", "bad_encoding", "self_loop"}


@dataclass(frozen=True)
class ValidationRules:
    """What makes a row valid beyond its contract: from the config and the snapshot date."""

    event_types: tuple[str, ...] | None
    convert_milliseconds: bool
    latest_ts: int

    @classmethod
    def for_snapshot(cls, config: ProfilingConfig, snapshot_date: dt.date) -> ValidationRules:
        day_end = calendar.timegm((snapshot_date + dt.timedelta(days=1)).timetuple())
        latest = day_end + int(config.input.future_tolerance_hours * 3600)
        types = config.input.event_types
        return cls(tuple(types) if types is not None else None,
                   config.input.millisecond_timestamps == "convert", latest)


@dataclass
class IngestResult:
    report: QualityReport
    written: list[TableVersion] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, LogQuality]:
        return self.report.logs


def dated(path: str, snapshot_date: dt.date) -> Path:
    """An input path setting for one day: ``{date}`` in it becomes the snapshot date (YYYY-MM-DD), so one
    config reads each day's folder of new rows (``/logs/{date}``)."""
    return Path(path.replace("{date}", snapshot_date.isoformat()))


def resolve_input_paths(config: ProfilingConfig, snapshot_date: dt.date) -> dict[str, Path | None]:
    """Find each log: the path set for it, else ``<input.dir>/<source>{.csv.gz,.csv,.parquet,/}``."""
    paths: dict[str, Path | None] = {}
    base = dated(config.input.dir, snapshot_date) if config.input.dir else None
    if base is not None and not base.is_dir():
        raise ConfigError(f"input.dir: {base} is not a folder")
    for source, contract in input_contracts().items():
        explicit = getattr(config.input, source)
        if explicit:
            path = dated(explicit, snapshot_date)
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


def _data_files(path: Path) -> list[Path]:
    """The files Spark reads for ``path`` (it skips names starting with ``_`` or ``.``)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(("_", ".")))


def _check_compression(path: Path, source: str) -> None:
    """Spark picks the codec by the file name: a name and content that disagree misread every byte."""
    for file in _data_files(path):
        with file.open("rb") as handle:
            head = handle.read(2)
        if file.name.endswith(".gz") and head and head != GZIP_MAGIC:
            raise InputError(f"{file}: {source} log is named .gz but is not gzip-compressed "
                             f"(plain text?); rename it without .gz or compress it")
        if not file.name.endswith(".gz") and head == GZIP_MAGIC:
            raise InputError(f"{file}: {source} log is gzip-compressed but its name does not end in .gz; "
                             f"rename it {file.name}.gz")


def _read_csv(spark: SparkSession, path: Path) -> tuple[DataFrame, list[str]]:
    """Every column as text, plus the raw text of records that do not parse (``_corrupt_record``)."""
    columns = spark.read.options(**CSV_OPTIONS).csv(str(path)).columns
    schema = T.StructType([T.StructField(c, T.StringType()) for c in columns]
                          + [T.StructField(_MALFORMED, T.StringType())])
    df = spark.read.options(**CSV_OPTIONS, mode="PERMISSIVE", columnNameOfCorruptRecord=_MALFORMED,
                            maxColumns=str(MAX_CSV_FIELDS)).schema(schema).csv(str(path))
    return df, columns


def _nanosecond_columns(path: Path) -> set[str]:
    """Parquet columns of TIMESTAMP(NANOS): Spark reads them as plain longs of nanoseconds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = path if path.is_file() else next(iter(sorted(path.rglob("*.parquet"))), None)
    if first is None:
        return set()
    return {f.name for f in pq.read_schema(first) if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}


_FRACTIONAL = (T.FloatType, T.DoubleType, T.DecimalType)


def _whole_number(value: Column) -> tuple[Column, Column]:
    """(the value floored to an integer, as text or null if it has none; whether it was whole already)."""
    d = value.cast("double")
    finite = d.isNotNull() & ~F.isnan(d) & (F.abs(d) != float("inf"))
    floored = F.when(finite, F.floor(d).try_cast("bigint").cast("string"))
    return floored, finite & (F.floor(d) == d)


def _as_text(df: DataFrame, column: InputColumn, nanoseconds: bool) -> tuple[Column, Column | None]:
    """A typed (Parquet, Delta) column as the text validation reads, and a message where it cannot be.

    Rules: timestamps and dates become unix seconds (TIMESTAMP(NANOS) too); a number in ``ts`` is
    unix seconds with any fraction of a second dropped; a numeric id is its whole number (``7.0``
    is id ``7``, so it joins with the ``7`` of a CSV log), and an id with a fraction is quarantined.
    """
    name = column.name
    value = F.col(f"`{name}`")
    kind = df.schema[name].dataType
    if isinstance(kind, T.StringType):
        return value, None
    if column.type == "ts":
        if isinstance(kind, (T.TimestampType, T.TimestampNTZType, T.DateType)):
            return F.unix_seconds(value.cast("timestamp")).cast("string"), None
        if nanoseconds:
            return F.expr(f"`{name}` div 1000000000").cast("string"), None
        if isinstance(kind, _FRACTIONAL):
            return F.coalesce(_whole_number(value)[0], value.cast("string")), None
    elif column.max_length is not None and isinstance(kind, _FRACTIONAL):
        floored, whole = _whole_number(value)
        problem = F.when(value.isNotNull() & ~whole, F.format_string(
            f"{name} %s is a number with a fraction: numeric ids must be whole numbers", value.cast("string")))
        return F.when(whole, floored).otherwise(value.cast("string")), problem
    return value.cast("string"), None


def read_raw(spark: SparkSession, path: Path, contract: InputContract) -> DataFrame:
    """One log with every contract column as text (casting is validation's job), the raw record as
    JSON, the file order, the CSV records that do not parse (``malformed``) and, for typed sources,
    the values that cannot be read as their contract says (``type_problems``, per column)."""
    fmt = _detect_format(path)
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: {contract.source} log is an empty file (not even a header row)")
    if fmt == "csv":
        _check_compression(path, contract.source)
        try:  # the header is read now: a file cut short in its first megabyte fails here
            df, columns = _read_csv(spark, path)
        except Exception as exc:
            unreadable = _unreadable(exc, path, contract.source)
            if unreadable is None:
                raise
            raise unreadable from None
    else:
        df = spark.read.format(fmt).load(str(path))
        columns = df.columns
    missing = [c.name for c in contract.columns if c.name not in columns]
    required_missing = [c.name for c in contract.columns if c.name in missing and c.required]
    if required_missing:
        hint = ""
        if len(columns) == 1:
            delimiter = next((d for d in (";", "\t", "|") if d in columns[0]), None)
            if delimiter is not None:
                hint = f"; the header looks delimited by {delimiter!r}, and profiling reads comma-separated CSV"
        raise InputError(
            f"{path}: {contract.source} log lacks required column(s) {', '.join(required_missing)} "
            f"(found: {', '.join(columns) or 'no columns'}){hint}"
        )
    for name in missing:
        df = df.withColumn(name, F.lit(None).cast("string"))
    nanos = _nanosecond_columns(path) if fmt == "parquet" else set()
    texts, problems = {}, {}
    for column in contract.columns:
        texts[column.name], problem = _as_text(df, column, column.name in nanos)
        if problem is not None:
            problems[column.name] = problem
    malformed = F.col(_MALFORMED) if fmt == "csv" else F.lit(None).cast("string")
    raw = [F.col(f"`{c}`").cast("string").alias(c) for c in columns] + [malformed.alias("_raw")]
    type_problems = (F.create_map(*[x for n, p in problems.items() for x in (F.lit(n), p)]) if problems
                     else F.lit(None).cast("map<string,string>"))
    return df.select(
        *[texts[c].alias(c) for c in contract.names],
        F.to_json(F.struct(*raw)).alias("raw_record"),  # null fields (``_raw`` of good records) are left out
        F.monotonically_increasing_id().alias("event_order"),
        malformed.alias("malformed"),
        type_problems.alias("type_problems"),
    )


def _parse_ts(name: str) -> Column:
    """Unix seconds (a number, any fraction of a second dropped) or a timestamp string, as unix seconds."""
    text = normalised(F.col(name))
    number = text.try_cast("double")
    finite = number.isNotNull() & ~F.isnan(number) & (F.abs(number) != float("inf"))
    return F.coalesce(text.try_cast("bigint"), F.when(finite, F.floor(number).try_cast("bigint")),
                      F.unix_timestamp(F.try_to_timestamp(text)))


def _clip(value: Column, length: int = 80) -> Column:
    return F.when(F.length(value) > length, F.concat(F.substring(value, 1, length), F.lit("..."))).otherwise(value)


def validate(df: DataFrame, contract: InputContract, rules: ValidationRules) -> DataFrame:
    """Add typed columns plus ``reason_code`` / ``message`` (null when the row is accepted) and
    ``offending``: the value the reason is about, or the column's name when that value is an id."""
    checks: list[tuple[Column, str, Column, Column | None]] = [(
        F.col("malformed").isNotNull(), "malformed_row",
        F.lit(f"the record does not parse as CSV with the header's {len(contract.columns)} contract columns "
              "(a field count that differs from the header's, or an unclosed quote)"), None)]
    typed: dict[str, Column] = {}
    for c in contract.columns:
        raw = F.col(c.name)
        name = F.lit(c.name)
        blank = raw.isNull() | (normalised(raw) == "")
        if c.required:
            checks.append((blank, "missing_value", F.lit(f"{c.name} is null or empty"), name))
        if c.max_length is not None:
            checks.append((F.length(raw) > c.max_length, "id_too_long",
                           F.format_string(f"{c.name} is %d characters long (at most {c.max_length})",
                                           F.length(raw)), name))
        checks.append((F.instr(raw, REPLACEMENT_CHARACTER) > 0, "bad_encoding",
                       F.lit(f"{c.name} holds bytes that are not UTF-8"), name))
        problem = F.col("type_problems")[c.name]
        checks.append((problem.isNotNull(), "bad_type", problem, name))
        if c.type == "ts":
            parsed = _parse_ts(c.name)
            millis = parsed >= MILLISECONDS_FROM
            value = F.when(millis, F.floor(parsed / 1000)).otherwise(parsed) if rules.convert_milliseconds else parsed
            shown = _clip(raw)
            checks.append((~blank & parsed.isNull(), "bad_timestamp",
                           F.format_string(f"{c.name} %s is neither unix seconds nor a timestamp", raw), shown))
            checks.append((parsed < 0, "negative_timestamp", F.format_string(f"{c.name} %s is before 1970", raw),
                           shown))
            if not rules.convert_milliseconds:
                checks.append((millis, "timestamp_in_milliseconds", F.format_string(
                    f"{c.name} %s looks like milliseconds (as seconds: %s); set input.millisecond_timestamps: "
                    "convert to accept it", raw, F.date_format(F.timestamp_millis(F.least(parsed, F.lit(253402300799999))), "yyyy-MM-dd'T'HH:mm:ss'Z'")),
                    shown))
            checks.append((value > rules.latest_ts, "future_timestamp", F.format_string(
                f"{c.name} %s (%s) is after the snapshot day (tolerance: input.future_tolerance_hours)",
                raw, F.date_format(F.timestamp_seconds(F.least(value, F.lit(253402300799))), "yyyy-MM-dd'T'HH:mm:ss'Z'")),
                shown))
        elif c.type == "double":
            value = normalised(raw).try_cast("double")
            checks.append((~blank & value.isNull(), "bad_type",
                           F.format_string(f"{c.name} %s is not a number", raw), _clip(raw)))
            checks.append((value.isNotNull() & (F.isnan(value) | (F.abs(value) == float("inf"))), "non_finite_value",
                           F.format_string(f"{c.name} %s is not a finite number", raw), _clip(raw)))
        else:
            value = F.when(~blank, normalised(raw))
        typed[c.name] = value
    if contract.source == "social":
        checks.append((normalised(F.col("user_id")) == normalised(F.col("other_user_id")), "self_loop",
                       F.lit("social edge from a user to themselves"), F.lit("user_id")))
    if contract.source == "behaviour" and rules.event_types is not None:
        allowed = ", ".join(rules.event_types)
        checks.append((~normalised(F.col("event_type")).isin(*rules.event_types), "unknown_event_type",
                       F.format_string(f"event_type %s is not one of input.event_types ({allowed})",
                                       F.col("event_type")), _clip(normalised(F.col("event_type")))))
    reason = F.lit(None).cast("string")
    message = F.lit(None).cast("string")
    offending = F.lit(None).cast("string")
    for condition, code, text, what in reversed(checks):
        hit = F.coalesce(condition, F.lit(False))
        reason = F.when(hit, F.lit(code)).otherwise(reason)
        message = F.when(hit, text).otherwise(message)
        offending = F.when(hit, what if what is not None else F.lit(None).cast("string")).otherwise(offending)
    return df.select(
        *[typed[c.name].alias(c.name) for c in contract.columns],
        "raw_record",
        "event_order",
        reason.alias("reason_code"),
        message.alias("message"),
        offending.alias("offending"),
    )


def quarantine_duplicates(checked: DataFrame, contract: InputContract) -> DataFrame:
    """Mark the second and later copies of an accepted row (equal in every contract column) duplicate_row."""
    copies = Window.partitionBy("reason_code", *contract.names).orderBy("event_order")
    duplicate = F.col("reason_code").isNull() & (F.row_number().over(copies) > 1)
    kept = [c for c in checked.columns if c not in ("reason_code", "message", "offending")]
    return checked.select(
        *kept,
        F.when(duplicate, F.lit("duplicate_row")).otherwise(F.col("reason_code")).alias("reason_code"),
        F.when(duplicate, F.lit("an identical earlier row was kept")).otherwise(F.col("message")).alias("message"),
        F.when(duplicate, F.lit(None).cast("string")).otherwise(F.col("offending")).alias("offending"),
    )


def _unreadable(exc: Exception, path: Path, source: str) -> InputError | None:
    """The one-line error for a JVM failure that means the file cannot be read, if it is one."""
    text = str(exc)
    marker = next((m for m in _UNREADABLE_MARKERS if m in text), None)
    if marker is not None:
        return InputError(f"{path}: {source} log cannot be read to the end ({marker}): "
                          "a truncated or corrupt compressed file")
    if "TextParsingException" in text and "ArrayIndexOutOfBounds" in text:
        return InputError(f"{path}: {source} log has a record of more than {MAX_CSV_FIELDS:,} fields, "
                          "which cannot be parsed as CSV")
    return None


def _measure(checked: DataFrame, source: str, path: Path | None) -> LogQuality:
    """Counts per reason and the top offending values: the first actions on the file, so unreadable
    files fail here."""
    try:
        counted = {r["reason_code"]: r["count"] for r in checked.groupBy("reason_code").count().collect()}
    except Exception as exc:  # a Py4JJavaError whose text names the JVM's cause
        unreadable = _unreadable(exc, path, source) if path is not None else None
        if unreadable is None:
            raise
        raise unreadable from None
    reasons = {r: n for r, n in counted.items() if r is not None}
    quality = LogQuality(source, str(path) if path else None, sum(counted.values()), counted.get(None, 0), reasons)
    if reasons:
        ranked = Window.partitionBy("reason_code").orderBy(F.desc("rows"), "offending")
        top = (checked.where(F.col("reason_code").isNotNull() & F.col("offending").isNotNull())
               .groupBy("reason_code", "offending").agg(F.count("*").alias("rows"))
               .withColumn("r", F.row_number().over(ranked)).where(F.col("r") <= TOP_VALUES)
               .orderBy("reason_code", "r").collect())
        for row in top:
            quality.top_values.setdefault(row["reason_code"], []).append((row["offending"], row["rows"]))
    return quality


def _empty_log(spark: SparkSession, contract: InputContract) -> DataFrame:
    return spark.createDataFrame([], "raw_record string").select(
        *[F.lit(None).cast("string").alias(c) for c in contract.names],
        "raw_record", F.lit(0).cast("bigint").alias("event_order"),
        *[F.lit(None).cast("string").alias(c) for c in ("reason_code", "message", "offending")],
    )


def _count_users(checked: dict[str, DataFrame]) -> tuple[int, int]:
    """(users in any log, users with no accepted behaviour event)."""
    accepted = {s: df.where(F.col("reason_code").isNull()) for s, df in checked.items()}
    named = [accepted[s].select(F.col(c).alias("user_id")) for s in ("behaviour", "preference", "social")
             for c in USER_COLUMNS if c in accepted[s].columns]
    users = named[0]
    for more in named[1:]:
        users = users.unionByName(more)
    users = users.distinct().persist()
    total = users.count()
    without = users.join(accepted["behaviour"].select("user_id"), "user_id", "left_anti").count()
    users.unpersist()
    return total, without


def check_log(spark: SparkSession, source: str, path: Path | None, rules: ValidationRules,
              key: bytes | None) -> tuple[DataFrame, LogQuality]:
    """One log read, validated (ids pseudonymised when ``key`` is set) and measured, before anything is
    written: its rows, each with its reason or none (persisted: the caller unpersists), and their counts."""
    contract = input_contracts()[source]
    if path is None:
        frame = _empty_log(spark, contract)
    else:
        frame = quarantine_duplicates(validate(read_raw(spark, path, contract), contract, rules), contract)
        user_columns = [c for c in USER_COLUMNS if c in contract.names]
        if key is not None and user_columns:
            # The text of an unparsable record would keep the raw ids that pseudonyms replace.
            frame = pseudonymise(frame.withColumn("raw_record", F.to_json(F.map_filter(
                F.from_json("raw_record", "map<string,string>"), lambda k, _: k != "_raw"))),
                user_columns, key)
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
    quality = _measure(frame, source, path)
    if path is not None and quality.read == 0:
        log.warning("%s: %s holds no rows", source, path)
    return frame, quality


def ingest_logs(
    spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date, run_id: str | None = None
) -> IngestResult:
    """Validate every log and write the accepted rows, the quarantine and ``ingest_runs`` for ``snapshot_date``.

    Raises :class:`DataQualityError` (after writing the quarantine and ``ingest_runs``) when a log
    passes a quality gate; the event tables then keep what they held.
    """
    rules = ValidationRules.for_snapshot(config, snapshot_date)
    key = id_key(config)
    report = QualityReport(snapshot_date, uuid.uuid4().hex, config.input.max_quarantined_share,
                           dict(config.input.max_reason_share))
    checked: dict[str, DataFrame] = {}
    paths = resolve_input_paths(config, snapshot_date)
    for source, path in paths.items():
        with progress.step(f"ingest: validating the {source} log {path or '(none given: empty)'}"):
            checked[source], report.logs[source] = check_log(spark, source, path, rules, key)
    report.users, report.users_without_behaviour = _count_users(checked)
    report.event_types = {r["event_type"]: r["count"] for r in checked["behaviour"].where(
        F.col("reason_code").isNull()).groupBy("event_type").count()
        .orderBy(F.desc("count"), "event_type").limit(EVENT_TYPES_SHOWN).collect()}
    report.apply_gates()
    for line in report.lines():
        log.info("ingest: %s", line)
    result = IngestResult(report)
    ingest_id = F.lit(report.ingest_id)
    ingested_at = F.current_timestamp()
    with progress.step(f"ingest: writing the snapshot {snapshot_date}"):
        if not report.stopped:
            for source, frame in checked.items():
                accepted = frame.where(F.col("reason_code").isNull())
                if source == "items":  # its first category only: two rows may now be one
                    accepted = accepted.withColumn("category", F.split(F.col("category"), r"\|").getItem(0)) \
                        .dropDuplicates(["item_id", "category", "title"])
                merged = merge_log(spark, config, SOURCE_TABLES[source],
                                   accepted.withColumns({"ingest_id": ingest_id, "ingested_at": ingested_at}),
                                   snapshot_date, run_id,
                                   full_state=source in config.input.full_state and paths[source] is not None)
                quality = report.logs[source]
                quality.added, quality.removed = merged.added, merged.removed
                log.info("ingest: %s: %s new of %s accepted rows added to %s%s", source, f"{merged.added:,}",
                         f"{quality.accepted:,}", merged.written.name,
                         f", {merged.removed:,} no longer in the full-state log ended" if quality.removed else "")
                result.written.append(merged.written)
        rejected = [frame.where(F.col("reason_code").isNotNull()).select(
            F.lit(source).alias("source"), "raw_record", "reason_code", "message") for source, frame in checked.items()]
        quarantine = rejected[0]
        for more in rejected[1:]:
            quarantine = quarantine.unionByName(more)
        result.written.append(write_snapshot(
            spark, config, "quarantine", quarantine.withColumns({"ingest_id": ingest_id, "ingested_at": ingested_at}),
            snapshot_date, run_id))
        status = "stopped" if report.stopped else "complete"
        runs = spark.createDataFrame(
            [(s, q.path, q.read, q.accepted, q.quarantined, q.added, q.removed, q.reasons, status, q.stopped_by)
             for s, q in report.logs.items()],
            "source string, path string, read bigint, accepted bigint, quarantined bigint, added bigint, "
            "removed bigint, quarantined_by_reason map<string,bigint>, status string, gate_message string",
        )
        # Last: the record that the run is whole (see complete_ingest_id).
        result.written.append(write_snapshot(
            spark, config, "ingest_runs", runs.withColumns({"ingest_id": ingest_id, "ingested_at": ingested_at}),
            snapshot_date, run_id))
    for frame in checked.values():
        frame.unpersist()
    if report.stopped:
        first = report.stopped[0].stopped_by
        more = f" (and {len(report.stopped) - 1} more log(s): see the data-quality report)" \
            if len(report.stopped) > 1 else ""
        raise DataQualityError(first + more, result)
    return result


def complete_ingest_id(spark: SparkSession, config: ProfilingConfig, snapshot_date: dt.date) -> str:
    """The ingest run of ``snapshot_date``, once every row the snapshot reads is known to be whole.

    Refuses (one line) a date whose last ingest stopped at a quality gate, or logs holding rows, of that
    date or an earlier one, from a run ``ingest_runs`` does not record as that date's complete one (an
    ingest killed between its commits).
    """
    name = qualified(config, "ingest_runs")
    if not spark.catalog.tableExists(name):
        raise missing_table(config, "ingest_runs")
    up_to = F.col("snapshot_date") <= F.lit(snapshot_date)
    runs = spark.table(name).where(up_to).select("snapshot_date", "ingest_id", "status", "gate_message") \
        .distinct().collect()  # a few rows per date, read once
    recorded = [r for r in runs if r["snapshot_date"] == snapshot_date]
    if not recorded:
        raise MissingStageOutput(f"no ingest of {snapshot_date} in {qualified(config, 'ingest_runs')}: "
                                 "run the ingest stage for that date first")
    ingest_id, status = recorded[0]["ingest_id"], recorded[0]["status"]
    if status != "complete":
        why = next((r["gate_message"] for r in recorded if r["gate_message"]), "")
        raise DataQualityError(f"the last ingest of {snapshot_date} stopped at a data-quality gate ({why}); "
                               "fix the input (or the gate) and rerun ingest for that date")
    complete = {r["snapshot_date"]: r["ingest_id"] for r in runs if r["status"] == "complete"}
    # One query over the four logs: on small snapshots each Spark job costs more than its rows.
    held = functools.reduce(DataFrame.unionByName, [
        spark.table(qualified(config, name)).where(up_to).select(F.lit(name).alias("table"), "snapshot_date",
                                                                 "ingest_id")
        for name in SOURCE_TABLES.values()]).distinct().collect()
    for row in sorted(held, key=lambda r: (r["snapshot_date"], r["table"], r["ingest_id"])):
        if complete.get(row["snapshot_date"]) != row["ingest_id"]:
            last = complete.get(row["snapshot_date"])
            raise IncompleteIngest(
                f"{qualified(config, row['table'])} holds rows of {row['snapshot_date']} from ingest run "
                f"{row['ingest_id']}, but ingest_runs records "
                + (f"run {last} as the last complete one" if last else "no complete ingest of that date")
                + ": an ingest of that date was interrupted; rerun ingest for that date")
    return ingest_id
