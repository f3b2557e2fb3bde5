"""The daily benchmark's two days: day 2 is the newest events of a few users, and nothing is lost."""

from __future__ import annotations

import pandas as pd

from benchmarks.daily import ACTIVE_USERS_SHARE, NEW_EVENTS_SHARE, split_days


def test_day_two_holds_one_percent_of_the_events_of_five_percent_of_the_users(tmp_path):
    from profiling.generate import generate_logs

    generate_logs(tmp_path / "full", users=400, seed=2, events_per_user=(40, 80))
    split = split_days(tmp_path / "full", tmp_path / "days")
    read = {d: pd.read_csv(tmp_path / "days" / d / "behaviour.csv.gz", dtype=str, keep_default_na=False)
            for d in ("day1", "day2")}
    full = pd.read_csv(tmp_path / "full" / "behaviour.csv.gz", dtype=str, keep_default_na=False)
    both = pd.concat(read.values())
    assert sorted(map(tuple, both.values)) == sorted(map(tuple, full.values))
    day2 = read["day2"]
    assert split["day2_events"] == len(day2) and split["day1_events"] == len(read["day1"])
    assert abs(len(day2) / len(full) - NEW_EVENTS_SHARE) < 0.3 * NEW_EVENTS_SHARE
    assert day2["user_id"].nunique() == split["active_users"] == round(split["users"] * ACTIVE_USERS_SHARE)
    # Each active user's day-2 events are newer than all of their day-1 events.
    newest_day1 = read["day1"].assign(ts=lambda f: f["ts"].astype(int)).groupby("user_id")["ts"].max()
    oldest_day2 = day2.assign(ts=lambda f: f["ts"].astype(int)).groupby("user_id")["ts"].min()
    assert (oldest_day2 >= newest_day1.reindex(oldest_day2.index).fillna(0)).all()
    for source in ("preference", "social", "items"):
        assert pd.read_csv(tmp_path / "days" / "day2" / f"{source}.csv.gz").empty
