"""Shared mode (conf/shared.yaml): the catalog in a PostgreSQL metastore database that Spark's Hive
client opens over JDBC, runs and models on an MLflow tracking server with a PostgreSQL backend store and
served artifacts. Both servers start here on 127.0.0.1, with throwaway data and no password.

PostgreSQL 15 comes from Debian's packages (.ci/run installs postgresql-15 where it is missing); initdb
refuses root, so as root the server runs as the ``postgres`` user the package creates.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from cluster import free_port, wait_for_port
from commands import ENV, PROFILING, SMALL_SPARK, profiling

pytestmark = pytest.mark.jvm

REPO = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
USERS = 30
SNAPSHOT = "2026-10-05"


def _psql(port: int, database: str, sql: str) -> list[str]:
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "profiling", "-d", database,
                          "-At", "-c", sql], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL 15 server on 127.0.0.1 with databases ``metastore`` and ``mlflow``; its port."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"{PG_BIN / 'initdb'} is missing: install Debian's postgresql-15 (.ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="profiling-pg-"))  # not under pytest's root-only folder
    owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if owner:
        shutil.chown(root, "postgres")
    port = free_port()
    data = root / "data"
    for command in ([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "profiling"],
                    [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start",
                     "-o", f"-h 127.0.0.1 -p {port} -k {root}"]):
        done = subprocess.run([*owner, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    for database in ("metastore", "mlflow"):
        _psql(port, "postgres", f"CREATE DATABASE {database}")
    yield port
    subprocess.run([*owner, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                   capture_output=True, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    """``mlflow server`` with the PostgreSQL backend store and served artifacts; its URL and artifact folder."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port, log = free_port(), root / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"postgresql+psycopg2://profiling@127.0.0.1:{postgres}/mlflow",
             "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env={k: v for k, v in ENV.items() if k != "MLFLOW_TRACKING_URI"})
    try:
        wait_for_port(port, server, log)
        yield f"http://127.0.0.1:{port}", root / "artifacts"
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.fixture(scope="module")
def shared_run(postgres, tracking_server, tmp_path_factory):
    """``profiling run`` with a config based on conf/shared.yaml, pointed at this module's servers."""
    root = tmp_path_factory.mktemp("shared")
    data, work, warehouse = root / "data", root / "work", root / "warehouse"
    profiling("generate", "--users", str(USERS), "--out", str(data))
    config = root / "shared.yaml"
    config.write_text(yaml.safe_dump({
        "base": str(REPO / "conf" / "shared.yaml"),
        "spark": {"conf": {"spark.hadoop.javax.jdo.option.ConnectionURL":
                           f"jdbc:postgresql://127.0.0.1:{postgres}/metastore",
                           "spark.sql.warehouse.dir": str(warehouse)}},
        "mlflow": {"tracking_uri": tracking_server[0]},
    }))
    run = subprocess.run([PROFILING, "run", "--config", str(config), "--input", str(data), "--workdir", str(work),
                          "--snapshot-date", SNAPSHOT, "--set", "train.epochs=1", "--set", "model.dim=16",
                          *SMALL_SPARK], capture_output=True, text=True, env=ENV, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return {"config": config, "root": root, "work": work, "warehouse": warehouse, "run": run}


def test_the_catalog_lives_in_the_postgresql_metastore_and_the_tables_in_the_shared_warehouse(
        postgres, shared_run):
    tables = set(_psql(postgres, "metastore", 'SELECT t."TBL_NAME" FROM "TBLS" t JOIN "DBS" d '
                                              'ON t."DB_ID" = d."DB_ID" WHERE d."NAME" = \'profiling\''))
    assert {"behaviour_events", "user_sequences", "user_profile_embeddings", "user_interest_weights",
            "user_interest_evidence", "quarantine"} <= tables
    assert (shared_run["warehouse"] / "profiling.db" / "user_profile_embeddings" / "_delta_log").is_dir()
    work = shared_run["work"]
    assert not (work / "metastore_db").exists() and not (work / "warehouse").exists()
    assert not (work / ".lock").exists()  # no workdir lock in shared mode
    # Another process reads the same catalog (the embedded Derby one would have needed this workdir).
    count = profiling("sql", "--config", str(shared_run["config"]), "--workdir", str(shared_run["root"] / "other"),
                      "--format", "json", "SELECT count(*) AS n FROM profiling.user_profile_embeddings",
                      *SMALL_SPARK)
    assert json.loads(count.strip().splitlines()[-1])["n"] >= USERS


def test_runs_and_the_model_go_through_the_tracking_server_and_its_served_artifacts(
        postgres, tracking_server, shared_run):
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    url, artifacts = tracking_server
    client = MlflowClient(url)
    version = client.get_model_version_by_alias("profiling-encoder", "current")
    run = client.get_run(version.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served, not a path of this machine
    assert any(p.name == "MLmodel" for p in artifacts.rglob("MLmodel"))  # stored where the server keeps them
    assert _psql(postgres, "mlflow", "SELECT count(*) FROM runs") != ["0"]  # the backend is PostgreSQL
    stages = {r.data.tags.get("mlflow.runName", "").split()[0] for r in client.search_runs([run.info.experiment_id])}
    assert {"pipeline", "ingest", "sequences", "train", "infer"} <= stages
    mlflow.set_tracking_uri(url)
    try:
        model = mlflow.pyfunc.load_model("models:/profiling-encoder@current")
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    example = pd.DataFrame([{"user_id": "u", "item": ["i00001"], "category": [None], "event_type": ["view"],
                             "source": ["behaviour"], "attribute": [None], "gap_bucket": [1], "value_bucket": [1],
                             "ts": [1700000000]}])
    assert len(model.predict(example).iloc[0]["embedding"]) == 16
