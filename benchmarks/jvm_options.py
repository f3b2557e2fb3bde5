"""What JVM options cost or save for a short stage, and for a long-lived session: ``python -m benchmarks.jvm_options``.

The test suite starts dozens of JVMs that each live for a stage on tiny data. This runs one stage of
the ``profiling`` console script (the sequences stage of a small generated workdir) ``--runs`` times
with each set of options in ``SPARK_SUBMIT_OPTS`` (and the launcher's ``SPARK_LAUNCHER_OPTS``), and
prints the median wall seconds and the median CPU seconds the whole machine spent meanwhile (read from
/proc/stat: the JVM is not a child the shell waits for, so ``time`` would not count it). The third
set is the one tests/conftest.py gives every JVM of the suite, shared sessions included
(``benchmarks.suite_jvm``); ``--class-archive`` adds a fourth: the same with the suite's class archive. The client
compiler alone shrinks the JVM's default code cache from 240 to 48 MiB, which Spark's code overflows:
the JVM then spends its time flushing compiled code and compiling it again (the "Sweeper thread" and
"C1 CompilerThread" threads), unless the cache is given back its 240 MiB.

``--in-session N`` also runs the same stage N times in one process and its session, as a test worker's
shared session runs one test after another, and prints the CPU seconds (the process and its JVM) of the
first stage and the median of the others under each set. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.suite_jvm import JVM_FLAGS, class_archive, make_class_archive

SNAPSHOT = "2026-10-05"
C1_SMALL_CACHE = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xss4m"
SUITE = JVM_FLAGS
OPTIONS = {
    "default": "",
    "client compiler, serial collector, 4 MiB stacks": C1_SMALL_CACHE,
    "the same, 240 MiB code cache": SUITE,
}
# A session that lives for many stages, as each test worker's shared session does.
SESSION_OPTIONS = {
    "client compiler, serial collector, 4 MiB stacks": C1_SMALL_CACHE,
    "the same, 240 MiB code cache": SUITE,
    "both compilers, serial collector, 4 MiB stacks": "-XX:+UseSerialGC -Xss4m",
}
# One session running the stage again and again; prints the CPU seconds of each run.
IN_SESSION = """
import datetime as dt, os, sys
from benchmarks.suite_cpu import tree_cpu
from profiling.config import load_config
from profiling.pipeline import run_sequences
from profiling.spark import build_spark_session
config = load_config(overrides={"workdir": sys.argv[1], "spark": {"master": "local[2]", "shuffle_partitions": 2,
                                                                  "show_progress": False}})
spark = build_spark_session(config)
for _ in range(int(sys.argv[2])):
    before = tree_cpu(os.getpid())
    run_sequences(spark, config, dt.date.fromisoformat(sys.argv[3]))
    print(tree_cpu(os.getpid()) - before, flush=True)
"""


def busy_seconds() -> float:
    """CPU seconds every core has spent outside idle and I/O wait since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    cpu, wall = busy_seconds(), time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=900)
    return time.perf_counter() - wall, busy_seconds() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jvm_options", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3,
                        help="Runs of the stage's own JVM per set of options; medians are reported (0: none)")
    parser.add_argument("--workdir", default="work/jvm-options", help="Generated data and the workdir")
    parser.add_argument("--in-session", type=int, default=0, metavar="N",
                        help="Also run the stage N times in one session under each set")
    parser.add_argument("--class-archive", action="store_true",
                        help="Also the suite's options with its class archive (made first where missing)")
    args = parser.parse_args(argv)
    options_sets = dict(OPTIONS)
    if args.class_archive:
        archive = class_archive()
        if not archive.is_file():
            make_class_archive(archive)
        options_sets["the same, with the suite's class archive"] = f"{SUITE} -XX:SharedArchiveFile={archive}"
    profiling = str(Path(sys.executable).parent / "profiling")
    root = Path(args.workdir).resolve()
    data, work = root / "data", root / "work"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    if not (work / "warehouse").exists():
        subprocess.run([profiling, "generate", "--users", "60", "--out", str(data)], env=env, check=True,
                       capture_output=True)
        subprocess.run([profiling, "ingest", "--input", str(data), "--workdir", str(work), "--snapshot-date",
                        SNAPSHOT], env=env, check=True, capture_output=True)
    stage = [profiling, "sequences", "--workdir", str(work), "--snapshot-date", SNAPSHOT,
             "--set", "spark.master=local[2]"]
    if args.runs > 0:
        print("| SPARK_SUBMIT_OPTS | wall s (median) | CPU s (median) |")
        print("|---|---:|---:|")
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in options_sets}
        for _ in range(args.runs):  # the sets take turns, so that a noisy minute touches each of them
            for name, options in options_sets.items():
                # The launcher's class path is not the archive's: it gets the options without it.
                launcher = " ".join(o for o in options.split() if not o.startswith("-XX:SharedArchiveFile="))
                runs[name].append(timed(stage, {**env, "SPARK_SUBMIT_OPTS": options, "SPARK_LAUNCHER_OPTS": launcher}))
        for name, options in options_sets.items():
            wall, cpu = (statistics.median(r[i] for r in runs[name]) for i in (0, 1))
            shown = options.replace(str(archive), "<archive>") if args.class_archive else options
            print(f"| {name} (`{shown or 'none'}`) | {wall:.1f} | {cpu:.1f} |")
    if args.in_session < 2:
        return
    print(f"\n| SPARK_SUBMIT_OPTS, one session | CPU s, first stage | CPU s, median of the other {args.in_session - 1} |")
    print("|---|---:|---:|")
    for name, options in SESSION_OPTIONS.items():
        out = subprocess.run([sys.executable, "-c", IN_SESSION, str(work), str(args.in_session), SNAPSHOT],
                             env={**env, "SPARK_SUBMIT_OPTS": options, "SPARK_LAUNCHER_OPTS": options},
                             check=True, capture_output=True, text=True, timeout=1800)
        spent = [float(line) for line in out.stdout.split()]
        print(f"| {name} (`{options or 'none'}`) | {spent[0]:.1f} | {statistics.median(spent[1:]):.1f} |")


if __name__ == "__main__":
    main()
