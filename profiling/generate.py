"""Synthetic user logs with a planted, recoverable structure.

The profiling job has no public data set with known answers, so this module
fabricates one: every user gets a hidden mixture over a few item categories
(the *ground truth*), and behaviour, explicit preferences and the social graph
are all sampled from that mixture.  A downstream pipeline can then be scored by
how well it recovers each user's top categories.

The logs are deliberately a little dirty, the way real ones are: same-second
timestamp ties, a sprinkle of exact duplicate rows, empty fields, and ~3 % of
users with no behaviour at all, who can only be profiled from their stated
preferences and their friends.

Everything is drawn from one ``numpy.random.default_rng(seed)`` in a fixed
order and the gzip headers carry no timestamp, so the same arguments always
produce byte-identical files.  Pure numpy + pandas: no Spark, no torch.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CATEGORIES", "generate_logs"]

DAY = 86_400
HOUR = 3_600

EVENT_TYPES = np.array(["view", "cart", "buy"])
CATEGORIES = 20  # the default catalogue's, as `profiling generate` makes it
# Cumulative (view, cart) thresholds.  Purchases concentrate in the user's top
# category; with a typical top weight of ~0.45 the overall mix is ~70/20/10.
_TYPE_CDF_TOP = (0.60, 0.85)  # view 60 %, cart 25 %, buy 15 %
_TYPE_CDF_OTHER = (0.78, 0.95)  # view 78 %, cart 17 %, buy 5 %

AGE_BUCKETS = np.array(["18-24", "25-34", "35-44", "45-54", "55-64", "65+"])
AGE_PROBS = np.array([0.18, 0.30, 0.22, 0.15, 0.10, 0.05])
DEVICES = np.array(["mobile", "desktop"])
DEVICE_PROBS = np.array([0.65, 0.35])

MIN_MIXTURE, MAX_MIXTURE = 3, 5
MIN_TOP_GAP = 0.03  # top-3 mixture weights must be this far apart
SILENT_SHARE = 0.03  # users with no behaviour events
TIE_SHARE = 0.02  # events that reuse the previous event's second
DUPLICATE_SHARE = 0.005  # events written twice
SAME_TOP_FRIEND_PROB = 0.8  # homophily of the friend graph
MEAN_GAP_S = 6 * HOUR  # mean time between a user's events
FIRST_EVENT_WINDOW = (1 * DAY, 60 * DAY)  # first event offset from start_ts
HORIZON_S = 90 * DAY

FILE_COLUMNS = {
    "behaviour": ["user_id", "item_id", "event_type", "ts", "category", "value"],
    "preference": ["user_id", "dimension", "key", "value", "ts"],
    "social": ["user_id", "other_user_id", "relation", "ts"],
    "items": ["item_id", "category", "title"],
    "ground_truth": ["user_id", "category", "weight"],
}


@dataclass(frozen=True)
class _Mixtures:
    """Hidden per-user category mixtures, padded to MAX_MIXTURE columns.

    ``cats[u, j]`` is the j-th heaviest category of user u (-1 as padding) and
    ``weights[u, j]`` its weight (0 as padding); rows are sorted descending.
    """

    cats: np.ndarray
    weights: np.ndarray

    @property
    def top(self) -> np.ndarray:
        return self.cats[:, 0]


def generate_logs(
    out_dir: str | Path,
    users: int = 2000,
    seed: int = 7,
    *,
    categories: int = CATEGORIES,
    items_per_category: int = 50,
    events_per_user: tuple[int, int] = (20, 120),
    start_ts: int = 1_700_000_000,
) -> dict[str, int]:
    """Write five gzip CSVs of synthetic logs into ``out_dir``.

    Files: ``behaviour``, ``preference``, ``social``, ``items`` and
    ``ground_truth`` (each ``<name>.csv.gz``, UTF-8, header row, no index).
    ``events_per_user`` is an inclusive (low, high) range.  Returns the number
    of data rows written per file, keyed by the file's stem.
    """
    _validate(users, categories, items_per_category, events_per_user)
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    cat_names = _category_names(categories)
    user_ids = np.array([f"u{i:06d}" for i in range(users)])
    item_cat, item_rank_to_idx = _item_catalogue(rng, categories, items_per_category)
    mix = _draw_mixtures(rng, users, categories)
    silent = _pick_silent_users(rng, mix.top)

    n_events = rng.integers(events_per_user[0], events_per_user[1] + 1, size=users)
    n_events[silent] = 0
    first_offset = rng.integers(*FIRST_EVENT_WINDOW, size=users)

    frames = {
        "items": _items_frame(item_cat, cat_names),
        "ground_truth": _ground_truth_frame(mix, user_ids, cat_names),
        "behaviour": _behaviour_frame(
            rng, mix, n_events, first_offset, item_rank_to_idx, item_cat,
            user_ids, cat_names, start_ts,
        ),
        "preference": _preference_frame(
            rng, mix, silent, first_offset, user_ids, cat_names, start_ts
        ),
        "social": _social_frame(rng, mix, silent, user_ids, start_ts),
    }
    counts = {}
    for name in FILE_COLUMNS:  # fixed order: stable, readable output
        frame = frames[name][FILE_COLUMNS[name]]
        _write_csv_gz(frame, out / f"{name}.csv.gz")
        counts[name] = len(frame)
    return counts


# --------------------------------------------------------------------------
# setup


def _validate(users, categories, items_per_category, events_per_user) -> None:
    """Fail early on arguments that cannot carry the planted structure."""
    if users < 2:
        raise ValueError("users must be >= 2 (the social graph needs peers)")
    if categories < MIN_MIXTURE:
        raise ValueError(f"categories must be >= {MIN_MIXTURE}")
    if items_per_category < 1:
        raise ValueError("items_per_category must be >= 1")
    low, high = events_per_user
    if not 1 <= low <= high:
        raise ValueError("events_per_user must be (low, high) with 1 <= low <= high")


def _category_names(categories: int) -> np.ndarray:
    """``c00``, ``c01``, ... zero-padded so names sort like their index."""
    width = max(2, len(str(categories - 1)))
    return np.array([f"c{i:0{width}d}" for i in range(categories)])


def _item_catalogue(rng, categories: int, per_cat: int) -> tuple[np.ndarray, np.ndarray]:
    """Assign items to categories and shuffle popularity ranks within each.

    Item ``k`` belongs to category ``k // per_cat``.  Returns that category
    array and a ``(categories, per_cat)`` table mapping popularity rank to item
    index, so the best seller is not always the first id of a category.
    """
    item_cat = np.repeat(np.arange(categories), per_cat)
    base = np.arange(categories)[:, None] * per_cat
    rank_to_idx = base + rng.permuted(np.tile(np.arange(per_cat), (categories, 1)), axis=1)
    return item_cat, rank_to_idx


def _draw_mixtures(rng, users: int, categories: int) -> _Mixtures:
    """Dirichlet(1) mixtures over 3-5 distinct categories, top-3 identifiable.

    A mixture is redrawn while any of its top three weights is within
    MIN_TOP_GAP of the next one, so "the user's top-3" is well defined.
    """
    cats = np.full((users, MAX_MIXTURE), -1, dtype=np.int64)
    weights = np.zeros((users, MAX_MIXTURE))
    sizes = rng.integers(MIN_MIXTURE, min(MAX_MIXTURE, categories) + 1, size=users)
    for u, k in enumerate(sizes):
        while True:
            w = np.sort(rng.dirichlet(np.ones(k)))[::-1]
            padded = np.append(w, 0.0)  # a 3-category mixture compares w[2] to 0
            if np.all(padded[:3] - padded[1:4] >= MIN_TOP_GAP):
                break
        cats[u, :k] = rng.choice(categories, size=k, replace=False)
        weights[u, :k] = w
    return _Mixtures(cats, weights)


def _pick_silent_users(rng, top: np.ndarray) -> np.ndarray:
    """Indices of the ~3 % of users with no behaviour (at least one).

    They are drawn from users whose top category is shared by at least two
    others (when there are enough such users), so their profile can be
    inferred from same-top friends.
    """
    users = len(top)
    n_silent = max(1, round(SILENT_SHARE * users))
    _, inverse, group_size = np.unique(top, return_inverse=True, return_counts=True)
    eligible = np.flatnonzero(group_size[inverse] >= 3)
    pool = eligible if len(eligible) >= n_silent else np.arange(users)
    return np.sort(rng.choice(pool, size=n_silent, replace=False))


# --------------------------------------------------------------------------
# frames


def _item_ids(n: int) -> np.ndarray:
    """``i00000``, ``i00001``, ... zero-padded to one width (at least 5 digits) so ids sort like their index."""
    width = max(5, len(str(n - 1)))
    return np.array([f"i{k:0{width}d}" for k in range(n)])


def _items_frame(item_cat: np.ndarray, cat_names: np.ndarray) -> pd.DataFrame:
    n = len(item_cat)
    names = cat_names[item_cat]
    return pd.DataFrame(
        {
            "item_id": _item_ids(n),
            "category": names,
            "title": [f"Item {k} ({c})" for k, c in zip(range(n), names)],
        }
    )


def _ground_truth_frame(mix: _Mixtures, user_ids, cat_names) -> pd.DataFrame:
    u, j = np.nonzero(mix.cats >= 0)  # row-major: users in order, heaviest first
    return pd.DataFrame(
        {
            "user_id": user_ids[u],
            "category": cat_names[mix.cats[u, j]],
            "weight": mix.weights[u, j],
        }
    )


def _behaviour_frame(
    rng, mix, n_events, first_offset, rank_to_idx, item_cat, user_ids, cat_names, start_ts
) -> pd.DataFrame:
    """Sample all events at once (vectorised over events, not users).

    Category from the user's mixture, item by Zipf popularity inside it,
    event type skewed towards buying in the top category, timestamps from
    exponential gaps with planted ties, then a few exact duplicate rows.
    The file is ordered by time across users, like an appended event log.
    """
    ev_user = np.repeat(np.arange(len(n_events)), n_events)
    n = len(ev_user)
    item_ids = _item_ids(len(item_cat))

    cum = np.cumsum(mix.weights, axis=1)
    cum[mix.cats < 0] = 1.0  # padding is never chosen...
    cum[np.arange(len(cum)), (mix.cats >= 0).sum(axis=1) - 1] = 1.0  # ...and no round-off gap
    slot = (cum[ev_user] <= rng.random(n)[:, None]).sum(axis=1)
    ev_cat = mix.cats[ev_user, slot]

    per_cat = rank_to_idx.shape[1]
    zipf_cdf = np.cumsum(1.0 / np.arange(1, per_cat + 1))
    zipf_cdf /= zipf_cdf[-1]
    rank = np.minimum(np.searchsorted(zipf_cdf, rng.random(n), side="right"), per_cat - 1)
    ev_item = rank_to_idx[ev_cat, rank]

    is_top = slot == 0
    view_cut = np.where(is_top, _TYPE_CDF_TOP[0], _TYPE_CDF_OTHER[0])
    cart_cut = np.where(is_top, _TYPE_CDF_TOP[1], _TYPE_CDF_OTHER[1])
    draw = rng.random(n)
    type_idx = (draw >= view_cut).astype(np.int64) + (draw >= cart_cut)
    value = np.round(rng.lognormal(3.0, 0.5, size=n), 2)
    value[type_idx == 0] = np.nan

    ts = start_ts + _event_offsets(rng, n_events, first_offset)

    keep = np.repeat(np.arange(n), 1 + (rng.random(n) < DUPLICATE_SHARE))  # dups stay adjacent
    order = keep[np.argsort(ts[keep], kind="stable")]
    return pd.DataFrame(
        {
            "user_id": user_ids[ev_user[order]],
            "item_id": item_ids[ev_item[order]],
            "event_type": EVENT_TYPES[type_idx[order]],
            "ts": ts[order],
            "category": cat_names[item_cat[ev_item[order]]],
            "value": value[order],
        }
    )


def _event_offsets(rng, n_events: np.ndarray, first_offset: np.ndarray) -> np.ndarray:
    """Per-user event times in seconds after start_ts, non-decreasing.

    Gaps are exponential (>= 1 s) except ~TIE_SHARE that are 0 to plant
    same-second ties; a user's first event lands at ``first_offset``.
    """
    n = int(n_events.sum())
    gaps = np.maximum(1, np.rint(rng.exponential(MEAN_GAP_S, size=n))).astype(np.int64)
    gaps[rng.random(n) < TIE_SHARE] = 0
    first = np.cumsum(n_events) - n_events  # index of each user's first event
    active = n_events > 0
    gaps[first[active]] = first_offset[active]
    total = np.cumsum(gaps)
    user_base = np.repeat(total[first[active]] - gaps[first[active]], n_events[active])
    return total - user_base


def _preference_frame(rng, mix, silent, first_offset, user_ids, cat_names, start_ts):
    """Stated preferences: 1-2 of the user's categories, plus demographics.

    Category rows name the top category with probability 0.7 (otherwise
    another category of the mixture) and are timestamped before the user's
    first event; demographic rows have no timestamp. Users with no behaviour
    state their three heaviest categories, as a sign-up form that asks for
    three likes would: without that, their second and third planted
    categories would appear in no log at all (friends share only the top one),
    and no profiler could recover them.
    """
    is_silent = np.zeros(len(user_ids), dtype=bool)
    is_silent[silent] = True
    rows_user, rows_dim, rows_key, rows_ts = [], [], [], []
    ages = rng.choice(AGE_BUCKETS, size=len(user_ids), p=AGE_PROBS)
    devices = rng.choice(DEVICES, size=len(user_ids), p=DEVICE_PROBS)
    for u in range(len(user_ids)):
        theirs = list(mix.cats[u][mix.cats[u] >= 0])
        horizon = HORIZON_S if is_silent[u] else first_offset[u]
        stated = rng.integers(1, 3)
        if is_silent[u]:
            for key in theirs[:3]:
                rows_user.append(u)
                rows_dim.append("category")
                rows_key.append(cat_names[key])
                rows_ts.append(start_ts + int(rng.integers(0, horizon)))
            stated = 0
        for _ in range(stated):
            top_left = theirs[0] == mix.top[u]
            if top_left and (len(theirs) == 1 or rng.random() < 0.7):
                key = theirs.pop(0)
            else:
                key = theirs.pop(int(rng.integers(1 if top_left else 0, len(theirs))))
            rows_user.append(u)
            rows_dim.append("category")
            rows_key.append(cat_names[key])
            rows_ts.append(start_ts + int(rng.integers(0, horizon)))
        for dim, key in (("age", ages[u]), ("device", devices[u])):
            rows_user.append(u)
            rows_dim.append(dim)
            rows_key.append(key)
            rows_ts.append(None)
    return pd.DataFrame(
        {
            "user_id": user_ids[rows_user],
            "dimension": rows_dim,
            "key": rows_key,
            "value": 1.0,
            "ts": pd.array(rows_ts, dtype="Int64"),  # integer or empty, never 1.7e9
        }
    )


def _social_frame(rng, mix, silent, user_ids, start_ts):
    """Directed friend edges with homophily on the top category.

    Each user picks 2-8 distinct friends, ~80 % among users with the same top
    category.  Users without behaviour pick all their friends among active
    same-top users (fewer than drawn if the group is small), so their profile
    can be inferred from their circle.
    """
    users = len(user_ids)
    is_silent = np.zeros(users, dtype=bool)
    is_silent[silent] = True
    by_top = {c: np.flatnonzero(mix.top == c) for c in np.unique(mix.top)}
    active_by_top = {c: m[~is_silent[m]] for c, m in by_top.items()}
    src, dst = [], []
    for u in range(users):
        degree = min(int(rng.integers(2, 9)), users - 1)
        if is_silent[u]:
            peers = active_by_top[mix.top[u]]
            if len(peers):  # only same-top friends, even if fewer than drawn
                degree = min(degree, len(peers))
            n_same = degree
        else:
            peers, n_same = by_top[mix.top[u]], int(rng.binomial(degree, SAME_TOP_FRIEND_PROB))
        peers = peers[peers != u]
        same = rng.choice(peers, size=min(n_same, len(peers)), replace=False).tolist()
        friends = same + _sample_excluding(rng, users, degree - len(same), {u, *same})
        src.extend([u] * len(friends))
        dst.extend(friends)
    n = len(src)
    ts = pd.array(start_ts + rng.integers(0, HORIZON_S, size=n), dtype="Int64")
    ts[rng.random(n) < 0.5] = pd.NA  # about half the edges carry no timestamp
    return pd.DataFrame(
        {
            "user_id": user_ids[src],
            "other_user_id": user_ids[dst],
            "relation": "friend",
            "ts": ts,
        }
    )


def _sample_excluding(rng, users: int, k: int, exclude: set[int]) -> list[int]:
    """k distinct user indices not in ``exclude``, by rejection.

    Cheaper than building the complement for every user, since k is tiny.
    """
    chosen: list[int] = []
    taken = set(exclude)
    while len(chosen) < k:
        c = int(rng.integers(users))
        if c not in taken:
            taken.add(c)
            chosen.append(c)
    return chosen


# --------------------------------------------------------------------------
# output


def _write_csv_gz(frame: pd.DataFrame, path: Path) -> None:
    """gzip with mtime=0 and no stored file name, so output is reproducible."""
    data = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
