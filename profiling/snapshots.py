"""Rows of one snapshot of the catalog's tables, for commands that read a few of them.

``profiling explain`` needs a user's rows from a handful of tables; a Spark session
for them cost about two minutes on the demo workdir. With the embedded catalog
every table is a managed table at a known folder (:func:`profiling.tables.table_dir`),
so :class:`DeltaSnapshotReader` reads its Delta log and files in this process with
delta-rs: no JVM. A shared Hive metastore decides where its tables live (and how to
reach them), so there :class:`SparkSnapshotReader` asks Spark. :func:`snapshot_reader`
chooses once; both return Arrow, so what is computed from the rows is the same code.
Code that already holds a session (the infer stage's sample explanations) asks its
catalog where each table lies and reads local folders with delta-rs all the same
(:func:`session_snapshot_reader`): a Spark job costs about a second even on a few rows.

``where`` selects rows as a list of conditions, any of which a row must meet; each
maps columns to the values allowed in them (``[{"user_id": ids}]``). An empty list
of values allows none.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import operator
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pa_fs
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from profiling.config import ProfilingConfig
from profiling.schemas import table as contract
from profiling.tables import missing_table, qualified, read_snapshot, table_dir
from profiling.workdir import uses_embedded_catalog

Where = Sequence[Mapping[str, Sequence]]


class SnapshotReader(Protocol):
    """The reads of one snapshot that an explanation needs, whichever engine does them."""

    def newest_snapshot(self, name: str) -> dt.date | None:
        """The newest ``snapshot_date`` of table ``name`` (None: no table, or no rows)."""

    def rows(self, name: str, snapshot_date: dt.date, columns: list[str], where: Where) -> pa.Table:
        """``columns`` of the snapshot's rows that meet ``where``."""

    def batches(self, name: str, snapshot_date: dt.date, columns: list[str], size: int) -> Iterator[pa.RecordBatch]:
        """``columns`` of every row of the snapshot, at most ``size`` rows at a time."""


class DeltaSnapshotReader:
    """The embedded catalog's tables read from their folders with delta-rs, in this process.

    It takes no workdir lock: the lock keeps a second JVM off the Derby metastore, which this never
    opens. Each table is read at the version its log names when first opened here; a writer never
    changes the files of a committed version (it adds files and commits a new version atomically),
    so a stage running meanwhile cannot show it half a write.
    """

    def __init__(self, config: ProfilingConfig, locate: Callable[[str], str] | None = None):
        self.config = config
        self._locate = locate or (lambda name: str(table_dir(config.workdir_path, config.catalog.database, name)))
        self._tables: dict[str, DeltaTable | None] = {}
        self._paths: dict[str, str] = {}

    def _table(self, name: str) -> DeltaTable | None:
        if name not in self._tables:
            path = self._path(name)
            self._tables[name] = DeltaTable(path) if DeltaTable.is_deltatable(path) else None
        return self._tables[name]

    def _path(self, name: str) -> str:
        if name not in self._paths:
            self._paths[name] = self._locate(name)
        return self._paths[name]

    def _snapshot(self, name: str, snapshot_date: dt.date) -> ds.Dataset:
        """The table's files of that snapshot only (of a log or a refreshed table: up to it; partition
        pruning), as a pyarrow dataset."""
        table = self._table(name)
        if table is None:
            raise missing_table(self.config, name)
        # Arrow's own local file system under the table's folder: delta-rs would otherwise wrap its storage
        # in a Python file system, which an Arrow thread may release after the interpreter began to exit;
        # it then cannot take the GIL, and the process aborts ("terminate called without an active
        # exception") after its work is done.
        files = pa_fs.SubTreeFileSystem(self._path(name), pa_fs.LocalFileSystem())
        up_to = "<=" if contract(name).is_log or contract(name).is_refreshed else "="
        return table.to_pyarrow_dataset(filesystem=files,
                                        file_pruning_predicate=[("snapshot_date", up_to, snapshot_date.isoformat())])

    def newest_snapshot(self, name: str) -> dt.date | None:
        table = self._table(name)
        dates = [p["snapshot_date"] for p in table.partitions()] if table is not None else []
        return dt.date.fromisoformat(max(dates)) if dates else None

    def rows(self, name: str, snapshot_date: dt.date, columns: list[str], where: Where) -> pa.Table:
        met = _any_of(where, lambda column, values: ds.field(column).isin(list(values)), ds.scalar(False))
        log = contract(name)
        if not log.is_log and not log.is_refreshed:
            return self._snapshot(name, snapshot_date).to_table(columns=columns, filter=met)
        if log.is_refreshed:  # each user's newest partition, then whether it still holds
            found = self._snapshot(name, snapshot_date).to_table(filter=met)
            return _newest_partition(found, found, log.newest_partition_per, snapshot_date).select(columns)
        if "removed_on" in log.names:  # what the snapshot still held (TableContract.snapshot_sql)
            met = met & _held(snapshot_date)
        found = self._snapshot(name, snapshot_date).to_table(filter=met)
        if log.newest_per:  # the newest row of each key, ties in Spark's order (nulls first): few rows, here
            def order(row: dict) -> tuple:
                return (-row["snapshot_date"].toordinal(), *((row[c] is not None, row[c]) for c in log.row_key))

            newest: dict[tuple, dict] = {}
            for row in sorted(found.to_pylist(), key=order):
                newest.setdefault(tuple(row[c] for c in log.newest_per), row)
            found = pa.Table.from_pylist(list(newest.values()), schema=found.schema)
        return found.select(columns)

    def batches(self, name: str, snapshot_date: dt.date, columns: list[str], size: int) -> Iterator[pa.RecordBatch]:
        snapshot = self._snapshot(name, snapshot_date)
        keys = contract(name).newest_partition_per
        if not keys:
            yield from snapshot.to_batches(columns=columns, batch_size=size)
            return
        # A refreshed table: which partition is each user's newest (a few columns of every row), then the rows.
        index = snapshot.to_table(columns=[*keys, "snapshot_date", "removed_on"])
        for batch in snapshot.to_batches(columns=sorted({*columns, *keys, "snapshot_date"}), batch_size=size):
            kept = _newest_partition(pa.Table.from_batches([batch]), index, keys, snapshot_date)
            yield from kept.select(columns).to_batches()


def _held(snapshot_date: dt.date) -> ds.Expression:
    """Rows the snapshot still holds: not ended (``removed_on``) by its date."""
    return ds.field("removed_on").is_null() | (ds.field("removed_on") > pa.scalar(snapshot_date))


def _newest_partition(rows: pa.Table, index: pa.Table, keys: Sequence[str], snapshot_date: dt.date) -> pa.Table:
    """``rows`` of the newest partition of their key in ``index`` (rows with ``keys``, ``snapshot_date`` and
    ``removed_on``), unless ended by ``snapshot_date`` (TableContract.snapshot_sql of a refreshed table)."""
    newest = index.group_by(list(keys)).aggregate([("snapshot_date", "max")])
    # Arrow joins carry no list columns: join the keys and row numbers, then take the rows.
    slim = rows.select([*keys, "snapshot_date"]).append_column("_row", pa.array(range(rows.num_rows), pa.int64()))
    joined = slim.join(newest, list(keys))
    kept = joined.filter(pc.equal(joined["snapshot_date"], joined["snapshot_date_max"]))
    ended = index.filter(~_held(snapshot_date)).select([*keys, "snapshot_date"])
    if ended.num_rows:  # the newest row of a key was ended: the key is gone from the snapshot
        kept = kept.join(ended, [*keys, "snapshot_date"], join_type="left anti")
    order = kept["_row"]
    return rows.take(pc.take(order, pc.sort_indices(order)))  # in the rows' own order


class SparkSnapshotReader:
    """The tables read through a Spark session, at their current version: for a shared Hive metastore."""

    def __init__(self, spark: SparkSession, config: ProfilingConfig):
        self.spark = spark
        self.config = config

    def newest_snapshot(self, name: str) -> dt.date | None:
        full = qualified(self.config, name)
        if not self.spark.catalog.tableExists(full):
            return None
        return self.spark.table(full).agg(F.max("snapshot_date")).first()[0]

    def rows(self, name: str, snapshot_date: dt.date, columns: list[str], where: Where) -> pa.Table:
        df, _ = read_snapshot(self.spark, self.config, name, snapshot_date)
        met = _any_of(where, lambda column, values: F.col(column).isin(list(values)), F.lit(False))
        return df.where(met).select(*columns).toArrow()

    def batches(self, name: str, snapshot_date: dt.date, columns: list[str], size: int) -> Iterator[pa.RecordBatch]:
        df, _ = read_snapshot(self.spark, self.config, name, snapshot_date)
        rows = df.select(*columns).toLocalIterator()  # one partition at a time on the driver
        while chunk := list(itertools.islice(rows, size)):
            yield pa.RecordBatch.from_pylist([r.asDict() for r in chunk])


def _any_of(where: Where, allowed: Callable, none):
    """``where`` as one condition of an engine, from its membership test ``allowed`` and its false ``none``."""
    met = [functools.reduce(operator.and_, [allowed(c, v) for c, v in condition.items()])
           for condition in where if all(condition.values())]
    return functools.reduce(operator.or_, met) if met else none


def snapshot_reader(config: ProfilingConfig, spark: Callable[[], SparkSession]) -> SnapshotReader:
    """delta-rs where the tables are the embedded catalog's, under the workdir's warehouse; else Spark
    (``spark()`` builds or returns the session, and is called only then)."""
    if uses_embedded_catalog(config) and "spark.sql.warehouse.dir" not in config.spark.conf:
        return DeltaSnapshotReader(config)
    return SparkSnapshotReader(spark(), config)


def session_snapshot_reader(spark: SparkSession, config: ProfilingConfig) -> SnapshotReader:
    """delta-rs at the folders ``spark``'s catalog names for the tables, when they are on this machine's
    file system (whatever the config's workdir says: a session's catalog is fixed when it starts); else
    Spark itself."""
    database = spark.catalog.getDatabase(config.catalog.database).locationUri if \
        spark.catalog.databaseExists(config.catalog.database) else ""
    if not database.startswith("file:"):
        return SparkSnapshotReader(spark, config)

    def locate(name: str) -> str:
        full = qualified(config, name)
        if not spark.catalog.tableExists(full):
            raise missing_table(config, name)
        described = spark.sql(f"DESCRIBE TABLE EXTENDED {full}").where("col_name = 'Location'").first()
        location = described["data_type"] if described else ""
        if not location.startswith("file:"):
            raise ValueError(f"table {full} lies at {location!r}, not on this machine's file system")
        return urllib.parse.urlparse(location).path

    return DeltaSnapshotReader(config, locate)
