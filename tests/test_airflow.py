"""The ``profiling_daily`` DAG under real Airflow (its own virtual environment, .venv-airflow).

Airflow 3.3 and its Spark provider live apart from profiling's environment (the provider's
pyspark-client overlaps pyspark's files); ``make test`` builds .venv-airflow from
constraints-airflow.txt. The DAG is parsed by Airflow's DagBag, then run for one day with
``airflow dags test`` against a local Spark connection, reading the folder of its date
(``input.dir: .../{date}``): with no model registered, the day trains.
Whether a day trains is the DAG's ``check_model_age`` branch, asked before and after that day: the
first day takes the full refresh and trains, the day after the daily refresh, and the fresh model is
kept (``infer``'s trigger rule, checked on the parsed DAG, runs it after the skipped branch). One day, not two: a second ``dags test`` costs four more spark-submits
(about 250 CPU s) to exercise Airflow's own short-circuit semantics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from commands import profiling, table_frame

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_BIN = REPO / ".venv-airflow" / "bin"
BIN = Path(sys.executable).parent
USERS = 60
FIRST = "2026-11-02"

pytestmark = pytest.mark.jvm


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    if not (AIRFLOW_BIN / "airflow").exists():
        pytest.fail(f"{AIRFLOW_BIN / 'airflow'} is missing: `make test` builds .venv-airflow")
    home = tmp_path_factory.mktemp("airflow")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "jobs"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_PROFILING_SPARK": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        # SparkSubmitOperator runs the spark-submit found on PATH: profiling's environment's.
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    env.pop("PYSPARK_PYTHON", None)
    migrate = subprocess.run([str(AIRFLOW_BIN / "airflow"), "db", "migrate"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    return env


def test_the_dag_imports_cleanly_with_the_expected_task_graph(airflow_env):
    probe = """
import json
from datetime import datetime, timedelta
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=%r)
dag = bag.dags["profiling_daily"]
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "edges": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
    "kinds": {t.task_id: type(t).__name__ for t in dag.tasks},
    "trigger_rules": {t.task_id: getattr(t.trigger_rule, "value", t.trigger_rule) for t in dag.tasks},
    "retries": {t.task_id: t.retries for t in dag.tasks},
    "backoff": all(t.retry_exponential_backoff for t in dag.tasks),
    "timeouts": {t.task_id: t.execution_timeout is not None for t in dag.tasks},
    "args": {t: dag.task_dict[t].application_args for t in ("train", "sequences", "full_refresh")},
    "max_active_runs": dag.max_active_runs,
    "maintenance_days": [str(day.date()) for day in (datetime(2026, 11, 2) + timedelta(days=n) for n in range(14))
                         if dag.task_dict["check_maintenance_day"].python_callable(dag.params.dump(), day)],
}))
""" % str(REPO / "jobs")
    out = subprocess.run([str(AIRFLOW_BIN / "python"), "-c", probe], env=airflow_env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    dag = json.loads(out.stdout.strip().splitlines()[-1])
    assert dag["errors"] == {}
    assert dag["edges"] == {
        "ingest": ["check_model_age"], "check_model_age": ["full_refresh", "sequences"],
        "full_refresh": ["train"], "sequences": ["infer"], "train": ["infer"], "infer": ["evaluate"],
        "evaluate": ["check_maintenance_day"], "check_maintenance_day": ["maintain"], "maintain": [],
    }
    stages = ["ingest", "sequences", "full_refresh", "train", "infer", "evaluate", "maintain"]
    assert all(dag["kinds"][s] == "SparkSubmitOperator" for s in stages)
    assert dag["kinds"]["check_model_age"] == "BranchPythonOperator"
    assert dag["kinds"]["check_maintenance_day"] == "ShortCircuitOperator"
    assert dag["args"]["full_refresh"][-1] == "--full-refresh" and "--full-refresh" not in dag["args"]["sequences"]
    assert dag["maintenance_days"] == ["2026-11-08", "2026-11-15"]  # Sundays, by default
    assert dag["trigger_rules"]["infer"] == "none_failed_min_one_success"
    assert all(n >= 1 for n in dag["retries"].values()) and dag["backoff"] and all(dag["timeouts"].values())
    assert "{{ ds }}" in dag["args"]["train"]
    assert dag["max_active_runs"] == 1


def _dags_test(env: dict[str, str], date: str, config: Path) -> subprocess.CompletedProcess:
    conf = json.dumps({"config": str(config), "python": sys.executable})
    proc = subprocess.run([str(AIRFLOW_BIN / "airflow"), "dags", "test", "profiling_daily", date, "--conf", conf],
                          env=env, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return proc


def _dag_state(env: dict[str, str], config: Path) -> dict:
    """Every run's task states, by logical date, from Airflow's metadata database, and whether training is
    due: the DAG's ``check_model_age`` callable, as the task calls it, with the DAG's default params. One
    process for both (each Airflow process imports Airflow and parses the DAG anew)."""
    probe = f"""
import json
from airflow.dag_processing.dagbag import DagBag
from airflow.models.dagrun import DagRun
dag = DagBag(dag_folder={str(REPO / 'jobs')!r}).dags["profiling_daily"]
params = {{**dag.params.dump(), "config": {str(config)!r}, "python": {sys.executable!r}}}
print(json.dumps({{
    "states": {{str(run.logical_date.date()): {{ti.task_id: ti.state for ti in run.get_task_instances()}}
               for run in DagRun.find(dag_id="profiling_daily")}},
    "training_due": dag.task_dict["check_model_age"].python_callable(params),
}}))
"""
    out = subprocess.run([str(AIRFLOW_BIN / "python"), "-c", probe], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def first_day(airflow_env, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("daily")
    profiling("generate", "--users", str(USERS), "--out", str(root / "logs" / FIRST))
    config = root / "profiling.yaml"
    config.write_text(
        f"base: {REPO / 'conf' / 'default.yaml'}\n"
        f"workdir: {root / 'work'}\n"
        f"input:\n  dir: '{root / 'logs'}/{{date}}'\n"  # each run reads the folder of its {{ ds }}
        "spark:\n  show_progress: false\n  shuffle_partitions: 2\n"
        "model:\n  dim: 16\n"
        "train:\n  epochs: 2\n  num_processes: 1\n"  # DDP's two processes: the shared pipeline and the cluster
        "explain:\n  sample_users: 0\n"  # the DAG is under test here, not the sample figures
    )
    before = _dag_state(airflow_env, config)
    _dags_test(airflow_env, FIRST, config)
    after = _dag_state(airflow_env, config)
    return {"config": config, "states_before": before["states"], "states": after["states"],
            "due_before": before["training_due"], "due_after": after["training_due"]}


def test_the_first_day_runs_every_stage_and_writes_that_snapshot(first_day):
    assert first_day["states_before"] == {}
    states = first_day["states"]
    assert states[FIRST] == {**{t: "success" for t in ("ingest", "check_model_age", "full_refresh", "train",
                                                        "infer", "evaluate", "check_maintenance_day")},
                             "sequences": "skipped",  # training day: the full refresh instead
                             "maintain": "skipped"}  # a Monday
    tables = first_day["config"].parent / "work"
    frames = {name: table_frame(tables, name) for name in ("user_profile_embeddings", "user_interest_weights",
                                                           "user_sequences")}
    counts = {name: f[f["snapshot_date"].astype(str) == FIRST]["user_id"].nunique() for name, f in frames.items()}
    assert counts == {"user_profile_embeddings": USERS, "user_interest_weights": USERS, "user_sequences": USERS}
    profiles = frames["user_profile_embeddings"]
    assert set(profiles["model_version"]) == {"1"}


def test_training_is_due_without_a_model_and_not_the_day_after_one_was_trained(first_day):
    assert first_day["due_before"] == "full_refresh"
    assert first_day["due_after"] == "sequences"  # the next run refreshes daily, skips train; infer keeps version 1
