"""A standalone Spark cluster bound to loopback, and one pseudonymous pipeline run submitted to it, shared by
the tests of the cluster (tests/test_cluster.py) and of pseudonymisation (tests/test_privacy.py).

A master and a 2-core worker are started with the pyspark wheel's ``bin/spark-class``; executors are
separate JVMs (and Python workers) that get the library from the wheel passed with ``--py-files``, and
training runs TorchDistributor with ``local_mode=false`` as a barrier stage on them. The run hashes user
ids (``privacy.hash_user_ids``, its key in the driver's environment only), so one spark-submit shows both
that the pipeline works on executors and that no raw id reaches its tables, MLflow or its output.
tests/conftest.py imports the fixtures, which makes them session-wide.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from commands import profiling

from profiling.spark import DELTA_SQL_CONF, delta_package
from profiling.sql_server import spark_home

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SNAPSHOT = "2026-10-05"
CLUSTER_USERS = 60
ID_KEY = "test-only-pseudonym-key-5f1c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    raise AssertionError(f"nothing listens on {port} after {seconds} s:\n{log.read_text()[-3000:]}")


def _jvm_flags() -> str:
    """The suite's JVM options without its Spark settings, which Spark refuses in executors' Java options."""
    return " ".join(o for o in os.environ.get("SPARK_SUBMIT_OPTS", "").split() if not o.startswith("-Dspark."))


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """spark://127.0.0.1:PORT with one worker of 2 cores; yields (master URL, worker work dir)."""
    root = tmp_path_factory.mktemp("cluster")
    # The daemons get the suite's JVM options too (tests/conftest.py), as the executors do in cluster_run.
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(root / "logs"), "SPARK_WORKER_DIR": str(root / "worker"),
           "SPARK_DAEMON_JAVA_OPTS": _jvm_flags()}
    port = free_port()
    master_url = f"spark://127.0.0.1:{port}"
    spark_class = str(spark_home() / "bin" / "spark-class")
    commands = {
        "master": [spark_class, "org.apache.spark.deploy.master.Master",
                   "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(free_port())],
        "worker": [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                   "--cores", "2", "--memory", "6g", "--webui-port", str(free_port()),
                   "--work-dir", str(root / "worker"), master_url],
    }
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, command in commands.items():
            log = root / f"{name}.log"
            with log.open("w") as sink:
                procs[name] = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
            if name == "master":
                wait_for_port(port, procs[name], log)
        deadline = time.time() + 120
        while "Successfully registered with master" not in (root / "worker.log").read_text():
            assert time.time() < deadline and procs["worker"].poll() is None, (root / "worker.log").read_text()
            time.sleep(1)
        yield master_url, root / "worker"
    finally:
        for proc in reversed(list(procs.values())):
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def cluster_run(standalone_cluster, tmp_path_factory) -> dict:
    """`spark-submit jobs/pipeline.py` against the standalone master, with user ids hashed. Tests that change
    its workdir (test_privacy's forget) run after those that read it as the run left it (test_cluster): modules
    run in name order on one worker. Returns workdir, the generated raw user ids, the finished process, and
    what the driver and the executors printed."""
    master_url, worker_dir = standalone_cluster
    root = tmp_path_factory.mktemp("submit")
    data, work, dist = root / "data", root / "work", root / "dist"
    profiling("generate", "--users", str(CLUSTER_USERS), "--out", str(data))
    behaviour = pd.read_csv(data / "behaviour.csv.gz", dtype=str, keep_default_na=False)
    bad = behaviour.head(1).assign(value="NaN")  # a quarantined raw record naming a user
    pd.concat([behaviour, bad]).to_csv(data / "behaviour.csv.gz", index=False, compression="gzip")
    users = set(behaviour["user_id"])
    for log in ("preference", "social"):
        frame = pd.read_csv(data / f"{log}.csv.gz", dtype=str, keep_default_na=False)
        users |= set(frame["user_id"]) | set(frame.get("other_user_id", pd.Series(dtype=str)))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(dist), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("profiling-*.whl"))
    command = [
        str(spark_home() / "bin" / "spark-submit"), "--master", master_url,
        "--deploy-mode", "client", "--driver-memory", "2g", "--executor-memory", "4g",
        "--total-executor-cores", "2",
        "--packages", delta_package(),
        *(arg for key, value in DELTA_SQL_CONF.items() for arg in ("--conf", f"{key}={value}")),
        "--conf", f"spark.pyspark.python={sys.executable}",
        "--conf", f"spark.executor.extraJavaOptions={_jvm_flags()}",
        "--py-files", str(wheel),
        str(REPO / "jobs" / "pipeline.py"),
        "--input", str(data), "--workdir", str(work), "--snapshot-date", CLUSTER_SNAPSHOT,
        "--set", "train.local_mode=false", "--set", "train.epochs=1", "--set", "model.dim=16",
        "--set", "spark.shuffle_partitions=2", "--set", "privacy.hash_user_ids=true",
    ]
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1", "PROFILING_ID_KEY": ID_KEY}
    env.pop("PYSPARK_PYTHON", None)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env, cwd=root)
    (root / "submit.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stderr[-5000:]
    executors = "".join(p.read_text(errors="replace") for p in worker_dir.glob("app-*/*/std*"))
    return {"workdir": work, "users": sorted(users), "process": proc, "printed": proc.stdout + proc.stderr + executors}
