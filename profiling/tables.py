"""Delta tables in the catalog: create from the contracts, write snapshots, read versions.

Every snapshot write replaces the rows of one ``snapshot_date`` and nothing
else, in one Delta commit that carries the MLflow run id as user metadata, so
reruns are idempotent and ``DESCRIBE HISTORY`` tells which run wrote what.
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
    existing = set(spark.table(full).columns)
    added = [c for c in contract.columns if c.name not in existing]
    if added:  # a contract that gained columns since the table was created
        spark.sql(f"ALTER TABLE {full} ADD COLUMNS ({', '.join(c.sql(not_null=False) for c in added)})")
    have = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {full}").collect()}
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
    """The rows of one snapshot, pinned to the table's current version (recorded by the caller)."""
    full = qualified(config, name)
    if not spark.catalog.tableExists(full):
        raise missing_table(config, name)
    version = current_version(spark, full)
    df = spark.sql(f"SELECT * FROM {full} VERSION AS OF {version}").where(
        F.col("snapshot_date") == F.lit(snapshot_date)
    )
    return df, TableVersion(full, version)
