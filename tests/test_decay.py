"""Time decay (``profile.half_life_days``): an event counts 2^(-age / half-life) in a user's interest and
dimension weights, an undated one as the user's newest dated event, and a factor common to all of a
user's events changes none of them (so a user with no new event needs no rescoring: the daily refresh's
equivalence test, tests/test_daily_ingest.py, compares such users with a full rescoring days later; the
encoder's side is in tests/test_model.py)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SNAPSHOT
from profiling.decay import SECONDS_PER_DAY, decay_factors
from profiling.model.inputs import FIRST_KEY


def test_an_event_counts_half_as_much_per_half_life_older_and_an_undated_one_as_the_newest():
    newest = 1_700_000_000
    ts = np.array([0, newest - 2 * 10 * SECONDS_PER_DAY, newest - 10 * SECONDS_PER_DAY, newest])
    np.testing.assert_allclose(decay_factors(ts, 10.0), [1.0, 0.25, 0.5, 1.0])
    np.testing.assert_array_equal(decay_factors(ts, None), np.ones(4))  # decay off
    np.testing.assert_array_equal(decay_factors(np.zeros(3, dtype=np.int64), 10.0), np.ones(3))  # nothing dated
    years = decay_factors(np.array([newest - 40 * 365 * SECONDS_PER_DAY, newest]), 1.0)
    assert years[1] == 1.0 and 0.0 <= years[0] < 1e-300  # a history far older than the half-life stays finite


@pytest.fixture(scope="module")
def weights_by_half_life(pipeline, spark, config):
    """The shared pipeline's sequences scored by its encoder with decay off and with a half-life of a
    tenth of a second (only the newest second counts); per user, the category ranked first, and the
    categories of their newest own dated events when every own categorised event is dated."""
    from profiling import tracking
    from profiling.infer import broadcast_encoder, score_sequences
    from profiling.tables import read_snapshot

    sequences = read_snapshot(spark, config, "user_sequences", SNAPSHOT)[0]
    vocab = read_snapshot(spark, config, "vocabularies", SNAPSHOT)[0]
    categories = {r["idx"]: r["key"] for r in vocab.where("dimension = 'category'").collect()}
    social = next(r["idx"] for r in vocab.where("dimension = 'source' AND key = 'social'").collect())
    newest = {}
    for row in sequences.select("user_id", "category", "source", "ts", "length").collect():
        n = row["length"]
        own = [(c, t) for c, s, t in zip(row["category"][:n], row["source"][:n], row["ts"][:n])
               if s != social and c >= FIRST_KEY]
        if own and all(t > 0 for _, t in own):
            last = max(t for _, t in own)
            newest[row["user_id"]] = {categories[c] for c, t in own if t == last}
    model = tracking.load_encoder(config, pipeline.infer.model_version)
    packed = broadcast_encoder(spark, model)
    top = {}
    for half_life in (None, 1e-6):
        cfg = config.model_copy(update={"profile": config.profile.model_copy(update={"half_life_days": half_life})})
        scored, _ = score_sequences(cfg, sequences, vocab, model, packed, f"decay {half_life}")
        top[half_life] = {r["user_id"]: next(w["key"] for w in r["dimension_weights"]
                                             if w["dimension"] == "category" and w["rank"] == 1)
                          for r in scored.select("user_id", "dimension_weights").collect()
                          if any(w["dimension"] == "category" for w in r["dimension_weights"])}
    packed.destroy()
    return newest, top


def test_with_a_tiny_half_life_a_users_newest_event_decides_their_first_category(weights_by_half_life):
    newest, top = weights_by_half_life
    users = [u for u in newest if u in top[1e-6]]
    assert len(users) > 50
    assert all(top[1e-6][u] in newest[u] for u in users)
    # Without decay, the whole history decides: for some users that is another category.
    assert sum(top[None][u] not in newest[u] for u in users) > 5
