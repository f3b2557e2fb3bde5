"""The evaluation protocol: one split for the encoder and the baselines, checked against pandas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from profiling.evaluate import cold_window, drift_fidelity, in_cold_start_sample, interest_fidelity
from profiling.model.inputs import FEATURES

from conftest import SNAPSHOT


@pytest.fixture(scope="module")
def evaluation(pipeline, spark, config, input_dir):
    from profiling.pipeline import run_evaluate

    return run_evaluate(spark, config, SNAPSHOT, ground_truth=input_dir / "ground_truth.csv.gz")


def _behaviour(input_dir):
    frame = pd.read_csv(input_dir / "behaviour.csv.gz", dtype=str, keep_default_na=False)
    frame = frame[(frame["user_id"].str.strip() != "") & frame["ts"].str.isdigit()]
    frame = frame[~frame["value"].isin(["twelve", "NaN"])]
    frame = frame.drop_duplicates()  # later copies of a row are quarantined as duplicate_row
    frame["order"] = np.arange(len(frame))
    frame["ts"] = frame["ts"].astype(int)
    return frame.sort_values(["ts", "order"], kind="stable")


def test_users_with_three_or_more_behaviour_events_are_evaluated(evaluation, input_dir):
    counts = _behaviour(input_dir).groupby("user_id").size()
    assert evaluation.users_evaluated == int((counts >= 3).sum())
    assert set(evaluation.models) == {"profiling", "popularity", "als"}
    for metrics in evaluation.models.values():
        assert {"recall@10", "ndcg@10", "recall@50", "ndcg@50", "hit@20"} <= set(metrics)
        assert 0 <= metrics["ndcg@10"] <= metrics["recall@10"] <= metrics["recall@50"] <= 1


def _popularity_ranks(input_dir) -> pd.Series:
    """Each evaluated user's test target's rank by popularity, computed with pandas."""
    events = _behaviour(input_dir)
    last = events.groupby("user_id").tail(1)
    test = last[last["user_id"].map(events.groupby("user_id").size()) >= 3]
    train = events.drop(test.index)
    popularity = train["item_id"].value_counts()
    all_items = pd.Series(0, index=events["item_id"].unique()).add(popularity, fill_value=0)

    def rank(item):  # ties count against the target, as in profiling.metrics
        return int((all_items >= all_items[item]).sum()) - 1

    return pd.Series([rank(i) for i in test["item_id"]], index=test["user_id"])


def _recall_ndcg_at_10(ranks: np.ndarray) -> tuple[float, float]:
    return float(np.mean(ranks < 10)), float(np.mean(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0)))


def test_popularity_baseline_matches_an_independent_computation(evaluation, input_dir):
    recall, ndcg = _recall_ndcg_at_10(_popularity_ranks(input_dir).to_numpy())
    assert evaluation.models["popularity"]["recall@10"] == pytest.approx(recall, abs=1e-6)
    assert evaluation.models["popularity"]["ndcg@10"] == pytest.approx(ndcg, abs=1e-6)


def test_cold_start_ranks_a_tenth_of_the_users_from_their_preference_and_social_events(evaluation, input_dir,
                                                                                        spark, config):
    from profiling.tables import read_snapshot

    cold = evaluation.cold_start
    ranks = _popularity_ranks(input_dir)
    sampled = [u for u in ranks.index if in_cold_start_sample(u)]
    assert cold["sampled"] == len(sampled) and 0.05 * len(ranks) < len(sampled) < 0.15 * len(ranks)
    # The users ranked: those with an event other than behaviour before their target.
    vocab = read_snapshot(spark, config, "vocabularies", SNAPSHOT)[0]
    behaviour = vocab.where("dimension = 'source' AND key = 'behaviour'").first()["idx"]
    rows = read_snapshot(spark, config, "user_sequences", SNAPSHOT)[0].where("test_pos >= 0").toPandas()
    with_context = [r["user_id"] for _, r in rows.iterrows() if r["user_id"] in set(sampled)
                    and cold_window(r, int(r["test_pos"]), 50, behaviour) is not None]
    assert cold["users"] == len(with_context) > 5
    recall, ndcg = _recall_ndcg_at_10(ranks[with_context].to_numpy())
    assert cold["popularity"]["recall@10"] == pytest.approx(recall, abs=1e-6)
    assert cold["popularity"]["ndcg@10"] == pytest.approx(ndcg, abs=1e-6)
    assert 0 <= cold["profiling"]["ndcg@10"] <= cold["profiling"]["recall@10"] <= 1


def test_a_cold_window_holds_the_events_before_the_target_that_are_not_behaviour_their_gaps_hidden():
    behaviour, preference, social = 2, 3, 4
    source = [social, preference, behaviour, behaviour, preference, behaviour, preference]
    row = {name: np.arange(10, 17) for name in FEATURES} | {"source": np.array(source)}
    window = cold_window(row, 6, 10, behaviour)  # the target at 6: the preference after it is not seen
    assert window["source"].tolist() == [social, preference, preference]
    assert window["item"].tolist() == [10, 11, 14]
    assert window["gap_bucket"].tolist() == [1, 1, 1] and window["history"].size == 0
    assert cold_window(row, 6, 2, behaviour)["item"].tolist() == [11, 14]  # the newest, as any window
    assert cold_window(row | {"source": np.full(7, behaviour)}, 6, 10, behaviour) is None


def test_fidelity_figures_are_reported_for_generated_data(evaluation):
    assert evaluation.fidelity["users"] > 100
    assert 0 <= evaluation.fidelity["top3_match"] <= 1
    assert -1 <= evaluation.fidelity["spearman"] <= 1
    spearman = evaluation.fidelity["interests_spearman"]
    assert math.isnan(spearman) or -1 <= spearman <= 1  # NaN: every user kept as many interests
    assert 1 <= evaluation.fidelity["interests_mean"] <= 3  # the pipeline's model.interests
    assert evaluation.fidelity["interests_max_cosine"] <= 0.95  # the merge left no near-duplicate pair (4 decimals)


def test_drift_figures_count_the_drifting_users_and_fidelity_the_stable_ones(evaluation, input_dir):
    truth = pd.read_csv(input_dir / "ground_truth.csv.gz")
    drifting = truth.groupby("user_id")["drifting"].first()
    assert evaluation.fidelity["users"] == (~drifting).sum()  # every stable user has category weights
    assert 0 < evaluation.fidelity["drift_users"] == drifting.sum()
    assert 0 <= evaluation.fidelity["drift_top1_short"] <= 1 and 0 <= evaluation.fidelity["drift_top1_long"] <= 1


def test_drift_fidelity_on_hand_made_weights():
    # Both users moved from {x, y} to {z, w}.
    truth = pd.DataFrame({"user_id": ["a"] * 4 + ["b"] * 4, "category": ["z", "w", "x", "y"] * 2,
                          "weight": [0.6, 0.4, 0.0, 0.0] * 2, "lifetime_weight": [0.3, 0.2, 0.3, 0.2] * 2})
    rows = [("a", "short", "z", 0.7), ("a", "short", "x", 0.3),  # now z: right
            ("a", "long", "x", 0.4), ("a", "long", "z", 0.35), ("a", "long", "y", 0.25),  # x and z: both
            ("b", "short", "y", 0.6), ("b", "short", "w", 0.4),  # now y: wrong
            ("b", "long", "x", 0.5), ("b", "long", "y", 0.3), ("b", "long", "q", 0.2)]  # no z or w: wrong
    weights = pd.DataFrame(rows, columns=["user_id", "horizon", "key", "weight"])
    assert drift_fidelity(weights, truth) == {"drift_users": 2, "drift_top1_short": 0.5, "drift_top1_long": 0.5}


def test_interest_fidelity_on_hand_made_weights():
    truth = pd.DataFrame({"user_id": ["a"] * 4 + ["b"] * 3, "category": ["x", "y", "z", "w", "x", "y", "z"],
                          "weight": [0.4, 0.3, 0.2, 0.1, 0.5, 0.3, 0.2]})
    weights = pd.DataFrame({"user_id": ["a"] * 4 + ["b"] * 3, "key": ["x", "y", "z", "w", "w", "y", "z"],
                            "weight": [0.4, 0.3, 0.2, 0.1, 0.5, 0.3, 0.2]})
    got = interest_fidelity(weights, truth, ["w", "x", "y", "z"])
    assert got["users"] == 2 and got["top3_match"] == 0.5
    # user b: ranks over (w, x, y, z) are (4, 1, 3, 2) against (1, 4, 3, 2): Pearson -0.8
    assert got["spearman"] == pytest.approx((1.0 - 0.8) / 2)
