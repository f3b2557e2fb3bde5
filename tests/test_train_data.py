"""The Delta-native feed: every row goes to exactly one reader, whatever the file layout."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from profiling.model.inputs import FEATURES
from profiling.train.data import COLUMNS, TrainingWindows, plan_shards, read_rows


def _write(path, users, row_group_size):
    columns = {"user": [f"u{i}" for i in users]}
    for name in FEATURES:
        columns[name] = [[2, 3, 2, 3, 2] for _ in users]
    columns["source"] = [[2, 2, 2, 2, 2] for _ in users]
    columns.update(length=[5] * len(users), valid_pos=[3] * len(users), test_pos=[4] * len(users))
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return f"file:{path}"


@pytest.mark.parametrize("readers, row_group_size", [(2, 5), (4, 5), (3, 100), (8, 7)])
def test_readers_share_the_rows_without_overlap_or_loss(tmp_path, readers, row_group_size):
    files = [_write(tmp_path / "a.parquet", range(0, 20), row_group_size),
             _write(tmp_path / "b.parquet", range(20, 33), row_group_size)]
    shards = plan_shards(files, readers)
    assert len(shards) == readers
    seen = [row["valid_pos"] for shard in shards for row in read_rows(shard)]
    assert len(seen) == 33
    per_reader = [sum(1 for _ in read_rows(shard)) for shard in shards]
    assert min(per_reader) > 0


def test_ranks_get_disjoint_training_windows_in_a_shuffled_order(tmp_path):
    files = [_write(tmp_path / "a.parquet", range(40), 10)]
    assert set(COLUMNS) <= set(pq.read_schema(tmp_path / "a.parquet").names)
    ranks = [TrainingWindows(files, rank, 2, behaviour_idx=2, window=50, buffer=8, seed=1) for rank in range(2)]
    counts = [sum(1 for _ in r) for r in ranks]
    assert counts == [20, 20]
    first = [w["interest_cut"] for w in ranks[0]]
    ranks[0].set_epoch(1)
    assert len([w for w in ranks[0]]) == len(first)
