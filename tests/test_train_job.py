"""What TorchDistributor ships to every training process: one typed job, pickled whole, and the
fingerprint of its checkpoint folder, which names what shapes training and nothing else."""

from __future__ import annotations

import pickle

from pyspark import cloudpickle

from profiling.config import load_config, parse_overrides
from profiling.model.encoder import EncoderSpec
from profiling.model.inputs import FEATURES
from profiling.train.launch import training_fingerprint
from profiling.train.loop import TrainingJob

SPEC = EncoderSpec(vocab_sizes=dict.fromkeys(FEATURES, 10), max_len=8, dim=16, behaviour_idx=2, social_idx=4)
FILES = ("file:/work/warehouse/user_sequences/part-0.parquet",)


def test_a_training_job_survives_pickling_whole(tmp_path):
    job = TrainingJob(train=load_config(overrides={"train": {"epochs": 3}}).train, spec=SPEC, files=FILES,
                      eval_batch_size=16, checkpoint_dir=tmp_path, tracking_uri="sqlite:///mlflow.db",
                      mlflow_run_id="0123abcd")
    for codec in (pickle, cloudpickle):  # TorchDistributor pickles with cloudpickle
        again = codec.loads(codec.dumps(job))
        assert again == job and again.train.epochs == 3 and again.spec.vocab_sizes == SPEC.vocab_sizes


def test_the_fingerprint_ignores_the_time_budget_only():
    def fingerprint(*sets: str, eval_batch_size: int = 512) -> str:
        train = load_config(overrides=parse_overrides([f"train.{s}" for s in sets])).train
        return training_fingerprint(train, SPEC, FILES, eval_batch_size)

    assert fingerprint("max_minutes=5") == fingerprint("max_minutes=50") == fingerprint()
    others = [fingerprint("epochs=3"), fingerprint("seed=7"), fingerprint("num_processes=1"),
              fingerprint(eval_batch_size=64)]
    assert len({fingerprint(), *others}) == 1 + len(others)
