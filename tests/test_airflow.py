"""The ``profiling_daily`` DAG under real Airflow (its own virtual environment, .venv-airflow).

Airflow 3.3 and its Spark provider live apart from profiling's environment (the provider's
pyspark-client overlaps pyspark's files); ``make test`` builds .venv-airflow from
constraints-airflow.txt. The DAG is parsed by Airflow's DagBag, then run with ``airflow dags test``
for two days against a local Spark connection, each reading the folder of its date
(``input.dir: .../{date}``, preference and social given as full state):

- day 1: generated logs, no model registered: the full refresh, and the day trains;
- day 2: new rows only: two new users, two new items and changed frequencies, training skipped (the
  daily refresh, the model of day 1 scoring items it never saw as unknown); and a user gone from every
  log (their one preference withdrawn): their profile ends.

Whether a day trains is the DAG's ``check_model_age`` branch: each day's task states show its choice, and
the branch's callable is asked once more after day 2.
The later day costs three spark-submits (ingest, sequences, infer: evaluate runs on training days).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from commands import profiling, table_frame

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_BIN = REPO / ".venv-airflow" / "bin"
BIN = Path(sys.executable).parent
USERS = 60
FIRST, SECOND = "2026-11-02", "2026-11-03"
LEAVER = "u-leaver"  # day 1: one preference and nothing else; day 2: in no log
NEW_USERS, NEW_ITEMS = ("u-new-a", "u-new-b"), ("i-new-1", "i-new-2")
DAILY_STATES = {**{t: "success" for t in ("ingest", "check_model_age", "sequences", "infer", "check_maintenance_day")},
                "full_refresh": "skipped", "train": "skipped", "evaluate": "skipped", "maintain": "skipped"}

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
        "full_refresh": ["train"], "sequences": ["infer"], "train": ["evaluate"], "evaluate": ["infer"],
        "infer": ["check_maintenance_day"], "check_maintenance_day": ["maintain"],
        "maintain": [],
    }
    stages = ["ingest", "sequences", "full_refresh", "train", "infer", "evaluate", "maintain"]
    assert all(dag["kinds"][s] == "SparkSubmitOperator" for s in stages)
    assert dag["kinds"]["check_model_age"] == "BranchPythonOperator"
    assert dag["kinds"]["check_maintenance_day"] == "ShortCircuitOperator"
    assert dag["args"]["full_refresh"][-1] == "--full-refresh" and "--full-refresh" not in dag["args"]["sequences"]
    assert dag["maintenance_days"] == ["2026-11-08", "2026-11-15"]  # Sundays, by default
    assert dag["trigger_rules"]["infer"] == "none_failed_min_one_success"
    assert dag["trigger_rules"]["evaluate"] == "all_success"  # the promotion gate: skipped with train
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


def _read(folder: Path) -> dict[str, pd.DataFrame]:
    return {log: pd.read_csv(folder / f"{log}.csv.gz", dtype=str, keep_default_na=False)
            for log in ("behaviour", "preference", "social", "items")}


def _write(folder: Path, frames: dict[str, pd.DataFrame]) -> None:
    folder.mkdir(parents=True)
    for log, frame in frames.items():
        frame.to_csv(folder / f"{log}.csv.gz", index=False, compression="gzip")


def _second_day(logs: Path) -> tuple[str, str]:
    """Day 2 from day 1's folder; returns the user whose frequencies it changes, and the category of the
    item it repeats."""
    day1 = _read(logs / FIRST)
    behaviour, preference, social, items = (day1[log] for log in ("behaviour", "preference", "social", "items"))
    start = int(behaviour["ts"].astype(int).max()) + 3600
    # Two new users, each the history of an existing one moved to day 2, one of their items a new one.
    donors = behaviour["user_id"].value_counts().index[:2]
    arrivals = []
    for new_user, new_item, donor in zip(NEW_USERS, NEW_ITEMS, donors):
        rows = behaviour[behaviour["user_id"] == donor].head(8).assign(user_id=new_user)
        rows = rows.assign(ts=[str(start + i) for i in range(len(rows))])
        rows.iloc[-3:, rows.columns.get_loc("item_id")] = new_item
        arrivals.append(rows)
    # Changed frequencies: an existing user's least frequent item becomes their most frequent.
    changed = behaviour["user_id"].value_counts().index[-1]
    theirs = behaviour[behaviour["user_id"] == changed]
    repeat = theirs[theirs["item_id"] == theirs["item_id"].value_counts().index[-1]].head(1)
    repeats = pd.concat([repeat] * 6).assign(ts=[str(start + 100 + i) for i in range(6)])
    new_items = pd.DataFrame([{"item_id": item, "category": items["category"].iloc[0], "title": f"New {item}"}
                              for item in NEW_ITEMS])
    edge = social.head(1).assign(user_id=NEW_USERS[0], other_user_id=behaviour["user_id"].iloc[0])
    _write(logs / SECOND, {"behaviour": pd.concat([*arrivals, repeats]), "items": new_items,  # full state:
                           "preference": preference[preference["user_id"] != LEAVER],  # the leaver's is gone
                           "social": pd.concat([social, edge])})
    return changed, repeat["category"].iloc[0]


@pytest.fixture(scope="module")
def days(airflow_env, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("daily")
    logs = root / "logs"
    profiling("generate", "--users", str(USERS), "--out", str(logs / FIRST))
    preference = pd.read_csv(logs / FIRST / "preference.csv.gz", dtype=str, keep_default_na=False)
    pd.concat([preference, preference.head(1).assign(user_id=LEAVER)]).to_csv(
        logs / FIRST / "preference.csv.gz", index=False, compression="gzip")
    changed, changed_category = _second_day(logs)
    config = root / "profiling.yaml"
    config.write_text(
        f"base: {REPO / 'conf' / 'default.yaml'}\n"
        f"workdir: {root / 'work'}\n"
        f"input:\n  dir: '{logs}/{{date}}'\n"  # each run reads the folder of its {{ ds }}
        "  full_state: [preference, social]\n"
        "spark:\n  show_progress: false\n  shuffle_partitions: 2\n"
        "model:\n  dim: 16\n"
        "train:\n  epochs: 1\n  num_processes: 1\n"  # DDP's two processes: the shared pipeline and the cluster
        "explain:\n  sample_users: 0\n"  # the DAG is under test here, not the sample figures
    )
    for date in (FIRST, SECOND):
        _dags_test(airflow_env, date, config)
    state = _dag_state(airflow_env, config)  # each day's branch is in its task states
    return {"config": config, "work": root / "work", "states": state["states"], "due": state["training_due"],
            "changed": changed, "changed_category": changed_category}


def _partition_users(frame: pd.DataFrame, date: str) -> set[str]:
    return set(frame.loc[frame["snapshot_date"].astype(str) == date, "user_id"])


def _infer_metrics(config: Path) -> dict[str, dict[str, float]]:
    """The metrics of each infer run, by snapshot date, from the workdir's MLflow store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{config.parent / 'work' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("profiling")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'infer'")
    return {run.data.tags["snapshot_date"]: run.data.metrics for run in runs}


def test_the_first_day_runs_every_stage_trains_and_writes_every_user(days):
    assert days["states"][FIRST] == {**DAILY_STATES, "full_refresh": "success", "train": "success",
                                     "evaluate": "success",  # training days only
                                     "sequences": "skipped"}  # training day: the full refresh instead
    frames = {name: table_frame(days["work"], name) for name in ("user_profile_embeddings", "user_interest_weights",
                                                                 "user_sequences")}
    counts = {name: len(_partition_users(f, FIRST)) for name, f in frames.items()}
    assert counts == {name: USERS + 1 for name in frames}  # with the leaver


def test_training_is_due_without_a_model_and_not_on_the_days_after_one_was_trained(days):
    assert days["states"][SECOND] == DAILY_STATES
    assert days["due"] == "sequences"  # the model of day 1 is still young
    profiles = table_frame(days["work"], "user_profile_embeddings")
    assert set(profiles["model_version"]) == {"1"}  # the day after scored with the model of day 1


def test_day_two_rebuilds_and_rescores_only_the_users_its_rows_reach(days):
    sequences = table_frame(days["work"], "user_sequences")
    profiles = table_frame(days["work"], "user_profile_embeddings")
    rebuilt = _partition_users(sequences, SECOND)
    assert {*NEW_USERS, days["changed"]} <= rebuilt
    assert len(rebuilt) < USERS  # the others keep their day-1 rows
    assert _partition_users(profiles, SECOND) == rebuilt
    metrics = _infer_metrics(days["config"])
    assert metrics[FIRST]["full_refresh"] == 1 and metrics[SECOND]["full_refresh"] == 0
    assert metrics[FIRST]["unseen_items"] == 0
    assert metrics[SECOND]["unseen_items"] == len(NEW_ITEMS) and metrics[SECOND]["unseen_share"] > 0


def test_day_two_moves_the_long_term_weights_of_the_user_whose_frequencies_changed(days):
    weights = table_frame(days["work"], "user_interest_weights")
    theirs = weights[(weights["user_id"] == days["changed"]) & (weights["horizon"] == "long")
                     & (weights["dimension"] == "category")]
    by_day = {day: theirs[theirs["snapshot_date"].astype(str) == day].set_index("key")["weight"]
              for day in (FIRST, SECOND)}
    assert by_day[SECOND][days["changed_category"]] > by_day[FIRST].get(days["changed_category"], 0.0)
    assert abs(by_day[SECOND].sum() - 1) < 1e-9


def test_day_two_ends_the_profile_of_the_user_gone_from_every_log(days):
    for name in ("user_sequences", "user_profile_embeddings", "user_interest_weights"):
        frame = table_frame(days["work"], name)
        removed = frame.set_index("user_id")["removed_on"].dropna().astype(str)
        assert set(removed.index) == {LEAVER} and set(removed) == {SECOND}, name
        assert LEAVER in _partition_users(frame, FIRST) and LEAVER not in _partition_users(frame, SECOND), name
