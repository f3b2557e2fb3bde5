"""The self-attention profile encoder (plain PyTorch; knows nothing of Spark).

An event is the sum of its dimension embeddings (item, category, event type,
source log, preference attribute, time-gap bucket, value bucket) plus a
position embedding. Causal multi-head self-attention layers turn the events
into hidden states ``H``; ``H[t] @ item_embedding.T`` scores the next item
(trained on every prefix, as in SASRec).

The multi-interest head (ComiRec-SA) reads the same states: K attention
distributions ``A[k, t]`` over the events give K interest vectors
``V[k] = sum_t A[k, t] H[t]``. During training, MIND-style label-aware
attention picks the interests that explain the target item. After training,
the interest head joins next-item scoring with a weight chosen on the
validation targets (``spec.interest_score_weight``; see :meth:`head_scores`).

What a profile says (no target needed):

* interest weight ``pi[k]`` = the share of the user's events that interest k
  accounts for: the mean over events t of ``softmax_k(V[k] . H[t] / sqrt(d))``;
* the profile embedding is ``u = sum_k pi[k] V[k]``;
* event importance ``a[t] = softmax_t(u . H[t] / (4 sqrt(d)))`` over the
  user's events: how strongly each event matches the whole profile (sums to
  1); a category's (event type's, source's) weight is the sum of ``a[t]`` over
  the events that carry it;
* evidence attention ``e[k, t] = softmax_t(V[k] . c[t])`` over the events
  that carry an item or a category, where ``c[t]`` is the event's content
  (its item and category embeddings): how well what the user did at t matches
  interest k, the same dot product that ranks items for that interest. Its top
  events are the interest's evidence. (The pooling attention ``A[k, t]`` reads
  contextual states, which mix earlier events into each position; on generated
  data its top events agreed with the interest's category half as often.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from profiling.model.inputs import FEATURES, FIRST_KEY, PAD
from profiling.model.vocabulary import Vocabulary

IMPORTANCE_TEMPERATURE = 4.0


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to rebuild the encoder: vocabulary sizes and model size."""

    vocab_sizes: dict[str, int]
    max_len: int
    dim: int = 64
    heads: int = 2
    layers: int = 2
    interests: int = 4
    dropout: float = 0.2
    negatives: int = 0  # sampled negatives per batch when the catalogue is larger; 0 = always full softmax
    behaviour_idx: int = -1  # source index of behaviour events (the user's own items)
    social_idx: int = -1  # source index of social context events (the circle's items)
    interest_diversity: float = 0.0  # weight of the penalty ||A A^T - I||^2 that keeps interests apart
    interest_score_weight: float = 0.0  # weight of the interest head in next-item scores (chosen on validation)

    def to_dict(self) -> dict:
        return asdict(self)


class ProfileEncoder(nn.Module):
    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        # The key of every index, set by the train stage before the model is registered (profiling.model.vocabulary).
        self.vocabulary: Vocabulary | None = None
        d = spec.dim
        self.embeddings = nn.ModuleDict(
            {name: nn.Embedding(spec.vocab_sizes[name], d, padding_idx=PAD) for name in FEATURES}
        )
        self.position = nn.Embedding(spec.max_len, d)
        self.input_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(spec.dropout)
        layer = nn.TransformerEncoderLayer(
            d, spec.heads, dim_feedforward=4 * d, dropout=spec.dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, spec.layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.interest_hidden = nn.Linear(d, 4 * d, bias=False)
        self.interest_query = nn.Linear(4 * d, spec.interests, bias=False)
        # Learned score offsets for items the user already had and items of the user's circle:
        # they let the model learn whether the platform's users repeat items (plays) or not (ratings).
        self.repeat_bias = nn.Parameter(torch.zeros(()))
        self.circle_bias = nn.Parameter(torch.zeros(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in [*self.embeddings.values(), self.position]:
            nn.init.normal_(emb.weight, std=0.02)
            if emb.padding_idx is not None:
                with torch.no_grad():
                    emb.weight[emb.padding_idx].zero_()

    @property
    def item_embedding(self) -> torch.Tensor:
        return self.embeddings["item"].weight

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (B, T, d) under a causal mask, and the padding mask (B, T), True = padding."""
        item = batch["item"]
        _, length = item.shape
        padding = item == PAD
        # A user with no events still gets a (generic) state: let position 0 be attended.
        padding = padding.clone()
        padding[:, 0] = False
        x = sum(self.embeddings[name](batch[name]) for name in FEATURES)
        x = x + self.position(torch.arange(length, device=item.device))[None]
        x = self.dropout(self.input_norm(x))
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=item.device), diagonal=1)
        hidden = self.blocks(x, mask=causal, src_key_padding_mask=padding, is_causal=True)
        return hidden, padding

    def interests(self, hidden: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ComiRec-SA: attention over the visible events (B, K, T) and interest vectors (B, K, d)."""
        scores = self.interest_query(torch.tanh(self.interest_hidden(hidden))).transpose(1, 2)
        scores = scores.masked_fill(~visible[:, None, :], float("-inf"))
        attention = torch.softmax(scores, dim=-1)
        return attention, attention @ hidden

    def _membership(
        self, batch: dict[str, torch.Tensor], rows: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted unique keys ``n * V + item`` of the items scored position n's user had before it (own:
        ``history`` and their behaviour events up to it) and of their circle's items up to it.

        Sparse on purpose: a dense (N, V) table per batch costs more than the scores themselves
        on a 16k-item catalogue, while a user holds at most a few hundred items.
        """
        item, source = batch["item"][rows], batch["source"][rows]
        visible = torch.arange(item.shape[1], device=item.device)[None] <= positions[:, None]
        n_items = self.item_embedding.shape[0]

        def keys(mask: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
            n, t = (mask & (item > 0)).nonzero(as_tuple=True)
            found = n * n_items + item[n, t]
            if extra is not None:
                n, h = (extra > 0).nonzero(as_tuple=True)
                found = torch.cat([found, n * n_items + extra[n, h]])
            return torch.unique(found)

        history = batch["history"][rows] if "history" in batch else None
        own = keys(visible & (source == self.spec.behaviour_idx), history)
        return own, keys(visible & (source == self.spec.social_idx))

    def next_item_logits(
        self,
        states: torch.Tensor,
        batch: dict[str, torch.Tensor],
        rows: torch.Tensor,
        positions: torch.Tensor,
        targets: torch.Tensor | None = None,
        negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of items as the next behaviour event after ``positions`` of ``rows``.

        ``states @ E_item`` plus the score offsets (:meth:`with_offsets`). Default: every item
        (N, V). With ``targets`` (N,) and shared, distinct ``negatives`` (S,): the target's score
        then the negatives' (N, 1 + S), for sampled softmax.
        """
        if negatives is None:
            return self.with_offsets(states @ self.item_embedding.T, batch, rows, positions)
        positive = (states * self.item_embedding[targets]).sum(-1, keepdim=True)
        logits = torch.cat([positive, states @ self.item_embedding[negatives].T], 1)
        return self.with_offsets(logits, batch, rows, positions, targets, negatives)

    def with_offsets(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], rows: torch.Tensor,
                     positions: torch.Tensor, targets: torch.Tensor | None = None,
                     negatives: torch.Tensor | None = None) -> torch.Tensor:
        """``logits`` (in place) plus the learned offsets for items the user had before (``history``
        and their own events up to the position) and for circle items. Columns are items, or with
        ``targets`` and ``negatives`` the target then the negatives."""
        own, circle = self._membership(batch, rows, positions)
        n_items = self.item_embedding.shape[0]
        if negatives is not None:
            column = torch.full((n_items,), -1, dtype=torch.long, device=logits.device)
            column[negatives] = torch.arange(1, len(negatives) + 1, device=logits.device)
        for keys, offset in ((own, self.repeat_bias), (circle, self.circle_bias)):
            n, col = keys // n_items, keys % n_items
            if negatives is not None:  # item -> its columns: 0 if it is the target, its negative's if sampled
                is_target, sampled = col == targets[n], column[col] >= 0
                n, col = torch.cat([n[is_target], n[sampled]]), torch.cat([0 * col[is_target], column[col[sampled]]])
            logits.index_put_((n, col), offset.to(logits.dtype).expand(len(n)), accumulate=True)  # bf16 autocast
        return logits

    def _loss(self, states, batch, rows, positions, targets) -> torch.Tensor:
        """Cross-entropy over all items, or over the target and shared sampled negatives for large catalogues."""
        n_items = self.item_embedding.shape[0]
        if not self.spec.negatives or n_items - 2 <= self.spec.negatives:
            return F.cross_entropy(self.next_item_logits(states, batch, rows, positions), targets)
        negatives = torch.randint(2, n_items, (self.spec.negatives,), device=states.device).unique()
        logits = self.next_item_logits(states, batch, rows, positions, targets, negatives)
        logits[:, 1:] = logits[:, 1:].masked_fill(negatives[None] == targets[:, None], float("-inf"))
        return F.cross_entropy(logits, torch.zeros_like(targets))

    def head_scores(
        self, batch: dict[str, torch.Tensor], interest: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Both heads' scores of every item as the event after each sequence's last one, (B, V) each
        (the interest head's is None unless ``interest``).

        The next-item head scores with ``H[last]``. The interest head scores item i as training's
        label-aware attention would: ``sum_k softmax_k(V[k] . e_i) V[k] . e_i`` over the interests
        of the whole sequence. Both carry the score offsets.
        """
        hidden, padding = self.encode(batch)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = (batch["lengths"] - 1).clamp(min=0)
        sequential = self.next_item_logits(hidden[rows, last], batch, rows, last)
        if not interest:
            return sequential, None
        _, vectors = self.interests(hidden, ~padding)
        per_interest = vectors @ self.item_embedding.T  # (B, K, V)
        label_aware = (torch.softmax(per_interest, dim=1) * per_interest).sum(1)
        return sequential, self.with_offsets(label_aware, batch, rows, last)

    def score_next(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores of every item as the event after each sequence's last one (B, V): the next-item
        head's plus ``interest_score_weight`` times the interest head's (:meth:`head_scores`)."""
        weight = self.spec.interest_score_weight
        sequential, interest = self.head_scores(batch, interest=weight != 0)
        return sequential if interest is None else sequential + weight * interest

    def training_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-item cross-entropy on every prefix, and the label-aware multi-interest loss."""
        hidden, _ = self.encode(batch)
        labels = batch["labels"]
        rows, positions = (labels > 0).nonzero(as_tuple=True)
        seq_loss = self._loss(hidden[rows, positions], batch, rows, positions, labels[rows, positions])
        # Interests see the events before the last labelled position's target.
        cut = batch["interest_cut"]  # (B,) events [0, cut) are visible; target item is interest_target
        target = batch["interest_target"]
        rows = (target > 0).nonzero(as_tuple=True)[0]
        positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
        visible = positions < cut[:, None]
        _, vectors = self.interests(hidden[rows], visible[rows])
        target_vec = self.item_embedding[target[rows]]
        choose = torch.softmax((vectors @ target_vec[:, :, None]).squeeze(-1), dim=-1)
        user = (choose[:, :, None] * vectors).sum(1)
        interest_loss = self._loss(user, batch, rows, cut[rows] - 1, target[rows])
        if self.spec.interest_diversity > 0:
            # Lin et al. 2017 (structured self-attentive embedding): interests attending to the same
            # events make A A^T far from I; the penalty pushes them onto different events. It reaches
            # only the interest head: the states H it reads are detached, so next-item ranking is untouched.
            attention, _ = self.interests(hidden[rows].detach(), visible[rows])
            eye = torch.eye(attention.shape[1], device=attention.device)
            overlap = ((attention @ attention.transpose(1, 2) - eye) ** 2).sum((1, 2)).mean()
            interest_loss = interest_loss + self.spec.interest_diversity * overlap
        return seq_loss, interest_loss

    def profile(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Profile of each user: embedding, interests, interest weights and event importance."""
        hidden, padding = self.encode(batch)
        visible = ~padding
        attention, vectors = self.interests(hidden, visible)
        fit = torch.softmax(hidden @ vectors.transpose(1, 2) / math.sqrt(self.spec.dim), dim=-1)  # (B, T, K)
        real = (batch["item"] != 0).float()
        # Each event's share of the interest weights: alike, or decayed by its age (profiling.decay).
        share = real * batch["decay"].to(real.dtype) if "decay" in batch else real
        counts = real.sum(1, keepdim=True)
        weights = (fit * share[:, :, None]).sum(1) / share.sum(1, keepdim=True).clamp(min=1e-30)
        weights = torch.where(counts > 0, weights, torch.full_like(weights, 1.0 / weights.shape[1]))
        embedding = (weights[:, :, None] * vectors).sum(1)
        # How strongly each event matches the whole profile; the temperature keeps it close to
        # "every event counts" while letting off-profile (noise) events count less.
        match = (hidden @ embedding[:, :, None]).squeeze(-1) / (IMPORTANCE_TEMPERATURE * math.sqrt(self.spec.dim))
        importance = torch.softmax(match.masked_fill(real == 0, float("-inf")), dim=-1).nan_to_num(0.0)
        return {
            "evidence_attention": self.evidence_attention(batch, vectors),
            "event_content": self.event_content(batch),
            "embedding": embedding,
            "interest_embeddings": vectors,
            "interest_weights": weights,
            "interest_attention": attention,
            "event_importance": importance,
        }

    def event_content(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T, d) each event's content ``c[t]``: its item and category embeddings (0 for what it lacks)."""
        has_item, has_category = batch["item"] >= FIRST_KEY, batch["category"] >= FIRST_KEY
        return (self.embeddings["item"](batch["item"]) * has_item[..., None]
                + self.embeddings["category"](batch["category"]) * has_category[..., None])

    def evidence_attention(self, batch: dict[str, torch.Tensor], vectors: torch.Tensor) -> torch.Tensor:
        """(B, K, T) ``softmax_t(V[k] . c[t])`` over events with an item or a category (0 elsewhere)."""
        has_item, has_category = batch["item"] >= FIRST_KEY, batch["category"] >= FIRST_KEY
        content = self.event_content(batch)
        scores = (vectors @ content.transpose(1, 2)).masked_fill(~(has_item | has_category)[:, None, :], float("-inf"))
        return torch.softmax(scores, dim=-1).nan_to_num(0.0)

    def forward(self, batch: dict[str, torch.Tensor], mode: str = "profile"):
        """``mode="train"``: the two training losses; ``"profile"``: :meth:`profile`."""
        return self.training_losses(batch) if mode == "train" else self.profile(batch)


def pack_encoder(model: ProfileEncoder, vocabulary: bool = True) -> bytes:
    """The encoder as bytes of plain tensors, numbers and strings: its spec, weights and (``vocabulary``)
    the key of every index. :func:`unpack_encoder` reads them back with ``weights_only``, so loading
    them runs no pickled code."""
    import io

    buffer = io.BytesIO()
    keys = {d: list(k) for d, k in model.vocabulary.keys.items()} if vocabulary and model.vocabulary else None
    torch.save({"spec": model.spec.to_dict(), "weights": model.state_dict(), "vocabulary": keys}, buffer)
    return buffer.getvalue()


def unpack_encoder(packed: bytes, device: torch.device | str = "cpu") -> ProfileEncoder:
    """The encoder of :func:`pack_encoder`'s bytes, on ``device``, in eval mode."""
    import io

    state = torch.load(io.BytesIO(packed), map_location=device, weights_only=True)
    model = ProfileEncoder(EncoderSpec(**state["spec"]))
    model.load_state_dict(state["weights"])
    if state.get("vocabulary") is not None:
        model.vocabulary = Vocabulary({d: tuple(k) for d, k in state["vocabulary"].items()})
    return model.to(device).eval()
