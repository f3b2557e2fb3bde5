"""Skew: one user with 100,000 events among normal users (`benchmarks.speed --skew-heavy` measures more).

Ingest and sequences run in the shared session (the default 4 GiB driver; local mode: the tasks run
inside it; two task slots), in a catalog database of their own; the heavy user keeps only their
newest ``sequences.max_len`` events (a window with a row limit, never the whole history in one
task), and every other user is untouched.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from commands import table_frame
from conftest import SNAPSHOT
from malformed import USERS, write_valid_logs

DATABASE = "skew"
HEAVY = "heavy"
HEAVY_EVENTS = 100_000
FIRST_TS = 1_600_000_000
MAX_LEN = 200


def _heavy_behaviour(folder, normal_rows: pa.Table) -> None:
    """behaviour/ as Parquet files: the normal users' rows, then the heavy user's events in 4 files."""
    folder.mkdir()
    pq.write_table(normal_rows, folder / "part-0.parquet")
    per_file = HEAVY_EVENTS // 4
    for part in range(4):
        k = np.arange(part * per_file, (part + 1) * per_file)
        pq.write_table(pa.table({
            "user_id": pa.array(np.full(len(k), HEAVY)),
            "item_id": pa.array(np.char.add("i", (k % 5000).astype(str))),
            "event_type": pa.array(np.where(k % 10 == 0, "buy", "view")),
            "ts": pa.array((FIRST_TS + k).astype(str)),
            "category": pa.array(np.char.add("c", (k % 20).astype(str))),
            "value": pa.array(np.full(len(k), "", dtype=object)),
        }), folder / f"part-{part + 1}.parquet", row_group_size=25_000)


@pytest.fixture(scope="module")
def skewed(spark, config, tmp_path_factory):
    from pyarrow import csv

    from profiling.pipeline import run_ingest, run_sequences

    data = tmp_path_factory.mktemp("skew")
    write_valid_logs(data)
    normal = csv.read_csv(data / "behaviour.csv.gz",
                          convert_options=csv.ConvertOptions(column_types={c: pa.string() for c in
                                                                           ("user_id", "item_id", "event_type", "ts",
                                                                            "category", "value")}))
    (data / "behaviour.csv.gz").unlink()
    _heavy_behaviour(data / "behaviour", normal)
    cfg = config.model_copy(update={
        "input": config.input.model_copy(update={"dir": str(data)}),
        "catalog": config.catalog.model_copy(update={"database": DATABASE}),
        "sequences": config.sequences.model_copy(update={"max_len": MAX_LEN}),
    })
    counts = run_ingest(spark, cfg, SNAPSHOT).report.to_dict()
    users = run_sequences(spark, cfg, SNAPSHOT).users
    return cfg.workdir_path, counts, users, normal.num_rows


def test_every_event_is_read_and_accepted(skewed):
    _, counts, _, normal = skewed
    behaviour = counts["logs"]["behaviour"]
    assert behaviour["read"] == HEAVY_EVENTS + normal
    assert behaviour["read"] == behaviour["accepted"] + behaviour["quarantined"]
    assert behaviour["quarantined"] == 0


def test_the_heavy_user_keeps_their_newest_events_and_the_others_all_of_theirs(skewed):
    work, _, users, _ = skewed
    assert users == len(USERS) + 1
    frame = table_frame(work, "user_sequences", DATABASE)
    by_user = {r["user_id"]: {**r, "first_ts": r["ts"][0], "last_ts": r["ts"][-1]} for r in frame.to_dict("records")}
    heavy = by_user.pop(HEAVY)
    assert heavy["length"] == MAX_LEN
    assert (heavy["first_ts"], heavy["last_ts"]) == (FIRST_TS + HEAVY_EVENTS - MAX_LEN, FIRST_TS + HEAVY_EVENTS - 1)
    assert (heavy["valid_pos"], heavy["test_pos"]) == (MAX_LEN - 2, MAX_LEN - 1)
    assert {r["n_behaviour"] for r in by_user.values()} == {4}  # write_valid_logs: 4 events per user
