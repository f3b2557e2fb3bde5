"""REFERENCE ONLY, not the library: the sequences stage's core in one process with pyarrow.

What a hand-written single-machine job does with the same ingested parquet files: union the
behaviour and preference events, sort by (user, ts, source, file order), keep each user's
newest ``max_len`` events, index items, categories and event types, and write one row of
lists per user. It skips what only the Spark stage does (the social circle, vocabulary
tables, Delta commits), so it is the floor the Spark stage is measured against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from profiling.tables import local_path


def _read(files: list[str], columns: list[str]) -> pa.Table:
    return ds.dataset([local_path(f) for f in files], format="parquet").to_table(columns=columns)


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Dense indices by frequency (0 for null), like the vocabulary's."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    counts = np.bincount(encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False) + 1,
                         minlength=len(encoded.dictionary) + 1)[1:]
    rank = np.empty(len(counts), dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(2, len(counts) + 2)
    idx = encoded.indices.to_numpy(zero_copy_only=False)
    valid = ~np.isnan(idx) if idx.dtype.kind == "f" else np.ones(len(idx), dtype=bool)
    out = np.ones(len(idx), dtype=np.int64)
    out[valid] = rank[idx[valid].astype(np.int64)]
    return out


def reference_sequences(behaviour_files: list[str], preference_files: list[str], out: Path,
                        max_len: int, category_dimensions: tuple[str, ...] = ("category", "genre")) -> dict:
    """Write ``out`` (one parquet file); returns users and events read."""
    b = _read(behaviour_files, ["user_id", "item_id", "category", "event_type", "ts", "event_order"])
    p = _read(preference_files, ["user_id", "dimension", "key", "ts", "event_order"])
    is_category = pc.is_in(pc.utf8_lower(p["dimension"]), value_set=pa.array(list(category_dimensions)))
    events = pa.concat_tables([
        pa.table({"user_id": b["user_id"], "item": b["item_id"], "category": b["category"],
                  "event_type": b["event_type"], "source": pa.array(np.full(b.num_rows, 2, dtype=np.int8)),
                  "ts": b["ts"], "event_order": b["event_order"]}),
        pa.table({"user_id": p["user_id"], "item": pa.nulls(p.num_rows, pa.string()),
                  "category": pc.if_else(is_category, p["key"], pa.scalar(None, pa.string())),
                  "event_type": pc.binary_join_element_wise("preference:", p["dimension"], ""),
                  "source": pa.array(np.full(p.num_rows, 1, dtype=np.int8)), "ts": p["ts"],
                  "event_order": p["event_order"]}),
    ])
    events = events.set_column(events.schema.get_field_index("ts"), "ts", pc.fill_null(events["ts"], -1))
    order = pc.sort_indices(events, sort_keys=[("user_id", "ascending"), ("ts", "ascending"),
                                               ("source", "ascending"), ("event_order", "ascending")])
    events = events.take(order)
    users = pc.dictionary_encode(events["user_id"]).combine_chunks().indices.to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    first_kept = np.maximum(starts, ends - max_len)
    keep = np.zeros(len(users) + 1, dtype=np.int64)
    np.add.at(keep, first_kept, 1)
    np.add.at(keep, ends, -1)
    kept = np.cumsum(keep[:-1]) > 0
    offsets = pa.array(np.r_[0, np.cumsum(ends - first_kept)].astype(np.int32))
    columns = {"user_id": events["user_id"].take(pa.array(starts))}
    for name in ("item", "category", "event_type"):
        columns[name] = pa.ListArray.from_arrays(offsets, pa.array(_codes(events[name])[kept]))
    for name in ("source", "ts"):
        values = events[name].combine_chunks().to_numpy(zero_copy_only=False)[kept]
        columns[name] = pa.ListArray.from_arrays(offsets, pa.array(np.nan_to_num(values).astype(np.int64)))
    pq.write_table(pa.table(columns), out)
    return {"users": len(starts), "events": events.num_rows}
