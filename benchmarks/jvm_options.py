"""What JVM options cost or save for a short stage: ``python -m benchmarks.jvm_options``.

The test suite starts dozens of JVMs that each live for a stage on tiny data. This runs one stage of
the ``profiling`` console script (the sequences stage of a small generated workdir) ``--runs`` times
with each set of options in ``SPARK_SUBMIT_OPTS`` (and the launcher's ``SPARK_LAUNCHER_OPTS``), and
prints the median wall seconds and the median CPU seconds the whole machine spent meanwhile (read from
/proc/stat: the JVM is not a child the shell waits for, so ``time`` would not count it). The second
set is the one tests/conftest.py gives every JVM of the suite. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SNAPSHOT = "2026-10-05"
OPTIONS = {
    "default": "",
    "client compiler, serial collector, 4 MiB stacks": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xss4m",
}


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
    parser.add_argument("--runs", type=int, default=3, help="Runs per set of options; medians are reported")
    parser.add_argument("--workdir", default="work/jvm-options", help="Generated data and the workdir")
    args = parser.parse_args(argv)
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
    print("| SPARK_SUBMIT_OPTS | wall s (median) | CPU s (median) |")
    print("|---|---:|---:|")
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in OPTIONS}
    for _ in range(args.runs):  # the sets take turns, so that a noisy minute touches each of them
        for name, options in OPTIONS.items():
            runs[name].append(timed(stage, {**env, "SPARK_SUBMIT_OPTS": options, "SPARK_LAUNCHER_OPTS": options}))
    for name, options in OPTIONS.items():
        wall, cpu = (statistics.median(r[i] for r in runs[name]) for i in (0, 1))
        print(f"| {name} (`{options or 'none'}`) | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
