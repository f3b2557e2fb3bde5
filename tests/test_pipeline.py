"""The whole pipeline on generated logs: real Spark, Delta, TorchDistributor (2 processes) and MLflow."""

from __future__ import annotations

import collections
import datetime as dt
import json
import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from conftest import BAD_ROWS, SNAPSHOT, UNLISTED_TYPES

STAGES = {"ingest", "sequences", "train", "infer"}


def _snapshot(spark, config, name, date=SNAPSHOT):
    return spark.table(f"{config.catalog.database}.{name}").where(F.col("snapshot_date") == F.lit(date))


def _input(input_dir, source):
    return pd.read_csv(input_dir / f"{source}.csv.gz", dtype=str, keep_default_na=False)


def test_ingest_accounts_for_every_row_and_quarantines_bad_ones_with_reasons(pipeline, spark, config, input_dir):
    for source in ("behaviour", "preference", "social", "items"):
        counts = pipeline.ingest.counts[source]
        assert counts.read == len(_input(input_dir, source))
        assert counts.read == counts.accepted + counts.quarantined
    quarantine = _snapshot(spark, config, "quarantine").toPandas()
    got = collections.Counter(zip(quarantine["source"], quarantine["reason_code"]))
    expected = collections.Counter((source, code) for source, _, code in BAD_ROWS)
    for source in ("behaviour", "preference", "social", "items"):
        copies = int(_input(input_dir, source).duplicated().sum())  # the generator writes some events twice
        if copies:
            expected[(source, "duplicate_row")] = copies
    assert expected[("behaviour", "duplicate_row")] > 0
    assert got == expected
    assert quarantine["message"].str.len().min() > 10
    # The raw record is kept as JSON, so the rejected row can be inspected and replayed.
    assert any('"ts":"yesterday"' in r for r in quarantine["raw_record"])
    accepted = _snapshot(spark, config, "behaviour_events")
    assert accepted.count() == pipeline.ingest.counts["behaviour"].accepted
    assert accepted.where(F.col("ts").isNull() | F.isnan("value")).count() == 0


def test_events_of_types_no_list_names_are_accepted_and_weighted_with_the_defaults(pipeline, spark, config,
                                                                                   input_dir):
    assert config.input.event_types is None  # the shipped default
    taggers = set((input_dir / "taggers.txt").read_text().split(","))
    tagged = _snapshot(spark, config, "behaviour_events").where(F.col("event_type").isin(*UNLISTED_TYPES)).toPandas()
    assert set(tagged["user_id"]) == taggers and set(tagged["event_type"]) == set(UNLISTED_TYPES)
    vocabulary = {r["key"] for r in _snapshot(spark, config, "vocabularies")
                  .where(F.col("dimension") == "event_type").collect()}
    assert set(UNLISTED_TYPES) <= vocabulary
    weights = _snapshot(spark, config, "user_interest_weights").where(
        (F.col("dimension") == "event_type") & F.col("key").isin(*UNLISTED_TYPES)).toPandas()
    assert set(weights["user_id"]) == taggers and (weights["weight"] > 0).all()


def test_the_ingest_run_logs_its_data_quality_report(pipeline, config, tmp_path):
    import json

    mlflow.set_tracking_uri(config.tracking_uri)
    client = MlflowClient(config.tracking_uri)
    [ingest] = mlflow.search_runs(
        experiment_names=[config.mlflow.experiment], output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{pipeline.run_id}' AND tags.stage = 'ingest'")
    report = json.loads((tmp_path / client.download_artifacts(ingest.info.run_id, "data_quality.json", str(tmp_path))
                         ).read_text())
    assert report == pipeline.ingest.report.to_dict() and report["decision"] == "passed"
    behaviour = report["logs"]["behaviour"]
    assert behaviour["reasons"]["bad_timestamp"] == 1
    assert behaviour["top_values"]["bad_timestamp"] == [{"value": "yesterday", "rows": 1}]
    assert behaviour["top_values"]["missing_value"] == [{"value": "user_id", "rows": 1}]  # a column, never an id
    assert ingest.data.metrics["behaviour_quarantined_bad_timestamp"] == 1
    assert 0 < report["users_without_behaviour"] < report["users"]
    assert set(UNLISTED_TYPES) <= set(report["event_types"])  # a type new to the logs is counted


def test_every_user_of_any_log_gets_a_profile(pipeline, spark, config, input_dir):
    users = set()
    for source, columns in (("behaviour", ["user_id"]), ("preference", ["user_id"]),
                            ("social", ["user_id", "other_user_id"])):
        frame = _input(input_dir, source)
        for column in columns:
            users |= {u.strip() for u in frame[column] if u.strip()}
    profiles = _snapshot(spark, config, "user_profile_embeddings").toPandas()
    assert set(profiles["user_id"]) == users
    assert profiles["user_id"].is_unique
    assert pipeline.infer.users == len(users)


def test_users_without_behaviour_are_profiled_from_preference_and_social(pipeline, spark, config, input_dir):
    active = set(_input(input_dir, "behaviour")["user_id"])
    weights = _snapshot(spark, config, "user_interest_weights").toPandas()
    silent = weights[~weights["user_id"].isin(active) & (weights["dimension"] == "source")]
    assert silent["user_id"].nunique() >= 3
    assert set(silent["key"]) <= {"preference", "social"}
    assert np.isfinite(np.stack(
        _snapshot(spark, config, "user_profile_embeddings").where(~F.col("user_id").isin(*active))
        .toPandas()["embedding"])).all()


def test_profile_embeddings_have_the_contract_shape(pipeline, spark, config):
    rows = _snapshot(spark, config, "user_profile_embeddings").toPandas()
    assert {len(e) for e in rows["embedding"]} == {config.model.dim}
    kept = rows["interest_embeddings"].map(len)
    assert kept.between(1, config.model.interests).all()
    assert (rows["interest_weights"].map(len) == kept).all()
    # near-duplicates were merged (infer.merge_interests_cosine): no two kept interests of a user are as close
    for vectors in rows["interest_embeddings"]:
        unit = np.stack(vectors) / np.linalg.norm(np.stack(vectors), axis=1, keepdims=True)
        assert (unit @ unit.T - 2 * np.eye(len(unit))).max() < config.infer.merge_interests_cosine + 1e-5  # float32
    sums = rows["interest_weights"].map(lambda w: float(np.sum(w)))
    assert np.allclose(sums, 1.0, atol=1e-4)
    assert set(rows["model_version"]) == {pipeline.train.model_version}
    assert set(rows["horizon"]) == {"short"}  # the vectors read the newest window; the long horizon is weights only
    assert pipeline.promotion is None  # the first version of the model: current at once, no gate


def test_interest_weights_sum_to_one_per_user_horizon_and_dimension_with_dense_ranks(pipeline, spark, config):
    weights = _snapshot(spark, config, "user_interest_weights").toPandas()
    assert set(weights["dimension"]) == {"category", "event_type", "source"}
    assert "<none>" not in set(weights["key"])
    horizons = weights.groupby("user_id")["horizon"].agg(set)
    assert (horizons == {"short", "long"}).all() and len(horizons) == pipeline.infer.users
    grouped = weights.groupby(["user_id", "horizon", "dimension"])
    assert np.allclose(grouped["weight"].sum(), 1.0, atol=1e-6)
    assert (grouped["rank"].apply(lambda r: sorted(r) == list(range(1, len(r) + 1)))).all()
    top = weights[weights["rank"] == 1].set_index(["user_id", "horizon", "dimension"])["weight"].sort_index()
    assert np.allclose(top.to_numpy(), grouped["weight"].max().sort_index().to_numpy())


def test_planted_top_category_leads_the_category_weights_for_most_users(pipeline, spark, config, input_dir):
    truth = pd.read_csv(input_dir / "ground_truth.csv.gz").sort_values("weight").groupby("user_id").tail(1)
    weights = _snapshot(spark, config, "user_interest_weights").where(
        (F.col("horizon") == "short") & (F.col("dimension") == "category") & (F.col("rank") <= 3)).toPandas()
    top3 = weights.groupby("user_id")["key"].apply(set)
    hits = [row.category in top3.get(row.user_id, set()) for row in truth.itertuples()]
    assert np.mean(hits) > 0.6


def test_weights_move_when_the_data_says_so(pipeline, spark, config, input_dir):
    buyer_category, _ = (input_dir / "planted.txt").read_text().split(",")
    weights = _snapshot(spark, config, "user_interest_weights").where(F.col("horizon") == "short").toPandas() \
        .set_index(["user_id", "dimension", "key"])
    top = weights[weights["rank"] == 1].reset_index().set_index(["user_id", "dimension"])["key"]
    # 30 purchases in one category put it on top, and purchases on top of the buyer's event types.
    assert top[("buyer", "category")] == buyer_category
    assert top[("buyer", "event_type")] == "buy"
    # One event of their own and a circle that shares a category: the profile rests on the social log.
    assert weights.loc[("lonely", "source", "social"), "weight"] > 0.5


def test_long_term_weights_count_every_event_the_window_left_out_each_decayed(pipeline, spark, config, input_dir):
    buyer_category, _ = (input_dir / "planted.txt").read_text().split(",")
    behaviour = _input(input_dir, "behaviour")
    own = behaviour[behaviour["user_id"] == "buyer"].astype({"ts": "int64"})
    assert len(own) > config.sequences.max_len  # the window keeps the 30 newest: the buys
    factor = np.exp2(-(own["ts"].max() - own["ts"]) / 86_400 / config.profile.long_half_life_days)
    expected = factor.groupby(own["category"]).sum() / factor.sum()
    weights = _snapshot(spark, config, "user_interest_weights").where(
        (F.col("user_id") == "buyer") & (F.col("dimension") == "category")).toPandas()
    short = weights[weights["horizon"] == "short"].set_index("key")["weight"]
    long = weights[weights["horizon"] == "long"].sort_values("rank").set_index("key")["weight"]
    assert list(short.index) == [buyer_category]  # the older views fell out of the window...
    assert set(long.index) == set(expected.index) and len(long) > 1  # ...but not out of the long term
    np.testing.assert_allclose(long.to_numpy(), expected[long.index].to_numpy(), rtol=1e-9)
    assert long.index[0] == buyer_category


def test_sequences_are_time_ordered_with_leave_last_out_targets(pipeline, spark, config):
    seqs = _snapshot(spark, config, "user_sequences").toPandas()
    vocab = _snapshot(spark, config, "vocabularies").toPandas()
    behaviour_idx = vocab.query("dimension == 'source' and key == 'behaviour'")["idx"].item()
    item_key = dict(vocab.query("dimension == 'item'")[["idx", "key"]].values)
    events = _snapshot(spark, config, "behaviour_events").toPandas().sort_values(["ts", "event_order"])
    last_item = events.groupby("user_id")["item_id"].last()
    n_events = events.groupby("user_id").size()
    checked = 0
    for row in seqs.itertuples():
        assert row.length == len(row.item) <= config.sequences.max_len
        known = [t for t in row.ts if t > 0]
        assert known == sorted(known)
        behaviour = [i for i, s in enumerate(row.source) if s == behaviour_idx]
        if n_events.get(row.user_id, 0) >= 3:
            assert (row.valid_pos, row.test_pos) == (behaviour[-2], behaviour[-1])
            assert item_key[row.item[row.test_pos]] == last_item[row.user_id]
            checked += 1
        else:
            assert (row.valid_pos, row.test_pos) == (-1, -1)
    assert checked > 0.9 * len(n_events)


def test_mlflow_has_one_parent_run_with_a_nested_run_per_stage(pipeline, config, input_dir):
    mlflow.set_tracking_uri(config.tracking_uri)
    client = MlflowClient(config.tracking_uri)
    parent = client.get_run(pipeline.run_id)
    assert parent.data.params["train.epochs"] == str(config.train.epochs)
    assert parent.data.params["workdir"] == config.workdir
    assert parent.data.metrics["users_profiled"] == pipeline.infer.users
    children = mlflow.search_runs(
        experiment_names=[config.mlflow.experiment],
        filter_string=f"tags.mlflow.parentRunId = '{pipeline.run_id}'", output_format="list")
    by_stage = {run.data.tags["stage"]: run for run in children}
    assert set(by_stage) == STAGES
    train = by_stage["train"]
    history = client.get_metric_history(train.info.run_id, "val_ndcg_at_10")
    assert len(history) == pipeline.train.epochs_run
    assert train.data.tags["delta.read.profiling.user_sequences"] == str(pipeline.sequences.written[1].version)
    for stage, run in by_stage.items():  # lineage: each table read is an input of the run, with its version
        read = {k.removeprefix("delta.read."): v for k, v in run.data.tags.items() if k.startswith("delta.read.")}
        inputs = {i.dataset.name: (json.loads(i.dataset.source)["delta_table_name"], i.dataset.digest)
                  for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
        assert inputs == {name: (f"spark_catalog.{name}", f"v{v}") for name, v in read.items()}, stage
    assert by_stage["infer"].data.tags["delta.written.profiling.user_profile_embeddings"].isdigit()
    planted = sum(1 for source, _, _ in BAD_ROWS if source == "behaviour")
    copies = int(_input(input_dir, "behaviour").duplicated().sum())
    assert by_stage["ingest"].data.metrics["behaviour_quarantined"] == planted + copies


# Run by the project's interpreter with site-packages but not the .pth files that make the checkout
# importable, outside the repository, PYTHONPATH cleared: a process that only has the model's requirements.
PORTABLE_SCORING = """
import json, sys
sys.path.append(sys.argv[1])
try:
    import profiling
    sys.exit("profiling is importable from " + profiling.__file__)
except ModuleNotFoundError:
    pass
import mlflow.pyfunc
import pandas as pd

model = mlflow.pyfunc.load_model(sys.argv[2])
out = model.predict(pd.read_json(sys.argv[3], orient="records"))
out.to_json(sys.argv[4], orient="records")
import profiling  # the package the model brought (code_paths), not the checkout
print(profiling.__file__)
"""


def test_the_registered_model_profiles_raw_keys_as_infer_does_where_the_repository_cannot_be_imported(
        pipeline, spark, config, tmp_path):
    import subprocess
    import sys
    import sysconfig

    profiles = _snapshot(spark, config, "user_profile_embeddings").orderBy("user_id").limit(25).toPandas()
    (version,) = set(profiles["model_version"])
    users = list(profiles["user_id"])
    sequences = _snapshot(spark, config, "user_sequences").where(F.col("user_id").isin(*users)).toPandas()
    vocabulary = _snapshot(spark, config, "vocabularies").toPandas()
    keys = {d: dict(zip(g["idx"], g["key"])) for d, g in vocabulary.groupby("dimension")}
    raw = pd.DataFrame([{
        "user_id": row["user_id"],
        **{c: [keys[c].get(int(i)) if i >= 2 else None for i in row[c][:row["length"]]]
           for c in ("item", "category", "event_type", "source", "attribute")},
        **{c: [int(v) for v in row[c][:row["length"]]] for c in ("gap_bucket", "value_bucket", "ts")},
    } for _, row in sequences.iterrows()])
    raw.to_json(tmp_path / "users.json", orient="records")
    uri = f"models:/{config.mlflow.registered_model}/{version}"
    requirements = mlflow.artifacts.download_artifacts(f"{uri}/requirements.txt", tracking_uri=config.tracking_uri)
    pins = [line for line in open(requirements).read().split() if line]
    assert {p.split("==")[0] for p in pins} >= {"mlflow", "torch", "numpy", "pandas"}
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", p) for p in pins), pins

    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = config.tracking_uri
    done = subprocess.run(
        [sys.executable, "-S", "-c", PORTABLE_SCORING, sysconfig.get_paths()["purelib"], uri,
         str(tmp_path / "users.json"), str(tmp_path / "profiles.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "/code/profiling/" in done.stdout, done.stdout  # the model's own copy of the code
    scored = pd.read_json(tmp_path / "profiles.json", orient="records").set_index("user_id").loc[users]
    assert len(scored) == 25
    for (_, ours), (_, theirs) in zip(profiles.iterrows(), scored.iterrows()):
        np.testing.assert_allclose(theirs["embedding"], ours["embedding"], atol=1e-5)
        np.testing.assert_allclose(theirs["interest_weights"], ours["interest_weights"], atol=1e-5)
        np.testing.assert_allclose(np.array(theirs["interest_embeddings"]), np.stack(ours["interest_embeddings"]),
                                   atol=1e-5)
    weights = _snapshot(spark, config, "user_interest_weights").where(
        F.col("user_id").isin(*users) & (F.col("horizon") == "short")).toPandas()
    ours = weights.set_index(["user_id", "dimension", "key"])["weight"].sort_index()
    theirs = pd.DataFrame([{"user_id": u, **w} for u, row in scored.iterrows() for w in row["dimension_weights"]]
                          ).set_index(["user_id", "dimension", "key"])["weight"].sort_index()
    assert list(theirs.index) == list(ours.index)
    np.testing.assert_allclose(theirs.to_numpy(), ours.to_numpy(), atol=1e-6)


def test_every_write_is_one_commit_carrying_its_stage_run_id(pipeline, spark, config):
    profiles = _snapshot(spark, config, "user_profile_embeddings")
    run_ids = {r["mlflow_run_id"] for r in profiles.select("mlflow_run_id").distinct().collect()}
    assert len(run_ids) == 1
    history = spark.sql(f"DESCRIBE HISTORY {config.catalog.database}.user_profile_embeddings").toPandas()
    writes = history[history["operation"] != "CREATE TABLE"]
    assert writes.iloc[0]["userMetadata"] == run_ids.pop()


def test_rerunning_a_snapshot_replaces_only_that_date(pipeline, spark, config):
    from profiling.pipeline import run_infer

    table = f"{config.catalog.database}.user_profile_embeddings"
    before = _snapshot(spark, config, "user_profile_embeddings").select("user_id", "embedding").toPandas()
    other = SNAPSHOT - dt.timedelta(days=1)
    # A row of another date must survive the rerun untouched.
    spark.table(table).where(F.col("snapshot_date") == F.lit(SNAPSHOT)).limit(1).withColumn(
        "snapshot_date", F.lit(other)).writeTo(table).append()
    versions_before = spark.sql(f"DESCRIBE HISTORY {table}").count()
    run_infer(spark, config, SNAPSHOT, pipeline.train.model_version)
    after = _snapshot(spark, config, "user_profile_embeddings").select("user_id", "embedding").toPandas()
    assert spark.sql(f"DESCRIBE HISTORY {table}").count() == versions_before + 1
    assert len(after) == len(before)
    merged = before.merge(after, on="user_id", suffixes=("_a", "_b"))
    assert len(merged) == len(before)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(merged["embedding_a"], merged["embedding_b"]))
    assert _snapshot(spark, config, "user_profile_embeddings", other).count() == 1


@pytest.mark.parametrize("name", ["user_sequences", "user_profile_embeddings", "user_interest_weights",
                                  "user_interest_evidence", "quarantine", "vocabularies"])
def test_tables_are_registered_with_comments_and_partitioned_by_snapshot(pipeline, spark, config, name):
    full = f"{config.catalog.database}.{name}"
    detail = spark.sql(f"DESCRIBE DETAIL {full}").first()
    assert detail["partitionColumns"] == ["snapshot_date"]
    assert detail["description"]
    columns = spark.sql(f"DESCRIBE TABLE {full}").toPandas()
    columns = columns[~columns["col_name"].str.startswith("#") & (columns["col_name"] != "")]
    assert columns["comment"].fillna("").str.len().min() > 0


def test_views_answer_the_common_questions_from_the_newest_snapshot(pipeline, spark, config):
    db = config.catalog.database
    views = {r["viewName"] for r in spark.sql(f"SHOW VIEWS IN {db}").collect()}
    assert {"user_top_interests", "category_audience", "latest_user_profile_embeddings",
            "latest_user_interest_weights", "latest_user_sequences", "latest_quarantine"} <= views
    newest = spark.table(f"{db}.user_interest_weights").agg(F.max("snapshot_date")).first()[0]
    dates = {r[0] for r in spark.table(f"{db}.latest_user_interest_weights").select("snapshot_date").distinct().collect()}
    assert dates == {newest}
    top = spark.sql(f"SELECT user_id, key FROM {db}.user_top_interests WHERE dimension = 'category' AND rank = 1")
    expected = _snapshot(spark, config, "user_interest_weights", newest).where(
        (F.col("dimension") == "category") & (F.col("rank") == 1)).select("user_id", "key")
    assert sorted(top.collect()) == sorted(expected.collect())
    audience = spark.table(f"{db}.category_audience").toPandas()
    firsts = audience[audience["audience_rank"] == 1].set_index("category")["weight"]
    assert (firsts == audience.groupby("category")["weight"].max()).all()
    extended = spark.sql(f"DESCRIBE TABLE EXTENDED {db}.category_audience").toPandas()
    assert "ranked" in extended[extended["col_name"] == "Comment"]["data_type"].iloc[0]


def test_the_demo_summary_counts_every_snapshot_table_and_names_the_next_commands(pipeline, spark, config, capsys):
    from profiling.demo import print_summary

    print_summary(spark, config, SNAPSHOT, pipeline)
    out = capsys.readouterr().out
    for name in ("user_sequences", "user_profile_embeddings", "user_interest_weights", "user_interest_evidence",
                 "quarantine"):
        count = _snapshot(spark, config, name).count()
        assert re.search(rf" {name} {count:,}(,|$)", out, re.MULTILINE), out
    assert "forget_requests" not in out  # not written by a run: no count, no error
    assert f"profiling explain --workdir {config.workdir_path} --user " in out


def test_the_interest_head_joins_scoring_with_the_weight_that_ranks_validation_best(pipeline, spark, config):
    import torch

    from profiling import tracking
    from profiling.metrics import finalize, ranking_sums, target_ranks
    from profiling.model.inputs import collate, target_window

    model = tracking.load_encoder(config, pipeline.train.model_version)
    chosen = model.spec.interest_score_weight
    assert chosen in config.train.interest_score_weights
    assert pipeline.train.metrics["interest_score_weight"] == chosen
    rows = [r.asDict() for r in _snapshot(spark, config, "user_sequences").where("valid_pos > 0").collect()]
    pairs = [target_window(r, r["valid_pos"], model.spec.max_len, model.spec.behaviour_idx) for r in rows]
    with torch.no_grad():
        sequential, interest = model.head_scores(collate([w for w, _ in pairs]))
    targets = torch.tensor([t for _, t in pairs])
    ndcg = {w: finalize(ranking_sums(target_ranks(sequential + w * interest, targets), [10]))["ndcg@10"]
            for w in config.train.interest_score_weights}
    # Training scored in other batches (other padding), which may move a near-tie by a rank or so.
    assert ndcg[chosen] >= max(ndcg.values()) - 1e-3
    assert pipeline.train.metrics["val_ndcg@10"] == pytest.approx(ndcg[chosen], abs=1e-3)
