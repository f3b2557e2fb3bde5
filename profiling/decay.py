"""Time decay: how much an event counts in a user's weights, by its age.

An event of age ``a`` days (to the end of the snapshot day) counts ``2^(-a / h)``, ``h`` being
``profile.half_life_days``, in the interest weights and in the category, event type and source weights.
An event without a time (a preference given undated, the circle's context events) counts as the user's
newest dated event: it describes the state the user was in when last seen acting; a user with no dated
event has every event count alike.

Each of those weights is normalised per user (a user's interest weights sum to 1, and so do the weights
of each dimension), so a factor common to all of a user's events cancels. The factors are therefore
computed relative to the user's newest event, which keeps a history far older than the half-life
finite; and a day later, with no new event, every factor shrinks by the same ``2^(-1 / h)`` and the
weights stay as they were: a user the daily refresh leaves alone needs no rescoring.
"""

from __future__ import annotations

import numpy as np

SECONDS_PER_DAY = 86_400


def decay_factors(ts: np.ndarray, half_life_days: float | None) -> np.ndarray:
    """Each event's factor from its time (unix seconds, 0 when unknown): 1 for the user's newest dated
    event and the undated ones, ``2^(-days older / half_life_days)`` for the others; all 1 without a
    half-life."""
    ts = np.asarray(ts, dtype=np.int64)
    dated = ts > 0
    if half_life_days is None or not dated.any():
        return np.ones(len(ts))
    older = np.where(dated, ts[dated].max() - ts, 0) / SECONDS_PER_DAY
    return np.exp2(-older / half_life_days)
