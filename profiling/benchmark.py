"""Quality benchmark: the encoder and its baselines against the peers, per dataset.

Each dataset gets what a user would do: ``profiling run`` then ``profiling
evaluate --json``, each in its own process (a fresh Spark JVM and catalog per
workdir), with the shipped config. The run's wall time is measured around the
whole ``run`` command, Spark start to tables written. The figures are the
evaluate stage's test metrics; the peers come from ``peers.json`` (RecBole
runs on the same files, same protocol).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from profiling.exceptions import ConfigError, ProfilingError

COLUMNS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")


@dataclass
class DatasetBenchmark:
    dataset: str
    run_seconds: float
    users_evaluated: int
    models: dict[str, dict[str, float]]
    peers: dict[str, dict[str, float]] = field(default_factory=dict)
    fidelity: dict[str, float] | None = None
    cold_start: dict | None = None  # profiling.evaluate.evaluate_cold_start

    def best_peer(self, metric: str) -> tuple[str, float] | None:
        scored = [(name, figures[metric]) for name, figures in self.peers.items() if metric in figures]
        return max(scored, key=lambda p: p[1]) if scored else None

    def to_dict(self) -> dict:
        ratios = {}
        for metric in ("recall@10", "ndcg@10"):
            best = self.best_peer(metric)
            if best:
                ratios[metric] = {"best_peer": best[0], "ratio": round(self.models["profiling"][metric] / best[1], 3)}
        return {"dataset": self.dataset, "run_seconds": round(self.run_seconds, 1),
                "users_evaluated": self.users_evaluated, "models": self.models, "peers": self.peers,
                "vs_best_peer": ratios, **({"cold_start": self.cold_start} if self.cold_start else {}),
                **({"fidelity": self.fidelity} if self.fidelity else {})}


def _cli(args: list[str], log_file: Path) -> str:
    """Run a profiling subcommand in a fresh process; its stdout, or an error naming the log."""
    with log_file.open("a") as log:
        done = subprocess.run([sys.executable, "-m", "profiling.cli", *args], stdout=subprocess.PIPE,
                              stderr=log, text=True)
    if done.returncode != 0:
        raise ProfilingError(f"`profiling {args[0]}` failed (exit {done.returncode}); see {log_file}")
    return done.stdout


def benchmark_dataset(input_dir: Path, workdir: Path, peers: dict, config: Path | None = None,
                      ground_truth: Path | None = None, snapshot_date: str = "2026-01-01") -> DatasetBenchmark:
    """``profiling run`` + ``profiling evaluate --json`` on one dataset folder, in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    common = ["--workdir", str(workdir), "--snapshot-date", snapshot_date,
              *(["--config", str(config)] if config else [])]
    log_file = workdir / "benchmark.log"
    started = time.perf_counter()
    _cli(["run", "--input", str(input_dir), *common], log_file)
    seconds = time.perf_counter() - started
    evaluated = json.loads(_cli(["evaluate", "--json", *common,
                                 *(["--ground-truth", str(ground_truth)] if ground_truth else [])], log_file))
    return DatasetBenchmark(input_dir.name, seconds, evaluated["users_evaluated"], evaluated["models"],
                            peers.get(input_dir.name, {}), evaluated.get("fidelity"), evaluated.get("cold_start"))


def load_peers(path: Path | None) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def format_table(results: list[DatasetBenchmark]) -> str:
    """A markdown table of every model per dataset, the peers, and the encoder's ratio to the best peer."""
    head = "| dataset | model | " + " | ".join(COLUMNS) + " | whole run |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 3)]
    for r in results:
        for name, figures in r.models.items():
            wall = f"{r.run_seconds:.0f} s" if name == "profiling" else ""
            cells = [f"{figures[c]:.4f}" for c in COLUMNS] if figures else ["not fitted"] + [""] * (len(COLUMNS) - 1)
            lines.append(f"| {r.dataset} | {name} | " + " | ".join(cells) + f" | {wall} |")
        for name, figures in r.peers.items():
            wall = f"{figures['seconds']} s" if "seconds" in figures else ""
            lines.append(f"| {r.dataset} | {name} (peer) | "
                         + " | ".join(f"{figures[c]:.4f}" if c in figures else "" for c in COLUMNS) + f" | {wall} |")
    lines.append("")
    for r in results:
        for metric in ("recall@10", "ndcg@10"):
            best = r.best_peer(metric)
            if best:
                lines.append(f"{r.dataset}: profiling {metric} = {r.models['profiling'][metric] / best[1]:.2f} x "
                             f"best peer ({best[0]})")
        cold = r.cold_start or {}
        if cold.get("users"):
            figures = {m: (cold[m]["recall@10"], cold[m]["ndcg@10"]) for m in ("profiling", "popularity")}
            ratio = figures["profiling"][0] / figures["popularity"][0] if figures["popularity"][0] else float("inf")
            lines.append(f"{r.dataset}: cold start ({cold['users']} users from preference and social events alone) "
                         f"Recall@10 / NDCG@10: profiling {figures['profiling'][0]:.4f} / {figures['profiling'][1]:.4f}, "
                         f"most-popular {figures['popularity'][0]:.4f} / {figures['popularity'][1]:.4f} "
                         f"(Recall@10 {ratio:.2f} x)")
        if r.fidelity:
            lines.append(f"{r.dataset}: fidelity {r.fidelity}")
    return "\n".join(lines)
