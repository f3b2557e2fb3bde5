"""Expected failures end in one line and exit code 2, found before any JVM starts where they can be;
unexpected ones keep their stack trace and end with a line saying what the job was doing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import yaml

from commands import ENV, PROFILING, run_main


@pytest.fixture(scope="module")
def conf_file(spark, config, tmp_path_factory):
    """The shared session's config as a file, so that in-process commands reuse its session (whose
    catalog is made on first use)."""
    spark.sql("SHOW DATABASES").collect()
    path = tmp_path_factory.mktemp("conf") / "conf.yaml"
    path.write_text(yaml.safe_dump(config.model_dump()))
    return path


def test_sql_with_an_unknown_column_is_one_line(conf_file, capsys):
    code, err = run_main(capsys, "sql", "--config", str(conf_file), "SELECT no_such_column FROM range(1)")
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: SQL: [UNRESOLVED_COLUMN") and "no_such_column" in err[0]


def test_a_mistyped_workdir_is_refused_and_not_created(tmp_path, capsys):
    missing = tmp_path / "wokrdir"
    for command in (["sql", "SELECT 1"], ["explain", "--user", "u1"], ["evaluate"], ["forget", "--user", "u1"],
                    ["sequences"], ["train"], ["infer"]):
        code, err = run_main(capsys, *command, "--workdir", str(missing))
        assert code == 2 and err == [f"error: workdir {missing} holds no profiling catalog (no metastore_db): "
                                     "check --workdir, or run `profiling ingest` or `profiling run` there first"]
    assert not missing.exists()


def test_a_snapshot_date_past_the_calendar_is_one_line_before_any_jvm(tmp_path):
    proc = subprocess.run([PROFILING, "ingest", "--workdir", str(tmp_path / "w"), "--input", str(tmp_path),
                           "--snapshot-date", "9999-12-31"], capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --snapshot-date 9999-12-31: expected a date from 1970-01-01 to 9999-12-01"]
    assert not (tmp_path / "w" / "metastore_db").exists()


def test_the_last_snapshot_date_still_validates_its_timestamps():
    from profiling.config import LATEST_SNAPSHOT, load_config
    from profiling.ingest import ValidationRules

    rules = ValidationRules.for_snapshot(load_config(overrides={"input": {"future_tolerance_hours": 87_600}}),
                                         LATEST_SNAPSHOT)
    assert rules.latest_ts > 253_000_000_000


def test_an_unexpected_failure_keeps_its_trace_and_ends_with_what_the_job_was_doing(capsys):
    from profiling import progress
    from profiling.cli import app

    @app.command("explode-for-test", hidden=True)
    def explode() -> None:
        with progress.step("ingest: validating the behaviour log /data/behaviour.csv"):
            raise RuntimeError("disk on fire\nsecond line")

    try:
        code, err = run_main(capsys, "explode-for-test")
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "explode-for-test"]
    assert code == 1
    assert "Traceback (most recent call last):" in err and "RuntimeError: disk on fire" in err
    assert err[-1] == ("error: profiling explode-for-test failed unexpectedly while ingest: validating the "
                       "behaviour log /data/behaviour.csv: RuntimeError: disk on fire")


def test_a_stage_run_whose_process_was_killed_is_marked_killed_at_the_next_start(tmp_path):
    from mlflow.tracking import MlflowClient

    from profiling.config import load_config
    from profiling.tracking import close_dead_runs, configure

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = textwrap.dedent(f"""
        import datetime, time
        from profiling.config import load_config
        from profiling.tracking import stage_run
        config = load_config(overrides={{"workdir": {str(tmp_path)!r}, "mlflow": {{"tracking_uri": {store!r}}}}})
        with stage_run(config, "ingest", datetime.date(2026, 11, 1)) as run_id:
            print(run_id, flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=ENV)
    run_id = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    client = MlflowClient(store)
    assert client.get_run(run_id).info.status == "RUNNING"  # what a killed stage leaves behind
    config = load_config(overrides={"workdir": str(tmp_path), "mlflow": {"tracking_uri": store}})
    configure(config)
    assert close_dead_runs(config) == [run_id]
    assert client.get_run(run_id).info.status == "KILLED"
    assert close_dead_runs(config) == []


def test_a_dotted_spark_setting_on_the_command_line_is_one_setting():
    from profiling.config import load_config, parse_overrides

    cfg = load_config(overrides=parse_overrides(["spark.conf.spark.executor.memory=2g",
                                                 "spark.conf.spark.sql.adaptive.enabled=false"]))
    assert cfg.spark.conf == {"spark.executor.memory": "2g", "spark.sql.adaptive.enabled": "false"}


def test_a_nested_spark_setting_in_a_file_is_refused(tmp_path):
    from profiling.config import load_config
    from profiling.exceptions import ConfigError

    path = tmp_path / "nested.yaml"
    path.write_text("spark:\n  conf:\n    spark:\n      executor:\n        memory: 2g\n")
    with pytest.raises(ConfigError, match=r"spark\.conf: .*not a mapping.*--set spark\.conf\.spark\.x\.y"):
        load_config(path)
