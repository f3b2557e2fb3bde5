"""Where the test suite's CPU goes: ``make test PYTEST_ARGS="-p benchmarks.suite_cpu"``.

A pytest plugin. Each test's setup, call and teardown is charged the CPU seconds of its worker's
whole process tree: the worker, its shared session's JVM, and every process a test starts (a
``profiling`` run, its JVM and Python workers, spark-submit, Airflow). The suite is CPU-bound on
2 cores, so these sums, not the wall times ``--durations`` shows under contention, say what a change
saves. A JVM its parent never waits for (pyspark does not wait for its gateway's) would be handed to
init and its CPU lost: each worker makes itself the subreaper of its descendants, so such a process
stays a zombie of the worker, its CPU still readable, until the worker exits.

At the end, the totals per xdist group and per module are printed, and every phase of every test is
left in ``work/suite-cpu/<worker>.tsv`` (node id, phase, CPU s, wall s).
"""

from __future__ import annotations

import collections
import ctypes
import os
import time
from pathlib import Path

import pytest

OUT = Path(os.environ.get("SUITE_CPU_DIR", "work/suite-cpu"))
_TICK = os.sysconf("SC_CLK_TCK")
_PR_SET_CHILD_SUBREAPER = 36


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every live (or zombie) descendant, with the children each has reaped."""
    children: dict[int, list[int]] = {}
    spent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        spent[pid] = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += spent.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / _TICK


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def pytest_configure(config):
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) starts afresh
        OUT.mkdir(parents=True, exist_ok=True)
        for old in OUT.glob("*.tsv"):
            old.unlink()


def _charged(item, phase: str):
    cpu, wall = tree_cpu(os.getpid()), time.time()
    yield
    with (OUT / f"{_worker()}.tsv").open("a") as out:
        out.write(f"{item.nodeid}\t{phase}\t{tree_cpu(os.getpid()) - cpu:.1f}\t{time.time() - wall:.1f}\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield from _charged(item, "setup")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield from _charged(item, "call")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield from _charged(item, "teardown")


def pytest_terminal_summary(terminalreporter, config):
    if hasattr(config, "workerinput"):
        return
    groups: collections.Counter = collections.Counter()
    modules: collections.Counter = collections.Counter()
    for path in OUT.glob("*.tsv"):
        for line in path.read_text().splitlines():
            nodeid, _, cpu, _ = line.split("\t")
            modules[nodeid.split("::")[0]] += float(cpu)
            groups[nodeid.rsplit("@", 1)[1] if "@" in nodeid else "-"] += float(cpu)
    write = terminalreporter.write_line
    write(f"CPU seconds of the suite's process trees: {sum(modules.values()):.0f} (per phase: {OUT}/*.tsv)")
    write("by xdist group: " + ", ".join(f"{g} {s:.0f}" for g, s in groups.most_common() if s >= 1))
    write("by module: " + ", ".join(f"{Path(m).stem} {s:.0f}" for m, s in modules.most_common() if s >= 1))
