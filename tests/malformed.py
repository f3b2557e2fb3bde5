"""A corpus of malformed input, made by code: the bad rows and bad files nightly logs bring.

Row-level classes are planted together in one set of logs, each row tagged with its class
in an extra ``case`` column (extra columns are themselves a class: ignored, kept in
``raw_record``). File-level classes are each a folder of their own whose one bad file
must stop ingest with one line naming the file and the problem.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

BASE_TS = 1_700_000_000
USERS = [f"u{i}" for i in range(6)]
ITEMS = [f"i{i}" for i in range(8)]
COLUMNS = {
    "behaviour": ["user_id", "item_id", "event_type", "ts", "category", "value"],
    "preference": ["user_id", "dimension", "key", "value", "ts"],
    "social": ["user_id", "other_user_id", "relation", "ts"],
}
NOT_UTF8 = "\udcff\udcfe"  # two lone surrogates, written out as the bytes 0xFF 0xFE


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    row: dict[str, str]
    reason: str | None  # None: the row must be accepted


def planted_cases(snapshot: dt.date) -> list[Case]:
    """One bad (or awkward but valid) row per class and log."""
    future = int(dt.datetime.combine(snapshot + dt.timedelta(days=30), dt.time(), tzinfo=dt.timezone.utc).timestamp())
    b = {"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": str(BASE_TS), "category": "c1", "value": ""}
    p = {"user_id": "u1", "dimension": "genre", "key": "jazz", "value": "1", "ts": str(BASE_TS)}
    s = {"user_id": "u1", "other_user_id": "u2", "relation": "friend", "ts": str(BASE_TS)}
    long_id = "x" * 513
    cases = [
        Case("b_null_user", "behaviour", {**b, "user_id": ""}, "missing_value"),
        Case("b_null_item", "behaviour", {**b, "item_id": ""}, "missing_value"),
        Case("b_blank_user", "behaviour", {**b, "user_id": "   "}, "missing_value"),
        Case("b_blank_item", "behaviour", {**b, "item_id": "\t "}, "missing_value"),
        Case("b_long_user", "behaviour", {**b, "user_id": long_id}, "id_too_long"),
        Case("b_long_item", "behaviour", {**b, "item_id": long_id}, "id_too_long"),
        Case("b_not_utf8", "behaviour", {**b, "item_id": f"i{NOT_UTF8}"}, "bad_encoding"),
        Case("b_text_ts", "behaviour", {**b, "ts": "yesterday"}, "bad_timestamp"),
        Case("b_text_value", "behaviour", {**b, "value": "twelve"}, "bad_type"),
        Case("b_negative_ts", "behaviour", {**b, "ts": "-86400"}, "negative_timestamp"),
        Case("b_millis_ts", "behaviour", {**b, "ts": str(BASE_TS * 1000)}, "timestamp_in_milliseconds"),
        Case("b_future_ts", "behaviour", {**b, "ts": str(future)}, "future_timestamp"),
        Case("b_nan", "behaviour", {**b, "value": "NaN"}, "non_finite_value"),
        Case("b_inf", "behaviour", {**b, "value": "inf"}, "non_finite_value"),
        Case("b_minus_inf", "behaviour", {**b, "value": "-Infinity"}, "non_finite_value"),
        Case("b_unknown_type", "behaviour", {**b, "event_type": "teleport"}, "unknown_event_type"),
        Case("b_original", "behaviour", {**b, "item_id": "i7", "ts": str(BASE_TS + 7)}, None),
        Case("b_duplicate", "behaviour", {**b, "item_id": "i7", "ts": str(BASE_TS + 7)}, "duplicate_row"),
        Case("b_timestamp_text", "behaviour", {**b, "ts": "2023-11-14 22:13:21"}, None),
        Case("p_null_user", "preference", {**p, "user_id": ""}, "missing_value"),
        Case("p_blank_key", "preference", {**p, "key": "  "}, "missing_value"),
        Case("p_long_user", "preference", {**p, "user_id": long_id}, "id_too_long"),
        Case("p_not_utf8", "preference", {**p, "key": f"j{NOT_UTF8}zz"}, "bad_encoding"),
        Case("p_text_value", "preference", {**p, "value": "lots"}, "bad_type"),
        Case("p_nan", "preference", {**p, "value": "nan"}, "non_finite_value"),
        Case("p_text_ts", "preference", {**p, "ts": "soon"}, "bad_timestamp"),
        Case("p_millis_ts", "preference", {**p, "ts": str(BASE_TS * 1000)}, "timestamp_in_milliseconds"),
        Case("p_original", "preference", {**p, "key": "blues"}, None),
        Case("p_duplicate", "preference", {**p, "key": "blues"}, "duplicate_row"),
        Case("s_self_loop", "social", {**s, "other_user_id": "u1"}, "self_loop"),
        Case("s_self_loop_padded", "social", {**s, "other_user_id": " u1 "}, "self_loop"),
        Case("s_null_other", "social", {**s, "other_user_id": ""}, "missing_value"),
        Case("s_long_other", "social", {**s, "other_user_id": long_id}, "id_too_long"),
        Case("s_not_utf8", "social", {**s, "other_user_id": f"u{NOT_UTF8}"}, "bad_encoding"),
        Case("s_negative_ts", "social", {**s, "ts": "-1"}, "negative_timestamp"),
        Case("s_future_ts", "social", {**s, "ts": str(future)}, "future_timestamp"),
        Case("s_original", "social", {**s, "other_user_id": "u3"}, None),
        Case("s_duplicate", "social", {**s, "other_user_id": "u3"}, "duplicate_row"),
        # A user seen in no other log: a valid edge (real social logs have them).
        Case("s_stranger", "social", {**s, "other_user_id": "stranger"}, None),
        # A record with one field more than the header (written as a raw line, see MALFORMED_LINES).
        Case("b_malformed", "behaviour", {}, "malformed_row"),
        Case("p_malformed", "preference", {}, "malformed_row"),
    ]
    return cases


# Records no CSV writer would produce, appended as they are; the field after the contract's is ``case``.
MALFORMED_LINES = {
    "behaviour": f"u1,i1,view,{BASE_TS},c1,,b_malformed,one field too many\n",
    "preference": f"u1,genre,jazz,1,{BASE_TS},p_malformed,x,y\n",
}


def _good_rows(source: str) -> list[dict[str, str]]:
    if source == "behaviour":
        return [{"user_id": u, "item_id": ITEMS[(i + j) % len(ITEMS)], "event_type": ("view", "buy")[j % 2],
                 "ts": str(BASE_TS - 1000 * (i + 1) + j), "category": f"c{j % 3}", "value": str(j)}
                for i, u in enumerate(USERS) for j in range(4)]
    if source == "preference":
        return [{"user_id": u, "dimension": "genre", "key": f"g{i % 3}", "value": "", "ts": ""}
                for i, u in enumerate(USERS)]
    return [{"user_id": u, "other_user_id": USERS[(i + 1) % len(USERS)], "relation": "follow", "ts": ""}
            for i, u in enumerate(USERS)]


def write_csv(path: Path, header: list[str], rows: list[dict[str, str]], delimiter: str = ",",
              raw_lines: str = "") -> None:
    """CSV with a header, then ``raw_lines`` as they are; lone surrogates become the raw bytes they
    stand for (invalid UTF-8)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=header, delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = (text.getvalue() + raw_lines).encode("utf-8", errors="surrogateescape")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_planted_logs(folder: Path, snapshot: dt.date) -> list[Case]:
    """Good rows plus every planted case, each log with the extra ``case`` column."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = planted_cases(snapshot)
    for source, columns in COLUMNS.items():
        rows = [{**r, "case": "good"} for r in _good_rows(source)]
        rows += [{**c.row, "case": c.name} for c in cases if c.source == source and c.row]
        write_csv(folder / f"{source}.csv", [*columns, "case"], rows, raw_lines=MALFORMED_LINES.get(source, ""))
    return cases


def write_valid_logs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for source, columns in COLUMNS.items():
        write_csv(folder / f"{source}.csv.gz", columns, _good_rows(source))


# File-level classes: (name, how to break a valid folder, words the one-line error must hold)
def _missing_column(folder: Path) -> None:
    write_csv(folder / "behaviour.csv.gz", ["user_id", "item_id", "event_type", "category"],
              [{k: v for k, v in r.items() if k in ("user_id", "item_id", "event_type", "category")}
               for r in _good_rows("behaviour")])


def _empty_file(folder: Path) -> None:
    (folder / "social.csv.gz").unlink()
    (folder / "social.csv").write_bytes(b"")


def _truncated_gzip(folder: Path) -> None:
    path = folder / "behaviour.csv.gz"
    rows = _good_rows("behaviour") * 400
    write_csv(path, COLUMNS["behaviour"], rows)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _semicolons(folder: Path) -> None:
    write_csv(folder / "preference.csv.gz", COLUMNS["preference"], _good_rows("preference"), delimiter=";")


def _plain_text_named_gz(folder: Path) -> None:
    write_csv(folder / "behaviour.csv", COLUMNS["behaviour"], _good_rows("behaviour"))
    (folder / "behaviour.csv").rename(folder / "behaviour.csv.gz")


def _gzip_named_csv(folder: Path) -> None:
    (folder / "social.csv.gz").rename(folder / "social.csv")


BROKEN_FILES = {
    "missing_column": (_missing_column, "behaviour.csv.gz", ["lacks required column(s) ts"]),
    "empty_file": (_empty_file, "social.csv", ["empty file"]),
    "truncated_gzip": (_truncated_gzip, "behaviour.csv.gz", ["truncated or corrupt"]),
    "other_delimiter": (_semicolons, "preference.csv.gz", ["delimited by ';'"]),
    "plain_text_named_gz": (_plain_text_named_gz, "behaviour.csv.gz", ["named .gz but is not gzip-compressed"]),
    "gzip_named_csv": (_gzip_named_csv, "social.csv", ["gzip-compressed", "does not end in .gz"]),
}


def header_only(folder: Path, source: str) -> None:
    write_csv(folder / f"{source}.csv.gz", COLUMNS[source], [])
