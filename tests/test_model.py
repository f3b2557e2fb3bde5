"""The encoder alone (PyTorch, no Spark): masks, causality, and what the profile outputs mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from profiling.model.encoder import EncoderSpec, ProfileEncoder
from profiling.model.inputs import FEATURES, collate, target_window, training_windows

SIZES = {"item": 40, "category": 8, "event_type": 6, "source": 5, "attribute": 6, "gap_bucket": 32,
         "value_bucket": 32}


@pytest.fixture()
def model():
    torch.manual_seed(0)
    spec = EncoderSpec(vocab_sizes=SIZES, max_len=12, dim=16, heads=2, layers=2, interests=3, behaviour_idx=2,
                       social_idx=4)
    return ProfileEncoder(spec).eval()


def _window(length, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.integers(2, min(SIZES[name], 5), size=length) for name in FEATURES}


def test_profile_weights_are_distributions_over_interests_and_real_events(model):
    batch = collate([_window(10), _window(4, seed=1)])
    out = model(batch)
    assert torch.allclose(out["interest_weights"].sum(1), torch.ones(2), atol=1e-5)
    importance = out["event_importance"]
    assert torch.allclose(importance.sum(1), torch.ones(2), atol=1e-5)
    assert torch.all(importance[1, 4:] == 0)  # padding carries no importance
    assert out["interest_embeddings"].shape == (2, 3, 16)
    evidence = out["evidence_attention"]  # (users, interests, events): what each interest rests on
    assert torch.allclose(evidence.sum(2), torch.ones(2, 3), atol=1e-5)
    assert torch.all(evidence[1, :, 4:] == 0)


def test_a_user_without_events_gets_a_finite_uniform_profile(model):
    out = model(collate([_window(0), _window(5)]))
    assert all(torch.isfinite(v).all() for v in out.values())
    assert torch.allclose(out["interest_weights"][0], torch.full((3,), 1 / 3))


def test_attention_is_causal_later_events_do_not_change_earlier_states(model):
    a, b = _window(10), _window(10, seed=1)
    for name in FEATURES:
        b[name][:6] = a[name][:6]
    hidden_a, _ = model.encode(collate([a]))
    hidden_b, _ = model.encode(collate([b]))
    assert torch.allclose(hidden_a[0, :6], hidden_b[0, :6], atol=1e-5)
    assert not torch.allclose(hidden_a[0, 6:], hidden_b[0, 6:], atol=1e-3)


def test_training_windows_label_the_next_behaviour_item_and_stop_before_validation():
    row = {name: list(range(2, 12)) for name in FEATURES}
    row["source"] = [3, 2, 2, 4, 2, 2, 2, 2, 2, 2]  # 2 = behaviour, 3/4 = other logs
    row.update(length=10, valid_pos=8, test_pos=9)
    (window,) = training_windows(row, behaviour_idx=2, window=10)
    assert len(window["item"]) == 8  # the validation and test events are never trained on
    assert window["labels"].tolist() == [3, 4, 0, 6, 7, 8, 9, 0]
    assert (int(window["interest_cut"]), int(window["interest_target"])) == (7, 9)
    newest, oldest = training_windows(row, behaviour_idx=2, window=5)
    assert newest["item"].tolist() == [5, 6, 7, 8, 9] and newest["labels"].tolist() == [6, 7, 8, 9, 0]
    assert oldest["item"].tolist() == [2, 3, 4] and oldest["labels"].tolist() == [3, 4, 0]
    assert (int(oldest["interest_cut"]), int(oldest["interest_target"])) == (2, 4)


def test_evaluation_windows_end_right_before_the_target():
    row = {name: list(range(2, 12)) for name in FEATURES}
    row["source"] = [2, 3, 2, 2, 2, 2, 2, 2, 2, 2]
    window, target = target_window(row, position=9, window=4, behaviour_idx=2)
    assert window["item"].tolist() == [7, 8, 9, 10] and target == 11
    assert window["history"].tolist() == [2, 4, 5, 6]  # the user's own items before the window


def test_losses_are_finite_and_train_every_parameter(model):
    row = {name: [2, 3, 4, 2, 3, 4, 2, 3, 4, 2] for name in FEATURES}
    row["source"] = [2] * 10
    row.update(length=10, valid_pos=8, test_pos=9)
    batch = collate(training_windows(row, 2, 10) * 2)
    model.train()
    seq_loss, interest_loss = model(batch, mode="train")
    (seq_loss + interest_loss).backward()
    assert torch.isfinite(seq_loss) and torch.isfinite(interest_loss)
    untouched = [n for n, p in model.named_parameters() if p.grad is None]
    assert untouched == []


def test_repeat_and_circle_offsets_move_exactly_those_items(model):
    window = {name: np.array([2, 3, 2, 3]) for name in FEATURES}
    window["item"] = np.array([5, 6, 7, 8])
    window["source"] = np.array([4, 2, 2, 2])  # item 5 comes from the circle, 6-8 are the user's own
    window["history"] = np.array([9])
    batch = collate([window])
    base = model.score_next(batch)
    with torch.no_grad():
        model.repeat_bias.fill_(-3.0)
        model.circle_bias.fill_(2.0)
    moved = model.score_next(batch) - base
    assert torch.allclose(moved[0, [6, 7, 8, 9]], torch.full((4,), -3.0))
    assert torch.isclose(moved[0, 5], torch.tensor(2.0))
    others = [i for i in range(SIZES["item"]) if i not in (5, 6, 7, 8, 9)]
    assert torch.all(moved[0, others] == 0)


def _dense_offsets(batch, rows, positions, own_source, circle_source, n_items):
    """The offsets' (N, V) membership tables built the obvious way, one Python loop per position."""
    own = torch.zeros(len(rows), n_items)
    circle = torch.zeros(len(rows), n_items)
    for n, (r, p) in enumerate(zip(rows.tolist(), positions.tolist())):
        for t in range(p + 1):
            item, source = int(batch["item"][r, t]), int(batch["source"][r, t])
            if item and source == own_source:
                own[n, item] = 1
            if item and source == circle_source:
                circle[n, item] = 1
        for item in batch["history"][r].tolist():
            if item:
                own[n, item] = 1
    return own, circle


def test_sparse_offsets_equal_dense_membership_tables_with_repeats_in_both_softmaxes(model):
    """Offsets are added per (position, item) pair: once per item however often it repeats, for the
    full softmax and for the sampled one (where only sampled columns and the target carry them)."""
    rng = np.random.default_rng(3)
    windows = []
    for length in (12, 7, 9):
        w = {name: rng.integers(2, 5, size=length) for name in FEATURES}
        w["item"] = rng.integers(2, 9, size=length)  # few items: many repeats
        w["source"] = rng.choice([2, 4, 3], size=length)
        w["history"] = rng.integers(2, 9, size=length // 2)
        windows.append(w)
    batch = collate(windows)
    with torch.no_grad():
        model.repeat_bias.fill_(-1.5)
        model.circle_bias.fill_(0.75)
    rows = torch.tensor([0, 0, 1, 2, 2])
    positions = torch.tensor([3, 11, 6, 0, 8])
    states = torch.randn(len(rows), model.spec.dim)
    own, circle = _dense_offsets(batch, rows, positions, 2, 4, SIZES["item"])
    expected = states @ model.item_embedding.T - 1.5 * own + 0.75 * circle
    assert own.sum() > 0 and circle.sum() > 0
    full = model.next_item_logits(states, batch, rows, positions)
    assert torch.allclose(full, expected, atol=1e-6)

    targets = torch.tensor([3, 5, 7, 2, 8])
    negatives = torch.tensor([2, 4, 5, 8])
    sampled = model.next_item_logits(states, batch, rows, positions, targets, negatives)
    columns = torch.cat([targets[:, None], negatives[None].expand(len(rows), -1)], 1)
    assert torch.allclose(sampled, expected.gather(1, columns), atol=1e-6)

    # The offsets' gradients count each member cell once.
    model.zero_grad()
    model.next_item_logits(states, batch, rows, positions).sum().backward()
    assert torch.isclose(model.repeat_bias.grad, own.sum()) and torch.isclose(model.circle_bias.grad, circle.sum())


def test_sampled_softmax_for_large_catalogues_scores_fewer_items_than_the_full_one(model):
    """With fewer negatives than items the loss runs over the target and a sample: a smaller
    partition function, so a lower loss than the full softmax on the same batch and weights."""
    row = {name: [2, 3, 4, 2, 3, 4, 2, 3, 4, 2] for name in FEATURES}
    row["source"] = [2] * 10
    row.update(length=10, valid_pos=8, test_pos=9)
    batch = collate(training_windows(row, 2, 10))
    model.eval()  # no dropout: the two losses see identical states
    full, _ = model(batch, mode="train")
    sampled_spec = EncoderSpec(**{**model.spec.to_dict(), "negatives": 8})
    sampled = ProfileEncoder(sampled_spec).eval()
    sampled.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    partial, _ = sampled(batch, mode="train")
    assert torch.isfinite(partial) and partial < full


def test_the_diversity_penalty_trains_only_the_interest_head_and_pulls_interests_apart(model):
    import dataclasses

    row = {name: [2, 3, 4, 2, 3, 4, 2, 3, 4, 2] for name in FEATURES}
    row["source"] = [2] * 10
    row.update(length=10, valid_pos=8, test_pos=9)
    batch = collate(training_windows(row, 2, 10) * 2)

    def interest_loss_and_grads(weight):
        encoder = ProfileEncoder(dataclasses.replace(model.spec, interest_diversity=weight)).eval()
        encoder.load_state_dict(model.state_dict())
        loss = encoder(batch, mode="train")[1]
        names, params = zip(*encoder.named_parameters())
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return loss, {n: torch.zeros_like(p) if g is None else g for n, p, g in zip(names, params, grads)}

    plain_loss, plain = interest_loss_and_grads(0.0)
    diverse_loss, diverse = interest_loss_and_grads(1.0)
    assert diverse_loss > plain_loss  # three interests over the same few events overlap
    penalty_grad = {n: diverse[n] - plain[n] for n in plain}
    assert penalty_grad["interest_query.weight"].abs().sum() > 0
    encoder_side = [n for n in plain if n.startswith(("blocks.", "embeddings.", "position."))]
    assert encoder_side and all(torch.allclose(penalty_grad[n], torch.zeros_like(plain[n])) for n in encoder_side)
    # a step against the penalty's gradient makes the interests overlap less
    stepped = ProfileEncoder(dataclasses.replace(model.spec, interest_diversity=1.0)).eval()
    stepped.load_state_dict({n: v - 0.5 * penalty_grad[n] if n in penalty_grad else v
                             for n, v in model.state_dict().items()})
    plain_after = ProfileEncoder(model.spec).eval()
    plain_after.load_state_dict(stepped.state_dict())
    assert stepped(batch, mode="train")[1] - plain_after(batch, mode="train")[1] < diverse_loss - plain_loss


def test_the_interest_head_scores_items_by_label_aware_attention_and_joins_with_its_weight(model):
    import dataclasses

    window = _window(6, seed=2)
    window["source"] = np.array([2, 2, 4, 2, 2, 2])  # own items and one circle item: both offsets apply
    batch = collate([window, _window(3, seed=4)])
    with torch.no_grad():
        model.repeat_bias.fill_(-2.0)
        model.circle_bias.fill_(1.0)
        sequential, interest = model.head_scores(batch)
        vectors = model(batch)["interest_embeddings"]  # the profile's interests: the same visible events
        last = batch["lengths"] - 1
        hidden, _ = model.encode(batch)
        plain = hidden[torch.arange(2), last] @ model.item_embedding.T
        for user in range(2):
            by_hand = torch.zeros(SIZES["item"])
            for item in range(SIZES["item"]):
                scores = vectors[user] @ model.item_embedding[item]
                by_hand[item] = (torch.softmax(scores, 0) * scores).sum()
            # Both heads carry the same offsets on the same items.
            assert torch.allclose(interest[user] - by_hand, sequential[user] - plain[user], atol=1e-5)
        assert (sequential - plain).abs().sum() > 0
        for weight in (0.0, 0.5):
            weighted = ProfileEncoder(dataclasses.replace(model.spec, interest_score_weight=weight)).eval()
            weighted.load_state_dict(model.state_dict())
            assert torch.allclose(weighted.score_next(batch), sequential + weight * interest, atol=1e-5)


def test_decayed_interest_weights_move_with_the_newer_events_and_ignore_a_common_factor(model):
    window = _window(10)
    ages = np.arange(10)[::-1]  # days older than the newest (the last) event
    with torch.no_grad():
        weights = {
            name: model(collate([{**window, "decay": decay}]))["interest_weights"][0]
            for name, decay in {"alike": np.ones(10), "decayed": np.exp2(-ages / 2.0),
                                "a day later": np.exp2(-(ages + 1) / 2.0)}.items()
        }
    assert torch.allclose(weights["decayed"].sum(), torch.tensor(1.0), atol=1e-5)
    assert not torch.allclose(weights["decayed"], weights["alike"], atol=1e-3)
    torch.testing.assert_close(weights["a day later"], weights["decayed"])
