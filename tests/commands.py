"""The ``profiling`` console script as the end-to-end tests run it: a separate process, loopback Spark."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

PROFILING = str(Path(sys.executable).parent / "profiling")
ENV = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
# The Spark settings of the shared sessions, for the console script's runs on tiny data: on a few
# thousand rows, Spark's default 8 shuffle partitions (and VACUUM's, OPTIMIZE's, DELETE's) cost more
# tasks than rows.
SMALL_SPARK = ("--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2")


def profiling(*args: str, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    """Run ``profiling ARGS``; its stdout, or an AssertionError with the end of its stderr."""
    proc = subprocess.run([PROFILING, *args], capture_output=True, text=True, env={**ENV, **(env or {})},
                          timeout=timeout)
    assert proc.returncode == 0, f"profiling {' '.join(args[:2])} failed:\n{proc.stderr[-4000:]}"
    return proc.stdout


def delta_table(workdir: Path, name: str, database: str = "profiling"):
    """A table of a workdir's embedded catalog, read in this process with delta-rs: no JVM."""
    from deltalake import DeltaTable

    from profiling.tables import table_dir

    return DeltaTable(str(table_dir(Path(workdir), database, name)))


def table_frame(workdir: Path, name: str, database: str = "profiling"):
    """The current version of a table as a pandas frame."""
    return delta_table(workdir, name, database).to_pandas()


def rows_naming(frame, table: str, user: str):
    """Which rows of ``frame`` (a table named ``table``) name ``user``: as a user column, or inside the
    quarantine's raw JSON record."""
    import json

    def raw_users(record) -> set:
        try:
            raw = json.loads(record) if record else {}
        except ValueError:
            return set()
        return {raw.get("user_id"), raw.get("other_user_id")} if isinstance(raw, dict) else set()

    if table == "quarantine":
        return frame["raw_record"].map(lambda record: user in raw_users(record))
    if table == "social_edges":
        return (frame["user_id"] == user) | (frame["other_user_id"] == user)
    return frame["user_id"] == user


def files_naming(folder: Path, user: str) -> list[str]:
    """Data files under ``folder`` that hold ``user`` as a value, or inside a raw JSON record."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    found = []
    for path in folder.rglob("*.parquet"):
        data = pq.read_table(path)
        for column in data.column_names:
            values = data[column]
            if str(values.type) not in ("string", "large_string"):
                continue
            if pc.any(pc.equal(values, user)).as_py() or pc.any(pc.match_substring(values, f'"{user}"')).as_py():
                found.append(str(path))
                break
    return found


@contextlib.contextmanager
def _cli_logger_restored():
    """The CLI points the ``profiling`` logger at the stderr of the moment (capsys's); put it back
    afterwards, so later tests do not log into a closed capture."""
    logger = logging.getLogger("profiling")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def run_main(capsys, *args: str) -> tuple[int, list[str]]:
    """``profiling ARGS`` in this process (the shared session's JVM) where it must fail: its exit code and
    stderr lines."""
    import pytest

    from profiling.cli import main

    with _cli_logger_restored(), pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


def main_output(capsys, *args: str) -> str:
    """``profiling ARGS`` in this process where it must succeed (and starts no Spark session: a command
    that does stops it when done, the shared one included): its stdout."""
    from profiling.cli import main

    with _cli_logger_restored():
        main(list(args))
    return capsys.readouterr().out
