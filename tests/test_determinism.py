"""The same snapshot trained twice from scratch gives the same model bit for bit, hence the same
profile rows: training reseeds torch per epoch, every rank reads its rows in a fixed order and the
gradients are summed in a fixed order. Real TorchDistributor (2 processes), Delta and MLflow, in the
shared session, in a catalog database of its own."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from conftest import SNAPSHOT

DATABASE = "determinism"


@pytest.fixture(scope="module")
def trained_twice(spark, config):
    from profiling import tracking
    from profiling.pipeline import run_infer, run_ingest, run_sequences, run_train

    cfg = config.model_copy(update={
        "catalog": config.catalog.model_copy(update={"database": DATABASE}),
        "mlflow": config.mlflow.model_copy(update={"registered_model": "determinism-encoder"}),
    })
    run_ingest(spark, cfg, SNAPSHOT)
    run_sequences(spark, cfg, SNAPSHOT)
    runs = []
    for _ in range(2):
        trained = run_train(spark, cfg, SNAPSHOT)
        run_infer(spark, cfg, SNAPSHOT, trained.model_version)
        rows = spark.table(f"{DATABASE}.user_profile_embeddings").where(F.col("snapshot_date") == F.lit(SNAPSHOT))
        runs.append((trained, tracking.load_encoder(cfg, trained.model_version),
                     rows.select("user_id", "embedding", "interest_embeddings", "interest_weights", "model_version")
                     .orderBy("user_id").collect()))
    return runs


def test_a_finished_training_is_not_resumed_the_same_command_trains_anew(trained_twice):
    (first, _, _), (second, _, _) = trained_twice
    assert first.resumed_after_epoch == second.resumed_after_epoch == 0
    assert first.epochs_run == second.epochs_run and first.model_version != second.model_version


def test_the_same_snapshot_trained_twice_gives_the_same_model_bit_for_bit(trained_twice):
    (first, model_a, _), (second, model_b, _) = trained_twice
    learned = [k for k in first.metrics if k.startswith(("val_", "train_loss", "train_interest_loss"))]
    assert learned and {k: first.metrics[k] for k in learned} == {k: second.metrics[k] for k in learned}
    a, b = model_a.state_dict(), model_b.state_dict()
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_and_the_same_profile_rows(trained_twice):
    (_, _, rows_a), (_, _, rows_b) = trained_twice
    columns = ["user_id", "embedding", "interest_embeddings", "interest_weights"]
    assert len(rows_a) > 100 and [r["model_version"] for r in rows_a] != [r["model_version"] for r in rows_b]
    assert [[r[c] for c in columns] for r in rows_a] == [[r[c] for c in columns] for r in rows_b]
