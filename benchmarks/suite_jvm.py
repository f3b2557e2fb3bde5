"""The settings every JVM of the test suite starts with, and the class archive they share.

The suite starts dozens of JVMs, each for a stage or a query on tiny data, where a JVM's fixed costs
dominate: compiling (hence the client compiler alone, given back its 240 MiB code cache, see
docs/performance.md) and loading, parsing and verifying Spark's classes. A dynamic class-data-sharing
archive (JEP 350) holds those classes as the JVM left them after one representative start; every later
JVM maps it instead of loading them again. A JVM maps an archive only when the JDK and the leading
class-path entries match the ones it was made with (it warns on its stdout and runs without it
otherwise), so the archive is keyed by the JDK and the pyspark install, and the launcher's own small JVM,
whose class path differs and whose stdout is the command it builds, does not get it.

``tests/conftest.py`` sets the environment (``suite_environment``) and makes the archive once per machine
(``make_class_archive``) before the test workers start.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from profiling.spark import profiling_cache

# The client compiler alone, with the code cache C1-only shrinks to 48 MiB given back (Spark overflows it
# and recompiles), and the serial collector; C1's frames are larger, and ALS's deep task deserialisation
# overflowed the default 1 MiB thread stack, hence -Xss4m.
JVM_FLAGS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m -XX:+UseSerialGC -Xss4m"
# Expressions interpreted instead of compiled by Janino: on the suite's tiny tables compiling each query's
# projections costs more than the code wins back. A Spark setting that SparkConf reads from the driver JVM's
# system properties (Spark refuses it in executors' Java options, which take JVM_FLAGS alone).
SPARK_SETTINGS = "-Dspark.sql.codegen.factoryMode=NO_CODEGEN"

# One start as the suite's starts go: a session with Delta and the Derby catalog, the ingest and sequences
# stages on a few generated users, a catalog query. The JVM writes the archive at a normal exit only, so
# the gateway is closed and waited for (pyspark would kill it at interpreter exit).
_REPRESENTATIVE_START = """
import datetime as dt, sys
from pathlib import Path
from profiling.config import load_config
from profiling.generate import generate_logs
from profiling.pipeline import run_ingest, run_sequences
from profiling.spark import build_spark_session
root = Path(sys.argv[1])
generate_logs(root / "in", users=20, seed=1, events_per_user=(8, 20))
config = load_config(overrides={"workdir": str(root / "work"), "input": {"dir": str(root / "in")},
                                "spark": {"master": "local[2]", "shuffle_partitions": 2, "show_progress": False}})
spark = build_spark_session(config)
day = dt.date(2026, 11, 1)
run_ingest(spark, config, day)
run_sequences(spark, config, day)
spark.sql("SELECT count(*) FROM profiling.user_sequences").collect()
gateway = spark.sparkContext._gateway
jvm = gateway.proc
spark.stop()
gateway.shutdown()
jvm.stdin.close()
sys.exit(jvm.wait(timeout=600))
"""


def class_archive() -> Path:
    """Where this machine keeps the suite's archive: one per JDK and pyspark install."""
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else shutil.which("java")
    jars = Path(importlib.util.find_spec("pyspark").origin).parent / "jars"
    key = f"{Path(java or 'java').resolve()}|{jars}|{jars.stat().st_mtime_ns if jars.exists() else 0}"
    return profiling_cache() / f"suite-classes-{hashlib.sha1(key.encode()).hexdigest()[:12]}.jsa"


def suite_environment(archive: Path) -> dict[str, str]:
    """SPARK_SUBMIT_OPTS (every Spark JVM: sessions, spark-submit, the console script's) and the launcher's
    SPARK_LAUNCHER_OPTS."""
    return {"SPARK_SUBMIT_OPTS": f"{JVM_FLAGS} -XX:SharedArchiveFile={archive} {SPARK_SETTINGS}",
            "SPARK_LAUNCHER_OPTS": JVM_FLAGS}


def make_class_archive(archive: Path, timeout: int = 900) -> None:
    """Run the representative start with ``-XX:ArchiveClassesAtExit`` and put its archive in place whole.
    On a machine that has never resolved Delta's jars, this start resolves and records them too."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f"{archive.name}.{os.getpid()}")
    env = {**os.environ, "SPARK_SUBMIT_OPTS": f"{JVM_FLAGS} -XX:ArchiveClassesAtExit={partial} {SPARK_SETTINGS}",
           "SPARK_LAUNCHER_OPTS": JVM_FLAGS}
    with tempfile.TemporaryDirectory() as root:
        start = subprocess.run([sys.executable, "-c", _REPRESENTATIVE_START, root], env=env, capture_output=True,
                               text=True, timeout=timeout)
    if start.returncode or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the suite's class archive was not written (exit {start.returncode}):\n"
                           f"{start.stderr[-4000:]}")
    partial.replace(archive)
