"""Explaining profiles: the evidence table, `explain_users`, its text and JSON, the figures, MLflow artifacts."""

from __future__ import annotations

import io

import jsonschema
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from pyspark.sql import functions as F

from conftest import SNAPSHOT


def _snapshot(spark, config, name):
    return spark.table(f"{config.catalog.database}.{name}").where(F.col("snapshot_date") == F.lit(SNAPSHOT))


@pytest.fixture(scope="module")
def buyer_doc(pipeline, config):
    """The buyer explained from the tables as delta-rs reads them: no JVM."""
    from profiling.explain import explain_users
    from profiling.snapshots import DeltaSnapshotReader

    return explain_users(DeltaSnapshotReader(config), config, ["buyer"], SNAPSHOT)[0]


def test_the_spark_reader_gives_the_same_explanation(pipeline, spark, config, buyer_doc):
    from profiling.explain import explain_users
    from profiling.snapshots import SparkSnapshotReader

    assert explain_users(SparkSnapshotReader(spark, config), config, ["buyer"], SNAPSHOT)[0] == buyer_doc


def test_a_session_finds_its_tables_in_its_catalog_and_reads_them_with_delta_rs(pipeline, spark, config, buyer_doc,
                                                                                tmp_path):
    from profiling.explain import explain_users
    from profiling.snapshots import DeltaSnapshotReader, session_snapshot_reader

    reader = session_snapshot_reader(spark, config)
    assert isinstance(reader, DeltaSnapshotReader)
    assert explain_users(reader, config, ["buyer"], SNAPSHOT)[0] == buyer_doc
    # The session's catalog says where the tables are, not the config's workdir (empty here).
    elsewhere = config.model_copy(update={"workdir": str(tmp_path)})
    found = session_snapshot_reader(spark, elsewhere).rows("user_profile_embeddings", SNAPSHOT, ["user_id"],
                                                            [{"user_id": ["buyer"]}])
    assert found.column("user_id").to_pylist() == ["buyer"]


def test_tables_are_read_without_spark_unless_a_shared_metastore_holds_them(config):
    from profiling.snapshots import DeltaSnapshotReader, SparkSnapshotReader, snapshot_reader

    def no_session():
        raise AssertionError("the embedded catalog's tables must be read without a Spark session")

    assert isinstance(snapshot_reader(config, no_session), DeltaSnapshotReader)
    for shared in ({"spark.hadoop.hive.metastore.uris": "thrift://metastore:9083"},
                   {"spark.sql.warehouse.dir": "s3a://bucket/warehouse"}):
        elsewhere = config.model_copy(update={"spark": config.spark.model_copy(update={"conf": shared})})
        reader = snapshot_reader(elsewhere, lambda: "session")
        assert isinstance(reader, SparkSnapshotReader) and reader.spark == "session"


def test_evidence_holds_the_top_events_of_each_interest_as_the_sequences_have_them(pipeline, spark, config,
                                                                                  input_dir):
    evidence = _snapshot(spark, config, "user_interest_evidence").toPandas()
    sequences = _snapshot(spark, config, "user_sequences").select("user_id", "length", "item", "ts").toPandas()
    items = _snapshot(spark, config, "vocabularies").where(  # item keys; "<pad>" and "<none>" name no item
        (F.col("dimension") == "item") & (F.col("count") > 0)).toPandas()
    item_key = dict(zip(items["idx"], items["key"]))
    profiled = sequences[sequences["length"] > 0]["user_id"]
    assert set(evidence["user_id"]) == set(profiled)  # every user with events, no one else
    assert (evidence["model_version"] == pipeline.infer.model_version).all()
    n = config.infer.evidence_events
    for (user, interest), group in evidence.groupby(["user_id", "interest"]):
        assert list(group.sort_values("rank")["rank"]) == list(range(1, min(n, len(group)) + 1))
        assert len(group) <= n
        by_rank = group.sort_values("rank")["attention"].to_numpy()
        assert (np.diff(by_rank) <= 1e-9).all() and (by_rank > 0).all() and by_rank.sum() <= 1 + 1e-6
    seq = sequences.set_index("user_id")
    for row in evidence.sample(200, random_state=0).itertuples():
        s = seq.loc[row.user_id]
        assert 0 <= row.position < s["length"]
        assert row.item_id == item_key.get(s["item"][row.position])  # null for preference events: no key
        expected_ts = s["ts"][row.position]
        assert row.ts == expected_ts if expected_ts else pd.isna(row.ts)
    # the buyer's evidence comes from their 30 buys in one category, not from their 4 stray views
    planted = (input_dir / "planted.txt").read_text().split(",")[0]
    buyer = evidence[evidence["user_id"] == "buyer"]
    assert (buyer["category"] == planted).mean() >= 0.8
    assert (buyer["interest_category"] == planted).all()


def test_evidence_fidelity_counts_only_interests_named_by_a_planted_category():
    from profiling.evaluate import evidence_fidelity

    rows = []
    for user, interest, named, cats in [("a", 0, "x", "xxxxy"), ("a", 1, "y", "yyyxx"), ("b", 0, "z", "zzzzz"),
                                        ("b", 1, "x", "xxxx")]:
        rows += [{"user_id": user, "interest": interest, "interest_category": named, "category": c, "rank": r}
                 for r, c in enumerate(cats, start=1)]
    rows.append({"user_id": "a", "interest": 0, "interest_category": "x", "category": "y", "rank": 6})  # beyond top 5
    truth = pd.DataFrame({"user_id": ["a", "a", "b"], "category": ["x", "y", "x"], "weight": [0.6, 0.4, 1.0]})
    # mapped: (a,0) 4/5 agree, (a,1) 3/5, (b,1) 4/4; (b,0) is named by z, not planted for b
    assert evidence_fidelity(pd.DataFrame(rows), truth) == {"evidence_pairs": 3, "evidence_4of5": round(2 / 3, 4)}


def test_explain_json_validates_and_agrees_with_the_tables(pipeline, spark, config, buyer_doc):
    from profiling.schemas import explain_schema

    jsonschema.validate(buyer_doc, explain_schema())
    profile = _snapshot(spark, config, "user_profile_embeddings").where(F.col("user_id") == "buyer").first()
    weights = sorted(np.round(profile["interest_weights"], 4), reverse=True)
    assert [i["weight"] for i in buyer_doc["interests"]] == pytest.approx(weights, abs=1e-4)
    assert buyer_doc["model_version"] == profile["model_version"]
    evidence = _snapshot(spark, config, "user_interest_evidence").where(F.col("user_id") == "buyer").toPandas()
    for interest in buyer_doc["interests"]:
        expected = evidence[evidence["interest"] == interest["interest"]].sort_values("rank")
        assert [e["position"] for e in interest["evidence"]] == list(expected["position"])
        assert len(interest["top_items"]) == 10
        assert sum(c["share"] for c in interest["categories"]) <= 1 + 1e-3
    source = _snapshot(spark, config, "user_interest_weights").where(
        (F.col("user_id") == "buyer") & (F.col("dimension") == "source")).orderBy("rank").toPandas()
    for field, horizon in (("dimensions", "short"), ("long_term_dimensions", "long")):
        assert [w["key"] for w in buyer_doc[field]["source"]] == list(source[source["horizon"] == horizon]["key"])
    attention = np.asarray(buyer_doc["recent_events"]["attention"])
    assert attention.shape == (len(buyer_doc["interests"]), len(buyer_doc["recent_events"]["events"]))
    assert len(buyer_doc["recent_events"]["events"]) == config.explain.recent_events


def test_nearest_users_are_the_highest_cosine_profiles(pipeline, spark, config, buyer_doc):
    profiles = _snapshot(spark, config, "user_profile_embeddings").select("user_id", "embedding").toPandas()
    vectors = np.stack(profiles["embedding"])
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    me = vectors[list(profiles["user_id"]).index("buyer")]
    cosine = pd.Series(vectors @ me, index=profiles["user_id"]).drop("buyer").sort_values(ascending=False)
    near = buyer_doc["nearest_users"]
    assert [n["cosine"] for n in near] == pytest.approx(list(cosine.head(5)), abs=1e-3)
    assert set(n["user_id"] for n in near) <= set(cosine[cosine >= cosine.iloc[4] - 1e-4].index)


def test_text_names_interests_and_lists_their_evidence(buyer_doc):
    from profiling.explain import format_text

    text = format_text(buyer_doc)
    heaviest = buyer_doc["interests"][0]
    assert text.splitlines()[0].startswith("user buyer  snapshot 2026-11-01")
    assert f"interest {heaviest['interest']}  weight {heaviest['weight']:.3f}  {heaviest['categories'][0]['category']}" \
        in text
    assert text.count("attention ") == sum(len(i["evidence"]) for i in buyer_doc["interests"])
    assert "nearest users (cosine of profile embeddings): " + buyer_doc["nearest_users"][0]["user_id"] in text


def test_an_unknown_user_is_one_clear_error(pipeline, config):
    from profiling.explain import UnknownUser, explain_users
    from profiling.snapshots import DeltaSnapshotReader

    with pytest.raises(UnknownUser, match=r"user 'nobody' has no profile in profiling\.user_profile_embeddings "
                                          r"for snapshot 2026-11-01"):
        explain_users(DeltaSnapshotReader(config), config, ["nobody"], SNAPSHOT)


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_profile_figure_is_a_png_of_the_expected_size_with_content(buyer_doc, tmp_path):
    from profiling.figures import DPI, PROFILE_SIZE, profile_figure, save_png

    path = tmp_path / "buyer.png"
    save_png(profile_figure(buyer_doc), path)
    image = _png(path.read_bytes())
    assert image.format == "PNG"
    assert image.size == (PROFILE_SIZE[0] * DPI, PROFILE_SIZE[1] * DPI)
    pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10  # not a blank canvas


def test_every_infer_run_logs_sample_explanations_and_a_summary_to_mlflow(pipeline, config):
    from profiling.figures import DPI, SUMMARY_SIZE
    from profiling.schemas import explain_schema

    mlflow.set_tracking_uri(config.tracking_uri)
    client = MlflowClient(config.tracking_uri)
    infer = mlflow.search_runs(experiment_names=[config.mlflow.experiment], output_format="list",
                               filter_string=f"tags.mlflow.parentRunId = '{pipeline.run_id}' and tags.stage = 'infer'")
    run_id = infer[0].info.run_id
    names = {a.path for a in client.list_artifacts(run_id, "explain")}
    expected = {f"explain/sample_user_{i}.{ext}" for i in range(1, config.explain.sample_users + 1)
                for ext in ("png", "json")}
    assert expected | {"explain/summary.png"} == names
    doc = mlflow.artifacts.load_dict(f"runs:/{run_id}/explain/sample_user_1.json")
    jsonschema.validate(doc, explain_schema())
    summary = _png(open(client.download_artifacts(run_id, "explain/summary.png"), "rb").read())
    assert summary.size == (SUMMARY_SIZE[0] * DPI, SUMMARY_SIZE[1] * DPI)
    mean = infer[0].data.metrics["strong_interests_mean"]
    assert 1 <= mean <= config.model.interests  # weights sum to 1: at least one interest is >= 1/K >= 0.2
