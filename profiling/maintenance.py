"""Table maintenance: compact small files (OPTIMIZE), then delete the files no version within the
retention reads (VACUUM).

Every daily write and every ``forget`` adds files and leaves the replaced ones behind for time
travel. Without maintenance the tables grow without bound and reads slow down over many small
files. After ``maintain``, time travel reaches back ``retain_days``: older versions lose their files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from profiling import progress
from profiling.config import ProfilingConfig
from profiling.schemas import TableContract, table_contracts
from profiling.tables import TableVersion, current_version, local_path, qualified

log = logging.getLogger(__name__)

_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
_VACUUM_LOGGING = "spark.databricks.delta.vacuum.logging.enabled"
# Where Delta logs a VACUUM when _VACUUM_LOGGING is unset (VacuumCommand, Delta 4): elsewhere, such as
# S3, a dry run lists the files first.
_VACUUM_LOGGED_SCHEMES = frozenset({"file", "hdfs", "abfs", "abfss", "wasbs", "wasbss", "adl", "gs"})


@dataclass
class TableMaintenance:
    table: str
    files_compacted: int  # small files OPTIMIZE replaced...
    files_written: int  # ...by these
    files_deleted: int  # files VACUUM deleted
    bytes_deleted: int  # their size (from Delta's VACUUM commits, or else local files' sizes: 0 elsewhere)


@dataclass
class MaintenanceResult:
    retain_days: float
    tables: list[TableMaintenance]
    written: list[TableVersion] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        return {k: sum(getattr(t, k) for t in self.tables)
                for k in ("files_compacted", "files_written", "files_deleted", "bytes_deleted")}

    def to_dict(self) -> dict:
        return {"retain_days": self.retain_days, **self.totals(), "tables": [asdict(t) for t in self.tables]}


@contextlib.contextmanager
def _retention_check(spark: SparkSession, enabled: bool):
    """Delta refuses a VACUUM shorter than the table's retention unless its check is off; ``maintain``
    turns it off only for a retention the operator asked for."""
    previous = spark.conf.get(_RETENTION_CHECK, "true")
    spark.conf.set(_RETENTION_CHECK, str(enabled).lower())
    try:
        yield
    finally:
        spark.conf.set(_RETENTION_CHECK, previous)


def _size(path: str) -> int:
    try:
        return os.path.getsize(local_path(path))
    except OSError:
        return 0


def _vacuum_logged(spark: SparkSession, full: str) -> bool:
    """Whether Delta records this table's VACUUM as VACUUM START and VACUUM END commits, with the counts
    ``maintain`` reports: when its setting says so, or by default on the file systems Delta names."""
    setting = spark.conf.get(_VACUUM_LOGGING, None)
    if setting is not None:
        return setting.strip().lower() == "true"
    location = spark.sql(f"DESCRIBE DETAIL {full}").first()["location"]
    return urlparse(location).scheme in _VACUUM_LOGGED_SCHEMES


def _logged_vacuum(spark: SparkSession, full: str, before: int) -> tuple[int, int]:
    """(files deleted, their bytes) from the VACUUM START and END commits written after ``before``."""
    commits = spark.sql(f"DESCRIBE HISTORY {full} LIMIT 10").where(f"version > {before}").collect()
    metrics = {c["operation"]: c["operationMetrics"] for c in commits}
    if not {"VACUUM START", "VACUUM END"} <= metrics.keys():
        raise RuntimeError(f"{full}: VACUUM wrote no VACUUM START and END commits after version {before}, "
                           f"though {_VACUUM_LOGGING} is on for it")
    return int(metrics["VACUUM END"]["numDeletedFiles"]), int(metrics["VACUUM START"]["sizeOfDataToDelete"])


def maintain_table(spark: SparkSession, full: str, retain_hours: float, check: bool) -> TableMaintenance:
    metrics = spark.sql(f"OPTIMIZE {full}").first()["metrics"]
    vacuum = f"VACUUM {full} RETAIN {retain_hours:g} HOURS"
    logged = _vacuum_logged(spark, full)
    with _retention_check(spark, check):
        if logged:  # the commits count what VACUUM deleted: no second listing of the table's files
            before = current_version(spark, full)
            spark.sql(vacuum).collect()
            deleted, size = _logged_vacuum(spark, full, before)
        else:
            doomed = [r["path"] for r in spark.sql(f"{vacuum} DRY RUN").collect()]
            deleted, size = len(doomed), sum(_size(p) for p in doomed)  # before VACUUM deletes them
            spark.sql(vacuum).collect()
    return TableMaintenance(full, int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"]), deleted, size)


def _retention_hours(contract: TableContract) -> float:
    """The contract's ``delta.deletedFileRetentionDuration`` in hours (Delta's default: 7 days)."""
    text = dict(contract.properties).get("delta.deletedFileRetentionDuration", "interval 7 days")
    match = re.fullmatch(r"interval\s+(\d+(?:\.\d+)?)\s+(day|hour)s?", text.strip(), re.IGNORECASE)
    if not match:
        raise ValueError(f"{contract.name}: delta.deletedFileRetentionDuration {text!r}: expected 'interval N days'")
    return float(match.group(1)) * (24 if match.group(2).lower() == "day" else 1)


def maintain_tables(spark: SparkSession, config: ProfilingConfig, retain_days: float | None = None) -> MaintenanceResult:
    """OPTIMIZE and VACUUM every table of the catalog database that exists; what each removed."""
    days = config.maintenance.retain_days if retain_days is None else retain_days
    done, written = [], []
    for name, contract in table_contracts().items():
        full = qualified(config, name)
        if not spark.catalog.tableExists(full):
            continue
        with progress.step(f"maintain: {full}"):
            done.append(maintain_table(spark, full, days * 24, check=days * 24 >= _retention_hours(contract)))
        written.append(TableVersion(full, current_version(spark, full)))
        t = done[-1]
        log.info("maintain: %s: %d small files compacted into %d; %d files (%.1f MB) deleted", full,
                 t.files_compacted, t.files_written, t.files_deleted, t.bytes_deleted / 2**20)
    return MaintenanceResult(days, done, written)
