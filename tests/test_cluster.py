"""The whole pipeline through spark-submit on a standalone cluster bound to loopback.

A master and a 2-core worker are started with the pyspark wheel's ``bin/spark-class``;
executors are separate JVMs (and Python workers) that get the library from the wheel
passed with ``--py-files``, and training runs TorchDistributor with ``local_mode=false``
as a barrier stage on them. Anything that only works in local mode fails here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commands import profiling, table_frame

from profiling.spark import DELTA_SQL_CONF, delta_package
from profiling.sql_server import spark_home

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAPSHOT = "2026-10-05"
USERS = 60

pytestmark = pytest.mark.jvm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    raise AssertionError(f"nothing listens on {port} after {seconds} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """spark://127.0.0.1:PORT with one worker of 2 cores; yields (master URL, worker work dir)."""
    root = tmp_path_factory.mktemp("cluster")
    # The daemons get the suite's JVM options too (tests/conftest.py), as the executors do in submitted_run.
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(root / "logs"), "SPARK_WORKER_DIR": str(root / "worker"),
           "SPARK_DAEMON_JAVA_OPTS": os.environ.get("SPARK_SUBMIT_OPTS", "")}
    port = _free_port()
    master_url = f"spark://127.0.0.1:{port}"
    spark_class = str(spark_home() / "bin" / "spark-class")
    commands = {
        "master": [spark_class, "org.apache.spark.deploy.master.Master",
                   "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(_free_port())],
        "worker": [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                   "--cores", "2", "--memory", "6g", "--webui-port", str(_free_port()),
                   "--work-dir", str(root / "worker"), master_url],
    }
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, command in commands.items():
            log = root / f"{name}.log"
            with log.open("w") as sink:
                procs[name] = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
            if name == "master":
                _wait_for_port(port, procs[name], log)
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


@pytest.fixture(scope="module")
def submitted_run(standalone_cluster, tmp_path_factory):
    """`spark-submit jobs/pipeline.py` against the standalone master; returns (workdir, process, command)."""
    master_url, _ = standalone_cluster
    root = tmp_path_factory.mktemp("submit")
    data, work, dist = root / "data", root / "work", root / "dist"
    profiling("generate", "--users", str(USERS), "--out", str(data))
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
        "--conf", f"spark.executor.extraJavaOptions={os.environ.get('SPARK_SUBMIT_OPTS', '')}",
        "--py-files", str(wheel),
        str(REPO / "jobs" / "pipeline.py"),
        "--input", str(data), "--workdir", str(work), "--snapshot-date", SNAPSHOT,
        "--set", "train.local_mode=false", "--set", "train.epochs=1", "--set", "model.dim=16",
        "--set", "spark.shuffle_partitions=2",
    ]
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_PYTHON", None)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env, cwd=root)
    (root / "submit.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return work, proc, command


def test_the_pipeline_runs_on_executors_and_writes_every_table(standalone_cluster, submitted_run):
    _, worker_dir = standalone_cluster
    work, proc, _ = submitted_run
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["users"] == USERS and summary["model_version"] == "1"
    # The application's executor ran on the worker (its log is under the worker's work dir), and
    # training ran there as TorchDistributor's barrier stage with one task per process.
    executor_logs = "".join(p.read_text(errors="replace") for p in worker_dir.glob("app-*/*/stderr"))
    assert "finished global sync successfully" in executor_logs
    assert executor_logs.count("has entered the global sync") >= 2
    assert "Started distributed training with 2 executor processes" in proc.stdout + proc.stderr
    frames = {name: table_frame(work, name) for name in ("user_sequences", "user_profile_embeddings",
                                                         "user_interest_weights")}
    assert {name: f[f["snapshot_date"].astype(str) == SNAPSHOT]["user_id"].nunique() for name, f in frames.items()} \
        == {name: USERS for name in frames}
    assert len(table_frame(work, "behaviour_events")) > USERS


def test_the_cluster_run_is_tracked_in_mlflow_with_its_model(submitted_run):
    from mlflow import MlflowClient

    work, _, _ = submitted_run
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("profiling")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'pipeline'")
    assert [r.info.status for r in runs] == ["FINISHED"]
    run = runs[0]
    assert run.data.params["train.local_mode"] == "False"
    assert run.data.tags["snapshot_date"] == SNAPSHOT
    train_run = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'train'")[0]
    assert {"best_val_ndcg_at_10", "best_val_hit_at_10"} <= set(train_run.data.metrics)
    assert train_run.data.tags["mlflow.parentRunId"] == run.info.run_id
    versions = client.search_model_versions("name = 'profiling-encoder'")
    assert [str(v.version) for v in versions] == ["1"]
