"""The console script, as a user runs it: separate processes, its own workdir and JVM."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import CLI_EXPLAINED, CLI_SNAPSHOT, CLI_USERS

PROFILING = str(Path(sys.executable).parent / "profiling")


def _run(*args, check=True, env=None):
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **(env or {})}
    proc = subprocess.run([PROFILING, *args], capture_output=True, text=True, env=env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"profiling {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc


def test_a_config_error_is_one_readable_line_and_exit_2(tmp_path):
    proc = _run("ingest", "--workdir", str(tmp_path), "--set", "train.epochs=many", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {Path('conf/default.yaml').resolve()}: train.epochs: Input should be a valid integer, "
        "unable to parse string as an integer (got 'many')"
    ]
    proc = _run("sql", "--workdir", str(tmp_path), "--format", "xml", "SELECT 1", check=False)
    assert proc.returncode == 2 and "--format 'xml'" in proc.stderr


def test_a_usage_error_names_the_argument_without_a_stack_trace(tmp_path):
    # --set takes one KEY=VALUE; a second one needs its own --set.
    proc = _run("train", "--workdir", str(tmp_path), "--set", "train.epochs=1", "model.dim=8", check=False)
    assert proc.returncode == 2
    assert "unexpected extra argument" in proc.stderr and "model.dim=8" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_generate_sizes_the_catalogue_and_refuses_an_uneven_one(tmp_path):
    shown = json.loads(_run("generate", "--users", "20", "--items", "60", "--out", str(tmp_path / "logs")).stdout)
    items = pd.read_csv(tmp_path / "logs" / "items.csv.gz")
    assert shown["items"] == len(items) == 60 and (items.groupby("category").size() == 3).all()
    proc = _run("generate", "--items", "1001", "--out", str(tmp_path / "uneven"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --items 1001: expected a multiple of the 20 categories, "
                                                "such as 1020"]
    assert not (tmp_path / "uneven").exists()


@pytest.fixture(scope="module")
def finished_run(cli_run) -> Path:
    """The shared workdir after `profiling generate` + `profiling run` on 60 users (snapshot 2026-10-05)
    and `profiling forget` of one of them."""
    summary = json.loads(cli_run["run"].stdout.strip().splitlines()[-1])
    assert summary["users"] == CLI_USERS and summary["model_version"] == "1"
    return cli_run["workdir"]


@pytest.mark.jvm
def test_generate_run_then_sql_json_counts_every_user(finished_run):
    proc = _run("sql", "--workdir", str(finished_run), "--format", "json",
                "SELECT dimension, count(DISTINCT w.user_id) AS users, min(e.n) AS n, min(e.d) AS d "
                "FROM profiling.user_interest_weights w CROSS JOIN (SELECT count(DISTINCT user_id) AS n, "
                "min(snapshot_date) AS d FROM profiling.user_profile_embeddings) e "
                "GROUP BY dimension ORDER BY dimension")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["n"], r["d"]) for r in rows] == [(CLI_USERS - 1, CLI_SNAPSHOT)] * 3  # one user forgotten
    assert [r["dimension"] for r in rows] == ["category", "event_type", "source"]
    assert all(r["users"] == CLI_USERS - 1 for r in rows if r["dimension"] != "category")


@pytest.mark.jvm
def test_explain_prints_json_that_validates_and_draws_the_png(finished_run, tmp_path):
    import jsonschema
    from PIL import Image

    from profiling.figures import DPI, PROFILE_SIZE
    from profiling.schemas import explain_schema

    png = tmp_path / "explained.png"
    proc = _run("explain", "--workdir", str(finished_run), "--user", CLI_EXPLAINED, "--format", "json",
                "--png", str(png))
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, explain_schema())
    assert doc["user_id"] == CLI_EXPLAINED and doc["snapshot_date"] == CLI_SNAPSHOT  # the newest snapshot by default
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (PROFILE_SIZE[0] * DPI, PROFILE_SIZE[1] * DPI)
    unknown = _run("explain", "--workdir", str(finished_run), "--user", "nobody", check=False)
    assert unknown.returncode == 2
    assert unknown.stdout == ""
    assert unknown.stderr.strip().splitlines()[-1].startswith(
        "error: user 'nobody' has no profile in profiling.user_profile_embeddings for snapshot 2026-10-05")
    assert "Traceback" not in unknown.stderr


@pytest.mark.jvm
def test_explain_and_current_model_start_no_jvm_and_take_no_lock(finished_run, tmp_path):
    no_java = {"JAVA_HOME": str(tmp_path / "no-java")}  # spark-submit runs $JAVA_HOME/bin/java
    spark = _run("sql", "--workdir", str(finished_run), "SELECT 1", check=False, env=no_java)
    assert spark.returncode != 0 and "JAVA_GATEWAY_EXITED" in spark.stderr  # a JVM cannot start
    with open(finished_run / ".lock", "a") as lock:  # as a running stage holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        doc = json.loads(_run("explain", "--workdir", str(finished_run), "--user", CLI_EXPLAINED, "--format", "json",
                              env=no_java).stdout)
    assert doc["user_id"] == CLI_EXPLAINED and doc["nearest_users"]
    model = json.loads(_run("current-model", "--workdir", str(finished_run), env=no_java).stdout)
    assert model["version"] == "1"
