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
    "ground_truth": ["user_id", "category", "weight"],
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
    """user_id -> list of planted categories, heaviest first."""
    gt = generated[2]["ground_truth"].sort_values(["user_id", "weight"], ascending=[True, False])
    return gt.groupby("user_id")["category"].agg(list).to_dict()


@pytest.fixture(scope="module")
def top_category(mixture):
    return {u: cats[0] for u, cats in mixture.items()}


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
    sums = gt.groupby("user_id")["weight"].sum()
    np.testing.assert_allclose(sums, 1.0, atol=1e-9)
    sizes = gt.groupby("user_id").size()
    assert sizes.between(3, 5).all()
    assert sizes.nunique() == 3  # all of 3, 4 and 5 occur
    assert not gt.duplicated(["user_id", "category"]).any()
    assert (gt["weight"] > 0).all()
    for _, w in gt.groupby("user_id")["weight"]:
        w = np.sort(w.to_numpy())[::-1]
        gaps = w[:3] - np.append(w, 0.0)[1:4]
        assert (gaps >= 0.03 - 1e-12).all(), w


def test_behaviour_categories_follow_mixture_and_catalogue(generated, mixture):
    _, _, f = generated
    beh, items = f["behaviour"], f["items"]
    item_cat = items.set_index("item_id")["category"]
    assert beh["item_id"].isin(item_cat.index).all()
    assert (beh["category"].to_numpy() == item_cat.loc[beh["item_id"]].to_numpy()).all()
    in_mix = [c in mixture[u] for u, c in zip(beh["user_id"], beh["category"])]
    assert all(in_mix)


def test_top_category_dominates_behaviour(generated, top_category):
    """The planted top category should be the most frequent one for most users."""
    beh = generated[2]["behaviour"]
    modal = beh.groupby("user_id")["category"].agg(lambda s: s.value_counts().idxmax())
    hits = np.mean([modal[u] == top_category[u] for u in modal.index])
    assert hits > 0.7


def test_popularity_is_skewed(generated):
    counts = generated[2]["behaviour"].groupby(["category", "item_id"]).size()
    ratio = counts.groupby("category").max() / counts.groupby("category").median()
    assert ratio.median() > 4


def test_event_types_and_values(generated, top_category):
    beh = generated[2]["behaviour"]
    share = beh["event_type"].value_counts(normalize=True)
    assert set(share.index) == {"view", "cart", "buy"}
    assert share["view"] == pytest.approx(0.7, abs=0.05)
    assert share["cart"] == pytest.approx(0.2, abs=0.05)
    assert share["buy"] == pytest.approx(0.1, abs=0.04)
    is_view = beh["event_type"] == "view"
    assert beh.loc[is_view, "value"].isna().all()
    assert (beh.loc[~is_view, "value"] > 0).all()
    is_top = beh["category"] == beh["user_id"].map(top_category)
    buy = beh["event_type"] == "buy"
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
     {"events_per_user": (0, 3)}],
)
def test_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_logs(tmp_path, **{"users": 20, **kwargs})
