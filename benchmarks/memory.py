"""Peak resident memory of this process's tree while a stage runs, sampled from /proc (Linux).

The Spark driver is this Python process plus its JVM (local mode runs the tasks inside it);
everything else below it counts as Python workers: Spark's Python workers and the training
processes TorchDistributor starts.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _processes() -> dict[int, tuple[int, int, bool]]:
    """pid -> (parent pid, resident bytes, is a JVM) for every process we may read."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            resident = int((entry / "statm").read_text().split()[1]) * _PAGE
            command = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except (OSError, IndexError, ValueError):  # the process ended while we looked
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        out[int(entry.name)] = (parent, resident, command.endswith(b"java"))
    return out


def tree_memory(root: int | None = None) -> tuple[int, int]:
    """(driver bytes, worker bytes) resident now under ``root`` (default: this process)."""
    root = os.getpid() if root is None else root
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in procs.items():
        children.setdefault(parent, []).append(pid)
    driver = procs.get(root, (0, 0, False))[1]
    workers = 0
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        _, resident, jvm = procs[pid]
        if jvm:
            driver += resident
        else:
            workers += resident
        stack.extend(children.get(pid, []))
    return driver, workers


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.driver_mb`` and ``peak.workers_mb``."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.driver = self.workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            driver, workers = tree_memory()
            self.driver, self.workers = max(self.driver, driver), max(self.workers, workers)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def driver_mb(self) -> float:
        return self.driver / 2**20

    @property
    def workers_mb(self) -> float:
        return self.workers / 2**20
