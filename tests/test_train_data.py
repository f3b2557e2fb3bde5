"""The Delta-native feed: every row goes to exactly one reader, whatever the file layout."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from profiling.model.inputs import FEATURES
from profiling.train.data import COLUMNS, TrainingBatches, plan_shards, read_rows


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


def test_ranks_get_disjoint_length_bucketed_batches_reshuffled_each_epoch(tmp_path):
    files = [_write(tmp_path / "a.parquet", range(40), 10)]
    assert set(COLUMNS) <= set(pq.read_schema(tmp_path / "a.parquet").names)
    ranks = [TrainingBatches(files, rank, 2, behaviour_idx=2, window=50, batch_size=6, buffer=8, seed=1)
             for rank in range(2)]
    batches = [list(r) for r in ranks]
    assert [sum(len(b) for b in rank) for rank in batches] == [20, 20]
    assert max(len(b) for rank in batches for b in rank) == 6
    first = [len(b) for b in batches[0]]
    ranks[0].set_epoch(1)
    assert sorted(len(b) for b in ranks[0]) == sorted(first)


def test_a_batch_holds_windows_of_similar_length(tmp_path):
    columns = {name: [[2] * n for n in range(2, 42)] for name in FEATURES}
    columns.update(length=list(range(2, 42)), valid_pos=[-1] * 40, test_pos=[-1] * 40)
    pq.write_table(pa.table(columns), tmp_path / "v.parquet")
    data = TrainingBatches([f"file:{tmp_path}/v.parquet"], 0, 1, behaviour_idx=2, window=50, batch_size=8,
                           buffer=40, seed=3)
    spreads = [max(len(w["item"]) for w in b) - min(len(w["item"]) for w in b) for b in data]
    assert sum(len(b) for b in data) == 40 and max(spreads) <= 16
