"""One process at a time per workdir while its catalog is the embedded Derby metastore.

Derby admits one JVM; a second one fails deep inside Hive with ``XSDB6``. An
exclusive ``flock`` on ``<workdir>/.lock``, taken before the JVM opens the
catalog and held until the process exits, turns that into one clear line
naming the holder. With a shared metastore in ``spark.conf`` (a Hive metastore service,
``hive.metastore.uris``, or a metastore database that Spark's Hive client opens over JDBC,
``spark.hadoop.javax.jdo.option.ConnectionURL`` other than Derby) no lock is taken: that metastore
admits many processes.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import sys

from profiling.config import ProfilingConfig
from profiling.exceptions import MissingStageOutput, WorkdirBusy

_held: dict[str, int] = {}


def metastore_database(config: ProfilingConfig) -> str | None:
    """The JDBC URL of a shared metastore database the config names (not the embedded Derby one), else None."""
    url = config.spark.conf.get("spark.hadoop.javax.jdo.option.ConnectionURL", "")
    return url if url and not url.startswith("jdbc:derby:") else None


def uses_embedded_catalog(config: ProfilingConfig) -> bool:
    return not (any(key.endswith("hive.metastore.uris") for key in config.spark.conf) or metastore_database(config))


def lock_workdir(config: ProfilingConfig) -> int | None:
    """Take (or keep) this process's lock on the workdir; returns its file descriptor (None: no lock needed)."""
    if not uses_embedded_catalog(config):
        return None
    config.workdir_path.mkdir(parents=True, exist_ok=True)
    path = str(config.workdir_path / ".lock")
    if path in _held:
        return _held[path]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 500).decode(errors="replace").strip() or "unknown process"
        os.close(fd)
        raise WorkdirBusy(
            f"workdir {config.workdir_path} is in use by {holder}: its embedded catalog admits one process "
            "at a time; wait for that one to finish (or set a shared Hive metastore in spark.conf)"
        ) from None
    os.ftruncate(fd, 0)
    since = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:3]))
    os.write(fd, f"pid {os.getpid()} ({command}) since {since}".encode())
    _held[path] = fd
    return fd


def require_catalog(config: ProfilingConfig) -> None:
    """Stop with one line when the workdir holds no embedded catalog yet (a mistyped ``--workdir``)."""
    if uses_embedded_catalog(config) and not (config.workdir_path / "metastore_db").is_dir():
        raise MissingStageOutput(
            f"workdir {config.workdir_path} holds no profiling catalog (no metastore_db): check --workdir, "
            "or run `profiling ingest` or `profiling run` there first")
