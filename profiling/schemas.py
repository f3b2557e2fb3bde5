"""Table contracts, read from the top-level ``schemas/`` folder (shipped in the package as ``contracts``).

``schemas/inputs.yaml`` declares the raw logs, ``schemas/tables.yaml`` every
Delta table profiling writes. This module turns them into Spark types and
``CREATE TABLE`` statements so no stage spells out a column list of its own.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import yaml
from pyspark.sql import types as T

from profiling.config import packaged

SCHEMAS_DIR = packaged("contracts")

_SIMPLE = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "bigint": T.LongType(),
    "double": T.DoubleType(),
    "float": T.FloatType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
    "boolean": T.BooleanType(),
}


def spark_type(name: str) -> T.DataType:
    """Parse the small type language of the contracts: simple types, ``array<...>``, ``map<simple,...>`` and
    ``struct<name:type,...>``."""
    name = name.strip()
    match = re.fullmatch(r"array<(.+)>", name)
    if match:
        return T.ArrayType(spark_type(match.group(1)))
    match = re.fullmatch(r"map<(\w+),(.+)>", name)
    if match:
        return T.MapType(spark_type(match.group(1)), spark_type(match.group(2)))
    match = re.fullmatch(r"struct<(.+)>", name)
    if match:
        fields = [f.split(":", 1) for f in _top_level(match.group(1))]
        return T.StructType([T.StructField(n.strip(), spark_type(t)) for n, t in fields])
    if name not in _SIMPLE:
        raise ValueError(f"unknown type {name!r} in {SCHEMAS_DIR}")
    return _SIMPLE[name]


def _top_level(fields: str) -> list[str]:
    """``fields`` split at the commas outside any ``<...>``."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(fields):
        depth += (c == "<") - (c == ">")
        if c == "," and depth == 0:
            parts.append(fields[start:i])
            start = i + 1
    return [*parts, fields[start:]]


@dataclass(frozen=True)
class InputColumn:
    name: str
    type: str  # a simple type or "ts" (unix seconds or a timestamp string)
    required: bool
    max_length: int | None = None


@dataclass(frozen=True)
class InputContract:
    source: str
    description: str
    optional: bool
    columns: tuple[InputColumn, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    comment: str

    def sql(self, not_null: bool) -> str:
        """The column as DDL (``ADD COLUMNS`` admits no NOT NULL: columns added later are nullable)."""
        kind = self.type.upper() if "<" not in self.type else self.type
        return f"`{self.name}` {kind}{' NOT NULL' if not_null else ''} COMMENT {_quote(self.comment)}"


@dataclass(frozen=True)
class TableContract:
    name: str
    comment: str
    partitioned_by: tuple[str, ...]
    columns: tuple[Column, ...]
    properties: tuple[tuple[str, str], ...] = ()  # Delta table properties (TBLPROPERTIES)
    row_key: tuple[str, ...] = ()  # a log's columns that make two rows the same row (profiling.tables.merge_log)
    newest_per: tuple[str, ...] = ()  # a log whose snapshot holds the newest row of each of these keys only
    # A table refreshed per key (user): snapshot D holds, per key, the rows of its newest partition <= D.
    newest_partition_per: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def is_log(self) -> bool:
        """Each row stored once, in the partition of the snapshot that first ingested it (not one copy per
        snapshot)."""
        return bool(self.row_key)

    @property
    def is_refreshed(self) -> bool:
        """Partition D holds the keys (users) the run of D rebuilt, not all of them (profiling.refresh)."""
        return bool(self.newest_partition_per)

    @property
    def struct(self) -> T.StructType:
        return T.StructType([T.StructField(c.name, spark_type(c.type), c.nullable) for c in self.columns])

    def create_sql(self, qualified_name: str) -> str:
        cols = ",\n  ".join(c.sql(not_null=not c.nullable) for c in self.columns)
        parts = f"\nPARTITIONED BY ({', '.join(self.partitioned_by)})" if self.partitioned_by else ""
        return (
            f"CREATE TABLE IF NOT EXISTS {qualified_name} (\n  {cols}\n) USING DELTA{parts}\n"
            f"COMMENT {_quote(self.comment)}{self.properties_sql()}"
        )

    def snapshot_sql(self, source: str, date: str | None) -> str:
        """The SELECT of this table's snapshot ``date`` (a SQL date expression; None: the newest) from
        ``source`` (the table, or one version of it). A snapshot table's is its partition; a log's, the rows
        first ingested up to it that it still holds, and only the newest per ``newest_per`` key; a
        refreshed table's, per ``newest_partition_per`` key the rows of its newest partition up to it,
        unless ``removed_on`` ended them by then."""
        if not self.is_log and not self.is_refreshed:
            newest = f"(SELECT max(snapshot_date) FROM {source})"
            return f"SELECT * FROM {source} WHERE snapshot_date = {date or newest}"
        columns = ", ".join(f"`{c}`" for c in self.names)
        held = f"(removed_on IS NULL OR removed_on > {date})" if date else "removed_on IS NULL"
        rows = f"SELECT * FROM {source}" + (f" WHERE snapshot_date <= {date}" if date else "")
        if self.is_refreshed:  # the key's newest partition first, then whether it still holds
            keys = ", ".join(self.newest_partition_per)
            return (f"SELECT {columns} FROM (SELECT *, max(snapshot_date) OVER (PARTITION BY {keys}) AS _newest "
                    f"FROM ({rows})) WHERE snapshot_date = _newest AND {held}")
        if "removed_on" in self.names:
            rows += (" AND " if date else " WHERE ") + held
        if not self.newest_per:
            return rows
        order = ", ".join(["snapshot_date DESC", *(c for c in self.row_key if c not in self.newest_per)])
        return (f"SELECT {columns} FROM (SELECT *, row_number() OVER (PARTITION BY "
                f"{', '.join(self.newest_per)} ORDER BY {order}) AS _newest FROM ({rows})) WHERE _newest = 1")

    def properties_sql(self) -> str:
        """`` TBLPROPERTIES (...)`` of the contract's properties ("" if none)."""
        if not self.properties:
            return ""
        return " TBLPROPERTIES (" + ", ".join(f"{_quote(k)} = {_quote(v)}" for k, v in self.properties) + ")"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@functools.cache
def input_contracts() -> dict[str, InputContract]:
    raw = yaml.safe_load((SCHEMAS_DIR / "inputs.yaml").read_text())
    return {
        source: InputContract(
            source=source,
            description=spec.get("description", ""),
            optional=bool(spec.get("optional", False)),
            columns=tuple(
                InputColumn(c["name"], c["type"], bool(c.get("required", False)), c.get("max_length"))
                for c in spec["columns"]
            ),
        )
        for source, spec in raw.items()
    }


@functools.cache
def table_contracts() -> dict[str, TableContract]:
    raw = yaml.safe_load((SCHEMAS_DIR / "tables.yaml").read_text())
    shared = raw.pop("properties", {})  # every table's; a table's own win
    return {
        name: TableContract(
            name=name,
            comment=spec["comment"],
            partitioned_by=tuple(spec.get("partitioned_by", [])),
            columns=tuple(
                Column(c["name"], c["type"], bool(c.get("nullable", True)), c["comment"]) for c in spec["columns"]
            ),
            properties=tuple(sorted({k: str(v) for k, v in {**shared, **spec.get("properties", {})}.items()}.items())),
            row_key=tuple(spec.get("row_key", [])),
            newest_per=tuple(spec.get("newest_per", [])),
            newest_partition_per=tuple(spec.get("newest_partition_per", [])),
        )
        for name, spec in raw.items()
    }


def table(name: str) -> TableContract:
    return table_contracts()[name]


@dataclass(frozen=True)
class ViewContract:
    name: str
    comment: str
    reads: tuple[str, ...]
    sql: str  # the SELECT, with {db} for the catalog database

    def create_sql(self, database: str) -> str:
        return (f"CREATE OR REPLACE VIEW {database}.{self.name} COMMENT {_quote(self.comment)} AS\n"
                + self.sql.format(db=database))


@functools.cache
def view_contracts() -> dict[str, ViewContract]:
    """The views of ``schemas/views.yaml`` plus ``latest_<table>`` for every snapshot table and log."""
    views = {
        f"latest_{t.name}": ViewContract(
            f"latest_{t.name}", f"The newest snapshot of {t.name}: {t.comment}", (t.name,),
            t.snapshot_sql(f"{{db}}.{t.name}", None),
        )
        for t in table_contracts().values() if "snapshot_date" in t.partitioned_by
    }
    raw = yaml.safe_load((SCHEMAS_DIR / "views.yaml").read_text())
    for name, spec in raw.items():
        views[name] = ViewContract(name, spec["comment"], tuple(spec["reads"]), spec["sql"].strip())
    return views


@functools.cache
def explain_schema() -> dict:
    """The JSON schema of ``profiling explain --format json`` (``schemas/explain.schema.json``)."""
    import json

    return json.loads((SCHEMAS_DIR / "explain.schema.json").read_text())
