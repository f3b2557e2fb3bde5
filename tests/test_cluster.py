"""The whole pipeline through spark-submit on a standalone cluster bound to loopback (tests/cluster.py
starts it and submits the run): anything that only works in local mode fails here."""

from __future__ import annotations

import json

import pytest

from cluster import CLUSTER_SNAPSHOT, CLUSTER_USERS
from commands import table_frame

pytestmark = pytest.mark.jvm


def test_the_pipeline_runs_on_executors_and_writes_every_table(standalone_cluster, cluster_run):
    _, worker_dir = standalone_cluster
    work, proc = cluster_run["workdir"], cluster_run["process"]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["users"] == CLUSTER_USERS and summary["model_version"] == "1"
    # The application's executor ran on the worker (its log is under the worker's work dir), and
    # training ran there as TorchDistributor's barrier stage with one task per process.
    executor_logs = "".join(p.read_text(errors="replace") for p in worker_dir.glob("app-*/*/stderr"))
    assert "finished global sync successfully" in executor_logs
    assert executor_logs.count("has entered the global sync") >= 2
    assert "Started distributed training with 2 executor processes" in proc.stdout + proc.stderr
    frames = {name: table_frame(work, name) for name in ("user_sequences", "user_profile_embeddings",
                                                         "user_interest_weights")}
    users = {name: f[f["snapshot_date"].astype(str) == CLUSTER_SNAPSHOT]["user_id"].nunique()
             for name, f in frames.items()}
    assert users == {name: CLUSTER_USERS for name in frames}
    assert len(table_frame(work, "behaviour_events")) > CLUSTER_USERS


def test_the_cluster_run_is_tracked_in_mlflow_with_its_model(cluster_run):
    from mlflow import MlflowClient

    work = cluster_run["workdir"]
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("profiling")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'pipeline'")
    assert [r.info.status for r in runs] == ["FINISHED"]
    run = runs[0]
    assert run.data.params["train.local_mode"] == "False"
    assert run.data.tags["snapshot_date"] == CLUSTER_SNAPSHOT
    train_run = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'train'")[0]
    assert {"best_val_ndcg_at_10", "best_val_hit_at_10"} <= set(train_run.data.metrics)
    assert train_run.data.tags["mlflow.parentRunId"] == run.info.run_id
    versions = client.search_model_versions("name = 'profiling-encoder'")
    assert [str(v.version) for v in versions] == ["1"]
