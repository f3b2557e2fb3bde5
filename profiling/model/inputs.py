"""The encoder's input format: padded integer tensors, one per event dimension.

Rows come from ``user_sequences`` (lists of indices). This module cuts them
into training windows (with next-item labels), evaluation windows (leave-last-out
targets) and full profiles, and pads them into batches. Pure numpy/torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

FEATURES = ("item", "category", "event_type", "source", "attribute", "gap_bucket", "value_bucket")
GAP_BUCKETS = 32
VALUE_BUCKETS = 32


def _window(row: Mapping, end: int) -> dict[str, np.ndarray]:
    return {name: np.asarray(row[name][:end], dtype=np.int64) for name in FEATURES}


def training_window(row: Mapping, behaviour_idx: int) -> dict[str, np.ndarray] | None:
    """Events before the validation target, labelled with the next behaviour item at each position.

    ``labels[t]`` is the item of event t+1 when that event is a behaviour event
    (0 = no label). The multi-interest loss predicts the window's last behaviour
    item from the events before it (``interest_cut``). None if nothing to learn.
    """
    length = int(row["length"])
    end = int(row["valid_pos"]) if int(row["valid_pos"]) >= 0 else length
    if end < 2:
        return None
    window = _window(row, end)
    is_behaviour = window["source"] == behaviour_idx
    labels = np.zeros(end, dtype=np.int64)
    labels[:-1] = np.where(is_behaviour[1:], window["item"][1:], 0)
    if not labels.any():
        return None
    last = int(np.flatnonzero(is_behaviour)[-1]) if is_behaviour.any() else 0
    window["labels"] = labels
    window["interest_cut"] = np.int64(last)
    window["interest_target"] = np.int64(window["item"][last] if last > 0 else 0)
    return window


def target_window(row: Mapping, position: int) -> tuple[dict[str, np.ndarray], int]:
    """Events before ``position`` and the item at it (leave-last-out evaluation)."""
    return _window(row, position), int(row["item"][position])


def profile_window(row: Mapping) -> dict[str, np.ndarray]:
    """All kept events of a user: what a profile is computed from."""
    return _window(row, int(row["length"]))


def collate(windows: Sequence[Mapping[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Right-pad windows into (B, T) tensors; scalars become (B,) tensors; adds ``lengths``."""
    lengths = [len(w["item"]) for w in windows]
    width = max(1, max(lengths))
    batch: dict[str, torch.Tensor] = {}
    for name in windows[0]:
        first = windows[0][name]
        if np.ndim(first) == 0:
            batch[name] = torch.as_tensor(np.array([w[name] for w in windows], dtype=np.int64))
            continue
        out = np.zeros((len(windows), width), dtype=np.int64)
        for i, w in enumerate(windows):
            out[i, : len(w[name])] = w[name]
        batch[name] = torch.from_numpy(out)
    batch["lengths"] = torch.as_tensor(lengths, dtype=torch.int64)
    return batch
