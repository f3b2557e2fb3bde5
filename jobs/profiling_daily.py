"""Airflow DAG ``profiling_daily``: ingest → sequences → infer, every day, where sequences is the daily
refresh (the users the day's changes reach), or, when a model is due, a full refresh followed by train
and evaluate (the promotion gate: the new version becomes ``current`` only if it ranks the test targets
no worse than the current one, within ``mlflow.promotion_tolerance``; then its test figures), before
infer, which scores with ``current``, so a worse model never reaches the profiles; then, once a week,
maintain (OPTIMIZE and VACUUM of every table). Evaluate runs on training days only: it ranks every
user's test target and fits ALS on the whole behaviour log, a cost that does not shrink with the day's
changes, and between trainings the model it would measure is the same. A rejected version leaves
``current`` as old as it was, so the next day trains again, on newer logs.

Each stage is a ``spark-submit`` of its ``jobs/`` entry point (SparkSubmitOperator, connection
``profiling_spark``), for the snapshot date of the run's data interval (``{{ ds }}``). Training runs
only when the registered encoder is older than ``max_model_age_days``. This file imports Airflow only: profiling runs in its own
environment (``params.python``), reached through spark-submit and one CLI call.

Set-up: put ``jobs/`` in the DAGs folder (or link this file), create the Spark connection (type
spark, host ``local[*]``, ``spark://host:7077``, ``yarn``...), and have the ``spark-submit`` of
profiling's environment on the worker's PATH. docs/operations.md, "Airflow", has the commands.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import BranchPythonOperator, ShortCircuitOperator
from airflow.sdk import DAG, Param

log = logging.getLogger(__name__)

REPO = Path(os.environ.get("PROFILING_HOME", Path(__file__).resolve().parent.parent))
# profiling.spark.delta_package() and DELTA_SQL_CONF, written out because this file runs in Airflow's
# environment, which cannot import profiling; tests/test_dag_settings.py checks that they are equal.
DELTA_PACKAGE = "io.delta:delta-spark_4.1_2.13:4.4.0"
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
STAGE_TIMEOUTS = {  # execution_timeout per task; Airflow 3 has no SLAs, a timeout fails the try.
    "ingest": dt.timedelta(hours=2),
    "sequences": dt.timedelta(hours=2),
    "full_refresh": dt.timedelta(hours=4),
    "train": dt.timedelta(hours=6),
    "infer": dt.timedelta(hours=2),
    "evaluate": dt.timedelta(hours=2),
    "maintain": dt.timedelta(hours=4),
}


def training_due(params: dict, **_) -> bool:
    """True (run ``train``) when no encoder is registered or the current one is old enough."""
    profiling = Path(params["python"]).parent / "profiling"
    out = subprocess.run([str(profiling), "current-model", "--config", params["config"]],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"profiling current-model failed ({out.returncode}): {out.stderr[-2000:]}")
    model = json.loads(out.stdout.strip().splitlines()[-1])
    limit = float(params["max_model_age_days"])
    if model["version"] is None:
        log.info("no %s@current registered yet: training", model["registered_model"])
        return True
    due = model["age_days"] >= limit
    log.info("%s version %s is %.2f days old (limit %s): %s", model["registered_model"], model["version"],
             model["age_days"], limit, "training" if due else "skipping training")
    return due


def choose_refresh(params: dict, **_) -> str:
    """The task that builds the day's sequences: ``full_refresh`` (every user, which training reads) when a
    model is due, else ``sequences`` (the daily refresh)."""
    return "full_refresh" if training_due(params) else "sequences"


def maintenance_due(params: dict, logical_date: dt.datetime | None = None, **_) -> bool:
    """True (run ``maintain``: OPTIMIZE and VACUUM of every table) on the run of the week's maintenance day
    (a run without a logical date, such as a manual one, counts as today)."""
    day = logical_date or dt.datetime.now(dt.timezone.utc)
    due = day.isoweekday() == int(params["maintenance_weekday"])
    log.info("%s %s the maintenance day (ISO weekday %s)", day.date(), "is" if due else "is not",
             params["maintenance_weekday"])
    return due


def spark_stage(stage: str, task_id: str | None = None, args: tuple[str, ...] = (), **kwargs) -> SparkSubmitOperator:
    task_id = task_id or stage
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(REPO / "jobs" / f"{stage}.py"),
        application_args=["--config", "{{ params.config }}",
                          *(["--snapshot-date", "{{ ds }}"] if stage != "maintain" else []), *args],
        conn_id="profiling_spark",
        name=f"profiling-{task_id}-{{{{ ds }}}}",
        packages=DELTA_PACKAGE,
        conf={**DELTA_CONF, "spark.pyspark.python": "{{ params.python }}",
              "spark.driver.memory": "{{ params.driver_memory }}"},
        execution_timeout=STAGE_TIMEOUTS[task_id],
        **kwargs,
    )


with DAG(
    dag_id="profiling_daily",
    description="User profiles from behaviour, preference and social logs: one Delta snapshot per day",
    schedule="@daily",
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    # The embedded Derby metastore admits one JVM at a time; with a shared Hive metastore
    # several days could run at once.
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=12),
    default_args={
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(hours=1),
    },
    params={
        "config": Param(os.environ.get("PROFILING_CONFIG", str(REPO / "conf" / "default.yaml")), type="string",
                        description="profiling YAML config (workdir, input, model, train...)"),
        "python": Param(os.environ.get("PROFILING_PYTHON", str(REPO / ".venv" / "bin" / "python")), type="string",
                        description="Interpreter of profiling's environment (driver and executors)"),
        "driver_memory": Param("4g", type="string"),
        "max_model_age_days": Param(7, type="number", minimum=0,
                                    description="Retrain when the registered encoder is at least this old"),
        "maintenance_weekday": Param(7, type="integer", minimum=1, maximum=7,
                                     description="ISO weekday (7: Sunday) whose run also compacts and vacuums "
                                                 "every table (profiling maintain)"),
    },
    tags=["profiling"],
) as dag:
    ingest = spark_stage("ingest")
    check_model_age = BranchPythonOperator(
        task_id="check_model_age",
        python_callable=choose_refresh,
        execution_timeout=dt.timedelta(minutes=15),
    )
    sequences = spark_stage("sequences")
    full_refresh = spark_stage("sequences", task_id="full_refresh", args=("--full-refresh",))
    train = spark_stage("train")
    evaluate = spark_stage("evaluate")  # the promotion gate, after train: skipped with it
    # One of sequences and evaluate runs (the other branch is skipped): infer scores after either.
    infer = spark_stage("infer", trigger_rule="none_failed_min_one_success")
    check_maintenance_day = ShortCircuitOperator(
        task_id="check_maintenance_day",
        python_callable=maintenance_due,
        execution_timeout=dt.timedelta(minutes=5),
    )
    maintain = spark_stage("maintain")

    ingest >> check_model_age >> [sequences, full_refresh]
    full_refresh >> train >> evaluate >> infer
    sequences >> infer >> check_maintenance_day >> maintain
