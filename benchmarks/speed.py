"""Speed of every stage at given sizes: ``python -m benchmarks.speed --events 1e5 --events 1e6``.

For each size it generates logs with ``profiling generate`` (behaviour events as asked, preference
and social logs in proportion), ingests them once, then runs the sequences stage, one training
epoch and the infer stage ``--runs`` times, and beside them the limits they are measured against:
the pyarrow reference of the sequences stage (``benchmarks/reference.py``), the training feed alone,
and the bare forward pass of the trained encoder in one Python process. It prints, per stage, the
median wall seconds, events/s or users/s, peak driver and worker memory and the output sizes, then
the log-log slopes of wall time against events and the ratios the targets are stated in.
``--skew-heavy H`` adds the skew check: the sequences stage with one user of H events among
``--skew-users`` normal users against the same total spread over normal users.

Everything runs in one Spark session (driver memory from the config); each size has its own
catalog database and MLflow store under ``--workdir``. Figures, not assertions: each run's
figures go to a dated file under docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.memory import PeakMemory
from benchmarks.reference import reference_sequences
from profiling import tracking
from profiling.config import ProfilingConfig, load_config, parse_overrides
from profiling.generate import generate_logs
from profiling.tables import local_path, read_snapshot

SNAPSHOT = dt.date(2026, 1, 1)
STAGES = ("sequences", "reference", "train", "loader", "infer", "forward")
MEAN_EVENTS_PER_USER = 70  # profiling generate's default (20 to 120 per user)
SILENT_SHARE = 0.03  # generated users without behaviour


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


class Timer:
    """Wall seconds and peak memory of one block."""

    def __enter__(self) -> Timer:
        self.memory = PeakMemory().__enter__()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        self.memory.__exit__(*exc)

    def figures(self) -> dict:
        return {"wall_s": self.seconds, "peak_driver_mb": round(self.memory.driver_mb),
                "peak_workers_mb": round(self.memory.workers_mb)}


def generated_input(folder: Path, events: int, users: int | None) -> dict:
    """Logs with about ``events`` behaviour events (reused when the folder already holds them)."""
    marker = folder / "counts.json"
    if marker.exists():
        return json.loads(marker.read_text())
    users = users or max(10, round(events / MEAN_EVENTS_PER_USER / (1 - SILENT_SHARE)))
    mean = max(2.0, events / (users * (1 - SILENT_SHARE)))
    low, high = max(1, round(0.3 * mean)), max(2, round(1.7 * mean))
    counts = generate_logs(folder, users=users, events_per_user=(low, high))
    counts["users"] = users
    marker.write_text(json.dumps(counts))
    return counts


@dataclass(frozen=True)
class Setup:
    """What every size shares: the config file, the ``--set`` overrides, the folder everything goes to."""

    config: str | None
    overrides: dict
    root: Path

    def session_config(self) -> ProfilingConfig:
        return load_config(self.config, {**self.overrides, "workdir": str(self.root)})

    def size_config(self, name: str, data: Path) -> ProfilingConfig:
        """This size's workdir, catalog database and input; one training epoch."""
        return load_config(self.config, {
            **self.overrides, "workdir": str(self.root / name), "input": {"dir": str(data)},
            "catalog": {"database": f"bench_{name}".replace("-", "_")},
            "train": {**self.overrides.get("train", {}), "epochs": 1, "patience": 1, "max_minutes": 10_000},
        })


def table_output(spark, config: ProfilingConfig, name: str) -> dict:
    df, _ = read_snapshot(spark, config, name, SNAPSHOT)
    files = df.inputFiles()
    return {"rows": df.count(), "mb": round(sum(os.path.getsize(local_path(f)) for f in files) / 2**20, 2)}


def _ingest(spark, config) -> dict:
    from profiling.ingest import ingest_logs

    with tracking.stage_run(config, "ingest", SNAPSHOT) as run_id, Timer() as t:
        result = ingest_logs(spark, config, SNAPSHOT, run_id)
    read = sum(c.read for c in result.counts.values())
    behaviour = result.counts["behaviour"].accepted
    return {**t.figures(), "behaviour_events": behaviour, "rows_read": read, "rows_per_s": read / t.seconds}


def _sequences(spark, config, behaviour: int) -> dict:
    from profiling.sequences import build_user_sequences

    with tracking.stage_run(config, "sequences", SNAPSHOT) as run_id, Timer() as t:
        result = build_user_sequences(spark, config, SNAPSHOT, run_id)
    return {**t.figures(), "users": result.users, "events_per_s": behaviour / t.seconds}


def _reference(spark, config, behaviour: int, out: Path) -> dict:
    files = {name: read_snapshot(spark, config, name, SNAPSHOT)[0].inputFiles()
             for name in ("behaviour_events", "preference_events")}
    with Timer() as t:
        done = reference_sequences(files["behaviour_events"], files["preference_events"], out,
                                   config.sequences.max_len, tuple(config.sequences.category_dimensions))
    return {**t.figures(), "users": done["users"], "events_per_s": behaviour / t.seconds}


def _train(spark, config) -> tuple[dict, str]:
    from profiling.train.launch import train_encoder

    with tracking.stage_run(config, "train", SNAPSHOT) as run_id, Timer() as t:
        result = train_encoder(spark, config, SNAPSHOT, run_id)
    m = result.metrics
    return {**t.figures(), "positions": m["train_positions"], "positions_per_s": m["train_positions_per_s"],
            "loop_s": m["train_positions"] / m["train_positions_per_s"],
            "per_process_positions_per_s": m["train_positions_per_s"] / config.train.num_processes
            }, result.model_version


def _sequence_files(spark, config) -> list[str]:
    return sorted(read_snapshot(spark, config, "user_sequences", SNAPSHOT)[0].inputFiles())


def _loader(spark, config) -> dict:
    """The training feed of one process alone (it reads every file here): positions/s it can deliver."""
    from torch.utils.data import DataLoader

    from profiling.model.inputs import collate
    from profiling.train.data import TrainingBatches
    from profiling.train.launch import snapshot_vocabulary

    sources = snapshot_vocabulary(spark, config, SNAPSHOT)[0].indices("source")
    t = config.train
    feed = TrainingBatches(_sequence_files(spark, config), 0, 1, sources.get("behaviour", -1),
                           config.model.max_len, t.batch_size, t.shuffle_buffer, t.seed)
    positions = 0
    with Timer() as timer:
        for batch in DataLoader(feed, batch_size=None, collate_fn=collate):
            positions += int(batch["labels"].count_nonzero())
    return {**timer.figures(), "positions": positions, "positions_per_s": positions / timer.seconds}


def _infer(spark, config, version: str) -> dict:
    from profiling.infer import infer_profiles

    with tracking.stage_run(config, "infer", SNAPSHOT) as run_id, Timer() as t:
        result = infer_profiles(spark, config, SNAPSHOT, version, run_id)
    return {**t.figures(), "users": result.users, "users_per_s": result.users / t.seconds}


def _forward(spark, config, version: str) -> dict:
    """The limit of the infer stage: the model's forward pass over every user's windows, one process,
    as many torch threads as Spark has task slots, the rows already in memory."""
    import pyarrow.dataset as ds
    import torch

    from profiling.model.inputs import collate, profile_chunks

    model = tracking.load_encoder(config, version).eval()
    threads = spark.sparkContext.defaultParallelism
    rows = ds.dataset([local_path(f) for f in _sequence_files(spark, config)], format="parquet").to_table(
        columns=["item", "category", "event_type", "source", "attribute", "gap_bucket", "value_bucket", "length"]
    ).to_pylist()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    size = config.infer.batch_size
    try:
        with Timer() as t, torch.no_grad():
            for start in range(0, len(rows), size):
                windows = [w for row in rows[start:start + size]
                           for _, w in profile_chunks(row, model.spec.max_len, model.spec.behaviour_idx)]
                model(collate(windows))
    finally:
        torch.set_num_threads(previous)
    return {**t.figures(), "users": len(rows), "users_per_s": len(rows) / t.seconds, "threads": threads}


def bench_size(spark, setup: Setup, events: int, users: int | None, runs: int,
               stages: tuple[str, ...], log=print) -> dict:
    """Ingest once, then every asked stage ``runs`` times; medians and every run's figures."""
    name = f"events-{events}"
    data = setup.root / "inputs" / name
    counts = generated_input(data, events, users)
    config = setup.size_config(name, data)
    log(f"[bench] {name}: {counts['users']} users, {counts['behaviour']} behaviour rows; ingest")
    ingest = _ingest(spark, config)
    behaviour = ingest["behaviour_events"]
    per_run: dict[str, list[dict]] = {s: [] for s in stages}
    version = None

    def record(stage: str, figures: dict, run: int) -> None:
        per_run[stage].append(figures)
        log(f"[bench] {name} run {run + 1}/{runs} {stage}: {figures['wall_s']:.1f}s")

    for run in range(runs):
        if "sequences" in stages:
            record("sequences", _sequences(spark, config, behaviour), run)
        elif run == 0:  # the other stages read its tables
            _sequences(spark, config, behaviour)
        if "reference" in stages:
            record("reference", _reference(spark, config, behaviour, setup.root / name / "reference.parquet"), run)
        if "train" in stages:
            figures, version = _train(spark, config)
            record("train", figures, run)
        elif version is None and {"infer", "forward"} & set(stages):
            _, version = _train(spark, config)
        if "loader" in stages:
            record("loader", _loader(spark, config), run)
        if "infer" in stages:
            record("infer", _infer(spark, config, version), run)
        if "forward" in stages:
            record("forward", _forward(spark, config, version), run)
    outputs = {t: table_output(spark, config, t) for t in
               ("behaviour_events", "user_sequences", "user_profile_embeddings", "user_interest_weights",
                "user_interest_evidence") if _exists(spark, config, t)}
    return {"events": behaviour, "users": counts["users"], "ingest": ingest, "outputs": outputs,
            "stages": {s: summarize(r) for s, r in per_run.items() if r}}


def _exists(spark, config, table: str) -> bool:
    return spark.catalog.tableExists(f"{config.catalog.database}.{table}")


def summarize(runs: list[dict]) -> dict:
    """Median of every figure over the runs, plus the wall seconds of each run."""
    out = {k: _median([r[k] for r in runs]) for k in runs[0] if isinstance(runs[0][k], (int, float))}
    out["wall_s_runs"] = [round(r["wall_s"], 2) for r in runs]
    return out


def slopes(sizes: list[dict]) -> dict:
    """Per stage, the log-log slope of median wall time against events between consecutive sizes."""
    out: dict[str, list[dict]] = {}
    ordered = sorted(sizes, key=lambda s: s["events"])
    for a, b in zip(ordered, ordered[1:]):
        for stage in ("sequences", "train", "infer"):
            if stage in a["stages"] and stage in b["stages"]:
                slope = (math.log(b["stages"][stage]["wall_s"]) - math.log(a["stages"][stage]["wall_s"])) / \
                        (math.log(b["events"]) - math.log(a["events"]))
                out.setdefault(stage, []).append({"from": a["events"], "to": b["events"], "slope": round(slope, 3)})
    return out


def linear_fits(sizes: list[dict]) -> dict:
    """Per stage, least squares ``wall = fixed + per_million * events / 1e6`` over the sizes, and the
    largest relative miss of that line: a slope below 1 with small misses is fixed cost, not bad scaling."""
    out = {}
    for stage in ("sequences", "train", "infer"):
        points = [(s["events"] / 1e6, s["stages"][stage]["wall_s"]) for s in sizes if stage in s["stages"]]
        if len(points) < 2:
            continue
        x, y = np.array(points).T
        per_million, fixed = np.polyfit(x, y, 1)
        miss = np.abs(fixed + per_million * x - y) / y
        out[stage] = {"fixed_s": round(float(fixed), 1), "s_per_million_events": round(float(per_million), 2),
                      "max_relative_miss": round(float(miss.max()), 3)}
    return out


def ratios(size: dict) -> dict:
    s = size["stages"]
    out = {}
    if "sequences" in s and "reference" in s:
        out["sequences_vs_reference"] = s["sequences"]["wall_s"] / s["reference"]["wall_s"]
    if "loader" in s and "train" in s:
        out["loader_vs_training_process"] = s["loader"]["positions_per_s"] / s["train"]["per_process_positions_per_s"]
    if "infer" in s and "forward" in s:
        out["infer_vs_forward"] = s["infer"]["users_per_s"] / s["forward"]["users_per_s"]
    return {k: round(v, 3) for k, v in out.items()}


def _heavy_user(path: Path, events: int, start_ts: int = 1_700_000_000) -> None:
    k = np.arange(events)
    frame = pd.DataFrame({"user_id": "heavy", "item_id": np.char.add("i", (k % 1000).astype(str)),
                          "event_type": np.where(k % 10 == 0, "buy", "view"), "ts": start_ts + k * 5,
                          "category": np.char.add("c", (k % 20).astype(str)), "value": ""})
    path.write_bytes(gzip.compress(frame.to_csv(index=False).encode(), compresslevel=1, mtime=0))


def bench_skew(spark, setup: Setup, normal_users: int, heavy: int, runs: int, log=print) -> dict:
    """Sequences stage: ``normal_users`` users plus one of ``heavy`` events, against the same total
    spread over more normal users."""
    cases = {}
    extra = round(heavy / MEAN_EVENTS_PER_USER / (1 - SILENT_SHARE))
    for case, users in (("with_heavy_user", normal_users), ("without", normal_users + extra)):
        name = f"skew-{case}-{normal_users}-{heavy}"
        data = setup.root / "inputs" / name
        if not (data / "counts.json").exists():
            generate_logs(data, users=users)
            behaviour = data / "behaviour"
            behaviour.mkdir(exist_ok=True)
            shutil.move(data / "behaviour.csv.gz", behaviour / "part-0.csv.gz")
            if case == "with_heavy_user":
                _heavy_user(behaviour / "part-1.csv.gz", heavy)
            (data / "counts.json").write_text("{}")
        config = setup.size_config(name, data)
        log(f"[bench] {name}: ingest")
        ingest = _ingest(spark, config)
        walls = []
        for run in range(runs):
            walls.append(_sequences(spark, config, ingest["behaviour_events"]))
            log(f"[bench] {name} run {run + 1}/{runs} sequences: {walls[-1]['wall_s']:.1f}s")
        cases[case] = {"events": ingest["behaviour_events"], "sequences": summarize(walls)}
    ratio = cases["with_heavy_user"]["sequences"]["wall_s"] / cases["without"]["sequences"]["wall_s"]
    return {"normal_users": normal_users, "heavy_events": heavy, **cases, "ratio": round(ratio, 3)}


def machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                                       / 2**30, 1),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def format_report(report: dict) -> str:
    lines = [f"machine: {report['machine']}"]
    head = f"{'events':>10} {'stage':<10} {'wall s':>8} {'rate':>22} {'driver MB':>10} {'workers MB':>11}  runs"
    lines.append(head)
    for size in report["sizes"]:
        for stage, f in {"ingest": size["ingest"], **size["stages"]}.items():
            rate = next(((f[k], k.removesuffix("_per_s") + "/s") for k in
                         ("events_per_s", "positions_per_s", "users_per_s", "rows_per_s") if k in f), (0, ""))
            lines.append(f"{size['events']:>10} {stage:<10} {f['wall_s']:>8.1f} {rate[0]:>12,.0f} {rate[1]:<9} "
                         f"{f['peak_driver_mb']:>10,.0f} {f['peak_workers_mb']:>11,.0f}  {f.get('wall_s_runs', '')}")
        lines.append(f"{'':>10} outputs: " + ", ".join(f"{t} {o['rows']:,} rows {o['mb']} MB"
                                                       for t, o in size["outputs"].items()))
        lines.append(f"{'':>10} ratios: {size['ratios']}")
    if report.get("slopes"):
        lines.append(f"log-log slopes of wall time vs events: {report['slopes']}")
    if report.get("linear_fits"):
        lines.append(f"wall = fixed + per million events: {report['linear_fits']}")
    if report.get("skew"):
        s = report["skew"]
        lines.append(f"skew: one user of {s['heavy_events']:,} events among {s['normal_users']:,} users: sequences "
                     f"{s['with_heavy_user']['sequences']['wall_s']:.1f}s vs {s['without']['sequences']['wall_s']:.1f}s "
                     f"without ({s['ratio']}x)")
    return "\n".join(lines)


def run(spark, setup: Setup, events: list[int], users: int | None, runs: int,
        stages: tuple[str, ...], skew: tuple[int, int] | None = None, log=print) -> dict:
    report = {"machine": machine(), "runs": runs, "sizes": []}
    for n in events:
        size = bench_size(spark, setup, n, users, runs, stages, log)
        size["ratios"] = ratios(size)
        report["sizes"].append(size)
    report["slopes"] = slopes(report["sizes"])
    report["linear_fits"] = linear_fits(report["sizes"])
    if skew:
        report["skew"] = bench_skew(spark, setup, skew[0], skew[1], runs, log)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", action="append", type=float, default=[],
                        help="Behaviour events to generate (repeatable: 1e5, 1e6, 1e7)")
    parser.add_argument("--users", type=int, help="Users (default: events / 70, like profiling generate)")
    parser.add_argument("--runs", type=int, default=3, help="Runs per stage; medians are reported")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"Comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--skew-users", type=float, default=1e5, help="Normal users of the skew check")
    parser.add_argument("--skew-heavy", type=float, default=0, help="Events of the heavy user (0: no skew check)")
    parser.add_argument("--config", help="YAML config (default: the shipped one)")
    parser.add_argument("--set", action="append", default=[], help="Config override, as for profiling")
    parser.add_argument("--workdir", default="work/bench", help="Generated data, tables and MLflow stores")
    parser.add_argument("--json", action="store_true", help="Print the report as one JSON object")
    args = parser.parse_args(argv)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"--stages: unknown {unknown}; choose from {', '.join(STAGES)}")
    if not args.events and not args.skew_heavy:
        parser.error("give --events N (repeatable) and/or --skew-heavy H")
    if args.users and len(args.events) > 1:
        parser.error("--users goes with a single --events")
    overrides = parse_overrides(args.set)
    overrides.setdefault("spark", {})["show_progress"] = False
    setup = Setup(args.config, overrides, Path(args.workdir).resolve())
    from profiling.spark import build_spark_session

    spark = build_spark_session(setup.session_config())
    say = (lambda m: print(m, file=sys.stderr, flush=True))
    report = run(spark, setup, [int(n) for n in args.events], args.users, args.runs, stages,
                 (int(args.skew_users), int(args.skew_heavy)) if args.skew_heavy else None, say)
    # The report is the last line of stdout (the training processes print there too).
    print(json.dumps(report) if args.json else format_report(report))


if __name__ == "__main__":
    main()
