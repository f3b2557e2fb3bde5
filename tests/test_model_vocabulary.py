"""A model scores a later snapshot through the vocabulary it was trained with.

Each snapshot ranks its keys by that day's frequencies. The next day below holds the shared
pipeline's logs unchanged plus newcomers who use the rarest items most and items no one had before,
so most items change index; infer scores it with the pipeline's model (trained on the first day)
in a catalog database of its own.
"""

from __future__ import annotations

import datetime as dt
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from conftest import SNAPSHOT

DATABASE = "next_day"
NEXT_DAY = SNAPSHOT + dt.timedelta(days=1)
NEWCOMERS = 30
NEW_ITEMS = 12


def _rows(spark, name: str, date: dt.date, database: str) -> pd.DataFrame:
    return spark.table(f"{database}.{name}").where(F.col("snapshot_date") == F.lit(date)).toPandas()


@pytest.fixture(scope="module")
def next_day(pipeline, spark, config, input_dir, tmp_path_factory):
    from profiling.pipeline import run_infer, run_ingest, run_sequences

    data = tmp_path_factory.mktemp("next_day")
    for path in input_dir.glob("*.csv.gz"):
        shutil.copy(path, data / path.name)
    behaviour = pd.read_csv(data / "behaviour.csv.gz", dtype=str, keep_default_na=False)
    known = behaviour[behaviour["item_id"] != ""]
    rarest = known["item_id"].value_counts(ascending=True).index[:40].tolist()
    category = dict(zip(known["item_id"], known["category"]))
    new_items = [f"new{i:03d}" for i in range(NEW_ITEMS)]
    rows = []
    for u in range(NEWCOMERS):
        for k in range(24):
            item = new_items[(u + k) % NEW_ITEMS] if k % 3 == 0 else rarest[(u * 7 + k) % len(rarest)]
            rows.append({"user_id": f"newcomer{u:02d}", "item_id": item, "event_type": "view",
                         "ts": str(1_700_000_000 + 3600 * k + u), "category": category.get(item, "c_new"),
                         "value": ""})
    pd.concat([behaviour, pd.DataFrame(rows)]).to_csv(data / "behaviour.csv.gz", index=False, compression="gzip")
    cfg = config.model_copy(update={
        "input": config.input.model_copy(update={"dir": str(data)}),
        "catalog": config.catalog.model_copy(update={"database": DATABASE}),
    })
    run_ingest(spark, cfg, NEXT_DAY)
    run_sequences(spark, cfg, NEXT_DAY)
    infer = run_infer(spark, cfg, NEXT_DAY, pipeline.train.model_version)
    newcomer_events = sum(1 for r in rows if r["item_id"] in new_items)
    return cfg, infer, newcomer_events


def test_the_next_day_gives_most_items_another_index(next_day, spark, config):
    cfg, _, _ = next_day
    first, second = (_rows(spark, "vocabularies", d, db).query("dimension == 'item' and idx >= 2")
                     .set_index("key")["idx"] for d, db in ((SNAPSHOT, config.catalog.database),
                                                             (NEXT_DAY, DATABASE)))
    shared = first.index.intersection(second.index)
    assert (first[shared] != second[shared]).mean() > 0.5  # without the model's vocabulary, a different item


def test_users_whose_events_did_not_change_keep_their_profile(next_day, spark, config, pipeline):
    columns = ["user_id", "embedding", "interest_weights"]
    first = _rows(spark, "user_profile_embeddings", SNAPSHOT, config.catalog.database)[columns].set_index("user_id")
    second = _rows(spark, "user_profile_embeddings", NEXT_DAY, DATABASE)[columns].set_index("user_id")
    assert second["embedding"].index.str.startswith("newcomer").sum() == NEWCOMERS
    for user in first.index:
        for column in ("embedding", "interest_weights"):
            np.testing.assert_allclose(np.stack(second.loc[user, column]), np.stack(first.loc[user, column]),
                                       atol=1e-5, err_msg=f"{user} {column}")
    weights = [_rows(spark, "user_interest_weights", d, db).query("horizon == 'short' and dimension == 'category' and rank == 1")
               .set_index("user_id")["key"] for d, db in ((SNAPSHOT, config.catalog.database), (NEXT_DAY, DATABASE))]
    assert (weights[1][weights[0].index] == weights[0]).all()


def test_items_the_model_never_saw_are_scored_as_unknown_and_counted(next_day, spark, config, pipeline):
    cfg, infer, newcomer_events = next_day
    assert infer.model_version == pipeline.train.model_version
    vocab = _rows(spark, "vocabularies", NEXT_DAY, DATABASE).query("dimension == 'item' and idx >= 2")
    assert infer.unseen_items == NEW_ITEMS
    assert infer.unseen_share == pytest.approx(newcomer_events / vocab["count"].sum())
    run = mlflow.search_runs(experiment_names=[cfg.mlflow.experiment], filter_string=(
        f"tags.stage = 'infer' and tags.snapshot_date = '{NEXT_DAY}'"), output_format="list")[0]
    assert run.data.metrics["unseen_items"] == NEW_ITEMS
    assert run.data.metrics["unseen_share"] == pytest.approx(infer.unseen_share)
    known = set(_rows(spark, "vocabularies", SNAPSHOT, config.catalog.database)
                .query("dimension == 'item'")["key"])
    named = set(_rows(spark, "user_interest_evidence", NEXT_DAY, DATABASE)["item_id"].dropna())
    assert named and named <= known  # evidence names items in the model's vocabulary only


def test_a_model_registered_without_its_vocabulary_is_refused_in_one_line(pipeline, config):
    import mlflow.pytorch

    from profiling import tracking
    from profiling.exceptions import MissingStageOutput

    model = tracking.load_encoder(config, pipeline.train.model_version)
    model.vocabulary = None  # as versions registered before models kept theirs (then the pytorch flavour)
    with pytest.raises(ValueError, match="no vocabulary"):
        tracking.log_encoder(model, config)  # refused before anything is logged
    cfg = config.model_copy(update={"mlflow": config.mlflow.model_copy(
        update={"registered_model": "no-vocabulary", "experiment": "no-vocabulary"})})
    tracking.configure(cfg)
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle",
                                        registered_model_name="no-vocabulary")
    with pytest.raises(MissingStageOutput, match="carries no vocabulary.*run the train stage") as refused:
        tracking.load_encoder(cfg, str(info.registered_model_version))
    assert "\n" not in str(refused.value)
    tracking.configure(config)


def test_a_translation_maps_keys_not_indices_and_counts_what_the_model_lacks():
    from profiling.model.vocabulary import Translation, Vocabulary

    special = [("<pad>", 0, 0), ("<none>", 1, 0)]
    model = Vocabulary.from_rows({"dimension": d, "key": k, "idx": i}
                                 for d in ("item", "category", "event_type", "source", "attribute")
                                 for k, i, _ in [*special, *([("a", 2, 0), ("b", 3, 0)] if d == "item" else [])])
    snapshot = [{"dimension": "item", "key": k, "idx": i, "count": c}
                for k, i, c in [*special, ("b", 2, 5), ("new", 3, 3), ("a", 4, 2)]]
    translation = Translation.between(model, snapshot)
    assert translation.to_model["item"].tolist() == [0, 1, 3, 1, 2]
    assert (translation.unseen_items, translation.unseen_share) == (1, 0.3)
    row = {"item": [2, 3, 4, 9, 0], "category": [1], "event_type": [], "source": [], "attribute": [], "ts": [7]}
    translated = translation.apply(row)
    assert translated["item"].tolist() == [3, 1, 2, 1, 0]  # b, unknown, a, out of range, padding
    assert translated["ts"] == [7] and row["item"] == [2, 3, 4, 9, 0]


def test_a_vocabulary_with_a_gap_in_its_indices_is_refused():
    from profiling.model.vocabulary import Vocabulary

    with pytest.raises(ValueError, match="item vocabulary has 2 keys for indices 0..2"):
        Vocabulary.from_rows([{"dimension": "item", "key": "<pad>", "idx": 0}, {"dimension": "item", "key": "a",
                                                                                 "idx": 2}])
