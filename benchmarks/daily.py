"""What a day costs: ``python -m benchmarks.daily --events 1e6 --runs 3``.

Day 1 ingests about N behaviour events (generated as ``benchmarks.speed`` does), builds the sequences,
trains one epoch (once, on the first run; the later runs score with that model) and scores every
user. Day 2 brings 1 % more events, the newest fifth of the events of 5 % of the users, as a folder of
the day's new rows, and runs ingest, sequences and infer with the same model. It prints per stage the
median day-2 wall against day 1's, the users sequences rebuilt and infer scored, the bytes each table
grew by per day, and how many users whose logs did not change kept identical profile embeddings
(within 1e-5).
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.speed import Timer, generated_input, machine, summarize
from profiling import tracking
from profiling.config import load_config, parse_overrides
from profiling.schemas import table

DAYS = (dt.date(2026, 1, 1), dt.date(2026, 1, 2))
STAGES = ("ingest", "sequences", "infer")
TABLES = ("behaviour_events", "preference_events", "social_edges", "items", "quarantine", "user_sequences",
          "vocabularies", "user_profile_embeddings", "user_interest_weights", "user_interest_evidence")
NEW_EVENTS_SHARE = 0.01
ACTIVE_USERS_SHARE = 0.05


def split_days(full: Path, out: Path, seed: int = 3) -> dict:
    """``out/day1`` and ``out/day2`` from one generated folder: day 2 holds the newest events of
    ACTIVE_USERS_SHARE of the users with behaviour, about NEW_EVENTS_SHARE of all events; day 1 the
    rest, with the other logs whole. Reused when ``out`` already holds them."""
    marker = out / "split.json"
    if marker.exists():
        return json.loads(marker.read_text())
    behaviour = pd.read_csv(full / "behaviour.csv.gz", dtype=str, keep_default_na=False)
    users = np.array(sorted(behaviour["user_id"].unique()))
    active = set(np.random.default_rng(seed).choice(users, round(len(users) * ACTIVE_USERS_SHARE), replace=False))
    share = NEW_EVENTS_SHARE / ACTIVE_USERS_SHARE  # of each active user's events, the newest
    ts = behaviour["ts"].astype("int64")
    newest_first = ts.groupby(behaviour["user_id"]).rank(method="first", ascending=False)
    per_user = behaviour.groupby("user_id")["ts"].transform("size")
    new = behaviour["user_id"].isin(active) & (newest_first <= (per_user * share).round().clip(lower=1))
    for day, rows in (("day1", behaviour[~new]), ("day2", behaviour[new])):
        (out / day).mkdir(parents=True, exist_ok=True)
        rows.to_csv(out / day / "behaviour.csv.gz", index=False, compression="gzip")
        for source in ("preference", "social", "items"):
            frame = pd.read_csv(full / f"{source}.csv.gz", dtype=str, keep_default_na=False)
            (frame if day == "day1" else frame.head(0)).to_csv(out / day / f"{source}.csv.gz", index=False,
                                                               compression="gzip")
    split = {"day1_events": int((~new).sum()), "day2_events": int(new.sum()), "active_users": len(active),
             "users": len(users)}
    marker.write_text(json.dumps(split))
    return split


def table_bytes(spark, config) -> dict[str, int]:
    """Bytes of each table's current version (DESCRIBE DETAIL)."""
    out = {}
    for name in TABLES:
        full = f"{config.catalog.database}.{name}"
        if spark.catalog.tableExists(full):
            out[name] = int(spark.sql(f"DESCRIBE DETAIL {full}").first()["sizeInBytes"])
    return out


def _stage(spark, config, stage: str, day: dt.date, version: str | None) -> dict:
    from profiling.infer import infer_profiles
    from profiling.ingest import ingest_logs
    from profiling.sequences import build_user_sequences

    with tracking.stage_run(config, stage, day) as run_id, Timer() as t:
        if stage == "ingest":
            result = ingest_logs(spark, config, day, run_id)
            figures = {"added": sum(q.added or 0 for q in result.counts.values())}
        elif stage == "sequences":
            figures = {"users": build_user_sequences(spark, config, day, run_id).users}
        else:
            figures = {"users": infer_profiles(spark, config, day, version, run_id).users}
    return {**t.figures(), **figures}


def unchanged_users_kept(spark, config, day2_input: Path) -> dict:
    """Users with no day-2 event and no edge to a user with one: how many kept their day-1 embedding."""
    db = config.catalog.database
    active = set(pd.read_csv(day2_input / "behaviour.csv.gz", dtype=str)["user_id"])
    edges = spark.table(f"{db}.social_edges").select("user_id", "other_user_id").toPandas()
    touched = active | set(edges[edges["user_id"].isin(active)]["other_user_id"]) \
        | set(edges[edges["other_user_id"].isin(active)]["user_id"])
    name = f"{db}.user_profile_embeddings"
    first, second = (spark.sql(table("user_profile_embeddings").snapshot_sql(name, f"DATE'{d}'"))
                     .select("user_id", "embedding").toPandas().set_index("user_id")["embedding"] for d in DAYS)
    first, second = first[~first.index.isin(touched)], second[~second.index.isin(touched)]
    common = first.index.intersection(second.index)
    kept = sum(np.allclose(first[u], second[u], atol=1e-5) for u in common)
    return {"unchanged_users": len(common), "identical_embeddings": int(kept)}


def run_once(spark, root: Path, data: Path, base_overrides: dict, config_file: str | None, run: int,
             version: str | None, log) -> tuple[dict, str]:
    """Both days in a catalog database of their own; returns the figures and the model version."""
    from profiling.train.launch import train_encoder

    figures: dict = {"days": {}, "bytes": []}
    spark.sql(f"DROP DATABASE IF EXISTS bench_daily_{run} CASCADE")  # a rerun of the benchmark starts afresh
    for number, day in enumerate(DAYS, start=1):
        config = load_config(config_file, {
            **base_overrides, "workdir": str(root), "input": {"dir": str(data / f"day{number}")},
            "catalog": {"database": f"bench_daily_{run}"},
            "train": {**base_overrides.get("train", {}), "epochs": 1, "patience": 1, "max_minutes": 10_000}})
        stages = {}
        for stage in STAGES:
            if stage == "infer" and version is None:
                with tracking.stage_run(config, "train", day) as run_id:
                    version = train_encoder(spark, config, day, run_id).model_version
            stages[stage] = _stage(spark, config, stage, day, version)
            log(f"[daily] run {run + 1} day {number} {stage}: {stages[stage]['wall_s']:.1f}s")
        figures["days"][number] = stages
        figures["bytes"].append(table_bytes(spark, config))
    figures["kept"] = unchanged_users_kept(spark, config, data / "day2")
    return figures, version


def report(runs: list[dict], split: dict) -> dict:
    out = {"machine": machine(), "split": split, "runs": len(runs), "stages": {}, "bytes_added": {}}
    for stage in STAGES:
        day1, day2 = (summarize([r["days"][d][stage] for r in runs]) for d in (1, 2))
        out["stages"][stage] = {"day1": day1, "day2": day2, "ratio": round(day2["wall_s"] / day1["wall_s"], 3)}
    total = {d: sum(runs[0]["bytes"][d].values()) for d in (0, 1)}
    out["bytes_added"] = {name: {"day1": runs[0]["bytes"][0].get(name, 0),
                                 "day2": runs[0]["bytes"][1][name] - runs[0]["bytes"][0].get(name, 0)}
                          for name in runs[0]["bytes"][1]}
    out["bytes_ratio"] = round((total[1] - total[0]) / total[0], 3)
    out["kept"] = [r["kept"] for r in runs]
    return out


def format_report(figures: dict) -> str:
    s = figures["split"]
    lines = [f"machine: {figures['machine']}",
             f"day 1: {s['day1_events']:,} behaviour events of {s['users']:,} users; day 2: {s['day2_events']:,} new "
             f"events of {s['active_users']:,} users; medians of {figures['runs']} runs",
             f"{'stage':<10} {'day 1 s':>8} {'day 2 s':>8} {'day2/day1':>9} {'users built d1 / d2':>22}  runs (day 2)"]
    for stage, f in figures["stages"].items():
        users = f"{f['day1'].get('users', 0):,.0f} / {f['day2'].get('users', 0):,.0f}" if stage != "ingest" else ""
        lines.append(f"{stage:<10} {f['day1']['wall_s']:>8.1f} {f['day2']['wall_s']:>8.1f} {f['ratio']:>9.3f} "
                     f"{users:>22}  {f['day2']['wall_s_runs']}")
    lines.append(f"{'table':<24} {'day 1 MB':>9} {'day 2 adds MB':>14}")
    for name, b in figures["bytes_added"].items():
        lines.append(f"{name:<24} {b['day1'] / 2**20:>9.2f} {b['day2'] / 2**20:>14.2f}")
    lines.append(f"day 2 adds {figures['bytes_ratio'] * 100:.1f} % of day 1's bytes")
    lines.append("users whose logs and circle did not change, identical embeddings: "
                 + ", ".join(f"{k['identical_embeddings']:,} of {k['unchanged_users']:,}" for k in figures["kept"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daily", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=float, default=1e6, help="Day 1's behaviour events (about)")
    parser.add_argument("--runs", type=int, default=3, help="Runs of both days; medians are reported")
    parser.add_argument("--config", help="YAML config (default: the shipped one)")
    parser.add_argument("--set", action="append", default=[], help="Config override, as for profiling")
    parser.add_argument("--workdir", default="work/bench-daily", help="Generated data, tables and MLflow store")
    parser.add_argument("--json", action="store_true", help="Print the report as one JSON object")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    overrides.setdefault("spark", {})["show_progress"] = False
    root = Path(args.workdir).resolve()
    events = int(args.events)
    full = root / "inputs" / f"events-{events}"
    generated_input(full, events, None)
    split = split_days(full, root / "inputs" / f"daily-{events}")
    from profiling.spark import build_spark_session

    spark = build_spark_session(load_config(args.config, {**overrides, "workdir": str(root)}))
    say = (lambda m: print(m, file=sys.stderr, flush=True))
    runs, version = [], None
    for run in range(args.runs):
        figures, version = run_once(spark, root, root / "inputs" / f"daily-{events}", overrides, args.config, run,
                                    version, say)
        runs.append(figures)
    out = report(runs, split)
    print(json.dumps(out) if args.json else format_report(out))


if __name__ == "__main__":
    main()
