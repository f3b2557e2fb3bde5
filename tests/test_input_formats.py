"""Input read as written: RFC 4180 CSV from Python's csv module and pandas (quoted line breaks, doubled
quotes, backslashes, BOM, CRLF), records counted rather than lines, and Parquet logical types."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from malformed import write_valid_logs

DATE = dt.date(2026, 11, 3)
DATABASE = "formats"
HEADER = ["user_id", "item_id", "event_type", "ts", "category", "value"]
# Fields a CSV reader that reads line by line, or with a backslash escape, gets wrong.
AWKWARD = [
    {"user_id": "ann", "item_id": 'Toy "Story", part 1', "event_type": "view", "ts": "1700000000",
     "category": "films", "value": ""},
    {"user_id": "ann", "item_id": "first line\nsecond line\nthird", "event_type": "view", "ts": "1700000001",
     "category": "multi, line", "value": "2"},
    {"user_id": "bob", "item_id": "C:\\music\\", "event_type": "play", "ts": "1700000002",
     "category": "audio", "value": "3.5"},
    {"user_id": "bob", "item_id": 'a "quoted" \\"escaped\\" id', "event_type": "play", "ts": "1700000003.0",
     "category": "caf\u00e9 \u2014 na\u00efve", "value": "4"},
    {"user_id": "cid", "item_id": "line\r\nbreak", "event_type": "view", "ts": "1700000004",
     "category": "", "value": ""},
]


def _config(config, folder: Path, **input_settings):
    return config.model_copy(update={
        "input": config.input.model_copy(update={"dir": str(folder), **input_settings}),
        "catalog": config.catalog.model_copy(update={"database": DATABASE}),
    })


def _with_behaviour(folder: Path, write) -> Path:
    write_valid_logs(folder)
    (folder / "behaviour.csv.gz").unlink()
    path = folder / "behaviour.csv"
    write(path)
    return path


def _csv_module(path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(AWKWARD)


def _csv_module_excel_bom_crlf(path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER, dialect="excel", quoting=csv.QUOTE_ALL)  # \r\n endings
        writer.writeheader()
        writer.writerows(AWKWARD)


def _pandas(path: Path) -> None:
    pd.DataFrame(AWKWARD, columns=HEADER).to_csv(path, index=False)


def _ingest(spark, config, folder: Path, **settings):
    from profiling.ingest import ingest_logs

    return ingest_logs(spark, _config(config, folder, **settings), DATE)


def _checked(spark, config, folder: Path, **settings):
    """The behaviour log read and validated as ingest does, nothing written: (its rows in file order,
    with their reasons; their counts). The parquet fixture below runs a whole ingest."""
    from profiling.ingest import ValidationRules, check_log, resolve_input_paths

    cfg = _config(config, folder, **settings)
    frame, quality = check_log(spark, "behaviour", resolve_input_paths(cfg, DATE)["behaviour"],
                               ValidationRules.for_snapshot(cfg, DATE), None)
    rows = frame.orderBy("event_order").toPandas()
    frame.unpersist()
    return rows, quality


@pytest.mark.parametrize("writer", [_csv_module, _csv_module_excel_bom_crlf, _pandas], ids=lambda w: w.__name__)
def test_csv_is_read_as_written_and_read_counts_records(spark, config, tmp_path, writer):
    path = _with_behaviour(tmp_path, writer)
    assert path.read_bytes().count(b"\n") > len(AWKWARD) + 1  # more lines than records
    stored, counts = _checked(spark, config, tmp_path)
    assert (counts.read, counts.accepted, counts.quarantined) == (len(AWKWARD), len(AWKWARD), 0)
    assert list(stored["user_id"]) == [r["user_id"] for r in AWKWARD]  # no phantom user from a line break
    # A line break inside a quoted field written as the file's own line end (CRLF here) is stored as \n.
    crlf = path.read_bytes().split(b"\n", 1)[0].endswith(b"\r")
    assert list(stored["item_id"]) == [r["item_id"].replace("\r\n", "\n") if crlf else r["item_id"] for r in AWKWARD]
    assert list(stored["category"].fillna("")) == [r["category"] for r in AWKWARD]
    assert list(stored["ts"]) == [1700000000 + i for i in range(len(AWKWARD))]  # "1700000003.0" is whole seconds
    assert list(stored["value"].fillna(-1)) == [-1, 2.0, 3.5, 4.0, -1]


def test_an_unparsable_record_is_quarantined_once_and_the_rest_counted_as_records(spark, config, tmp_path):
    def write(path: Path) -> None:
        _csv_module(path)
        with path.open("a") as f:
            f.write("dan,i1,view,1700000005,c\r\n")  # a field short (the csv module ends lines with CRLF)
            f.write('eve,"never closed,view,1700000006,c,1\r\nfay,i2,view,1700000007,c,1\r\n')  # swallows the rest

    _with_behaviour(tmp_path, write)
    rows, counts = _checked(spark, config, tmp_path)
    assert (counts.read, counts.accepted, counts.reasons) == (len(AWKWARD) + 2, len(AWKWARD), {"malformed_row": 2})
    raw = [json.loads(r) for r in rows[rows["reason_code"].notna()]["raw_record"]]
    assert sorted(r["user_id"] for r in raw) == ["dan", "eve"]
    assert all(r["_raw"].startswith(r["user_id"] + ",") for r in raw)  # the text as written is kept


def test_a_record_wider_than_the_csv_parser_default_is_quarantined(spark, config, tmp_path):
    def write(path: Path) -> None:
        _csv_module(path)
        with path.open("a") as f:
            f.write("gus,i3,view,1700000008,c,1," + ",".join(["x"] * 25_000) + "\r\n")

    _with_behaviour(tmp_path, write)
    _, counts = _checked(spark, config, tmp_path)
    assert counts.reasons == {"malformed_row": 1} and counts.accepted == len(AWKWARD)


@pytest.fixture(scope="module")
def parquet_logs(spark, config, tmp_path_factory):
    """Behaviour as pandas writes Parquet by default (TIMESTAMP(NANOS), float ids), preferences with
    float seconds, and a social CSV that names the same users as text."""
    folder = tmp_path_factory.mktemp("parquet")
    write_valid_logs(folder)
    (folder / "behaviour.csv.gz").unlink()
    (folder / "preference.csv.gz").unlink()
    ts = pd.to_datetime([1_700_000_000_123_456_789, 1_700_000_001_999_999_999, 1_700_000_002_000_000_000], unit="ns")
    pd.DataFrame({"user_id": [7.0, 7.0, 8.0], "item_id": np.array([3, 4, 5], dtype="int64"),
                  "event_type": ["view", "view", "buy"], "ts": ts, "category": ["c", "c", "d"],
                  "value": [1.0, np.nan, 2.0]}).to_parquet(folder / "behaviour.parquet")
    pd.DataFrame({"user_id": ["7", "8", "9"], "dimension": "genre", "key": ["a", "b", "c"], "value": 1.0,
                  "ts": [1_700_000_000.0, 1_700_000_000.75, np.nan]}).to_parquet(folder / "preference.parquet")
    pd.DataFrame({"user_id": [7.5], "item_id": [6], "event_type": ["view"], "ts": ts[:1], "category": ["c"],
                  "value": [1.0]}).to_parquet(folder / "fractional_id.parquet")
    (folder / "social.csv.gz").unlink()
    pd.DataFrame({"user_id": ["7", "8"], "other_user_id": ["8", "9"], "relation": "friend", "ts": ""}).to_csv(
        folder / "social.csv", index=False)
    result = _ingest(spark, config, folder)
    tables = {name: spark.table(f"{DATABASE}.{name}").where(F.col("snapshot_date") == F.lit(DATE)).toPandas()
              for name in ("behaviour_events", "preference_events", "social_edges")}
    return folder, result, tables


def test_parquet_nanosecond_timestamps_become_unix_seconds(parquet_logs):
    _, result, tables = parquet_logs
    assert result.counts["behaviour"].quarantined == 0
    assert sorted(tables["behaviour_events"]["ts"]) == [1_700_000_000, 1_700_000_001, 1_700_000_002]


def test_float_ids_holding_whole_numbers_join_with_the_same_ids_written_as_text(parquet_logs):
    _, _, tables = parquet_logs
    assert set(tables["behaviour_events"]["user_id"]) == {"7", "8"}
    assert set(tables["behaviour_events"]["item_id"]) == {"3", "4", "5"}
    social_users = set(tables["social_edges"]["user_id"]) | set(tables["social_edges"]["other_user_id"])
    assert set(tables["behaviour_events"]["user_id"]) <= social_users


def test_float_seconds_are_whole_seconds_and_a_missing_optional_ts_stays_missing(parquet_logs):
    _, result, tables = parquet_logs
    assert result.counts["preference"].quarantined == 0
    assert sorted(tables["preference_events"]["ts"].fillna(-1)) == [-1, 1_700_000_000, 1_700_000_000]


def test_a_float_id_with_a_fraction_is_quarantined_as_bad_type(spark, config, parquet_logs):
    folder, _, _ = parquet_logs
    rows, counts = _checked(spark, config, folder, behaviour=str(folder / "fractional_id.parquet"))
    assert counts.reasons == {"bad_type": 1}
    [message] = rows[rows["reason_code"] == "bad_type"]["message"]
    assert "7.5" in message and "whole" in message
