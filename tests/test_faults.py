"""Faults a nightly job meets: a workdir in use, a training process killed mid-run, an infer killed mid-write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from commands import ENV, PROFILING, SMALL_SPARK, profiling, table_frame
from conftest import CLI_SNAPSHOT

EPOCHS = 6  # the kill lands after the second: epochs of 60 users are short, the window is four of them



HOLD_THE_LOCK = """
import sys
from profiling.config import load_config
from profiling.workdir import lock_workdir
lock_workdir(load_config(overrides={"workdir": sys.argv[1]}))
print("held", flush=True)
sys.stdin.read()
"""


def test_a_run_on_a_workdir_in_use_is_refused_in_one_line_naming_the_holder(tmp_path):
    """The holder takes the lock as every stage does, first thing, before its JVM; the refused run must
    stop before starting one (a second JVM on the embedded catalog dies deep in Derby with XSDB6)."""
    data, work = tmp_path / "data", tmp_path / "work"
    profiling("generate", "--users", "40", "--out", str(data))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(work)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline() == "held\n"
        refused = subprocess.run([PROFILING, "ingest", "--input", str(data), "--workdir", str(work),
                                  "--snapshot-date", "2026-11-01"], capture_output=True, text=True, env=ENV,
                                 timeout=600)
    finally:
        holder.communicate(input="", timeout=60)
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"workdir {work} is in use by pid {holder.pid}" in errors[0], refused.stderr[-2000:]
    assert "XSDB6" not in refused.stderr and "Traceback" not in refused.stderr
    assert sorted(p.name for p in work.iterdir()) == [".lock"]  # no catalog, no log, no MLflow store


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _training_process(pid: int, rank: int) -> int | None:
    """The DDP worker of ``rank`` below process ``pid`` (torchrun gives each worker RANK in its environment)."""
    for child in _descendants(pid):
        try:
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and any(e.startswith(b"LOCAL_WORLD_SIZE=") for e in env):
            return child
    return None


def _last_epoch(work: Path) -> int:
    import torch

    saved = [p for p in work.glob("checkpoints/*/last.pt") if not (p.parent / "result.json").exists()]  # unfinished
    return torch.load(saved[0], map_location="cpu", weights_only=False)["epoch"] if saved else -1


@pytest.fixture(scope="module")
def prepared(cli_run):
    """The shared CLI workdir (a model, a snapshot of profiles): the faults below are injected into it, after
    the tests of the CLI and the console read it (modules run in name order on the cli worker)."""
    work = cli_run["workdir"]
    return work, ["--workdir", str(work), "--snapshot-date", CLI_SNAPSHOT, *SMALL_SPARK]


@pytest.mark.jvm
def test_a_killed_training_process_fails_cleanly_and_the_rerun_resumes_from_the_checkpoint(prepared):
    work, common = prepared
    train = ["train", *common, "--set", f"train.epochs={EPOCHS}", "--set", "train.patience=10", "--set", "model.dim=16"]
    run = subprocess.Popen([PROFILING, *train], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 600
    while _last_epoch(work) < 1:  # two epochs saved: the kill lands in the third
        assert run.poll() is None and time.time() < deadline, run.communicate()[1][-3000:]
        time.sleep(0.2)
    victim = _training_process(run.pid, rank=1)
    assert victim is not None, "no rank-1 training process found"
    os.kill(victim, signal.SIGKILL)
    _, err = run.communicate(timeout=600)
    assert run.returncode == 2, err[-3000:]
    saved = _last_epoch(work)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training failed" in errors[0], err[-3000:]
    assert f"rerun the train stage to resume after epoch {saved + 1}" in errors[0]

    resumed = json.loads(profiling(*train).strip().splitlines()[-1])
    assert resumed["resumed_after_epoch"] == saved + 1 and resumed["epochs_run"] == EPOCHS
    # A second version awaits the promotion gate: infer keeps scoring with the first.
    registry = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    aliases = {a: str(registry.get_model_version_by_alias("profiling-encoder", a).version)
               for a in ("challenger", "current")}
    assert aliases == {"challenger": resumed["model_version"], "current": "1"}


@pytest.mark.jvm
def test_an_infer_killed_while_writing_leaves_the_old_snapshot_whole_and_a_rerun_completes(prepared):
    work, common = prepared
    table = work / "warehouse" / "profiling.db" / "user_profile_embeddings"

    def snapshot() -> dict:
        rows = table_frame(work, "user_profile_embeddings")
        return {"n": len(rows), "users": rows["user_id"].nunique(), "runs": set(rows["mlflow_run_id"])}

    first, before = snapshot(), set(table.rglob("*.parquet"))
    infer = subprocess.Popen([PROFILING, "infer", *common], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=ENV, start_new_session=True)
    deadline = time.time() + 600
    while not set(table.rglob("*.parquet")) - before:  # the new snapshot's files are being written
        assert infer.poll() is None and time.time() < deadline, infer.communicate()[1][-3000:]
        time.sleep(0.05)
    os.killpg(infer.pid, signal.SIGKILL)  # the driver, its JVM and its Python workers at once
    infer.wait(timeout=60)
    assert infer.returncode == -signal.SIGKILL

    old = snapshot()
    # Files were written, but no commit names them: readers see the previous snapshot, whole.
    assert old == first and old["n"] == old["users"] > 0 and len(old["runs"]) == 1
    profiling("infer", *common)
    new = snapshot()
    assert new["n"] == new["users"] == old["users"] and len(new["runs"]) == 1 and new["runs"] != old["runs"]
