"""Daily operation: the logs keep each row once, whichever form a day's input takes, and the daily
refresh of sequences and profiles equals a full rebuild.

One workdir through three days, on generated logs split by time: day 1 brings the first logs; day 2
only its new rows (the "new rows" form); day 3 a cumulative dump of everything so far, with preference
and social given as full state (``input.full_state``) in which one preference was withdrawn, one edge
removed, and the one preference of a user with nothing else withdrawn (the user leaves every log).
Each day runs ingest, sequences and infer (with an encoder trained on day 1's full refresh); day 3 is
then ingested again, and its sequences and profiles rebuilt in full to compare.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from profiling.schemas import input_contracts, table

pytestmark = pytest.mark.xdist_group("daily")  # beside the session group: it trains its own model

DATABASE = "daily"
DAYS = [dt.date(2026, 11, 10), dt.date(2026, 11, 11), dt.date(2026, 11, 12)]
LOGS = {"behaviour": "behaviour_events", "preference": "preference_events", "social": "social_edges",
        "items": "items"}


def _write(folder: Path, frames: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir(parents=True)
    for source, frame in frames.items():
        frame.to_csv(folder / f"{source}.csv.gz", index=False, compression="gzip")
    return folder


def _rows(spark, name: str, day: dt.date | None = None, partition: bool = False) -> pd.DataFrame:
    """A log's rows as text in its key columns: its snapshot ``day`` (its partition ``day`` when
    ``partition``), or all of it."""
    full = f"{DATABASE}.{name}"
    key = list(table(name).row_key)
    if day is None:
        frame = spark.table(full)
    elif partition:
        frame = spark.table(full).where(f"snapshot_date = DATE'{day}'")
    else:  # the snapshot as every stage reads it (profiling.tables.read_snapshot)
        frame = spark.sql(table(name).snapshot_sql(full, f"DATE'{day}'"))
    out = frame.select(*[frame[c].cast("string").alias(c) for c in key]).toPandas().fillna("")
    return out.sort_values(key).reset_index(drop=True)


def _as_keys(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Input rows as the log stores their key: numbers as Spark prints them, blanks as ""."""
    key = list(table(name).row_key)
    out = frame.copy()
    for column in key:
        if column == "value":
            out[column] = [str(float(v)) if v != "" else "" for v in out[column]]
    return out[key].drop_duplicates().sort_values(key).reset_index(drop=True)


def _day_config(config, folder: Path, full_state: list[str]):
    return config.model_copy(update={
        "input": config.input.model_copy(update={"dir": str(folder), "full_state": full_state}),
        "catalog": config.catalog.model_copy(update={"database": DATABASE}),
    })


@pytest.fixture(scope="module")
def days(spark, config, tmp_path_factory):
    from profiling import tracking
    from profiling.generate import generate_logs
    from profiling.infer import infer_profiles
    from profiling.ingest import ingest_logs
    from profiling.sequences import build_user_sequences
    from profiling.tables import current_version
    from profiling.train.launch import train_encoder

    root = tmp_path_factory.mktemp("daily")
    generate_logs(root / "all", users=40, seed=5, events_per_user=(6, 14))
    every = {s: pd.read_csv(root / "all" / f"{s}.csv.gz", dtype=str, keep_default_na=False) for s in LOGS}
    behaviour = every["behaviour"]
    first, second = len(behaviour) * 7 // 10, len(behaviour) * 17 // 20
    preference, social = every["preference"], every["social"]
    # Day 3's state: one preference withdrawn (its user's only one of that attribute, so it leaves the
    # sequence; of the user with the fewest events, so no max_len cut hides it), one edge removed.
    once = preference.groupby(["user_id", "dimension", "key"])["key"].transform("size") == 1
    events = behaviour["user_id"].value_counts()
    withdrawn = preference[once].assign(n=lambda f: f["user_id"].map(events).fillna(0)).sort_values(
        ["n", "user_id"]).drop(columns="n").iloc[0]
    removed = social[social["user_id"].duplicated(keep=False)].iloc[0]
    leaver = pd.DataFrame([{**withdrawn.to_dict(), "user_id": "u-leaver"}])  # in no log but this row
    items = every["items"]
    retitled = items.assign(title=lambda f: f["title"].where(f.index != 0, "A new title"))  # day 3: one item
    new_preference = pd.DataFrame([{**withdrawn.to_dict(), "key": "newly-declared"}])
    new_edge = pd.DataFrame([{**removed.to_dict(), "other_user_id": "u-newcomer"}])
    empty = {s: every[s].head(0) for s in ("preference", "social")}
    inputs = [
        _write(root / "day1", {"behaviour": behaviour.iloc[:first], "preference": pd.concat([preference, leaver]),
                               "social": social, "items": items}),
        _write(root / "day2", {"behaviour": behaviour.iloc[first:second], **empty}),  # its new rows only
        _write(root / "day3", {  # everything so far, preference and social as the state of the day
            "behaviour": behaviour,
            "preference": pd.concat([preference.drop(index=withdrawn.name), new_preference]),
            "social": pd.concat([social.drop(index=removed.name), new_edge]),
            "items": retitled}),
    ]
    full_state = [[], [], ["preference", "social"]]
    out = SimpleNamespace(every=every, behaviour=behaviour, cuts=(first, second), withdrawn=withdrawn,
                          removed=removed, retitled=items.iloc[0], ingests=[], sequences=[], infers=[])
    model = None
    for day, folder, state in zip(DAYS, inputs, full_state):
        cfg = _day_config(config, folder, state)
        out.ingests.append(ingest_logs(spark, cfg, day))
        out.sequences.append(build_user_sequences(spark, cfg, day))
        if model is None:  # day 1, a full refresh: what training reads
            small = cfg.model_copy(update={"train": cfg.train.model_copy(update={"min_behaviour_events": 100,
                                                                                  "epochs": 1})})
            with tracking.stage_run(small, "train", day) as run_id:
                model = train_encoder(spark, small, day, run_id).model_version
        out.infers.append(infer_profiles(spark, cfg, day, model, "daily-test"))
    out.before_rerun = {n: (_rows(spark, n), current_version(spark, f"{DATABASE}.{n}")) for n in LOGS.values()}
    out.rerun = ingest_logs(spark, cfg, DAYS[2])
    out.after_rerun = {n: (_rows(spark, n), current_version(spark, f"{DATABASE}.{n}")) for n in LOGS.values()}
    # The daily refreshes' snapshot of day 3, then a full rebuild of it (which replaces that partition).
    out.daily = {"sequences": _decoded_sequences(spark, DAYS[2]), "profiles": _profiles(spark, DAYS[2]),
                 "day2": _decoded_sequences(spark, DAYS[1]), "weights": _weights(spark, DAYS[2])}
    out.full_sequences = build_user_sequences(spark, cfg, DAYS[2], full_refresh=True)
    out.full_infer = infer_profiles(spark, cfg, DAYS[2], model, "daily-test", full_refresh=True)
    out.full = {"sequences": _decoded_sequences(spark, DAYS[2]), "profiles": _profiles(spark, DAYS[2]),
                "weights": _weights(spark, DAYS[2])}
    return out


def _snapshot(spark, name: str, day: dt.date):
    return spark.sql(table(name).snapshot_sql(f"{DATABASE}.{name}", f"DATE'{day}'"))


def _decoded_sequences(spark, day: dt.date) -> dict[str, tuple]:
    """Each user's sequence of snapshot ``day`` with its indices turned back into keys (a daily refresh
    appends to the vocabulary where a full one ranks it anew, so the indices may differ)."""
    vocab = {(r["dimension"], r["idx"]): r["key"] for r in spark.table(f"{DATABASE}.vocabularies").where(
        f"snapshot_date = DATE'{day}'").collect()}
    keyed = ("item", "category", "event_type", "source", "attribute")
    out = {}
    for row in _snapshot(spark, "user_sequences", day).collect():
        decoded = {d: tuple(vocab[(d, i)] for i in row[d]) for d in keyed}
        rest = {c: (tuple(row[c]) if isinstance(row[c], list) else row[c]) for c in
                ("gap_bucket", "value_bucket", "ts", "length", "n_behaviour", "valid_pos", "test_pos")}
        out[row["user_id"]] = (decoded, rest)
    return out


def _profiles(spark, day: dt.date) -> dict[str, tuple]:
    return {r["user_id"]: (np.asarray(r["embedding"]), np.asarray(r["interest_weights"]), r["snapshot_date"])
            for r in _snapshot(spark, "user_profile_embeddings", day).collect()}


def _weights(spark, day: dt.date) -> dict[tuple, float]:
    return {(r["user_id"], r["horizon"], r["dimension"], r["key"]): r["weight"]
            for r in _snapshot(spark, "user_interest_weights", day).collect()}


def test_row_keys_are_the_input_columns_the_duplicate_rule_compares():
    for source, name in LOGS.items():
        assert list(table(name).row_key) == input_contracts()[source].names


def test_each_day_adds_only_the_rows_the_logs_did_not_hold_whichever_form_its_input_takes(days, spark):
    first, second = days.cuts
    behaviour = days.behaviour
    for day, rows in zip(DAYS, (behaviour.iloc[:first], behaviour.iloc[:second], behaviour)):
        assert _rows(spark, "behaviour_events", day).equals(_as_keys(rows, "behaviour_events")), day
    # No row is stored twice: the day-3 dump repeated every earlier row and added the rest.
    stored = _rows(spark, "behaviour_events")
    assert len(stored) == len(_as_keys(behaviour, "behaviour_events"))
    added = [run.report.logs["behaviour"].added for run in days.ingests]
    partitions = [len(_rows(spark, "behaviour_events", day, partition=True)) for day in DAYS]
    assert added == partitions and all(added) and sum(added) == len(stored)
    day3 = days.ingests[2].report.logs["behaviour"]
    assert day3.accepted > day3.added  # the dump's earlier rows were accepted, and not stored again


def test_a_full_state_log_ends_what_it_no_longer_holds_and_earlier_snapshots_keep_it(days, spark):
    withdrawn, removed = days.withdrawn, days.removed
    pref = {"user_id": withdrawn["user_id"], "key": withdrawn["key"], "dimension": withdrawn["dimension"]}
    edge = {"user_id": removed["user_id"], "other_user_id": removed["other_user_id"]}

    def holds(name, day, row):
        snapshot = _rows(spark, name, day)
        return bool((snapshot[list(row)] == pd.Series(row)).all(axis=1).any())

    assert holds("preference_events", DAYS[1], pref) and not holds("preference_events", DAYS[2], pref)
    assert holds("social_edges", DAYS[1], edge) and not holds("social_edges", DAYS[2], edge)
    assert holds("social_edges", DAYS[2], {**edge, "other_user_id": "u-newcomer"})
    assert holds("preference_events", DAYS[2], {**pref, "key": "newly-declared"})
    report = days.ingests[2].report.logs
    assert (report["preference"].removed, report["social"].removed) == (2, 1)  # the withdrawn and the leaver's
    assert report["behaviour"].removed == 0
    # The day-2 log held its new rows only and was no full state: it ended nothing.
    assert days.ingests[1].report.logs["social"].removed == 0
    ended = spark.table(f"{DATABASE}.social_edges").where("removed_on IS NOT NULL").collect()
    assert [(r["user_id"], r["other_user_id"], r["removed_on"]) for r in ended] == \
        [(removed["user_id"], removed["other_user_id"], DAYS[2])]
    latest = spark.table(f"{DATABASE}.latest_social_edges")
    assert latest.count() == len(_rows(spark, "social_edges", DAYS[2]))


def test_the_withdrawn_preference_leaves_the_users_sequence_and_the_new_one_enters_it(days):
    withdrawn = days.withdrawn
    decoded, _ = days.daily["sequences"][withdrawn["user_id"]]
    assert f"{withdrawn['dimension']}=newly-declared" in decoded["attribute"]
    assert f"{withdrawn['dimension']}={withdrawn['key']}" not in decoded["attribute"]


def test_daily_refreshes_leave_the_sequences_and_profiles_a_full_rebuild_makes(days, config):
    daily, full = days.daily, days.full
    # Under time decay: the users day 3 did not reach keep weights scored on an earlier day (profiling.decay).
    assert config.profile.half_life_days is not None
    assert daily["sequences"] == full["sequences"]
    assert set(daily["profiles"]) == set(full["profiles"]) == set(full["sequences"])
    for user, (embedding, weights, _) in full["profiles"].items():
        np.testing.assert_allclose(daily["profiles"][user][0], embedding, atol=1e-5, err_msg=user)
        np.testing.assert_allclose(daily["profiles"][user][1], weights, atol=1e-5, err_msg=user)
    assert daily["weights"].keys() == full["weights"].keys()
    assert all(abs(daily["weights"][k] - w) < 1e-5 for k, w in full["weights"].items())


def test_a_daily_refresh_rebuilds_only_the_users_changes_reached(days):
    first, day2, day3 = days.sequences
    assert first.full and not day2.full and not day3.full
    everyone = len(days.full["sequences"])
    assert 0 < day2.users < everyone and day3.users < everyone
    assert days.full_sequences.full and days.full_sequences.users == everyone
    assert [r.full for r in days.infers] == [True, False, False] and days.infers[1].users == day2.users
    # Users the day-3 refresh did not reach keep the rows (profiles too) of an earlier day.
    kept = {u for u, (_, _, date) in days.daily["profiles"].items() if date < DAYS[2]}
    assert kept and len(kept) == everyone - day3.users


def test_a_user_gone_from_every_log_leaves_the_snapshot_from_that_day_and_earlier_ones_keep_them(days):
    assert "u-leaver" in days.daily["day2"]
    assert "u-leaver" not in days.daily["sequences"] and "u-leaver" not in days.daily["profiles"]
    assert days.sequences[2].ended == 1 and days.full_sequences.ended == 0  # ended once, by the daily refresh


def test_rerunning_a_day_adds_nothing_in_at_most_one_commit_per_log(days):
    for name, (rows, version) in days.before_rerun.items():
        after, version_after = days.after_rerun[name]
        assert after.equals(rows), name
        # One MERGE; Delta commits none when it changes nothing (items: the date brought no new item).
        assert version_after - version in (0, 1), name
    assert {s: (q.added, q.removed) for s, q in days.rerun.report.logs.items()} == \
        {s: (0, 0) for s in LOGS}


def test_a_log_of_the_earlier_layout_is_refused_with_one_line(spark, config, tmp_path):
    from profiling.exceptions import MissingStageOutput
    from profiling.tables import ensure_table

    cfg = _day_config(config, tmp_path, []).model_copy(update={
        "catalog": config.catalog.model_copy(update={"database": "daily_earlier"})})
    spark.sql("CREATE DATABASE IF NOT EXISTS daily_earlier")
    spark.sql(table("behaviour_events").create_sql("daily_earlier.behaviour_events"))
    spark.sql("ALTER TABLE daily_earlier.behaviour_events UNSET TBLPROPERTIES ('profiling.layout')")
    with pytest.raises(MissingStageOutput) as refused:
        ensure_table(spark, cfg, "behaviour_events")  # what ingest's merge_log calls first
    assert str(refused.value).startswith("table daily_earlier.behaviour_events holds a copy of the behaviour_events "
                                         "log per snapshot date")
    assert "\n" not in str(refused.value)


def test_an_items_snapshot_holds_each_items_newest_row_up_to_its_date(days, spark, config):
    from profiling.snapshots import DeltaSnapshotReader
    from profiling.tables import read_snapshot

    item = days.retitled
    cfg = _day_config(config, Path("."), [])
    reader = DeltaSnapshotReader(cfg)  # what explain reads, without Spark
    for day, title in ((DAYS[1], item["title"]), (DAYS[2], "A new title")):
        spark_rows = read_snapshot(spark, cfg, "items", day)[0].where(f"item_id = '{item['item_id']}'").collect()
        assert [r["title"] for r in spark_rows] == [title], day
        rows = reader.rows("items", day, ["item_id", "title"], [{"item_id": [item["item_id"]]}]).to_pylist()
        assert rows == [{"item_id": item["item_id"], "title": title}], day
    every = read_snapshot(spark, cfg, "items", DAYS[2])[0]
    assert every.count() == every.select("item_id").distinct().count() == len(days.every["items"])


def test_a_refresh_whose_change_data_vacuum_removed_rebuilds_everyone(days, spark, config, tmp_path, caplog):
    """Last in the module: it adds a fourth day to the workdir. The day withdraws one more preference (a
    full-state log: the MERGE ends the row, and Delta writes that change as change data), then a VACUUM
    that keeps no time travel (what ``profiling maintain --retain-days 0`` runs on each table) deletes the
    change data the next refresh would read: the refresh says so and rebuilds everyone instead of
    missing the change."""
    from profiling.ingest import ingest_logs
    from profiling.sequences import build_user_sequences

    day = DAYS[2] + dt.timedelta(days=1)
    held = _rows(spark, "preference_events", DAYS[2])
    gone = held.iloc[-1]
    state = days.every["preference"].merge(held[["user_id", "dimension", "key"]].drop_duplicates())
    state = state[~((state["user_id"] == gone["user_id"]) & (state["dimension"] == gone["dimension"])
                    & (state["key"] == gone["key"]))]
    folder = _write(tmp_path / "day4", {"behaviour": days.behaviour.head(0), "preference": state,
                                        "social": days.every["social"].head(0)})
    cfg = _day_config(config, folder, ["preference"])
    assert ingest_logs(spark, cfg, day).report.logs["preference"].removed >= 1
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        spark.sql(f"VACUUM {DATABASE}.preference_events RETAIN 0 HOURS")
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    with caplog.at_level("WARNING", logger="profiling.refresh"):
        result = build_user_sequences(spark, cfg, day)
    assert result.full and result.users == _snapshot(spark, "user_sequences", day).count() > days.sequences[2].users
    assert "full refresh, the logs' changes since the refresh of" in caplog.text
