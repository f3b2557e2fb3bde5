"""Delta-native training feed (instead of petastorm; see docs/operations.md).

The driver pins the ``user_sequences`` Delta version and resolves the parquet
files of that version's snapshot partition; each DDP rank and each DataLoader
worker reads its own share of the files' row groups straight from parquet,
shuffles within a buffer and yields training windows. When there are fewer
row groups than readers (small tables), readers stride over rows instead so
that every rank still gets data.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from profiling.model.inputs import FEATURES, training_windows
from profiling.tables import local_path

COLUMNS = [*FEATURES, "length", "valid_pos", "test_pos"]


@dataclass(frozen=True)
class Shard:
    """What one reader (rank x loader worker) reads: row groups, or every n-th row of everything."""

    row_groups: tuple[tuple[str, int], ...]
    stride: int = 1
    offset: int = 0


def plan_shards(files: Sequence[str], readers: int) -> list[Shard]:
    """Split the row groups of ``files`` over ``readers``, round robin."""
    groups = [(f, g) for f in sorted(files) for g in range(pq.ParquetFile(local_path(f)).num_row_groups)]
    if len(groups) >= readers:
        return [Shard(tuple(groups[r::readers])) for r in range(readers)]
    return [Shard(tuple(groups), stride=readers, offset=r) for r in range(readers)]


def read_rows(shard: Shard) -> Iterator[dict]:
    """Rows of a shard as dicts of Python lists, in storage order."""
    seen = 0
    for path, group in shard.row_groups:
        table = pq.ParquetFile(local_path(path)).read_row_group(group, columns=COLUMNS)
        for row in table.to_pylist():
            if seen % shard.stride == shard.offset:
                yield row
            seen += 1


class TrainingBatches(IterableDataset):
    """Batches of training windows from this rank's share, reshuffled each epoch.

    Windows are pooled ``buffer`` at a time; a pool is sorted by length (with
    a little noise, so batches differ between epochs), cut into batches and
    the batches are shuffled. Similar lengths share a batch, so short
    sequences are not padded to the longest window of the data.
    """

    def __init__(self, files: Sequence[str], rank: int, world: int, behaviour_idx: int, window: int,
                 batch_size: int, buffer: int, seed: int):
        super().__init__()
        self.files, self.rank, self.world, self.window = files, rank, world, window
        self.behaviour_idx, self.batch_size, self.seed = behaviour_idx, batch_size, seed
        self.buffer = max(buffer, batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self) -> Shard:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return plan_shards(self.files, self.world * workers)[self.rank * workers + worker]

    def _batches(self, pool: list[dict], rng: random.Random) -> list[list[dict]]:
        pool.sort(key=lambda w: len(w["item"]) + rng.uniform(0, 8))
        batches = [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def _shuffled_rows(self, rng: random.Random) -> Iterator[dict]:
        """This reader's rows through a shuffle buffer of ``buffer`` rows (streaming, bounded memory)."""
        held: list[dict] = []
        for row in read_rows(self._shard()):
            if len(held) < self.buffer:
                held.append(row)
                continue
            i = rng.randrange(len(held))
            yield held[i]
            held[i] = row
        rng.shuffle(held)
        yield from held

    def __iter__(self) -> Iterator[list[dict]]:
        rng = random.Random(hash((self.seed, self.epoch, self.rank)))
        pool: list[dict] = []
        for row in self._shuffled_rows(rng):
            pool.extend(training_windows(row, self.behaviour_idx, self.window))
            if len(pool) >= self.buffer:
                yield from self._batches(pool, rng)
                pool = []
        if pool:
            yield from self._batches(pool, rng)


def rows_of_rank(files: Sequence[str], rank: int, world: int) -> Iterator[dict]:
    """Every row of this rank's share (for validation), in storage order."""
    return read_rows(plan_shards(files, world)[rank])


def worker_init(_: int) -> None:
    torch.set_num_threads(1)
