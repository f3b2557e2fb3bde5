"""Delta tables in the catalog: create from the contracts, write snapshots, merge logs, read versions.

Every snapshot write replaces the rows of one ``snapshot_date`` and nothing
else, in one Delta commit that carries the MLflow run id as user metadata, so
reruns are idempotent and ``DESCRIBE HISTORY`` tells which run wrote what.
The validated input logs are not copied per snapshot: :func:`merge_log` adds
the rows a log does not hold yet (one MERGE, one commit), and a log's snapshot
D is what :meth:`profiling.schemas.TableContract.snapshot_sql` selects.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from profiling.config import ProfilingConfig
from profiling.exceptions import MissingStageOutput
from profiling.schemas import spark_type, table, view_contracts

_USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
LAYOUT = "profiling.layout"  # "log" on the tables that keep each input row once (schemas/tables.yaml)


@dataclass(frozen=True)
class TableVersion:
    """A table and the Delta version a stage read or wrote."""

    name: str
    version: int


def qualified(config: ProfilingConfig, name: str) -> str:
    return f"{config.catalog.database}.{name}"


def warehouse_dir(workdir: Path) -> Path:
    """Where the embedded catalog keeps its managed tables (``spark.sql.warehouse.dir``)."""
    return workdir / "warehouse"


def local_path(uri: str) -> str:
    """``file:/x`` and ``file:///x`` URIs (as Spark lists a table's files) to the plain paths pyarrow opens;
    others unchanged."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def table_dir(workdir: Path, database: str, name: str) -> Path:
    """The folder of managed table ``database.name`` in a workdir's embedded catalog: Hive's layout,
    ``<warehouse>/<database>.db/<name>``, so its Delta log can be read without asking the catalog."""
    return warehouse_dir(workdir) / f"{database}.db" / name


def ensure_table(spark: SparkSession, config: ProfilingConfig, name: str) -> str:
    """Create the database and the table (with its comments and properties) if they do not exist yet, and
    add the columns and properties its contract has gained since."""
    spark.sql(
        f"CREATE DATABASE IF NOT EXISTS {config.catalog.database} "
        "COMMENT 'User profiles built by profiling: logs, sequences, embeddings, interest weights'"
    )
    full = qualified(config, name)
    contract = table(name)
    spark.sql(contract.create_sql(full))
    have = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {full}").collect()}
    if contract.is_log and have.get(LAYOUT) != dict(contract.properties)[LAYOUT]:
        raise MissingStageOutput(
            f"table {full} holds a copy of the {name} log per snapshot date (written by an earlier version of "
            "profiling, which every snapshot read would now add up): ingest its dates again, oldest first, into "
            "another catalog.database or workdir")
    existing = set(spark.table(full).columns)
    added = [c for c in contract.columns if c.name not in existing]
    if added:  # a contract that gained columns since the table was created
        spark.sql(f"ALTER TABLE {full} ADD COLUMNS ({', '.join(c.sql(not_null=False) for c in added)})")
    if any(have.get(k) != v for k, v in contract.properties):  # a table from before the contract said so
        spark.sql(f"ALTER TABLE {full} SET{contract.properties_sql()}")
    return full


def current_version(spark: SparkSession, full_name: str) -> int:
    return int(spark.sql(f"DESCRIBE HISTORY {full_name} LIMIT 1").first()["version"])


@contextlib.contextmanager
def commit_metadata(spark: SparkSession, text: str | None):
    previous = spark.conf.get(_USER_METADATA, None)
    if text:
        spark.conf.set(_USER_METADATA, text)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(_USER_METADATA)
        else:
            spark.conf.set(_USER_METADATA, previous)


def conform(df: DataFrame, name: str) -> DataFrame:
    """Select the contract's columns, in its order, cast to its types."""
    contract = table(name)
    missing = [c for c in contract.names if c not in df.columns]
    if missing:
        raise ValueError(f"table {name}: the data lacks columns {missing}")
    return df.select([F.col(c.name).cast(spark_type(c.type)).alias(c.name) for c in contract.columns])


def write_snapshot(
    spark: SparkSession,
    config: ProfilingConfig,
    name: str,
    df: DataFrame,
    snapshot_date: dt.date,
    run_id: str | None = None,
) -> TableVersion:
    """Replace the rows of ``snapshot_date`` in table ``name`` with ``df``, in one commit."""
    full = ensure_table(spark, config, name)
    data = conform(df.withColumn("snapshot_date", F.lit(snapshot_date)), name)
    with commit_metadata(spark, run_id):
        data.writeTo(full).overwrite(F.col("snapshot_date") == F.lit(snapshot_date))
    ensure_views(spark, config, name)
    return TableVersion(full, current_version(spark, full))


def ensure_views(spark: SparkSession, config: ProfilingConfig, written: str) -> None:
    """(Re)create the views over ``written`` whose tables all exist (views read them at query time)."""
    db = config.catalog.database
    for view in view_contracts().values():
        if written in view.reads and all(spark.catalog.tableExists(qualified(config, t)) for t in view.reads):
            spark.sql(view.create_sql(db))


def missing_table(config: ProfilingConfig, name: str) -> MissingStageOutput:
    return MissingStageOutput(
        f"table {qualified(config, name)} does not exist in {config.workdir_path}: run the stage that writes it first"
    )


def read_snapshot(
    spark: SparkSession, config: ProfilingConfig, name: str, snapshot_date: dt.date
) -> tuple[DataFrame, TableVersion]:
    """The rows of one snapshot (of a log: those it holds as of that date), pinned to the table's current
    version (recorded by the caller)."""
    full = qualified(config, name)
    if not spark.catalog.tableExists(full):
        raise missing_table(config, name)
    version = current_version(spark, full)
    df = spark.sql(table(name).snapshot_sql(f"{full} VERSION AS OF {version}", f"DATE'{snapshot_date.isoformat()}'"))
    return df, TableVersion(full, version)


def _not_before_newest(spark: SparkSession, full_name: str, snapshot_date: dt.date) -> bool:
    """Whether no row of the table is of a date after ``snapshot_date``."""
    newest = spark.table(full_name).agg(F.max("snapshot_date")).first()[0]
    return newest is None or newest <= snapshot_date


def _committed(spark: SparkSession, config: ProfilingConfig, name: str):
    """After a write to log ``name``: its views, and its newest commit (version and operation metrics)."""
    ensure_views(spark, config, name)
    return spark.sql(f"DESCRIBE HISTORY {qualified(config, name)} LIMIT 1").first()


@dataclass(frozen=True)
class LogMerge:
    """What one :func:`merge_log` changed."""

    written: TableVersion
    added: int  # rows new to the log
    removed: int  # rows a full-state log no longer holds, ended (removed_on)


def merge_log(
    spark: SparkSession,
    config: ProfilingConfig,
    name: str,
    df: DataFrame,
    snapshot_date: dt.date,
    run_id: str | None = None,
    full_state: bool = False,
) -> LogMerge:
    """Add the rows of ``df`` that log ``name`` does not hold yet (equal in every ``row_key`` column, nulls
    equal), in partition ``snapshot_date``; one MERGE, one commit.

    So a folder of the day's new rows and a cumulative dump that repeats every earlier row leave the same
    log, and a rerun of a date adds nothing. A rerun also makes the date's partition the run's own: rows
    first ingested on that date that its input no longer has are deleted, and the others carry the new
    ``ingest_id`` (:func:`profiling.ingest.complete_ingest_id` checks it). With ``full_state`` (the log is
    the whole current state: ``input.full_state``) rows held since earlier dates that ``df`` lacks are
    ended, ``removed_on = snapshot_date``; only on the newest date, so a backfill ends nothing. A first
    ingest of a date that ends nothing is an insert-only MERGE, which Delta runs as one anti-join and an
    append (the daily case); a log's first rows are appended as they are.
    """
    from delta.tables import DeltaTable

    contract = table(name)
    new = not spark.catalog.tableExists(qualified(config, name))
    full = ensure_table(spark, config, name)  # refuses a log of the earlier layout
    added = {"snapshot_date": F.lit(snapshot_date)}
    if "removed_on" in contract.names:
        added["removed_on"] = F.lit(None).cast("date")
    source = conform(df.withColumns(added), name)
    if new:  # nothing to match: the rows as they are, in one append
        with commit_metadata(spark, run_id):
            source.writeTo(full).append()
        last = _committed(spark, config, name)
        return LogMerge(TableVersion(full, int(last["version"])),
                        int((last["operationMetrics"] or {}).get("numOutputRows", 0)), 0)
    day = f"DATE'{snapshot_date.isoformat()}'"
    same = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in contract.row_key)
    if "removed_on" in contract.names:  # a row ended by the date, or before it, is held no more
        same += f" AND (t.removed_on IS NULL OR t.removed_on > {day})"
    ends = full_state and _not_before_newest(spark, full, snapshot_date)
    merge = DeltaTable.forName(spark, full).alias("t").merge(source.alias("s"), same)
    rerun = not spark.table(full).where(F.col("snapshot_date") == F.lit(snapshot_date)).isEmpty()
    if rerun:  # the date's partition becomes this run's
        merge = merge.whenMatchedUpdate(f"t.snapshot_date = {day} AND t.ingest_id <> s.ingest_id",
                                        {"ingest_id": "s.ingest_id", "ingested_at": "s.ingested_at"})
    merge = merge.whenNotMatchedInsertAll()
    if rerun:
        merge = merge.whenNotMatchedBySourceDelete(f"t.snapshot_date = {day}")
    if ends:
        merge = merge.whenNotMatchedBySourceUpdate(f"t.snapshot_date < {day} AND t.removed_on IS NULL",
                                                   {"removed_on": day})
    with commit_metadata(spark, run_id):
        done = merge.execute().first()  # what it changed; a MERGE that changes nothing commits nothing
    last = _committed(spark, config, name)
    removed = 0
    if ends and done["num_updated_rows"]:  # ended rows, told from the rerun's re-stamped ones
        removed = int(last["operationMetrics"].get("numTargetRowsNotMatchedBySourceUpdated", 0))
    return LogMerge(TableVersion(full, int(last["version"])), int(done["num_inserted_rows"]), removed)
