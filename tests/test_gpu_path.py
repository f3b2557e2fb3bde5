"""The GPU code path, checked on a CPU machine for everything that does not need CUDA:
device selection, config validation, TorchDistributor's arguments and bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from profiling.config import load_config, parse_overrides
from profiling.exceptions import ConfigError
from profiling.infer import check_scoring_device, scoring_device
from profiling.model.encoder import EncoderSpec, ProfileEncoder
from profiling.model.inputs import FEATURES, collate, training_windows
from profiling.train.launch import distributor_args
from profiling.train.loop import autocast_dtype, pick_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU-only worker gives")


def _config(*sets: str):
    return load_config(overrides=parse_overrides(list(sets)))


def test_the_distributor_gets_the_configured_processes_and_gpu_flag():
    assert distributor_args(_config().train) == {"num_processes": 2, "local_mode": True, "use_gpu": False}
    gpu = _config("train.use_gpu=true", "train.num_processes=4")
    assert distributor_args(gpu.train, cuda_devices=4) == {"num_processes": 4, "local_mode": True, "use_gpu": True}
    cluster = _config("train.use_gpu=true", "train.local_mode=false", "train.num_processes=8")
    # GPUs on executors: the driver has none to count, Spark's task resources assign them.
    assert distributor_args(cluster.train, cuda_devices=0)["use_gpu"] is True


def test_local_gpu_training_with_too_few_gpus_fails_before_any_work_and_says_what_to_change():
    with pytest.raises(ConfigError) as err:
        distributor_args(_config("train.use_gpu=true", "train.num_processes=2").train, cuda_devices=1)
    message = str(err.value)
    assert "train.use_gpu" in message and "train.num_processes=2" in message and "sees 1 CUDA device" in message


def test_precision_is_validated_and_auto_means_full_precision_on_a_cpu():
    with pytest.raises(ConfigError, match="train.precision"):
        _config("train.precision=fp16")
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") is None
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16


def test_a_training_step_under_bf16_autocast_is_finite_and_reaches_every_parameter():
    torch.manual_seed(0)
    sizes = {"item": 40, "category": 8, "event_type": 6, "source": 5, "attribute": 6, "gap_bucket": 32,
             "value_bucket": 32}
    model = ProfileEncoder(EncoderSpec(vocab_sizes=sizes, max_len=12, dim=16, heads=2, layers=1, interests=2,
                                       behaviour_idx=2, social_idx=4)).train()
    row = {name: [2, 3, 4, 2, 3, 4, 2, 3, 4, 2] for name in FEATURES}
    row.update(source=[2] * 10, length=10, valid_pos=8, test_pos=9)
    batch = collate(training_windows(row, 2, 10) * 2)
    with torch.autocast("cpu", dtype=autocast_dtype(torch.device("cpu"), "bf16")):
        seq_loss, interest_loss = model(batch, mode="train")
    (seq_loss + interest_loss).backward()
    assert torch.isfinite(seq_loss) and torch.isfinite(interest_loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_devices_are_the_cpu_unless_a_gpu_is_asked_for():
    assert pick_device(False) == torch.device("cpu")
    assert scoring_device(False, ["3"]) == torch.device("cpu")


@no_cuda
def test_asking_for_a_gpu_on_a_worker_without_one_names_the_setting():
    with pytest.raises(RuntimeError, match="train.use_gpu"):
        pick_device(True)
    with pytest.raises(RuntimeError, match="infer.use_gpu"):
        scoring_device(True, ["0"])


def test_local_gpu_scoring_without_a_gpu_fails_before_spark_work():
    check_scoring_device(_config())  # CPU scoring: nothing to check
    check_scoring_device(_config("infer.use_gpu=true"), cuda_devices=1)
    check_scoring_device(_config("infer.use_gpu=true", "spark.master=spark://head:7077"), cuda_devices=0)
    with pytest.raises(ConfigError, match="infer.use_gpu"):
        check_scoring_device(_config("infer.use_gpu=true"), cuda_devices=0)
