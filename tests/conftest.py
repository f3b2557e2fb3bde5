"""One SparkSession (with Delta and the Derby catalog) and one pipeline run per test session.

The session fixture follows Delta's own test base: a small local master, few
shuffle partitions, no UI. Tests that need a finished pipeline share the
``pipeline`` fixture, which runs every stage once on generated logs with a
handful of malformed rows planted in them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# Every run of the suite tracks into its own workdirs' stores, whatever tracking server the shell names.
os.environ.pop("MLFLOW_TRACKING_URI", None)
# Every JVM the suite starts (its sessions, the CLI's, spark-submit's, the cluster's) works on tiny data: the
# client compiler alone, interpreted expressions, and one class archive made before the workers start
# (benchmarks/suite_jvm.py; docs/performance.md, "The test suite's JVMs").
from benchmarks.suite_jvm import class_archive, make_class_archive, suite_environment  # noqa: E402

CLASS_ARCHIVE = class_archive()
for _variable, _value in suite_environment(CLASS_ARCHIVE).items():
    os.environ.setdefault(_variable, _value)

# Session fixtures of the standalone cluster and its run (imported after the environment above is set:
# tests/commands.py copies it for the processes it starts).
from cluster import cluster_run, standalone_cluster  # noqa: E402, F401

SNAPSHOT = dt.date(2026, 11, 1)


@pytest.fixture(autouse=True)
def _tracking_uri_not_exported():
    """``mlflow.set_tracking_uri`` in a test exports the URI as MLFLOW_TRACKING_URI; a profiling process a
    later test starts would take it for the operator's setting (profiling.config.ENVIRONMENT) and track
    into this session's store."""
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def pytest_configure(config):
    """Make the suite's class archive once per machine, before the workers start: every JVM after it maps
    the classes instead of loading them. Its start also resolves Delta's jars where no earlier start has:
    the workers' sessions wait for one another's resolution (``profiling.spark.first_resolution``), but the
    spark-submit lines of the cluster and Airflow tests resolve on their own, and Ivy's cache takes one
    downloader at a time."""
    if hasattr(config, "workerinput"):
        return
    from profiling.spark import resolved_delta_jars

    if CLASS_ARCHIVE.is_file() and resolved_delta_jars() is not None:
        return
    try:
        make_class_archive(CLASS_ARCHIVE)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.exit(str(exc), returncode=1)


def pytest_itemcollected(item):
    """Groups for ``pytest -n N --dist loadgroup`` (pytest-xdist; ``make test`` runs so), set as each
    test is collected, before xdist reads them. Each worker has its own JVM, workdir and session
    fixtures, so the tests of the shared CLI workdir run on one worker, those of the cluster's run on one,
    every in-process Spark test on one (one session, warmed by each test for the next, and the shared
    pipeline), and every other module whole on one (its module fixtures run once). A module that sets its
    group keeps it."""
    if item.get_closest_marker("xdist_group"):
        return
    needs = set(getattr(item, "fixturenames", ()))
    group = next((name for fixture, name in (("cli_run", "cli"), ("cluster_run", "cluster"), ("spark", "session"))
                  if fixture in needs), item.module.__name__)
    item.add_marker(pytest.mark.xdist_group(group))


# The longest groups first (their measured time, not their test count, decides): a worker that takes
# Airflow last would leave the others idle at the end. `make test` keeps this order (--no-loadscope-reorder).
LONGEST_FIRST = ("test_airflow", "session", "cli", "daily", "test_shared_mode", "speed", "cluster")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        group = item.get_closest_marker("xdist_group").args[0]
        return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: modules stay in order within a group


USERS = 150

# (source, row as CSV fields, reason code the ingest stage must give it)
BAD_ROWS = [
    ("behaviour", {"user_id": "", "item_id": "i00001", "event_type": "view", "ts": "1700000000"}, "missing_value"),
    ("behaviour", {"user_id": "u000001", "item_id": "i00001", "event_type": "view", "ts": "yesterday"},
     "bad_timestamp"),
    ("behaviour", {"user_id": "u000002", "item_id": "i00002", "event_type": "buy", "ts": "1700000100",
                   "value": "twelve"}, "bad_type"),
    ("behaviour", {"user_id": "u000003", "item_id": "i00003", "event_type": "buy", "ts": "1700000200",
                   "value": "NaN"}, "non_finite_value"),
    ("preference", {"user_id": "u000004", "dimension": "age", "key": "  "}, "missing_value"),
    ("social", {"user_id": "u000005", "other_user_id": "u000005", "relation": "friend"}, "self_loop"),
]


def _plant_telling_users(folder: Path) -> tuple[str, str]:
    """Two users whose weights the data dictates: a buyer devoted to one category, and a user
    with one event whose friends all share a category. Returns (buyer's category, friends' category)."""
    truth = pd.read_csv(folder / "ground_truth.csv.gz").sort_values("weight").groupby("user_id").tail(1)
    friends_category = truth["category"].value_counts().index[0]
    friends = truth[truth["category"] == friends_category]["user_id"].head(6)
    items = pd.read_csv(folder / "items.csv.gz", dtype=str)
    buyer_category = next(c for c in sorted(items["category"].unique()) if c != friends_category)
    shelf = items[items["category"] == buyer_category]["item_id"].head(10).tolist()
    behaviour = pd.read_csv(folder / "behaviour.csv.gz", dtype=str, keep_default_na=False)
    buys = [{"user_id": "buyer", "item_id": shelf[i % len(shelf)], "event_type": "buy", "ts": str(1_700_100_000 + i),
             "category": buyer_category, "value": "20.0"} for i in range(30)]
    views = [{"user_id": "buyer", "item_id": item, "event_type": "view", "ts": str(1_700_000_000 + i),
              "category": category, "value": ""}
             for i, (item, category) in enumerate(items[items["category"] != buyer_category][["item_id", "category"]]
                                                  .head(4).itertuples(index=False))]
    lonely = [{"user_id": "lonely", "item_id": shelf[0], "event_type": "view", "ts": "1760000000",
               "category": buyer_category, "value": ""}]
    pd.concat([behaviour, pd.DataFrame(views + buys + lonely)]).to_csv(
        folder / "behaviour.csv.gz", index=False, compression="gzip")
    social = pd.read_csv(folder / "social.csv.gz", dtype=str, keep_default_na=False)
    edges = pd.DataFrame({"user_id": "lonely", "other_user_id": friends, "relation": "friend", "ts": ""})
    pd.concat([social, edges]).to_csv(folder / "social.csv.gz", index=False, compression="gzip")
    return buyer_category, friends_category


UNLISTED_TYPES = ("tag", "watch_later")  # event types no shipped list names: real logs have such types


def _plant_unlisted_event_types(folder: Path) -> list[str]:
    """A few users also tag items and save them for later; returns those users."""
    behaviour = pd.read_csv(folder / "behaviour.csv.gz", dtype=str, keep_default_na=False)
    users = sorted(set(behaviour["user_id"]))[10:16]
    own = behaviour[behaviour["user_id"].isin(users) & (behaviour["ts"] != "")].groupby("user_id").tail(4)
    extra = [{**row, "event_type": UNLISTED_TYPES[i % 2], "ts": str(int(row["ts"]) + 1), "value": ""}
             for i, row in enumerate(own.to_dict("records"))]
    pd.concat([behaviour, pd.DataFrame(extra)]).to_csv(folder / "behaviour.csv.gz", index=False, compression="gzip")
    return users


def _plant_bad_rows(folder: Path) -> None:
    for source in ("behaviour", "preference", "social"):
        path = folder / f"{source}.csv.gz"
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        extra = pd.DataFrame([row for s, row, _ in BAD_ROWS if s == source], columns=frame.columns).fillna("")
        pd.concat([frame, extra]).to_csv(path, index=False, compression="gzip")


@pytest.fixture(scope="session")
def input_dir(tmp_path_factory) -> Path:
    from profiling.generate import generate_logs

    folder = tmp_path_factory.mktemp("input")
    generate_logs(folder, users=USERS, seed=11, events_per_user=(8, 40))
    (folder / "planted.txt").write_text(",".join(_plant_telling_users(folder)))
    (folder / "taggers.txt").write_text(",".join(_plant_unlisted_event_types(folder)))
    _plant_bad_rows(folder)
    return folder


@pytest.fixture(scope="session")
def config(tmp_path_factory, input_dir):
    from profiling.config import load_config

    return load_config(overrides={
        "workdir": str(tmp_path_factory.mktemp("work")),
        "input": {"dir": str(input_dir)},
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "show_progress": False},
        "sequences": {"max_len": 30},
        "model": {"dim": 32, "interests": 3},
        "train": {"epochs": 3, "patience": 3, "batch_size": 32, "warmup_steps": 5},
    })


@pytest.fixture(scope="session")
def spark(config):
    from profiling.spark import build_spark_session

    session = build_spark_session(config)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def pipeline(spark, config):
    from profiling.pipeline import run_pipeline

    return run_pipeline(spark, config, SNAPSHOT)


CLI_SNAPSHOT = "2026-10-05"
CLI_USERS = 60
CLI_EXPLAINED = "u000007"  # a user the CLI tests explain: never the one forgotten


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory) -> dict:
    """A workdir as the console script leaves it, shared by the tests of the CLI, privacy and SQL server:
    ``profiling generate`` (60 users), ``profiling run`` (snapshot 2026-10-05) in a JVM of its own, then
    ``profiling forget --users-file`` of one user: someone's friend with rows in every log and one row in
    quarantine. A module that changes the workdir further (test_faults: a training and an infer, killed and
    rerun) runs after those that read it as the run left it, and only adds to it. Returns workdir, forgotten
    user, the data files that named them before the forget, the forget's JSON summary, and the run's
    finished process (its stdout and stderr, as the console showed)."""
    from commands import ENV, PROFILING, SMALL_SPARK, files_naming, profiling

    root = tmp_path_factory.mktemp("cli")
    data, work = root / "data", root / "work"
    profiling("generate", "--users", str(CLI_USERS), "--out", str(data))
    social = pd.read_csv(data / "social.csv.gz", dtype=str, keep_default_na=False)
    behaviour = pd.read_csv(data / "behaviour.csv.gz", dtype=str, keep_default_na=False)
    preference = pd.read_csv(data / "preference.csv.gz", dtype=str, keep_default_na=False)
    own = set(behaviour["user_id"]) & set(preference["user_id"]) & set(social["user_id"])
    user = next(u for u in social["other_user_id"].value_counts().index if u in own and u != CLI_EXPLAINED)
    bad = behaviour[behaviour["user_id"] == user].head(1).assign(value="NaN")  # lands in quarantine
    pd.concat([behaviour, bad]).to_csv(data / "behaviour.csv.gz", index=False, compression="gzip")
    run = subprocess.run([PROFILING, "run", "--input", str(data), "--workdir", str(work), "--snapshot-date",
                          CLI_SNAPSHOT, "--set", "train.epochs=1", "--set", "model.dim=16", *SMALL_SPARK],
                         capture_output=True, text=True, env=ENV, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    before = files_naming(work / "warehouse", user)
    ids = root / "ids.txt"
    ids.write_text(f"{user}\n")
    forget = profiling("forget", "--workdir", str(work), "--users-file", str(ids), *SMALL_SPARK)
    forgotten = json.loads(forget.splitlines()[-1])
    return {"workdir": work, "user": user, "before": before, "forget": forgotten, "run": run}
