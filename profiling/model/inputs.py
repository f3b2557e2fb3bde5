"""The encoder's input format: padded integer tensors, one per event dimension.

Rows come from ``user_sequences`` (lists of indices). This module cuts them
into training windows (with next-item labels), evaluation windows (leave-last-out
targets) and full profiles, and pads them into batches. Pure numpy/torch; torch is imported by
``collate`` alone, so that the Spark stages which only need the constants (sequences) start without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

FEATURES = ("item", "category", "event_type", "source", "attribute", "gap_bucket", "value_bucket")
# Every vocabulary's first indices name no key: 0 pads a batch, 1 stands for "unknown" or "none" (a key
# missing from the vocabulary, a category on a demographic event). Real keys start at FIRST_KEY.
PAD, UNKNOWN = 0, 1
FIRST_KEY = 2
GAP_BUCKETS = 32
GAP_UNKNOWN = 1  # the gap bucket of an event whose predecessor is unknown (or hidden)
VALUE_BUCKETS = 32


def _window(row: Mapping, start: int, end: int, behaviour_idx: int) -> dict[str, np.ndarray]:
    """Events [start, end) and, as ``history``, the user's own items before ``start``."""
    out = {name: np.asarray(row[name][start:end], dtype=np.int64) for name in FEATURES}
    before = np.asarray(row["source"][:start]) == behaviour_idx
    out["history"] = np.asarray(row["item"][:start], dtype=np.int64)[before]
    return out


def training_windows(row: Mapping, behaviour_idx: int, window: int) -> list[dict[str, np.ndarray]]:
    """The events before the validation target, cut into chunks of at most ``window`` events.

    Chunks are cut backwards from the validation target, so the newest events
    always share a chunk. ``labels[t]`` is the item of event t+1 when that event
    is a behaviour event (0 = no label): with a causal mask this trains every
    prefix at once. The multi-interest loss predicts each chunk's last behaviour
    item from the events before it (``interest_cut``). Chunks with nothing to
    learn are dropped.
    """
    length = int(row["length"])
    end = int(row["valid_pos"]) if int(row["valid_pos"]) >= 0 else length
    source = np.asarray(row["source"][:end])
    items = np.asarray(row["item"][:end], dtype=np.int64)
    out = []
    for stop in range(end, 1, -window):
        start = max(0, stop - window)
        chunk = _window(row, start, stop, behaviour_idx)
        is_behaviour = source[start:stop] == behaviour_idx
        labels = np.zeros(stop - start, dtype=np.int64)
        labels[:-1] = np.where(is_behaviour[1:], items[start + 1:stop], 0)
        if not labels.any():
            continue
        last = int(np.flatnonzero(is_behaviour)[-1])
        chunk["labels"] = labels
        chunk["interest_cut"] = np.int64(last)
        chunk["interest_target"] = np.int64(chunk["item"][last])
        out.append(chunk)
    return out


def target_window(
    row: Mapping, position: int, window: int, behaviour_idx: int
) -> tuple[dict[str, np.ndarray], int]:
    """The last ``window`` events before ``position``, and the item at it (leave-last-out evaluation)."""
    return _window(row, max(0, position - window), position, behaviour_idx), int(row["item"][position])


def profile_window(row: Mapping, window: int, behaviour_idx: int) -> dict[str, np.ndarray]:
    """The user's last ``window`` events: what the profile embedding and interests are computed from."""
    length = int(row["length"])
    return _window(row, max(0, length - window), length, behaviour_idx)


def profile_chunks(row: Mapping, window: int, behaviour_idx: int) -> list[tuple[int, dict[str, np.ndarray]]]:
    """All kept events cut into windows from the end, newest first, with each window's start position.

    The newest window is :func:`profile_window`; the older ones let the
    dimension weights cover the user's whole kept history.
    """
    length = int(row["length"])
    if length == 0:
        return [(0, _window(row, 0, 0, behaviour_idx))]
    return [(max(0, stop - window), _window(row, max(0, stop - window), stop, behaviour_idx))
            for stop in range(length, 0, -window)]


def collate(windows: Sequence[Mapping[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Right-pad windows into (B, T) tensors; scalars become (B,) tensors; adds ``lengths``."""
    import torch

    lengths = [len(w["item"]) for w in windows]
    batch: dict[str, torch.Tensor] = {}
    for name in windows[0]:
        first = windows[0][name]
        if np.ndim(first) == 0:
            batch[name] = torch.as_tensor(np.array([w[name] for w in windows], dtype=np.int64))
            continue
        width = max(1, max(len(w[name]) for w in windows))
        out = np.zeros((len(windows), width), dtype=np.asarray(first).dtype)  # indices int64, decay float
        for i, w in enumerate(windows):
            out[i, : len(w[name])] = w[name]
        batch[name] = torch.from_numpy(out)
    batch["lengths"] = torch.as_tensor(lengths, dtype=torch.int64)
    return batch
