"""What the console shows: profiling's own progress, with Spark's output in a log file unless --verbose;
mistakes refused before any JVM starts; demo hints that run as printed."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from commands import ENV, PROFILING, SMALL_SPARK
from conftest import SNAPSHOT
from malformed import write_valid_logs

from profiling.spark import delta_package

# What only the JVM, Spark, Ivy, Hive and log4j print.
JVM_START = "WARNING: Using incubator modules"  # the JVM's first line, before any resolution
SPARK_OUTPUT = re.compile(rf"{JVM_START}|Ivy Default Cache|:: resolving dependencies|\bWARN\b|ObjectStore"
                          r"|HiveExternalCatalog|\[Stage \d+")


def _ingest(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    write_valid_logs(tmp_path / "in")
    return subprocess.run([PROFILING, "ingest", "--input", str(tmp_path / "in"), "--workdir", str(tmp_path / "work"),
                           "--snapshot-date", "2026-11-01", *SMALL_SPARK, *extra],
                          capture_output=True, text=True, timeout=600, env=ENV)


@pytest.mark.jvm
def test_a_run_prints_its_progress_and_puts_spark_output_in_a_log_file(cli_run):
    """The shared CLI workdir's `profiling run`, as its console showed it."""
    proc, work = cli_run["run"], cli_run["workdir"]
    assert not SPARK_OUTPUT.search(proc.stdout + proc.stderr), proc.stderr
    json.loads(proc.stdout)  # stdout is the result alone
    lines = proc.stderr.splitlines()
    assert any(re.fullmatch(r"  behaviour: read [\d,]+ = accepted [\d,]+ \+ quarantined [\d,]+ \(.*"
                            r"non_finite_value \(values: NaN\) 1\)", line) for line in lines), lines
    assert any(re.fullmatch(r"  ✓ validating the behaviour log .*behaviour\.csv\.gz  \d+\.\d s", line) for line in lines)
    for stage in ("ingest", "sequences", "train", "infer"):
        assert any(re.fullmatch(rf"✓ {stage}  \d+\.\d s", line) for line in lines), (stage, lines)
    logs = list((work / "logs").glob("run-*.log"))
    assert len(logs) == 1 and lines[-1].startswith(f"log: {logs[0]} ")
    spark_log = logs[0].read_text()
    assert JVM_START in spark_log and "WARN ObjectStore" in spark_log
    assert "shared archive" not in spark_log  # the JVM mapped the suite's class archive (benchmarks/suite_jvm.py)
    assert "INFO profiling.progress: ingest: done in" in spark_log  # profiling's lines too, with their time


@pytest.mark.jvm
def test_verbose_shows_spark_output_on_the_console_and_writes_no_log(tmp_path, monkeypatch):
    monkeypatch.setitem(ENV, "XDG_CACHE_HOME", str(tmp_path / "cache"))  # no record of resolved jars yet
    proc = _ingest(tmp_path, "--verbose")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert JVM_START in proc.stderr and "WARN ObjectStore" in proc.stderr
    assert "Ivy Default Cache" in proc.stderr  # Maven resolution ran, and its result is kept for the next start
    recorded = f"{delta_package().replace(':', '_')}"
    assert sorted(p.name for p in (tmp_path / "cache" / "profiling").iterdir()) == [f"{recorded}.jars",
                                                                                    f"{recorded}.lock"]
    assert re.search(r"^  behaviour: read ", proc.stderr, re.MULTILINE)
    assert re.search(r"^✓ ingest  \d+\.\d s$", proc.stderr, re.MULTILINE)
    assert json.loads(proc.stdout)["logs"]["behaviour"]["read"] > 0
    assert not (tmp_path / "work" / "logs").exists()


@pytest.mark.parametrize("args, message", [
    (["ingest", "--input", "{tmp}/nowhere"], "input.dir: {tmp}/nowhere is not a folder"),
    (["infer", "--model-version", "7"], "no version 7 of registered model profiling-encoder"),
    (["train", "--set", "train.use_gpu=true", "--set", "train.num_processes=64"], "CUDA device(s)"),
    (["explain", "--user", "u1", "--format", "xml"], "--format 'xml': expected text or json"),
    (["forget", "--user", " "], "forget: no user ids given"),
])
def test_mistakes_are_refused_before_any_jvm_starts(tmp_path, args, message):
    work = tmp_path / "work"
    (work / "metastore_db").mkdir(parents=True)  # a catalog, as far as the checks can tell
    args = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run([PROFILING, *args, "--workdir", str(work)], capture_output=True, text=True, timeout=300,
                          env=ENV)
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr[-3000:]
    assert message.format(tmp=tmp_path) in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (work / "logs").exists()  # the session, which opens the log first, was never asked for


def test_the_stages_that_need_no_model_start_without_torch():
    """torch (the CUDA build, about 2.5 s of imports) loads for train, infer, evaluate and explain only."""
    probe = ("import sys, profiling.cli, profiling.pipeline, profiling.maintenance, profiling.privacy; "
             "print('torch' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=ENV)
    assert shown.returncode == 0 and shown.stdout.strip() == "False", shown.stderr[-3000:]


def test_the_demo_hints_are_commands_that_run_from_here(pipeline, spark, config, capsys):
    from profiling.console import profiling_command
    from profiling.demo import print_summary

    print_summary(spark, config, SNAPSHOT, pipeline)
    command = shlex.split(profiling_command())
    hints = [shlex.split(line) for line in capsys.readouterr().out.splitlines() if " --workdir " in line]
    assert [h[:len(command)] for h in hints] == [command] * 4
    assert [h[len(command)] for h in hints] == ["sql", "sql", "sql", "explain"]
    for hint in hints:
        assert hint[hint.index("--workdir") + 1] == str(config.workdir_path)
        # The catalog is this session's (Derby admits one JVM): ask each command for its help instead.
        shown = subprocess.run([*hint[:len(command) + 1], "--help"], capture_output=True, text=True, timeout=120,
                               env=ENV)
        assert shown.returncode == 0 and "--workdir" in shown.stdout, shown.stderr


def test_the_command_is_named_relative_to_the_current_folder_when_inside_it(monkeypatch):
    from profiling.console import profiling_command

    scripts = Path(PROFILING).parent
    monkeypatch.chdir(scripts.parent.parent)  # e.g. the repository that holds .venv
    assert profiling_command() == f"{scripts.parent.name}/{scripts.name}/profiling"
    shown = subprocess.run([profiling_command(), "--help"], capture_output=True, text=True, timeout=120, env=ENV)
    assert shown.returncode == 0 and "demo" in shown.stdout
