"""The registered model as an MLflow pyfunc: it profiles users from their events given as keys.

A team loads ``models:/profiling-encoder@current`` wherever it serves or checks profiles, in an
environment that has never seen this repository. So the model carries everything it needs: the
encoder with the vocabulary it was trained with, the profile settings of the run that registered it,
and this package's model code (logged as ``code_paths``), with pinned requirements. Its input is
``user_sequences`` rows with keys in place of indices (``KEY_COLUMNS`` as strings, ``NUMBER_COLUMNS``
as ``user_sequences`` holds them); its output is what infer writes to ``user_profile_embeddings``,
computed by the same function (``profiling.model.profiles.profile_rows``), and each user's category,
event type and source weights of horizon ``short``.
"""

from __future__ import annotations

from dataclasses import replace

import mlflow.pyfunc
import numpy as np
import pandas as pd

from profiling.model.inputs import UNKNOWN
from profiling.model.profiles import WEIGHT_DIMENSIONS, ProfileSettings, profile_rows
from profiling.model.vocabulary import KEYED

KEY_COLUMNS = KEYED  # arrays of keys; a key the model never saw, or none, counts as unknown
NUMBER_COLUMNS = ("gap_bucket", "value_bucket", "ts")  # arrays of int, as user_sequences holds them
OUTPUT_COLUMNS = ("user_id", "embedding", "interest_embeddings", "interest_weights", "dimension_weights")


class PortableEncoder(mlflow.pyfunc.PythonModel):
    """The encoder (with its ``vocabulary``) and the ``settings`` it profiles with. Logged as code
    (``profiling/model/pyfunc_model.py``): MLflow builds it empty and :meth:`load_context` reads the
    encoder from the model's ``encoder`` artifact (``pack_encoder``'s bytes: no pickled code runs) and the
    settings from its model config."""

    def __init__(self, encoder=None, settings: ProfileSettings | None = None):
        self.encoder = encoder
        self.settings = settings

    def load_context(self, context) -> None:
        from pathlib import Path

        from profiling.model.encoder import unpack_encoder

        self.encoder = unpack_encoder(Path(context.artifacts["encoder"]).read_bytes())
        self.settings = ProfileSettings(**context.model_config)

    def _row(self, user: dict, index: dict[str, dict[str, int]]) -> dict:
        row = {"length": len(user["item"])}
        for column in KEY_COLUMNS:
            known = index[column]
            row[column] = np.array([known.get(k, UNKNOWN) if k is not None else UNKNOWN for k in user[column]],
                                   dtype=np.int64)
        for column in NUMBER_COLUMNS:
            row[column] = np.asarray(user[column], dtype=np.int64)
        return row

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """One profile per row of ``model_input``."""
        self.encoder.eval()
        vocabulary = self.encoder.vocabulary
        names = {d: vocabulary.names(d) for d in WEIGHT_DIMENSIONS}
        index = {c: vocabulary.indices(c) for c in KEY_COLUMNS}
        no_evidence = replace(self.settings, evidence_events=0)  # not part of the output
        users = model_input.to_dict("records")
        parts = []
        for start in range(0, len(users), self.settings.batch_size):
            batch = users[start:start + self.settings.batch_size]
            out = profile_rows(self.encoder, [self._row(u, index) for u in batch], names, no_evidence)
            parts.append(pd.DataFrame({
                "user_id": [u["user_id"] for u in batch],
                "embedding": [v.tolist() for v in out["embedding"]],
                "interest_embeddings": [[v.tolist() for v in kept] for kept in out["interest_embeddings"]],
                "interest_weights": [w.tolist() for w in out["interest_weights"]],
                "dimension_weights": [[{k: w[k] for k in ("dimension", "key", "weight")} for w in weights]
                                      for weights in out["dimension_weights"]],
            }))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(OUTPUT_COLUMNS))

    def example(self, rows: int = 2, events: int = 3) -> pd.DataFrame:
        """A small input of the model's own keys (for the logged signature and input example)."""
        keys = {c: ((list(self.encoder.vocabulary.indices(c)) or [None]) * events)[:events] for c in KEY_COLUMNS}
        return pd.DataFrame([{"user_id": f"example-{i}", **keys, "gap_bucket": [2] * events,
                              "value_bucket": [2] * events, "ts": [0] * events} for i in range(rows)])
