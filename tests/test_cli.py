"""The console script, as a user runs it: separate processes, its own workdir and JVM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROFILING = str(Path(sys.executable).parent / "profiling")


def _run(*args, check=True):
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
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


@pytest.mark.slow
def test_generate_run_then_sql_json_counts_every_user(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    generated = json.loads(_run("generate", "--users", "60", "--out", str(data)).stdout)
    assert generated["behaviour"] > 0
    out = _run("run", "--input", str(data), "--workdir", str(work), "--snapshot-date", "2026-10-05",
               "--set", "train.epochs=1", "--set", "model.dim=16", "--set", "spark.master=local[2]")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["users"] == 60 and summary["model_version"] == "1"
    proc = _run("sql", "--workdir", str(work), "--format", "json",
                "SELECT count(DISTINCT user_id) AS n, min(snapshot_date) AS d FROM profiling.user_profile_embeddings")
    assert proc.stdout.splitlines() == ['{"n": 60, "d": "2026-10-05"}']
    proc = _run("sql", "--workdir", str(work), "--format", "json",
                "SELECT dimension, count(DISTINCT user_id) AS users FROM profiling.user_interest_weights "
                "GROUP BY dimension ORDER BY dimension")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["dimension"] for r in rows] == ["category", "event_type", "source"]
    assert all(r["users"] == 60 for r in rows if r["dimension"] != "category")
