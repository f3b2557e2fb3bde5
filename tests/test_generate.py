"""Tests for the synthetic log generator: files, determinism, planted structure.

Everything downstream is scored against the planted ground truth, so these
tests check that the structure is really in the files (and the planted dirt
too), not just that the files exist.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from profiling.generate import generate_logs

USERS = 200

EXPECTED_COLUMNS = {
    "behaviour": ["user_id", "item_id", "event_type", "ts", "category", "value"],
    "preference": ["user_id", "dimension", "key", "value", "ts"],
    "social": ["user_id", "other_user_id", "relation", "ts"],
    "items": ["item_id", "category", "title"],
    "ground_truth": ["user_id", "category", "weight", "lifetime_weight", "drifting"],
}


def _read(out: Path, name: str) -> pd.DataFrame:
    """Read one file; ts as nullable integers so empty fields stay distinct."""
    has_ts = "ts" in EXPECTED_COLUMNS[name]
    return pd.read_csv(out / f"{name}.csv.gz", dtype={"ts": "Int64"} if has_ts else None)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("logs")
    counts = generate_logs(out, users=USERS, seed=11)
    frames = {name: _read(out, name) for name in EXPECTED_COLUMNS}
    return out, counts, frames


@pytest.fixture(scope="module")
def mixture(generated):
    """user_id -> sign-up mixture A, heaviest first: what preferences and friends follow.

    A drifting user's A is in the ground truth with weight 0 and a positive
    lifetime weight (f times A's weight, so the order is A's).
    """
    gt = generated[2]["ground_truth"]
    a = gt[~gt["drifting"] | (gt["weight"] == 0)]
    a = a.sort_values(["user_id", "lifetime_weight"], ascending=[True, False])
    return a.groupby("user_id")["category"].agg(list).to_dict()


@pytest.fixture(scope="module")
def top_category(mixture):
    return {u: cats[0] for u, cats in mixture.items()}


@pytest.fixture(scope="module")
def drifting(generated):
    gt = generated[2]["ground_truth"]
    return set(gt.loc[gt["drifting"], "user_id"])


def _drift_sets(gt: pd.DataFrame) -> dict[str, tuple[set, set]]:
    """Drifting user_id -> (categories of A, categories of B), from the ground truth."""
    d = gt[gt["drifting"]]
    a = d[(d["lifetime_weight"] > 0) & (d["weight"] == 0)].groupby("user_id")["category"].agg(set)
    b = d[d["weight"] > 0].groupby("user_id")["category"].agg(set)
    return {u: (a.get(u, set()), b[u]) for u in b.index}


def test_files_exist_with_exact_headers(generated):
    out, _, _ = generated
    for name, columns in EXPECTED_COLUMNS.items():
        path = out / f"{name}.csv.gz"
        assert path.is_file()
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            assert fh.readline().rstrip("\n").split(",") == columns


def test_returned_counts_match_rows(generated):
    _, counts, frames = generated
    assert set(counts) == set(EXPECTED_COLUMNS)
    for name, frame in frames.items():
        assert counts[name] == len(frame) > 0


def test_same_seed_is_byte_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_logs(a, users=50, seed=3)
    generate_logs(b, users=50, seed=3)
    for name in EXPECTED_COLUMNS:
        assert (a / f"{name}.csv.gz").read_bytes() == (b / f"{name}.csv.gz").read_bytes()


def test_different_seed_differs(tmp_path):
    generate_logs(tmp_path / "a", users=50, seed=3)
    generate_logs(tmp_path / "b", users=50, seed=4)
    for name in ("behaviour", "ground_truth", "social", "preference"):
        assert not _read(tmp_path / "a", name).equals(_read(tmp_path / "b", name))


def test_creates_missing_directory_and_respects_sizes(tmp_path):
    out = tmp_path / "nested" / "dir"
    counts = generate_logs(out, users=30, seed=1, categories=7, items_per_category=4,
                           events_per_user=(5, 5))
    items = _read(out, "items")
    assert counts["items"] == 28
    assert sorted(items["category"].unique()) == [f"c{i:02d}" for i in range(7)]
    assert (items.groupby("category").size() == 4).all()
    beh = _read(out, "behaviour")
    per_user = beh.drop_duplicates().groupby("user_id").size()
    assert (per_user == 5).all()
    assert beh["user_id"].nunique() == 30 - 1  # round(3 % of 30) == 1, at least 1 silent


def test_ids_and_titles(generated):
    _, _, f = generated
    items = f["items"]
    assert items["item_id"].str.fullmatch(r"i\d{5}").all()
    assert items["item_id"].is_unique
    assert len(items) == 20 * 50
    assert (items.groupby("category").size() == 50).all()
    expected = [f"Item {int(i[1:])} ({c})" for i, c in zip(items.item_id, items.category)]
    assert (items["title"] == expected).all()
    users = f["ground_truth"]["user_id"].unique()
    assert len(users) == USERS
    assert pd.Series(users).str.fullmatch(r"u\d{6}").all()


def test_item_ids_keep_one_width_past_five_digits(tmp_path):
    counts = generate_logs(tmp_path, users=20, seed=3, categories=3, items_per_category=40_000, events_per_user=(2, 4))
    items = _read(tmp_path, "items")
    assert counts["items"] == len(items) == 120_000
    assert items["item_id"].str.fullmatch(r"i\d{6}").all()
    assert list(items["item_id"]) == sorted(items["item_id"])  # ids sort like their index
    assert set(_read(tmp_path, "behaviour")["item_id"]) <= set(items["item_id"])


def test_ground_truth_mixtures(generated):
    gt = generated[2]["ground_truth"]
    assert gt["drifting"].dtype == bool
    assert not gt.duplicated(["user_id", "category"]).any()
    assert ((gt["weight"] > 0) | (gt["lifetime_weight"] > 0)).all()
    for column in ("weight", "lifetime_weight"):
        np.testing.assert_allclose(gt.groupby("user_id")[column].sum(), 1.0, atol=1e-9)
    stable = gt[~gt["drifting"]]
    assert (stable["weight"] == stable["lifetime_weight"]).all() and (stable["weight"] > 0).all()
    # Users in order, then current weight descending, then lifetime weight descending.
    expected = gt.sort_values(["user_id", "weight", "lifetime_weight"], ascending=[True, False, False])
    assert (gt.index == expected.index).all()
    current = gt[gt["weight"] > 0]  # A for stable users, B for drifting ones
    sizes = current.groupby("user_id").size()
    assert sizes.between(3, 5).all()
    assert sizes.nunique() == 3  # all of 3, 4 and 5 occur
    for _, w in current.groupby("user_id")["weight"]:
        w = np.sort(w.to_numpy())[::-1]
        gaps = w[:3] - np.append(w, 0.0)[1:4]
        assert (gaps >= 0.03 - 1e-12).all(), w


def test_behaviour_categories_follow_mixture_and_catalogue(generated):
    _, _, f = generated
    beh, items, gt = f["behaviour"], f["items"], f["ground_truth"]
    item_cat = items.set_index("item_id")["category"]
    assert beh["item_id"].isin(item_cat.index).all()
    assert (beh["category"].to_numpy() == item_cat.loc[beh["item_id"]].to_numpy()).all()
    planted = gt.groupby("user_id")["category"].agg(set)  # A and, for drifting users, B
    in_mix = [c in planted[u] for u, c in zip(beh["user_id"], beh["category"])]
    assert all(in_mix)


def test_top_category_dominates_behaviour(generated):
    """The planted lifetime top category should be the most frequent one for most users."""
    beh, gt = generated[2]["behaviour"], generated[2]["ground_truth"]
    lifetime_top = (gt.sort_values(["user_id", "lifetime_weight"], ascending=[True, False])
                    .drop_duplicates("user_id").set_index("user_id")["category"])
    modal = beh.groupby("user_id")["category"].agg(lambda s: s.value_counts().idxmax())
    hits = np.mean([modal[u] == lifetime_top[u] for u in modal.index])
    assert hits > 0.7


def test_popularity_is_skewed(generated):
    counts = generated[2]["behaviour"].groupby(["category", "item_id"]).size()
    ratio = counts.groupby("category").max() / counts.groupby("category").median()
    assert ratio.median() > 4


def test_event_types_and_values(generated, top_category, drifting):
    beh = generated[2]["behaviour"]
    share = beh["event_type"].value_counts(normalize=True)
    assert set(share.index) == {"view", "cart", "buy"}
    assert share["view"] == pytest.approx(0.7, abs=0.05)
    assert share["cart"] == pytest.approx(0.2, abs=0.05)
    assert share["buy"] == pytest.approx(0.1, abs=0.04)
    is_view = beh["event_type"] == "view"
    assert beh.loc[is_view, "value"].isna().all()
    assert (beh.loc[~is_view, "value"] > 0).all()
    stable = beh[~beh["user_id"].isin(drifting)]  # a drifting user's top changes at the switch
    is_top = stable["category"] == stable["user_id"].map(top_category)
    buy = stable["event_type"] == "buy"
    assert buy[is_top].mean() > 1.5 * buy[~is_top].mean()


def test_value_written_as_empty_field_for_views(generated):
    out = generated[0]
    with gzip.open(out / "behaviour.csv.gz", "rt", encoding="utf-8") as fh:
        next(fh)
        views = [line for line in (next(fh) for _ in range(200)) if ",view," in line]
    assert views and all(line.endswith(",\n") for line in views)


def test_timestamps_integer_and_ordered_per_user(generated):
    _, _, f = generated
    beh = f["behaviour"]
    assert pd.api.types.is_integer_dtype(beh["ts"]) and beh["ts"].notna().all()
    assert (beh.groupby("user_id")["ts"].diff().dropna() >= 0).all()
    start = 1_700_000_000
    assert beh["ts"].min() >= start
    assert beh["ts"].max() < start + 120 * 86_400
    # Planted dirt: same-second ties and exact duplicate rows, but only a few.
    ties = (beh.groupby("user_id")["ts"].diff() == 0).mean()
    dups = beh.duplicated().mean()
    assert 0.005 < ties < 0.06
    assert 0.0005 < dups < 0.02


def test_raw_ts_fields_are_integers_or_empty(generated):
    out = generated[0]
    for name in ("behaviour", "preference", "social"):
        frame = pd.read_csv(out / f"{name}.csv.gz", dtype=str, keep_default_na=False)
        ts = frame["ts"]
        assert ts.str.fullmatch(r"\d*").all(), name
        if name == "behaviour":
            assert (ts != "").all()


def test_silent_users(generated, mixture, top_category):
    _, _, f = generated
    active = set(f["behaviour"]["user_id"])
    silent = set(mixture) - active
    assert len(silent) == round(0.03 * USERS)
    pref, social = f["preference"], f["social"]
    for u in silent:
        assert u in set(pref["user_id"]) or u in set(social["user_id"])
        friends = social.loc[social["user_id"] == u, "other_user_id"]
        assert len(friends) >= 2
        assert all(top_category[v] == top_category[u] for v in friends)
        assert friends.isin(active).all()


def test_preferences(generated, mixture):
    _, _, f = generated
    pref, beh = f["preference"], f["behaviour"]
    assert set(pref["dimension"]) == {"category", "age", "device"}
    assert (pref["value"] == 1.0).all()
    cat = pref[pref["dimension"] == "category"]
    per_user = cat.groupby("user_id").size()
    active = set(beh["user_id"])
    assert len(per_user) == USERS
    assert per_user[per_user.index.isin(active)].between(1, 2).all()
    # Users with no behaviour state their three heaviest categories: their top-3 is in the data.
    silent = cat[~cat["user_id"].isin(active)]
    assert len(silent) == 3 * silent["user_id"].nunique() > 0
    assert all(set(keys) == set(mixture[u][:3]) for u, keys in silent.groupby("user_id")["key"])
    assert not cat.duplicated(["user_id", "key"]).any()
    assert all(k in mixture[u] for u, k in zip(cat["user_id"], cat["key"]))
    first_rows = cat.drop_duplicates("user_id")
    top_share = np.mean([k == mixture[u][0] for u, k in zip(first_rows.user_id, first_rows.key)])
    assert 0.55 < top_share < 0.85
    assert cat["ts"].notna().all()
    first_event = beh.groupby("user_id")["ts"].min()
    with_events = cat[cat["user_id"].isin(first_event.index)]
    assert (with_events["ts"].to_numpy() < first_event.loc[with_events["user_id"]].to_numpy()).all()
    demo = pref[pref["dimension"] != "category"]
    assert demo["ts"].isna().all()
    assert (demo.groupby(["user_id", "dimension"]).size() == 1).all()
    assert set(demo.loc[demo.dimension == "device", "key"]) == {"mobile", "desktop"}
    assert demo.loc[demo.dimension == "age", "key"].str.fullmatch(r"\d\d-\d\d|65\+").all()


def test_social_graph(generated, top_category):
    social = generated[2]["social"]
    assert (social["relation"] == "friend").all()
    assert (social["user_id"] != social["other_user_id"]).all()
    assert not social.duplicated(["user_id", "other_user_id"]).any()
    assert social.groupby("user_id").size().between(2, 8).all()
    assert social["user_id"].nunique() == USERS
    assert social["ts"].isna().any() and social["ts"].notna().any()
    same = (social["user_id"].map(top_category) == social["other_user_id"].map(top_category)).mean()
    tops = pd.Series(top_category).value_counts(normalize=True)
    chance = float((tops**2).sum())
    assert same > 0.7
    assert same > 5 * chance


@pytest.mark.parametrize(
    "kwargs",
    [{"users": 1}, {"categories": 2}, {"items_per_category": 0}, {"events_per_user": (5, 2)},
     {"events_per_user": (0, 3)}, {"drift_share": -0.1}, {"drift_share": 1.5}],
)
def test_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_logs(tmp_path, **{"users": 20, **kwargs})


# --------------------------------------------------------------------------
# drift


def test_drift_share_of_active_users(generated, drifting):
    beh = generated[2]["behaviour"]
    active = set(beh["user_id"])
    assert len(drifting) == round(0.2 * len(active)) > 0
    assert drifting <= active  # silent users never drift


def test_drift_mixtures_disjoint_and_lifetime_matches_events(generated, drifting):
    beh, gt = generated[2]["behaviour"], generated[2]["ground_truth"]
    sets = _drift_sets(gt)
    assert set(sets) == drifting
    events = beh.drop_duplicates()
    for u, (a, b) in sets.items():
        assert a and 3 <= len(b) <= 5
        assert not a & b
        rows = gt[gt["user_id"] == u]
        assert rows["lifetime_weight"].sum() == pytest.approx(1.0, abs=1e-9)
        a_share = rows.loc[rows["category"].isin(a), "lifetime_weight"].sum()
        cats = events.loc[events["user_id"] == u, "category"]
        # A and B are disjoint, so the events in A are exactly the s before the switch.
        assert cats.isin(a).mean() == pytest.approx(a_share, abs=1 / len(cats) + 1e-9)
        assert 0.25 - 1 / len(cats) <= a_share <= 0.5 + 1 / len(cats)


def test_drifting_users_switch_from_a_to_b(generated):
    beh, gt = generated[2]["behaviour"], generated[2]["ground_truth"]
    events = beh.drop_duplicates()  # the file is in time order; ties keep each user's order
    for u, (a, b) in _drift_sets(gt).items():
        cats = events.loc[events["user_id"] == u, "category"].to_numpy()
        s = int(np.isin(cats, list(a)).sum())
        assert np.isin(cats[:s], list(a)).all(), u  # before the switch: A only
        assert np.isin(cats[s:], list(b)).all(), u  # from the switch on: B only
        assert len(cats) - s >= len(cats) / 2 - 1  # B has at least half the history


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return fh.read().splitlines()


def test_drift_leaves_stable_users_byte_identical(tmp_path):
    """The drift rng is separate: stable users' rows equal the drift-free output's."""
    plain, drifted = tmp_path / "plain", tmp_path / "drifted"
    generate_logs(plain, users=80, seed=5, drift_share=0)
    generate_logs(drifted, users=80, seed=5, drift_share=0.5)
    gt0, gt = _read(plain, "ground_truth"), _read(drifted, "ground_truth")
    assert not gt0["drifting"].any() and (gt0["weight"] == gt0["lifetime_weight"]).all()
    moved = set(gt.loc[gt["drifting"], "user_id"])
    assert len(moved) == round(0.5 * _read(plain, "behaviour")["user_id"].nunique())
    for name in ("items", "preference", "social"):  # keyed to the sign-up mixture
        assert (plain / f"{name}.csv.gz").read_bytes() == (drifted / f"{name}.csv.gz").read_bytes()
    for name in ("behaviour", "ground_truth"):
        before, after = _lines(plain / f"{name}.csv.gz"), _lines(drifted / f"{name}.csv.gz")
        assert before[0] == after[0]
        stable_before = [line for line in before[1:] if line.split(",", 1)[0] not in moved]
        stable_after = [line for line in after[1:] if line.split(",", 1)[0] not in moved]
        assert stable_before == stable_after and stable_before
        assert set(before) - set(stable_before) != set(after) - set(stable_after)  # drifting users' rows did change


def test_drift_needs_free_categories(tmp_path):
    """A mixture covering the whole catalogue has nothing to drift to; B shrinks to what is left."""
    generate_logs(tmp_path, users=60, seed=2, categories=4, events_per_user=(8, 12), drift_share=1)
    gt, beh = _read(tmp_path, "ground_truth"), _read(tmp_path, "behaviour")
    sizes_a = gt[~gt["drifting"] | (gt["weight"] == 0)].groupby("user_id").size()
    active = set(beh["user_id"])
    eligible = {u for u in active if sizes_a[u] == 3}
    assert set(gt.loc[gt["drifting"], "user_id"]) == eligible and eligible
    b = gt[gt["drifting"] & (gt["weight"] > 0)]
    assert (b.groupby("user_id").size() == 1).all() and (b["weight"] == 1.0).all()
