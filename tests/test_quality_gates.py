"""Data-quality gates: a log that loses most of its rows stops the run with one line and keeps the
evidence; nothing downstream builds on a stopped, interrupted or empty ingest."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from pyspark.sql import functions as F

from commands import ENV, PROFILING, SMALL_SPARK, run_main
from malformed import COLUMNS, _good_rows, write_csv, write_valid_logs

DATE = dt.date(2026, 11, 2)
pytestmark = pytest.mark.xdist_group("session")  # one test needs a registered model: the module stays whole

DATABASE = "gates"
ALLOW = ["view", "buy"]


def _config(config, folder: Path, **input_settings):
    return config.model_copy(update={
        "input": config.input.model_copy(update={"dir": str(folder), **input_settings}),
        "catalog": config.catalog.model_copy(update={"database": DATABASE}),
    })


def write_tagged_logs(folder: Path) -> Path:
    """Valid logs whose behaviour events are all of type ``tag``; returns the behaviour file."""
    write_valid_logs(folder)
    path = folder / "behaviour.csv.gz"
    write_csv(path, COLUMNS["behaviour"], [{**r, "event_type": "tag"} for r in _good_rows("behaviour")])
    return path


def _rows(spark, table: str):
    return spark.table(f"{DATABASE}.{table}").where(F.col("snapshot_date") == F.lit(DATE))


@pytest.fixture(scope="module")
def gated(spark, config, tmp_path_factory):
    """One date through every state: a whole ingest, a rerun stopped by its gate, the rerun with the
    gate raised, then the stages that must refuse a snapshot without behaviour."""
    from profiling.evaluate import evaluate_profiles
    from profiling.exceptions import DataQualityError, NotEnoughData
    from profiling.ingest import ingest_logs
    from profiling.sequences import build_user_sequences
    from profiling.train.launch import train_encoder

    root = tmp_path_factory.mktemp("gates")
    good, tagged = root / "good", root / "tagged"
    write_valid_logs(good)
    tagged_file = write_tagged_logs(tagged)
    out = SimpleNamespace(tagged_file=tagged_file)
    out.first = ingest_logs(spark, _config(config, good, event_types=ALLOW), DATE)
    with pytest.raises(DataQualityError) as stopped:
        ingest_logs(spark, _config(config, tagged, event_types=ALLOW), DATE)
    out.stopped = stopped.value
    out.behaviour_after_stop = {r["ingest_id"]: r["count"] for r in _rows(spark, "behaviour_events")
                                .groupBy("ingest_id").count().collect()}
    out.quarantine_after_stop = _rows(spark, "quarantine").toPandas()
    out.runs_after_stop = _rows(spark, "ingest_runs").toPandas()
    with pytest.raises(DataQualityError) as refused:
        build_user_sequences(spark, _config(config, tagged), DATE)
    out.sequences_refused = str(refused.value)
    cfg = _config(config, tagged, event_types=ALLOW, max_quarantined_share=1.0)
    out.raised = ingest_logs(spark, cfg, DATE)
    out.sequences = build_user_sequences(spark, cfg, DATE)
    with pytest.raises(NotEnoughData) as no_training:
        train_encoder(spark, cfg, DATE)
    out.train_refused = str(no_training.value)
    with pytest.raises(NotEnoughData) as no_evaluation:
        evaluate_profiles(spark, cfg, DATE, model=None)
    out.evaluate_refused = str(no_evaluation.value)
    return out


def test_a_log_quarantined_whole_stops_ingest_with_one_line_naming_file_reason_values_and_settings(gated):
    assert str(gated.stopped) == (
        f"{gated.tagged_file}: 24 of 24 rows (100 %) quarantined as unknown_event_type (values: tag); "
        "allow them with input.event_types or raise input.max_quarantined_share (5 %)")


def test_a_stopped_ingest_writes_the_quarantine_and_ingest_runs_and_no_event_table(gated):
    first_id = gated.first.report.ingest_id
    stopped_id = gated.stopped.result.report.ingest_id
    # The event tables keep the rows of the last whole run; the evidence of the stopped run is kept.
    assert gated.behaviour_after_stop == {first_id: gated.first.counts["behaviour"].accepted}
    behaviour = gated.quarantine_after_stop[gated.quarantine_after_stop["source"] == "behaviour"]
    assert len(behaviour) == 24 and set(behaviour["reason_code"]) == {"unknown_event_type"}
    assert set(gated.quarantine_after_stop["ingest_id"]) == {stopped_id}
    runs = gated.runs_after_stop.set_index("source")
    assert set(runs["status"]) == {"stopped"} and set(runs["ingest_id"]) == {stopped_id}
    assert runs.loc["behaviour", "gate_message"] == str(gated.stopped)
    assert runs.loc["behaviour", "quarantined_by_reason"] == {"unknown_event_type": 24}
    assert runs.loc["social", "gate_message"] is None


def test_sequences_refuse_a_date_whose_last_ingest_stopped(gated):
    assert "stopped at a data-quality gate" in gated.sequences_refused
    assert str(gated.stopped) in gated.sequences_refused and "\n" not in gated.sequences_refused


def test_a_raised_ceiling_lets_the_same_log_through(gated):
    report = gated.raised.report
    assert not report.stopped
    assert (report.logs["behaviour"].read, report.logs["behaviour"].accepted) == (24, 0)
    assert report.logs["behaviour"].top_values["unknown_event_type"] == [("tag", 24)]
    assert report.users_without_behaviour == report.users == 6
    assert gated.sequences.users == 6


def test_train_refuses_a_snapshot_without_behaviour_in_one_line(gated):
    assert gated.train_refused.startswith(f"train: the sequences of {DATE} hold 0 behaviour events")
    assert "train.min_behaviour_events" in gated.train_refused and "\n" not in gated.train_refused


def test_evaluate_refuses_a_snapshot_without_behaviour_in_one_line(gated):
    assert gated.evaluate_refused.startswith(f"nothing to evaluate in snapshot {DATE}")
    assert "\n" not in gated.evaluate_refused


def test_the_cli_prints_evaluate_on_no_behaviour_as_one_line_and_exit_2(gated, pipeline, config, tmp_path, capsys):
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(config.model_dump()))
    code, errors = run_main(capsys, "evaluate", "--config", str(conf), "--snapshot-date", str(DATE),
                            "--set", f"catalog.database={DATABASE}")
    assert code == 2
    assert errors[-1].startswith(f"error: nothing to evaluate in snapshot {DATE}")
    assert "Traceback" not in "\n".join(errors)


def test_sequences_refuse_tables_left_by_an_interrupted_ingest(gated, spark, config):
    from profiling.exceptions import IncompleteIngest
    from profiling.sequences import build_user_sequences
    from profiling.tables import write_snapshot

    cfg = _config(config, gated.tagged_file.parent)
    # What an ingest killed after its first commit leaves: one table of another run, ingest_runs untouched.
    rows = _rows(spark, "social_edges").withColumn("ingest_id", F.lit("killed-run"))
    write_snapshot(spark, cfg, "social_edges", rows.localCheckpoint(), DATE)
    with pytest.raises(IncompleteIngest) as err:
        build_user_sequences(spark, cfg, DATE)
    assert "killed-run" in str(err.value) and "rerun ingest" in str(err.value)


@pytest.mark.jvm
def test_the_cli_stops_with_one_line_writes_the_evidence_and_logs_the_report(tmp_path):
    """Through the console script, in a workdir whose path holds a space and a quote."""
    from deltalake import DeltaTable
    from mlflow.tracking import MlflowClient

    data, work = tmp_path / "data", tmp_path / "my work" / "it's"
    write_tagged_logs(data)
    args = [PROFILING, "ingest", "--input", str(data), "--workdir", str(work), "--snapshot-date", str(DATE),
            "--set", "input.event_types=[view]", *SMALL_SPARK]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {data / 'behaviour.csv.gz'}: 24 of 24 rows (100 %) quarantined as unknown_event_type "
        "(values: tag); allow them with input.event_types or raise input.max_quarantined_share (5 %)")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    tables = work / "warehouse" / "profiling.db"
    quarantine = DeltaTable(str(tables / "quarantine")).to_pandas()
    assert (quarantine["reason_code"] == "unknown_event_type").sum() == 24
    assert set(DeltaTable(str(tables / "ingest_runs")).to_pandas()["status"]) == {"stopped"}
    assert not (tables / "behaviour_events").exists()
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("profiling").experiment_id])
    assert run.info.status == "FAILED" and run.data.metrics["behaviour_quarantined_unknown_event_type"] == 24
    report = json.loads(Path(client.download_artifacts(run.info.run_id, "data_quality.json", str(tmp_path))).read_text())
    assert report["decision"] == "stopped" and report["logs"]["behaviour"]["gate"] == "stopped"
    # The same log through a raised gate: test_a_raised_ceiling_lets_the_same_log_through, in this process.


def test_the_gates_are_validated_when_the_config_is_read():
    from profiling.config import load_config, parse_overrides
    from profiling.exceptions import ConfigError

    cfg = load_config(overrides=parse_overrides(["input.max_reason_share.duplicate_row=0.01"]))
    assert cfg.input.max_reason_share == {"duplicate_row": 0.01} and cfg.input.event_types is None
    with pytest.raises(ConfigError, match="unknown reason code"):
        load_config(overrides=parse_overrides(["input.max_reason_share.duplicates=0.01"]))
    with pytest.raises(ConfigError, match="max_quarantined_share"):
        load_config(overrides=parse_overrides(["input.max_quarantined_share=1.5"]))


def test_a_reason_over_its_own_ceiling_stops_the_log_under_the_overall_one():
    from profiling.quality import LogQuality, gate_message

    log = LogQuality("behaviour", "/in/behaviour.csv", read=1000, accepted=980, reasons={"duplicate_row": 20})
    assert gate_message(log, 0.05, {}) is None
    assert gate_message(log, 0.05, {"duplicate_row": 0.01}) == (
        "/in/behaviour.csv: 20 of 1,000 rows (2 %) quarantined as duplicate_row, above "
        "input.max_reason_share.duplicate_row (1 %); raise input.max_reason_share.duplicate_row")
