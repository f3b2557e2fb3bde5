"""Delta-native training feed (instead of petastorm; see the README).

The driver pins the ``user_sequences`` Delta version and resolves the parquet
files of that version's snapshot partition; each DDP rank and each DataLoader
worker reads its own share of the files' row groups straight from parquet,
shuffles within a buffer and yields training windows. When there are fewer
row groups than readers (small tables), readers stride over rows instead so
that every rank still gets data.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from profiling.model.inputs import FEATURES, training_windows

COLUMNS = [*FEATURES, "length", "valid_pos", "test_pos"]


@dataclass(frozen=True)
class Shard:
    """What one reader (rank x loader worker) reads: row groups, or every n-th row of everything."""

    row_groups: tuple[tuple[str, int], ...]
    stride: int = 1
    offset: int = 0


def _local_path(uri: str) -> str:
    """``file:/x`` and ``file:///x`` URIs (as Spark lists them) to plain paths; others unchanged."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def plan_shards(files: list[str], readers: int) -> list[Shard]:
    """Split the row groups of ``files`` over ``readers``, round robin."""
    groups = [(f, g) for f in sorted(files) for g in range(pq.ParquetFile(_local_path(f)).num_row_groups)]
    if len(groups) >= readers:
        return [Shard(tuple(groups[r::readers])) for r in range(readers)]
    return [Shard(tuple(groups), stride=readers, offset=r) for r in range(readers)]


def read_rows(shard: Shard) -> Iterator[dict]:
    """Rows of a shard as dicts of Python lists, in storage order."""
    seen = 0
    for path, group in shard.row_groups:
        table = pq.ParquetFile(_local_path(path)).read_row_group(group, columns=COLUMNS)
        for row in table.to_pylist():
            if seen % shard.stride == shard.offset:
                yield row
            seen += 1


class TrainingWindows(IterableDataset):
    """Training windows of this rank's share, shuffled within a buffer, reshuffled each epoch."""

    def __init__(self, files: list[str], rank: int, world: int, behaviour_idx: int, window: int, buffer: int,
                 seed: int):
        super().__init__()
        self.files, self.rank, self.world, self.window = files, rank, world, window
        self.behaviour_idx, self.buffer, self.seed = behaviour_idx, buffer, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self) -> Shard:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return plan_shards(self.files, self.world * workers)[self.rank * workers + worker]

    def __iter__(self) -> Iterator[dict]:
        rng = random.Random(hash((self.seed, self.epoch, self.rank)))
        buffer: list[dict] = []
        for row in read_rows(self._shard()):
            for window in training_windows(row, self.behaviour_idx, self.window):
                if len(buffer) < self.buffer:
                    buffer.append(window)
                    continue
                i = rng.randrange(len(buffer))
                yield buffer[i]
                buffer[i] = window
        rng.shuffle(buffer)
        yield from buffer


def rows_of_rank(files: list[str], rank: int, world: int) -> Iterator[dict]:
    """Every row of this rank's share (for validation), in storage order."""
    return read_rows(plan_shards(files, world)[rank])


def worker_init(_: int) -> None:
    torch.set_num_threads(1)
