"""The DDP training loop that TorchDistributor runs in every process.

``train_worker`` takes one :class:`TrainingJob` (picklable, no Spark objects)
so the same function runs under ``local_mode`` on the driver and as Spark tasks
on a cluster. Rank 0 alone writes checkpoints and logs to MLflow, into the run the
driver opened (its id is passed in). Validation metrics are all-reduced, so
every rank takes the same early-stopping decision and returns the same result.

After every epoch rank 0 saves ``last.pt`` (model, optimizer, scheduler, early-
stopping state) atomically; a run that dies finds it on the next start and goes
on with the following epoch. Each epoch reseeds torch from (seed, epoch) and the
data order is a function of the epoch, so a resumed run retraces the epochs an
uninterrupted run would have trained.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from profiling.config import TrainConfig
from profiling.metrics import finalize, ranking_sums, target_ranks
from profiling.model.encoder import EncoderSpec, ProfileEncoder
from profiling.model.inputs import collate, target_window
from profiling.tracking import log_metrics_to_run
from profiling.train.data import TrainingBatches, rows_of_rank, worker_init


@dataclass(frozen=True)
class TrainingJob:
    """What every training process needs, sent whole by TorchDistributor to each of them."""

    train: TrainConfig
    spec: EncoderSpec
    files: tuple[str, ...]  # the parquet files of the pinned user_sequences version and snapshot
    eval_batch_size: int  # validation windows per forward pass (infer.batch_size)
    checkpoint_dir: Path
    tracking_uri: str
    mlflow_run_id: str | None  # the driver's run, which rank 0 logs each epoch's metrics to


def pick_device(use_gpu: bool) -> torch.device:
    """The GPU TorchDistributor assigned to this process, or the CPU."""
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("train.use_gpu is true but torch sees no CUDA device on this worker")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``train.precision``: "auto" is bf16 on a GPU that supports it, else none."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _validate(
    model: ProfileEncoder, job: TrainingJob, rank: int, world: int, device: torch.device,
    interest_weights: Sequence[float] = (0.0,),
) -> list[dict[str, float]]:
    """Full-ranking metrics of the validation targets of this rank's users, summed over all ranks,
    one dict per weight w of the scores ``next-item head + w * interest head``."""
    model.eval()
    ks = job.train.eval_k
    keys = sorted(["n", *(f"{m}@{k}" for m in ("recall", "ndcg") for k in ks)])
    totals = torch.zeros(len(interest_weights), len(keys), dtype=torch.float64)
    pending: list[tuple[dict, int]] = []

    def flush() -> None:
        batch = collate([w for w, _ in pending])
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            sequential, interest = model.head_scores(batch, interest=any(interest_weights))
        targets = torch.tensor([t for _, t in pending], device=device)
        for i, weight in enumerate(interest_weights):
            scores = sequential if weight == 0 else sequential + weight * interest
            sums = ranking_sums(target_ranks(scores, targets), ks)
            totals[i] += torch.tensor([sums[k] for k in keys], dtype=torch.float64)
        pending.clear()

    for row in rows_of_rank(job.files, rank, world):
        if row["valid_pos"] > 0:
            pending.append(target_window(row, row["valid_pos"], model.spec.max_len, model.spec.behaviour_idx))
            if len(pending) == job.eval_batch_size:
                flush()
    if pending:
        flush()
    packed = _all_reduce(totals, device)
    model.train()
    return [finalize(dict(zip(keys, row.tolist()))) for row in packed]


def _choose_interest_weight(model: ProfileEncoder, job: TrainingJob, rank: int, world: int, device: torch.device,
                            best: dict, best_path: Path) -> dict:
    """Let the interest head join next-item scoring with the weight (of ``train.interest_score_weights``)
    that ranks the validation targets best; rank 0 rewrites ``best.pt`` with it. Returns ``best``
    with the chosen weight and the validation metrics of the scores it gives."""
    weights = sorted(job.train.interest_score_weights)
    dist.barrier()  # rank 0 has written best.pt
    saved = torch.load(best_path, map_location=device, weights_only=False)
    model.load_state_dict(saved["model"])
    fused = _validate(model, job, rank, world, device, weights)
    key = f"ndcg@{job.train.eval_k[0]}"
    chosen = max(range(len(weights)), key=lambda i: (fused[i][key], -i))  # ties: the smaller weight
    metrics = {**best["metrics"], **{f"val_{k}": v for k, v in fused[chosen].items()},
               "interest_score_weight": weights[chosen]}
    if rank == 0:
        saved["spec"]["interest_score_weight"] = weights[chosen]
        _save({**saved, "metrics": metrics}, best_path)
        print(f"[train] interest head weight in next-item scores: {weights[chosen]} (validation {key} "
              f"{best['metrics'][f'val_{key}']:.4f} with the next-item head alone, {fused[chosen][key]:.4f})",
              flush=True)
    return {**best, "metrics": metrics}


def _all_reduce(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum over ranks; nccl reduces only CUDA tensors, so the values travel via the device."""
    values = values.to(device)
    dist.all_reduce(values)
    return values.cpu()


def _parameter_groups(model: ProfileEncoder, lr: float) -> list[dict]:
    """The scalar score offsets get a larger step and no decay: Adam moves a scalar by about lr per step,
    too slowly for an offset that must reach several units (e.g. "ratings are never repeated")."""
    offsets = [model.repeat_bias, model.circle_bias]
    rest = [p for p in model.parameters() if all(p is not o for o in offsets)]
    return [{"params": rest}, {"params": offsets, "lr": 50 * lr, "weight_decay": 0.0}]


def _save(state: dict, path: Path) -> None:
    """Write-then-rename, so a process killed while saving leaves the previous checkpoint whole."""
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def train_worker(job: TrainingJob) -> dict:
    """Train the encoder on this rank's share; return the best epoch and its validation metrics."""
    settings = job.train
    backend = "nccl" if settings.use_gpu else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = pick_device(settings.use_gpu)
    amp_dtype = autocast_dtype(device, settings.precision)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    torch.manual_seed(settings.seed)
    spec = job.spec
    model = ProfileEncoder(spec).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(_parameter_groups(model, settings.learning_rate), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    warmup = max(1, settings.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    checkpoints = job.checkpoint_dir
    dataset = TrainingBatches(job.files, rank, world, spec.behaviour_idx, spec.max_len, settings.batch_size,
                              settings.shuffle_buffer, settings.seed)
    loader = DataLoader(dataset, batch_size=None, collate_fn=collate, num_workers=settings.loader_workers,
                        worker_init_fn=worker_init, pin_memory=device.type == "cuda")

    best: dict = {"epoch": -1, "metrics": {}, "score": -math.inf}
    stale = 0
    first_epoch = 0
    if (checkpoints / "last.pt").exists():
        saved = torch.load(checkpoints / "last.pt", map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        best, stale, first_epoch = saved["best"], saved["stale"], saved["epoch"] + 1
        if rank == 0:
            print(f"[train] resuming after epoch {first_epoch} from {checkpoints / 'last.pt'}", flush=True)
    deadline = time.time() + 60 * settings.max_minutes
    epoch = first_epoch - 1
    # Killed after the epoch that ended it early: nothing is left to train.
    last_epoch = settings.epochs if stale < settings.patience else first_epoch
    for epoch in range(first_epoch, last_epoch):
        torch.manual_seed(settings.seed * 1000 + epoch)
        dataset.set_epoch(epoch)
        started = time.time()
        loss_sum, batches, positions = torch.zeros(2, device=device), 0, 0
        with ddp.join():
            for batch in loader:
                positions += int(batch["labels"].count_nonzero())  # on the CPU copy: no device sync
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                # Through the DDP wrapper's forward, so gradients are all-reduced.
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    seq_loss, interest_loss = ddp(batch, mode="train")
                loss = seq_loss + settings.interest_loss_weight * interest_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                batches += 1
                loss_sum += torch.stack([seq_loss.detach(), interest_loss.detach()]).float()  # no sync per batch
        loop_seconds = time.time() - started
        stats = _all_reduce(torch.cat([loss_sum.double().cpu(), torch.tensor([batches, positions],
                                                                                dtype=torch.float64)]), device)
        metrics = {
            "train_loss": stats[0].item() / max(stats[2].item(), 1),
            "train_interest_loss": stats[1].item() / max(stats[2].item(), 1),
            # Positions with a next-item label, over all ranks: what "training events/s" counts.
            "train_positions": stats[3].item(),
            "train_positions_per_s": stats[3].item() / max(loop_seconds, 1e-9),
            **{f"val_{k}": v for k, v in _validate(model, job, rank, world, device)[0].items()},
            "epoch_seconds": time.time() - started,
        }
        score = metrics[f"val_ndcg@{settings.eval_k[0]}"]
        improved = score > best["score"]
        if improved:
            best = {"epoch": epoch, "metrics": metrics, "score": score}
            stale = 0
        else:
            stale += 1
        if rank == 0:
            state = {"epoch": epoch, "model": model.state_dict(), "spec": spec.to_dict(), "metrics": metrics}
            if improved:
                _save(state, checkpoints / "best.pt")
            _save({**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "best": best, "stale": stale}, checkpoints / "last.pt")
            if job.mlflow_run_id:
                log_metrics_to_run(job.tracking_uri, job.mlflow_run_id, metrics, epoch)
            print(
                f"[train] epoch {epoch + 1}/{settings.epochs}: loss {metrics['train_loss']:.4f} "
                f"val ndcg@{settings.eval_k[0]} {score:.4f} ({metrics['epoch_seconds']:.1f}s, {int(stats[2])} batches)"
                + (" *" if improved else ""),
                flush=True,
            )
        # Every rank must stop at the same epoch: rank 0's clock decides.
        out_of_time = torch.tensor([float(time.time() > deadline)], device=device)
        dist.broadcast(out_of_time, src=0)
        if stale >= settings.patience or out_of_time.item():
            if rank == 0 and out_of_time.item():
                print(f"[train] stopping after epoch {epoch + 1}: train.max_minutes reached", flush=True)
            break
    best = _choose_interest_weight(model, job, rank, world, device, best, checkpoints / "best.pt")
    result = {"best_epoch": best["epoch"], "epochs_run": epoch + 1, "metrics": best["metrics"],
              "checkpoint": str(checkpoints / "best.pt"), "resumed_after_epoch": first_epoch}
    if rank == 0:
        (checkpoints / "result.json").write_text(json.dumps(result, indent=2))
    dist.barrier()
    dist.destroy_process_group()
    return result

