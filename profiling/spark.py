"""The one place a SparkSession is built.

Delta's extensions and jars (resolved from Maven Central on first start; later
starts name the jar files that resolution gave, see ``resolved_delta_jars``), a
persistent catalog under ``<workdir>`` (Derby metastore + warehouse) so that
tables registered by one command are visible to the next, UTC session time.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from profiling.config import ProfilingConfig
from profiling.exceptions import ConfigError
from profiling.workdir import lock_workdir, metastore_database

if TYPE_CHECKING:  # pyspark loads only when a session is built: the CLI imports this module at start
    from pyspark.sql import SparkSession

# Delta's SQL extension and catalog, which every JVM reading the tables needs: this module's sessions,
# spark-submit lines (tests/test_cluster.py) and the Airflow DAG, which repeats them as literals
# because it cannot import profiling (tests/test_dag_settings.py keeps the two equal).
DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def catalog_conf(config: ProfilingConfig) -> dict[str, str]:
    """What every JVM that reads this workdir's catalog needs: Delta, the warehouse, the Derby metastore."""
    from profiling.tables import warehouse_dir

    workdir = config.workdir_path
    return {
        **DELTA_SQL_CONF,
        "spark.sql.warehouse.dir": str(warehouse_dir(workdir)),
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={workdir / 'metastore_db'};create=true",
        "spark.driver.extraJavaOptions": java_option("derby.system.home", str(workdir)),
        "spark.sql.session.timeZone": "UTC",
    }


def java_option(name: str, value: str) -> str:
    """``-Dname=value`` quoted for Spark's launcher, which splits Java options at spaces and reads
    quotes and backslashes (a workdir named ``my work`` or ``it's`` must stay one option)."""
    escaped = f"-D{name}={value}".replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def delta_package() -> str:
    """The Maven coordinate of the Delta jars matching the installed pyspark and delta-spark."""
    import importlib.metadata

    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{importlib.metadata.version('delta-spark')}"


def profiling_cache() -> Path:
    """This user's cache folder for profiling (``$XDG_CACHE_HOME/profiling``, else ``~/.cache/profiling``):
    what a later start can reuse, never anything a run needs kept."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "profiling"


def _resolved_jars_record() -> Path:
    return profiling_cache() / f"{delta_package().replace(':', '_')}.jars"


def resolved_delta_jars() -> str | None:
    """The jar files an earlier session's Maven resolution of ``delta_package()`` gave, when every one
    is still there: a session that names them skips Ivy (a few seconds of every command's start)."""
    try:
        jars = _resolved_jars_record().read_text().split()
    except OSError:
        return None
    present = jars and all(Path(urlparse(jar).path).is_file() for jar in jars)
    return ",".join(jars) if present else None


def record_resolved_jars(spark: SparkSession) -> None:
    """Keep the jars Maven resolution gave this session, for ``resolved_delta_jars``."""
    jars = spark.sparkContext.getConf().get("spark.jars", "").split(",")
    if not any(Path(urlparse(jar).path).name.startswith("io.delta_delta-spark") for jar in jars):
        return
    record = _resolved_jars_record()
    partial = record.with_name(f"{record.name}.{os.getpid()}")
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("\n".join(jars) + "\n")
        partial.replace(record)  # whole or absent: another process may be reading it
    except OSError as exc:  # a read-only home only costs the next start its resolution
        logging.getLogger(__name__).debug("could not record the resolved Delta jars in %s: %s", record, exc)


@contextlib.contextmanager
def first_resolution():
    """Held while a session resolves ``delta_package()`` from Maven: Ivy's cache is not safe for two
    JVMs downloading into it at once (on a fresh machine, parallel first starts fail with "download
    failed"), so the first start resolves and the others wait, then read its record. Yields the
    recorded jars once another process has resolved them, else None (then resolve, and record)."""
    lock = _resolved_jars_record().with_suffix(".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
    except OSError:  # a read-only home: resolve unguarded, as before
        yield resolved_delta_jars()
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield resolved_delta_jars()


def ivy_jar(config: ProfilingConfig, coordinate: str) -> Path:
    """Where Spark's Ivy puts the jar of Maven ``coordinate`` (group:artifact:version)."""
    group, artifact, version = coordinate.strip().split(":")
    return _ivy_home(config) / "jars" / f"{group}_{artifact}-{version}.jar"


def _ivy_home(config: ProfilingConfig) -> Path:
    return Path(config.spark.conf.get("spark.jars.ivy", Path.home() / ".ivy2.5.2")).expanduser()


def _config_packages(config: ProfilingConfig) -> list[str]:
    return [p.strip() for p in config.spark.conf.get("spark.jars.packages", "").split(",") if p.strip()]


def metastore_driver_classpath(config: ProfilingConfig) -> str:
    """The jars of the config's ``spark.jars.packages``, resolved from Maven, for the driver JVM's own class
    path: the metastore database's JDBC driver must be there (Hive's client finds drivers through
    ``java.sql.DriverManager``, which ignores the jars Spark adds once the JVM runs). Missing jars are
    resolved first, by a Spark that starts for that alone."""
    packages = _config_packages(config)
    jars = [ivy_jar(config, p) for p in packages]
    if not all(jar.is_file() for jar in jars):
        resolve = ("from pyspark.sql import SparkSession; SparkSession.builder.master('local[1]')"
                   f".config('spark.jars.packages', {','.join(packages)!r}).config('spark.ui.enabled', 'false')"
                   f".config('spark.jars.ivy', {str(_ivy_home(config))!r}).getOrCreate().stop()")
        done = subprocess.run([sys.executable, "-c", resolve], capture_output=True, text=True, timeout=900)
        missing = [str(jar) for jar in jars if not jar.is_file()]
        if done.returncode != 0 or missing:
            raise ConfigError(f"could not resolve spark.jars.packages {','.join(packages)} for the metastore "
                              f"database's JDBC driver (missing {', '.join(missing) or 'nothing'}): "
                              f"{(done.stderr.strip().splitlines() or [''])[-1][:300]}")
    own = config.spark.conf.get("spark.driver.extraClassPath")
    return os.pathsep.join([*(str(jar) for jar in jars), *([own] if own else [])])


def launched_by_spark_submit() -> bool:
    """True when spark-submit started the JVM before our code ran (it hands Python the gateway port).

    Then the submit line owns the master, the jars and the driver's memory: setting them again
    from the config would at best do nothing and at worst run a cluster job in local mode.
    """
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _with_recorded_delta_jars(builder) -> SparkSession:
    """The session, naming the Delta jars a first start on this machine resolved (and recorded)."""
    from delta import configure_spark_with_delta_pip

    if cached := resolved_delta_jars():
        return builder.config("spark.jars", cached).getOrCreate()
    with first_resolution() as cached:
        if cached:  # resolved by another process while this one waited
            return builder.config("spark.jars", cached).getOrCreate()
        spark = configure_spark_with_delta_pip(builder).getOrCreate()
        record_resolved_jars(spark)
        return spark


def build_spark_session(config: ProfilingConfig) -> SparkSession:
    """Create (or join) the session for this workdir's catalog."""
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    lock_workdir(config)
    submitted = launched_by_spark_submit()
    local = not submitted and config.spark.master.startswith("local")
    builder = SparkSession.builder.appName(config.spark.app_name)
    if not submitted:
        # Python workers must import the same environment as the driver (on a cluster,
        # spark-submit's spark.pyspark.python says which).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master(config.spark.master).config("spark.driver.memory", config.spark.driver_memory)
    if local:
        # The machine's hostname may resolve to an address Spark cannot bind.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.ui.enabled", "false")
    for key, value in catalog_conf(config).items():
        builder = builder.config(key, value)
    builder = (
        builder.config("spark.sql.shuffle.partitions", str(config.spark.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", str(config.spark.show_progress).lower())
        .config("spark.databricks.delta.snapshotPartitions", "2")
        # Parquet TIMESTAMP(NANOS) (pandas' default) is read as a long of nanoseconds, which ingest
        # converts to seconds, instead of failing the read.
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", "2")
        .enableHiveSupport()
    )
    for key, value in config.spark.conf.items():
        builder = builder.config(key, value)
    if not submitted and metastore_database(config):  # spark-submit: its --driver-class-path says where
        builder = builder.config("spark.driver.extraClassPath", metastore_driver_classpath(config))
    # Jars or packages of the config's own go through Spark's resolution as given, Delta's with them.
    own_jars = any(key in config.spark.conf for key in ("spark.jars", "spark.jars.packages"))
    if submitted or own_jars:
        spark = (builder if submitted else configure_spark_with_delta_pip(builder, _config_packages(config))
                 ).getOrCreate()
    else:
        spark = _with_recorded_delta_jars(builder)
    spark.sparkContext.setLogLevel(config.spark.log_level)
    return spark
