"""`profiling maintain`: OPTIMIZE and VACUUM with a stated retention; the tables' declared properties.

The same day is ingested twice into a catalog database of its own in the shared session, so
every table holds files that only older versions read.
"""

from __future__ import annotations

import pytest

from commands import delta_table
from conftest import SNAPSHOT
from malformed import write_valid_logs

DATABASE = "maintained"
TABLES = ("behaviour_events", "preference_events", "social_edges", "items", "quarantine", "ingest_runs")


def _files_on_disk(config, name: str) -> set[str]:
    folder = config.workdir_path / "warehouse" / f"{DATABASE}.db" / name
    return {str(p.relative_to(folder)) for p in folder.rglob("*.parquet")}


def _files_read(config, name: str) -> set[str]:
    return {uri.split(f"/{DATABASE}.db/{name}/", 1)[1] for uri in delta_table(config.workdir_path, name,
                                                                               DATABASE).file_uris()}


def _rows(spark, name: str) -> list:
    return sorted(map(tuple, spark.table(f"{DATABASE}.{name}").drop("ingested_at", "ingest_id").collect()))


@pytest.fixture(scope="module")
def rewritten(spark, config, tmp_path_factory):
    from profiling.pipeline import run_ingest

    data = tmp_path_factory.mktemp("maintain")
    write_valid_logs(data)
    cfg = config.model_copy(update={
        "input": config.input.model_copy(update={"dir": str(data)}),
        "catalog": config.catalog.model_copy(update={"database": DATABASE}),
    })
    for _ in range(2):  # the rerun replaces the day's rows: the files it replaces stay for time travel
        run_ingest(spark, cfg, SNAPSHOT)
    return cfg


def test_a_week_of_retention_compacts_but_deletes_nothing_recent(rewritten, spark):
    from profiling.maintenance import maintain_tables

    before = {t: _rows(spark, t) for t in TABLES}
    on_disk = {t: _files_on_disk(rewritten, t) for t in TABLES}
    result = maintain_tables(spark, rewritten)
    assert result.retain_days == 7 and {t.table for t in result.tables} == {f"{DATABASE}.{t}" for t in TABLES}
    assert result.totals()["files_deleted"] == 0
    assert all(on_disk[t] <= _files_on_disk(rewritten, t) for t in TABLES)  # every old version still readable
    assert {t: _rows(spark, t) for t in TABLES} == before


def test_no_retention_leaves_only_the_files_the_current_versions_read_and_a_rerun_removes_nothing(rewritten, spark):
    from profiling.maintenance import maintain_tables

    before = {t: _rows(spark, t) for t in TABLES}
    stale = {t: _files_on_disk(rewritten, t) - _files_read(rewritten, t) for t in TABLES}
    assert stale["behaviour_events"], "two ingests of one day left no replaced file: nothing to check"
    # Delta logs a local table's VACUUM in two commits, whose counts maintain reports (test_privacy checks
    # them); with that logging off, as on S3 by default, a dry run counts the files first.
    version = delta_table(rewritten.workdir_path, "behaviour_events", DATABASE).version()
    spark.conf.set("spark.databricks.delta.vacuum.logging.enabled", "false")
    try:
        result = maintain_tables(spark, rewritten, retain_days=0)
    finally:
        spark.conf.unset("spark.databricks.delta.vacuum.logging.enabled")
    assert not [h for h in delta_table(rewritten.workdir_path, "behaviour_events", DATABASE).history()
                if h["version"] > version and h["operation"].startswith("VACUUM")]
    assert {t: _files_on_disk(rewritten, t) for t in TABLES} == {t: _files_read(rewritten, t) for t in TABLES}
    deleted = {t.table.split(".")[1]: t.files_deleted for t in result.tables}
    assert deleted == {t: len(stale[t]) for t in TABLES}
    assert result.totals()["bytes_deleted"] > 0
    assert {t: _rows(spark, t) for t in TABLES} == before
    kept = {t: _files_on_disk(rewritten, t) for t in TABLES}
    again = maintain_tables(spark, rewritten, retain_days=0)
    # The rerun deletes no data file. Delta counts folders among the deleted files: the first VACUUM
    # empties the logs' _change_data folders (change data feed) and the rerun removes the empty folders.
    assert {t: _files_on_disk(rewritten, t) for t in TABLES} == kept
    totals = again.totals()
    assert (totals["files_compacted"], totals["files_written"], totals["bytes_deleted"]) == (0, 0, 0)
    folders = {t.table.split(".")[1]: t.files_deleted for t in again.tables}
    assert all(n <= 2 for n in folders.values()) and not any(folders[t] for t in ("quarantine", "ingest_runs"))
    assert [h["operation"] for h in delta_table(rewritten.workdir_path, "behaviour_events", DATABASE).history(2)] \
        == ["VACUUM END", "VACUUM START"]


def test_every_table_declares_its_properties_and_keeps_deletion_vectors_off(pipeline, spark, config):
    from profiling.schemas import table_contracts

    written = [n for n in table_contracts() if spark.catalog.tableExists(f"{config.catalog.database}.{n}")]
    assert {"behaviour_events", "user_sequences", "user_profile_embeddings"} <= set(written)
    for name in written:  # forget_requests exists once a forget ran in this worker's session
        contract = table_contracts()[name]
        properties = {r["key"]: r["value"] for r in spark.sql(
            f"SHOW TBLPROPERTIES {config.catalog.database}.{name}").collect()}
        assert dict(contract.properties) == {k: properties.get(k) for k, _ in contract.properties}
        assert properties["delta.enableDeletionVectors"] == "false"
        protocol = delta_table(config.workdir_path, name, config.catalog.database).protocol()
        assert "deletionVectors" not in (protocol.writer_features or []), name


def test_a_table_created_without_them_gets_them_on_its_next_write(spark, config):
    from profiling.schemas import table
    from profiling.tables import ensure_table

    cfg = config.model_copy(update={"catalog": config.catalog.model_copy(update={"database": "older"})})
    spark.sql("CREATE DATABASE IF NOT EXISTS older")
    contract = table("vocabularies")
    spark.sql(contract.create_sql("older.vocabularies").replace(contract.properties_sql(), ""))
    assert "delta.enableDeletionVectors" not in {r["key"] for r in spark.sql(
        "SHOW TBLPROPERTIES older.vocabularies").collect()}
    ensure_table(spark, cfg, "vocabularies")
    properties = {r["key"]: r["value"] for r in spark.sql("SHOW TBLPROPERTIES older.vocabularies").collect()}
    assert {k: properties.get(k) for k, _ in contract.properties} == dict(contract.properties)
