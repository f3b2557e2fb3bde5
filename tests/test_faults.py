"""Faults a nightly job meets: two runs at once on one workdir, a training process killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from commands import ENV, PROFILING, profiling, sql_rows



@pytest.mark.slow
def test_two_runs_at_once_on_one_workdir_one_waits_its_turn_with_a_clear_message(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    profiling("generate", "--users", "40", "--out", str(data))
    args = ["ingest", "--input", str(data), "--workdir", str(work), "--snapshot-date", "2026-11-01",
            "--set", "spark.master=local[1]"]
    first = subprocess.Popen([PROFILING, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while not (work / ".lock").exists() or not (work / ".lock").read_text():
        assert time.time() < deadline and first.poll() is None, first.communicate()[1][-3000:]
        time.sleep(0.2)
    second = subprocess.run([PROFILING, *args], capture_output=True, text=True, env=ENV, timeout=600)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 2
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"workdir {work} is in use by pid {first.pid}" in errors[0], second.stderr[-2000:]
    assert "XSDB6" not in second.stderr and "Traceback" not in second.stderr
    # The first run's tables are whole: one commit each, and the counts it reported.
    counts = json.loads(out.strip().splitlines()[-1])
    assert sql_rows("SELECT count(*) AS n FROM profiling.behaviour_events", "--workdir", str(work)) == [{"n": counts["logs"]["behaviour"]["accepted"]}]
    history = sql_rows("DESCRIBE HISTORY profiling.behaviour_events", "--workdir", str(work))
    assert [h["operation"] for h in sorted(history, key=lambda h: h["version"])] == ["CREATE TABLE", "WRITE"]


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

    saved = list(work.glob("checkpoints/*/last.pt"))
    return torch.load(saved[0], map_location="cpu", weights_only=False)["epoch"] if saved else -1


@pytest.mark.slow
def test_a_killed_training_process_fails_cleanly_and_the_rerun_resumes_from_the_checkpoint(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    profiling("generate", "--users", "300", "--out", str(data))
    common = ["--workdir", str(work), "--snapshot-date", "2026-11-01", "--set", "spark.master=local[2]"]
    profiling("ingest", "--input", str(data), *common)
    profiling("sequences", *common)
    train = ["train", *common, "--set", "train.epochs=6", "--set", "train.patience=10", "--set", "model.dim=32"]
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
    assert resumed["resumed_after_epoch"] == saved + 1 and resumed["epochs_run"] == 6
    # The finished run's checkpoints are cleared, so the same command now trains from scratch.
    fresh = json.loads(profiling(*train).strip().splitlines()[-1])
    assert fresh["resumed_after_epoch"] == 0 and fresh["epochs_run"] == 6
    assert resumed["metrics"]["val_ndcg@10"] == pytest.approx(fresh["metrics"]["val_ndcg@10"], abs=0.02)

    # The same snapshot run again from scratch: the same model, bit for bit, and the same profile rows.
    profiling("infer", *common)
    first = _profiles(work)
    again = json.loads(profiling(*train).strip().splitlines()[-1])
    learned = [k for k in fresh["metrics"] if k.startswith(("val_", "train_loss", "train_interest_loss"))]
    assert {k: again["metrics"][k] for k in learned} == {k: fresh["metrics"][k] for k in learned}
    profiling("infer", *common)
    second = _profiles(work)
    assert second["model_version"].unique().tolist() != first["model_version"].unique().tolist()
    columns = ["user_id", "embedding", "interest_embeddings", "interest_weights"]
    assert len(first) == 300 and first[columns].equals(second[columns])


def _profiles(work: Path):
    """The newest user_profile_embeddings rows, read straight from the Delta table (sorted by user)."""
    from deltalake import DeltaTable

    table = DeltaTable(str(work / "warehouse" / "profiling.db" / "user_profile_embeddings"))
    rows = table.to_pandas(columns=["user_id", "embedding", "interest_embeddings", "interest_weights",
                                    "model_version"])
    for column in ("embedding", "interest_embeddings", "interest_weights"):  # arrays compare as lists
        rows[column] = rows[column].map(lambda v: [list(x) if hasattr(x, "__len__") else x for x in v])
    return rows.sort_values("user_id", ignore_index=True)


@pytest.mark.slow
def test_an_infer_killed_while_writing_leaves_the_old_snapshot_whole_and_a_rerun_completes(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    profiling("generate", "--users", "300", "--out", str(data))
    common = ["--workdir", str(work), "--snapshot-date", "2026-11-01", "--set", "spark.master=local[2]"]
    first = json.loads(profiling("run", "--input", str(data), *common, "--set", "train.epochs=1",
                                 "--set", "model.dim=16").strip().splitlines()[-1])
    table = work / "warehouse" / "profiling.db" / "user_profile_embeddings"
    before = set(table.rglob("*.parquet"))
    infer = subprocess.Popen([PROFILING, "infer", *common], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=ENV, start_new_session=True)
    deadline = time.time() + 600
    while not set(table.rglob("*.parquet")) - before:  # the new snapshot's files are being written
        assert infer.poll() is None and time.time() < deadline, infer.communicate()[1][-3000:]
        time.sleep(0.05)
    os.killpg(infer.pid, signal.SIGKILL)  # the driver, its JVM and its Python workers at once
    infer.wait(timeout=60)
    assert infer.returncode == -signal.SIGKILL

    query = ("SELECT count(*) AS n, count(DISTINCT user_id) AS users, count(DISTINCT mlflow_run_id) AS runs, "
             "min(mlflow_run_id) AS run FROM profiling.user_profile_embeddings WHERE snapshot_date = '2026-11-01'")
    [old] = sql_rows(query, "--workdir", str(work))
    # Files were written, but no commit names them: readers see the previous snapshot, whole.
    assert old["n"] == old["users"] == first["users"] and old["runs"] == 1
    profiling("infer", *common)
    [new] = sql_rows(query, "--workdir", str(work))
    assert new["n"] == new["users"] == first["users"] and new["runs"] == 1 and new["run"] != old["run"]
