"""The same snapshot trained twice from scratch gives the same model bit for bit, hence the same
profile rows: training reseeds torch per epoch, every rank reads its rows in a fixed order and the
gradients are summed in a fixed order. Real TorchDistributor (2 processes), Delta and MLflow, in the
shared session: the second training reads the shared pipeline's sequences and registers a model of
its own; its profiles are scored as infer scores them, without writing over the pipeline's."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from conftest import SNAPSHOT


@pytest.fixture(scope="module")
def trained_twice(pipeline, spark, config):
    from profiling import tracking
    from profiling.infer import broadcast_encoder, score_sequences
    from profiling.pipeline import run_train
    from profiling.tables import read_snapshot

    cfg = config.model_copy(update={
        "mlflow": config.mlflow.model_copy(update={"registered_model": "determinism-encoder"}),
    })
    second = run_train(spark, cfg, SNAPSHOT)
    first_model = tracking.load_encoder(config, pipeline.train.model_version)
    second_model = tracking.load_encoder(cfg, second.model_version)
    stored = spark.table("profiling.user_profile_embeddings").where(
        (F.col("snapshot_date") == F.lit(SNAPSHOT)) & (F.col("model_version") == pipeline.infer.model_version))
    packed = broadcast_encoder(spark, second_model)
    rescored, _ = score_sequences(config, read_snapshot(spark, config, "user_sequences", SNAPSHOT)[0],
                                  read_snapshot(spark, config, "vocabularies", SNAPSHOT)[0], second_model, packed,
                                  "determinism")
    columns = ["user_id", "embedding", "interest_embeddings", "interest_weights"]
    rows = [frame.select(*columns).orderBy("user_id").collect() for frame in (stored, rescored)]
    packed.destroy()
    return [(pipeline.train, first_model, rows[0]), (second, second_model, rows[1])]


def test_a_finished_training_is_not_resumed_the_same_command_trains_anew(trained_twice):
    (first, _, _), (second, _, _) = trained_twice
    assert first.resumed_after_epoch == second.resumed_after_epoch == 0
    assert first.epochs_run == second.epochs_run


def test_the_same_snapshot_trained_twice_gives_the_same_model_bit_for_bit(trained_twice):
    (first, model_a, _), (second, model_b, _) = trained_twice
    learned = [k for k in first.metrics if k.startswith(("val_", "train_loss", "train_interest_loss"))]
    assert learned and {k: first.metrics[k] for k in learned} == {k: second.metrics[k] for k in learned}
    a, b = model_a.state_dict(), model_b.state_dict()
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_and_the_same_profile_rows(trained_twice):
    (_, _, rows_a), (_, _, rows_b) = trained_twice
    assert len(rows_a) > 100
    assert [list(r) for r in rows_a] == [list(r) for r in rows_b]
