"""The promotion gate against the shared session's MLflow registry, under a registered model of its own."""

from __future__ import annotations

import json
import os

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from commands import main_output
from conftest import SNAPSHOT
from profiling import tracking
from profiling.promotion import PromotionDecision, gate_challenger


def test_a_challenger_passes_when_no_worse_than_the_champion_minus_the_tolerance():
    def promoted(challenger: float, champion: float, tolerance: float) -> bool:
        return PromotionDecision("2", "1", challenger, champion, tolerance).promoted

    assert promoted(0.10, 0.10, 0.0) and promoted(0.096, 0.10, 0.005)
    assert not promoted(0.0999, 0.10, 0.0) and not promoted(0.094, 0.10, 0.005)
    line = PromotionDecision("2", "1", 0.05, 0.10, 0.005).line()
    assert "challenger version 2" in line and "rejected, @current stays version 1" in line


@pytest.fixture(scope="module")
def gate_config(pipeline, config):
    cfg = config.model_copy(update={"mlflow": config.mlflow.model_copy(
        update={"registered_model": "gate-test", "promotion_tolerance": 0.0})})
    yield cfg
    tracking.configure(config)


def _register(cfg, model) -> str:
    tracking.configure(cfg)
    with mlflow.start_run():
        return tracking.log_encoder(model, cfg)


def _gate(spark, cfg) -> tuple[PromotionDecision, dict[str, float]]:
    tracking.configure(cfg)
    with mlflow.start_run() as run:
        decision = gate_challenger(spark, cfg, SNAPSHOT, tracking.pending_challenger(cfg))
    return decision, MlflowClient().get_run(run.info.run_id).data.metrics


def test_a_worse_version_stays_out_an_equal_one_is_promoted_and_promote_overrides_the_gate(
        spark, pipeline, config, gate_config, capsys):
    trained = tracking.load_encoder(config, pipeline.train.model_version)
    first = _register(gate_config, trained)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow's export undone: a child would take it for the operator's
    assert tracking.current_model_version(gate_config) == first  # nothing to compare the first version with
    assert tracking.pending_challenger(gate_config) is None

    worse = tracking.load_encoder(config, pipeline.train.model_version)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in worse.parameters():
            parameter.normal_()  # an untrained model: it ranks the targets at random
    second = _register(gate_config, worse)
    assert tracking.current_model_version(gate_config) == first
    assert tracking.pending_challenger(gate_config) == (second, first)
    decision, logged = _gate(spark, gate_config)
    assert (decision.challenger, decision.champion, decision.promoted) == (second, first, False)
    assert decision.challenger_ndcg < decision.champion_ndcg
    assert logged["gate_promoted"] == 0 and logged["gate_challenger_ndcg_at_10"] == decision.challenger_ndcg
    assert tracking.current_model_version(gate_config) == first and tracking.pending_challenger(gate_config) is None

    third = _register(gate_config, trained)  # the same weights: not worse
    decision, logged = _gate(spark, gate_config)
    assert decision.challenger_ndcg == decision.champion_ndcg and decision.promoted and logged["gate_promoted"] == 1
    assert tracking.current_model_version(gate_config) == third

    out = main_output(capsys, "promote", "--version", second, "--workdir", str(config.workdir_path),
                      "--set", "mlflow.registered_model=gate-test")
    assert json.loads(out) == {"registered_model": "gate-test", "current": second}
    assert tracking.current_model_version(gate_config) == second
    assert tracking.current_model_version(config) == pipeline.train.model_version  # the pipeline's own model
