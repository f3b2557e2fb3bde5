"""Spark's Thrift JDBC/ODBC server over a workdir's catalog, for SQL clients (beeline, JDBC, PyHive).

The pyspark wheel ships the server's jar and ``bin/beeline`` but not
``sbin/start-thriftserver.sh``, so the server is started the way that script
does it: ``spark-submit --class ...HiveThriftServer2 spark-internal``, with the
same Delta and catalog settings as every other profiling session. It holds the
embedded Derby metastore while it runs: stop it before running a stage on the
same workdir.
"""

from __future__ import annotations

import os
from pathlib import Path

from profiling.config import ProfilingConfig
from profiling.spark import catalog_conf, delta_package
from profiling.workdir import lock_workdir

THRIFT_SERVER_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"


def spark_home() -> Path:
    import pyspark

    return Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent)


def ivy_home(config: ProfilingConfig) -> Path:
    """Where spark-submit's ``--packages`` resolution puts its jars (``<ivy>/jars``)."""
    return Path(config.spark.conf.get("spark.jars.ivy") or Path.home() / ".ivy2.5.2").expanduser()


def delta_driver_classpath(config: ProfilingConfig) -> str:
    """The Delta jars, named for the driver's own class path.

    ``--packages`` alone is not enough here: the server opens each JDBC session on a Thrift
    worker thread whose class loader does not see the jars ``--packages`` added, and the
    session then fails with ``ClassNotFoundException: ...DeltaCatalog`` (delta-io/delta#1332).
    The jars are those that ``--packages`` itself resolves into ``<ivy>/jars``.
    """
    _, artifact, version = delta_package().split(":")
    jars = ivy_home(config) / "jars"
    return os.pathsep.join(str(jars / f"io.delta_{name}-{version}.jar") for name in (artifact, "delta-storage"))


def thrift_server_command(config: ProfilingConfig, port: int, host: str = "127.0.0.1") -> list[str]:
    """The spark-submit line that serves ``config``'s catalog on ``host:port``."""
    command = [
        str(spark_home() / "bin" / "spark-submit"), "--class", THRIFT_SERVER_CLASS,
        "--master", config.spark.master, "--name", f"{config.spark.app_name}-sql-server",
        "--driver-memory", config.spark.driver_memory, "--packages", delta_package(),
        "--driver-class-path", delta_driver_classpath(config),
        "--conf", f"spark.jars.ivy={ivy_home(config)}",
        # The server's sessions hand dates to Delta as java.time.LocalDate (java8API is on for
        # JDBC), and Delta's metadata-only max(snapshot_date) then fails with a ClassCastException
        # in every latest_* view; answering from the files instead costs a scan of one column.
        "--conf", "spark.databricks.delta.optimizeMetadataQuery.enabled=false",
    ]
    for key, value in {**catalog_conf(config), **config.spark.conf}.items():
        command += ["--conf", f"{key}={value}"]
    return command + ["spark-internal", "--hiveconf", f"hive.server2.thrift.port={port}",
                      "--hiveconf", f"hive.server2.thrift.bind.host={host}"]


def jdbc_url(config: ProfilingConfig, port: int, host: str = "127.0.0.1") -> str:
    return f"jdbc:hive2://{host}:{port}/{config.catalog.database}"


def serve(config: ProfilingConfig, port: int, host: str = "127.0.0.1") -> None:
    """Replace this process with the server (so SIGTERM / Ctrl-C reach it directly)."""
    lock = lock_workdir(config)
    if lock is not None:
        os.set_inheritable(lock, True)  # the server's JVM keeps the workdir locked after exec
    env = {**os.environ, "SPARK_HOME": str(spark_home())}
    if config.spark.master.startswith("local"):
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # as build_spark_session does
    command = thrift_server_command(config, port, host)
    os.execve(command[0], command, env)
