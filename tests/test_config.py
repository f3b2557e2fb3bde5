"""Settings are declared once (conf/default.yaml is generated from them), validated once, and every error
names the key and the file; `profiling config show` says where each value comes from."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from commands import main_output

from profiling.config import (
    DEFAULT_CONFIG, DEMO_CONFIG, ProfilingConfig, defaults_yaml, load_config, parse_overrides, resolve_config,
)
from profiling.exceptions import ConfigError


def test_the_shipped_default_config_is_valid():
    config = load_config()
    assert config.catalog.database == "profiling"
    assert config.train.local_mode is True
    assert config.tracking_uri.startswith("sqlite:///") and config.tracking_uri.endswith("mlflow.db")


def test_the_shipped_default_config_is_generated_from_the_settings_and_holds_their_defaults():
    assert DEFAULT_CONFIG.read_text() == defaults_yaml(), \
        "conf/default.yaml is stale: run `profiling config defaults > conf/default.yaml`"
    assert load_config() == ProfilingConfig()


def test_every_setting_says_what_it_is_for():
    def undescribed(model: type[BaseModel], prefix: str = "") -> list[str]:
        missing = []
        for name, info in model.model_fields.items():
            if not (info.description or "").strip():
                missing.append(prefix + name)
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                missing += undescribed(info.annotation, f"{prefix}{name}.")
        return missing

    assert undescribed(ProfilingConfig) == []


def test_a_config_can_extend_a_base_file_and_the_demo_config_does(tmp_path):
    demo = load_config(DEMO_CONFIG)
    assert demo.train.epochs < load_config().train.epochs
    assert demo.model == load_config().model
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")


def test_overrides_are_parsed_as_yaml_values_and_win():
    config = load_config(overrides=parse_overrides(["train.epochs=7", "train.use_gpu=true", "input.dir=/data"]))
    assert (config.train.epochs, config.train.use_gpu, config.input.dir) == (7, True, "/data")


def test_an_unknown_key_is_named_with_its_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "train.epoch" in str(err.value) and "unknown key" in str(err.value)


def test_a_wrong_type_is_named_with_the_value_it_got():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=parse_overrides(["train.epochs=many"]))
    assert "train.epochs" in str(err.value) and "'many'" in str(err.value) and str(DEFAULT_CONFIG) in str(err.value)


def test_heads_must_divide_the_model_dimension():
    with pytest.raises(ConfigError, match="model.heads"):
        load_config(overrides={"model": {"dim": 30, "heads": 4}})


def test_a_malformed_override_and_a_missing_file_are_reported():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["train.epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("conf/nope.yaml")


def test_a_missing_input_log_names_the_setting(tmp_path):
    from profiling.ingest import resolve_input_paths

    day = dt.date(2026, 11, 3)
    (tmp_path / "behaviour.csv").write_text("user_id,item_id,event_type,ts\n")
    config = load_config(overrides={"input": {"dir": str(tmp_path)}})
    with pytest.raises(ConfigError, match="input.preference"):
        resolve_input_paths(config, day)
    (tmp_path / "preference.csv").write_text("user_id,dimension,key\n")
    config = load_config(overrides={"input": {"dir": str(tmp_path), "social": str(tmp_path / "nope.csv")}})
    with pytest.raises(ConfigError, match="input.social"):
        resolve_input_paths(config, day)


def test_date_in_an_input_path_is_the_snapshot_date(tmp_path):
    from profiling.ingest import resolve_input_paths

    for day in ("2026-11-03", "2026-11-04"):
        (tmp_path / day).mkdir()
        for source in ("behaviour", "preference", "social"):
            (tmp_path / day / f"{source}.csv").write_text("user_id\n")
    config = load_config(overrides={"input": {"dir": str(tmp_path / "{date}"),
                                              "items": str(tmp_path / "items-{date}.csv")}})
    (tmp_path / "items-2026-11-04.csv").write_text("item_id\n")
    paths = resolve_input_paths(config, dt.date(2026, 11, 4))
    assert paths["behaviour"] == tmp_path / "2026-11-04" / "behaviour.csv"
    assert paths["items"] == tmp_path / "items-2026-11-04.csv"
    with pytest.raises(ConfigError, match=f"input.dir: {tmp_path / '2026-11-05'} is not a folder"):
        resolve_input_paths(config, dt.date(2026, 11, 5))


def _shown(output: str) -> dict[str, tuple[str, str]]:
    """``profiling config show`` lines as key -> (value, origin)."""
    rows = [re.split(r"\s{2,}", line.strip(), maxsplit=2) for line in output.splitlines()]
    return {key: (value, origin) for key, value, origin in rows}


def test_config_show_says_where_each_value_comes_from(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("model:\n  dim: 32\ntrain:\n  epochs: 7\n")
    job = tmp_path / "jobs" / "job.yaml"
    job.parent.mkdir()
    job.write_text("base: ../base.yaml\ntrain:\n  patience: 3\n")
    shown = _shown(main_output(capsys, "config", "show", "--config", str(job), "--set", "train.epochs=3",
                               "--set", "spark.conf.spark.hadoop.fs.s3a.secret.key=abc",
                               "--set", "mlflow.tracking_uri=http://me:pw@tracking:5000",
                               "--workdir", str(tmp_path / "w")))
    assert shown["train.epochs"] == ("3", "--set")
    assert shown["train.patience"] == ("3", f"file {job}")
    assert shown["model.dim"] == ("32", f"file {tmp_path / 'base.yaml'}")
    assert shown["train.batch_size"] == ("128", "default")
    assert shown["workdir"] == (str(tmp_path / "w"), "--workdir")
    assert shown["spark.conf.spark.hadoop.fs.s3a.secret.key"] == ("***", "--set")
    assert shown["mlflow.tracking_uri"] == ("http://***@tracking:5000", "--set")
    demo = _shown(main_output(capsys, "config", "show", "--config", str(DEMO_CONFIG)))
    assert demo["train.epochs"][1] == f"file {DEMO_CONFIG}" and demo["model.dim"][1] == f"file {DEFAULT_CONFIG}"


def test_mlflow_tracking_uri_from_the_environment_serves_when_the_config_leaves_it_null(tmp_path, capsys,
                                                                                        monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    shown = _shown(main_output(capsys, "config", "show"))
    assert shown["mlflow.tracking_uri"] == ("http://tracking.example:5000", "environment MLFLOW_TRACKING_URI")
    config = resolve_config(None, [], {"MLFLOW_TRACKING_URI": "http://t:5000"}).config
    assert config.tracking_uri == "http://t:5000"
    assert config.artifact_location is None  # the server's artifact store, not a folder of this machine
    job = tmp_path / "job.yaml"
    job.write_text("mlflow:\n  tracking_uri: http://team:5000\n")
    shown = _shown(main_output(capsys, "config", "show", "--config", str(job)))
    assert shown["mlflow.tracking_uri"] == ("http://team:5000", f"file {job}")  # the setting wins
    shown = _shown(main_output(capsys, "config", "show", "--set", "mlflow.tracking_uri=sqlite:///x.db"))
    assert shown["mlflow.tracking_uri"] == ("sqlite:///x.db", "--set")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    local = resolve_config(None, [], {}).config
    assert local.tracking_uri.startswith("sqlite:///") and local.artifact_location.endswith("/mlartifacts")


def test_config_show_starts_no_spark():
    probe = ("import sys; from profiling.cli import main; main(['config', 'show']); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyspark', 'py4j', 'torch', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1] == "[]"
