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

Interests also change: a share of the users with behaviour (``drift_share``)
*drift*, switching part-way through their history from their sign-up mixture
A to a second mixture B over categories A does not have, so a profiler has to
weigh recent behaviour to find what the user likes *now*.  Preferences and the
social graph stay keyed to A: they record what the user declared at sign-up
and whom they befriended then, not their later taste.

Everything else is drawn from one ``numpy.random.default_rng(seed)`` in a
fixed order; the drift has its own ``default_rng([seed, 1])`` so that the main
draw sequence, and hence every stable user's rows, is the same whatever
``drift_share`` is (``drift_share=0`` reproduces the drift-free files).  The
gzip headers carry no timestamp, so the same arguments always produce
byte-identical files.  Pure numpy + pandas: no Spark, no torch.
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
DRIFT_WINDOW = (0.25, 0.5)  # a drifting user's switch, as a share of their events
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
    "ground_truth": ["user_id", "category", "weight", "lifetime_weight", "drifting"],
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


@dataclass(frozen=True)
class _Drift:
    """Which users drift, when, and to what.

    ``after`` holds each user's mixture from event ``switch[u]`` on: mixture B
    for drifting users, a copy of A for the others (whose ``switch`` is their
    event count, so it never takes effect).
    """

    drifting: np.ndarray  # bool per user
    switch: np.ndarray  # index of the user's first event drawn from ``after``
    after: _Mixtures


def generate_logs(
    out_dir: str | Path,
    users: int = 2000,
    seed: int = 7,
    *,
    categories: int = CATEGORIES,
    items_per_category: int = 50,
    events_per_user: tuple[int, int] = (20, 120),
    start_ts: int = 1_700_000_000,
    drift_share: float = 0.2,
) -> dict[str, int]:
    """Write five gzip CSVs of synthetic logs into ``out_dir``.

    Files: ``behaviour``, ``preference``, ``social``, ``items`` and
    ``ground_truth`` (each ``<name>.csv.gz``, UTF-8, header row, no index).
    ``events_per_user`` is an inclusive (low, high) range.  ``drift_share`` is
    the share of users with behaviour whose interests drift (see
    ``_draw_drift``).  The ground truth has one row per (user, category) with
    ``weight`` (the current mixture), ``lifetime_weight`` (the mixture of the
    user's whole planted history) and ``drifting``.  Returns the number of data
    rows written per file, keyed by the file's stem.
    """
    _validate(users, categories, items_per_category, events_per_user, drift_share)
    rng = np.random.default_rng(seed)
    drift_rng = np.random.default_rng([seed, 1])  # never the main rng: see the module docstring
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
    drift = _draw_drift(drift_rng, mix, n_events, drift_share, categories)

    frames = {
        "items": _items_frame(item_cat, cat_names),
        "ground_truth": _ground_truth_frame(mix, drift, n_events, user_ids, cat_names),
        "behaviour": _behaviour_frame(
            rng, mix, drift, n_events, first_offset, item_rank_to_idx, item_cat,
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


def _validate(users, categories, items_per_category, events_per_user, drift_share) -> None:
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
    if not 0 <= drift_share <= 1:
        raise ValueError(f"drift_share must be between 0 and 1, got {drift_share}")


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

    See ``_draw_weights`` for the gap rule.
    """
    cats = np.full((users, MAX_MIXTURE), -1, dtype=np.int64)
    weights = np.zeros((users, MAX_MIXTURE))
    sizes = rng.integers(MIN_MIXTURE, min(MAX_MIXTURE, categories) + 1, size=users)
    for u, k in enumerate(sizes):
        weights[u, :k] = _draw_weights(rng, k)
        cats[u, :k] = rng.choice(categories, size=k, replace=False)
    return _Mixtures(cats, weights)


def _draw_weights(rng, k: int) -> np.ndarray:
    """Dirichlet(1) weights over k slots, sorted descending.

    With k >= 3 they are redrawn while any of the top three is within
    MIN_TOP_GAP of the next one, so "the user's top-3" is well defined
    (a 3-slot draw compares w[2] to 0).  Fewer slots cannot have a top-3.
    """
    while True:
        w = np.sort(rng.dirichlet(np.ones(k)))[::-1]
        padded = np.append(w, 0.0)
        if k < MIN_MIXTURE or np.all(padded[:3] - padded[1:4] >= MIN_TOP_GAP):
            return w


def _draw_drift(drift_rng, mix: _Mixtures, n_events, drift_share: float, categories: int) -> _Drift:
    """Pick the drifting users, their new mixture B and their switch event.

    round(drift_share * users with behaviour) of those users drift (silent
    users have no history to drift in; users whose mixture A already covers
    every category have nothing to drift to and are skipped, so the count can
    fall short on tiny catalogues).  B spans 3-5 categories outside A (fewer
    only if fewer remain), weighted like A.  The switch comes at event
    s = round(U(0.25, 0.5) * n) of the user's n events in time order: the newer
    mixture then has at least half of the history to show in (a switch two
    events before the end is not observable by any profiler), and the older
    one at least a quarter.
    """
    users = len(n_events)
    size_a = (mix.cats >= 0).sum(axis=1)
    active = np.flatnonzero(n_events > 0)
    pool = active[size_a[active] < categories]
    n_drift = min(round(drift_share * len(active)), len(pool))
    chosen = np.sort(drift_rng.choice(pool, size=n_drift, replace=False))

    cats, weights = mix.cats.copy(), mix.weights.copy()
    cats[chosen], weights[chosen] = -1, 0.0
    for u in chosen:
        free = np.setdiff1d(np.arange(categories), mix.cats[u])
        k = min(int(drift_rng.integers(MIN_MIXTURE, MAX_MIXTURE + 1)), len(free))
        weights[u, :k] = _draw_weights(drift_rng, k)
        cats[u, :k] = drift_rng.choice(free, size=k, replace=False)

    drifting = np.zeros(users, dtype=bool)
    drifting[chosen] = True
    switch = n_events.copy()
    share = drift_rng.uniform(*DRIFT_WINDOW, size=n_drift)
    switch[chosen] = np.rint(share * n_events[chosen]).astype(n_events.dtype)
    return _Drift(drifting, switch, _Mixtures(cats, weights))


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


def _ground_truth_frame(mix: _Mixtures, drift: _Drift, n_events, user_ids, cat_names) -> pd.DataFrame:
    """Current and lifetime weight of every planted (user, category).

    ``weight`` is the mixture in effect now (B for drifting users), which a
    profile of present interests should recover; ``lifetime_weight`` is
    f * A + (1 - f) * B with f = switch / events, the expected category mix of
    the user's whole history, so A's categories stay visible with weight 0.
    """
    f = np.ones(len(user_ids))
    f[drift.drifting] = drift.switch[drift.drifting] / n_events[drift.drifting]
    ua, ja = np.nonzero(mix.cats >= 0)
    now_a = np.where(drift.drifting[ua], 0.0, mix.weights[ua, ja])
    life_a = f[ua] * mix.weights[ua, ja]  # 1.0 * w == w: stable users' two columns agree exactly
    ub, jb = np.nonzero((drift.after.cats >= 0) & drift.drifting[:, None])
    now_b = drift.after.weights[ub, jb]
    life_b = (1.0 - f[ub]) * now_b

    u = np.concatenate([ua, ub])
    cat = np.concatenate([mix.cats[ua, ja], drift.after.cats[ub, jb]])
    weight, lifetime = np.concatenate([now_a, now_b]), np.concatenate([life_a, life_b])
    keep = (weight > 0) | (lifetime > 0)
    order = np.lexsort((-lifetime[keep], -weight[keep], u[keep]))
    idx = np.flatnonzero(keep)[order]
    return pd.DataFrame(
        {
            "user_id": user_ids[u[idx]],
            "category": cat_names[cat[idx]],
            "weight": weight[idx],
            "lifetime_weight": lifetime[idx],
            "drifting": drift.drifting[u[idx]],
        }
    )


def _behaviour_frame(
    rng, mix, drift, n_events, first_offset, rank_to_idx, item_cat, user_ids, cat_names, start_ts
) -> pd.DataFrame:
    """Sample all events at once (vectorised over events, not users).

    Category from the mixture in effect (A, or B from a drifting user's
    switch event on), item by Zipf popularity inside it, event type skewed
    towards buying in that mixture's top category, timestamps from
    exponential gaps with planted ties, then a few exact duplicate rows.
    The file is ordered by time across users, like an appended event log.
    Drift reuses the same uniform draws, so the main rng's sequence, and
    every stable user's events, do not depend on it.
    """
    ev_user = np.repeat(np.arange(len(n_events)), n_events)
    n = len(ev_user)
    item_ids = _item_ids(len(item_cat))

    # Events are in per-user order here and _event_offsets keeps each user's
    # times non-decreasing, so the index within the user is the time order.
    ev_index = np.arange(n) - np.repeat(np.cumsum(n_events) - n_events, n_events)
    late = ev_index >= drift.switch[ev_user]
    cum = np.where(late[:, None], _cumulative(drift.after)[ev_user], _cumulative(mix)[ev_user])
    slot = (cum <= rng.random(n)[:, None]).sum(axis=1)
    ev_cat = np.where(late, drift.after.cats[ev_user, slot], mix.cats[ev_user, slot])

    per_cat = rank_to_idx.shape[1]
    zipf_cdf = np.cumsum(1.0 / np.arange(1, per_cat + 1))
    zipf_cdf /= zipf_cdf[-1]
    rank = np.minimum(np.searchsorted(zipf_cdf, rng.random(n), side="right"), per_cat - 1)
    ev_item = rank_to_idx[ev_cat, rank]

    is_top = slot == 0  # of the mixture in effect
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


def _cumulative(mix: _Mixtures) -> np.ndarray:
    """Per-user cumulative weights that map a uniform draw to a slot."""
    cum = np.cumsum(mix.weights, axis=1)
    cum[mix.cats < 0] = 1.0  # padding is never chosen...
    cum[np.arange(len(cum)), (mix.cats >= 0).sum(axis=1) - 1] = 1.0  # ...and no round-off gap
    return cum


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
