"""Faults a nightly job meets: two runs started at once on one workdir."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from commands import ENV, PROFILING, profiling, sql_rows



@pytest.mark.slow
def test_two_runs_at_once_on_one_workdir_one_waits_its_turn_with_a_clear_message(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    profiling("generate", "--users", "40", "--out", str(data))
    args = ["ingest", "--input", str(data), "--workdir", str(work), "--snapshot-date", "2026-11-01",
            "--set", "spark.master=local[1]"]
    first = subprocess.Popen([PROFILING, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while not (work / ".lock").exists() or not (work / ".lock").read_text():
        assert time.time() < deadline and first.poll() is None, first.communicate()[1][-3000:]
        time.sleep(0.2)
    second = subprocess.run([PROFILING, *args], capture_output=True, text=True, env=ENV, timeout=600)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 2
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"workdir {work} is in use by pid {first.pid}" in errors[0], second.stderr[-2000:]
    assert "XSDB6" not in second.stderr and "Traceback" not in second.stderr
    # The first run's tables are whole: one commit each, and the counts it reported.
    counts = json.loads(out.strip().splitlines()[-1])
    assert sql_rows("SELECT count(*) AS n FROM profiling.behaviour_events", "--workdir", str(work)) == [{"n": counts["behaviour"]["accepted"]}]
    history = sql_rows("DESCRIBE HISTORY profiling.behaviour_events", "--workdir", str(work))
    assert [h["operation"] for h in sorted(history, key=lambda h: h["version"])] == ["CREATE TABLE", "WRITE"]
