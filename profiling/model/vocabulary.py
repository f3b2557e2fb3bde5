"""The vocabulary an encoder was trained with: the key behind each index, per event dimension.

A snapshot's ``vocabularies`` table ranks that day's keys by that day's frequencies, so one index
names different keys on different days, and a key new since training has an index past the
model's embedding tables. The train stage therefore stores its snapshot's vocabulary in the encoder
it registers (it is pickled with the model), and whatever feeds a later snapshot to that encoder
translates the snapshot's indices through the keys: a key the model never saw becomes ``UNKNOWN``
and is counted. A model and the sequences it scores agree by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from profiling.model.inputs import FIRST_KEY, PAD, UNKNOWN

# The dimensions whose indices come from ``vocabularies`` (the gap and value buckets are fixed ranges).
KEYED = ("item", "category", "event_type", "source", "attribute")


@dataclass(frozen=True)
class Vocabulary:
    """``keys[dimension][i]`` is the key of index ``i`` (indices below ``FIRST_KEY`` name none)."""

    keys: dict[str, tuple[str, ...]]

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping]) -> Vocabulary:
        """From ``vocabularies`` rows (``dimension``, ``key``, ``idx``) of one snapshot."""
        by_dimension: dict[str, dict[int, str]] = {}
        for row in rows:
            by_dimension.setdefault(row["dimension"], {})[int(row["idx"])] = row["key"]
        keys = {}
        for dimension, named in by_dimension.items():
            size = max(named) + 1
            if len(named) != size:
                raise ValueError(f"the {dimension} vocabulary has {len(named)} keys for indices 0..{size - 1}")
            keys[dimension] = tuple(named[i] for i in range(size))
        return cls(keys)

    def sizes(self) -> dict[str, int]:
        return {dimension: len(keys) for dimension, keys in self.keys.items()}

    def key(self, dimension: str, idx: int) -> str | None:
        """The key of ``idx``; None for padding, ``UNKNOWN`` and anything out of range."""
        keys = self.keys.get(dimension, ())
        return keys[idx] if FIRST_KEY <= idx < len(keys) else None

    def names(self, dimension: str) -> dict[int, str]:
        """Index to key, real keys only."""
        return dict(enumerate(self.keys.get(dimension, ())[FIRST_KEY:], start=FIRST_KEY))

    def indices(self, dimension: str) -> dict[str, int]:
        """Key to index, real keys only."""
        return {key: idx for idx, key in self.names(dimension).items()}

    def translation(self, dimension: str, snapshot_keys: Mapping[int, str]) -> np.ndarray:
        """``out[i]``: this vocabulary's index for the key a snapshot gives index ``i``; ``UNKNOWN`` for keys
        it never saw (padding stays padding)."""
        index = {key: i for i, key in enumerate(self.keys.get(dimension, ())) if i >= FIRST_KEY}
        out = np.full(max(snapshot_keys, default=0) + 1 if snapshot_keys else FIRST_KEY, UNKNOWN, dtype=np.int32)
        out[PAD] = PAD
        for idx, key in snapshot_keys.items():
            if idx >= FIRST_KEY:
                out[idx] = index.get(key, UNKNOWN)
        return out


@dataclass(frozen=True)
class Translation:
    """Snapshot indices to a model's, per keyed dimension, and what the model did not know."""

    to_model: dict[str, np.ndarray]
    unseen_items: int = 0
    unseen_share: float = 0.0  # of the snapshot's item occurrences

    @classmethod
    def between(cls, model: Vocabulary, snapshot_rows: Iterable[Mapping]) -> Translation:
        """From a snapshot's ``vocabularies`` rows (``dimension``, ``key``, ``idx``, ``count``)."""
        keys: dict[str, dict[int, str]] = {d: {} for d in KEYED}
        counts: dict[str, dict[int, int]] = {d: {} for d in KEYED}
        for row in snapshot_rows:
            if row["dimension"] in keys:
                keys[row["dimension"]][int(row["idx"])] = row["key"]
                counts[row["dimension"]][int(row["idx"])] = int(row["count"] or 0)
        to_model = {d: model.translation(d, keys[d]) for d in KEYED}
        items = to_model["item"]
        unseen = [i for i in keys["item"] if i >= FIRST_KEY and items[i] == UNKNOWN]
        total = sum(c for i, c in counts["item"].items() if i >= FIRST_KEY)
        share = sum(counts["item"][i] for i in unseen) / total if total else 0.0
        return cls(to_model, len(unseen), share)

    @classmethod
    def from_table(cls, model: Vocabulary, snapshot_vocab) -> Translation:
        """``between`` for a snapshot's ``vocabularies`` as a Spark DataFrame, read on the driver."""
        return cls.between(model, (r.asDict() for r in snapshot_vocab.select("dimension", "key", "idx", "count")
                                   .toLocalIterator()))

    def apply(self, row: Mapping) -> dict:
        """``row`` (a ``user_sequences`` row) with its keyed arrays in the model's indices."""
        out = dict(row)
        for dimension, table in self.to_model.items():
            idx = np.asarray(row[dimension], dtype=np.int64)
            inside = idx < len(table)
            out[dimension] = np.where(inside, table[np.where(inside, idx, 0)], UNKNOWN).astype(np.int64)
        return out
