"""The ``profiling`` console script as the end-to-end tests run it: a separate process, loopback Spark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROFILING = str(Path(sys.executable).parent / "profiling")
ENV = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}


def profiling(*args: str, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    """Run ``profiling ARGS``; its stdout, or an AssertionError with the end of its stderr."""
    proc = subprocess.run([PROFILING, *args], capture_output=True, text=True, env={**ENV, **(env or {})},
                          timeout=timeout)
    assert proc.returncode == 0, f"profiling {' '.join(args[:2])} failed:\n{proc.stderr[-4000:]}"
    return proc.stdout


def sql_rows(query: str, *where: str) -> list[dict]:
    """Rows of ``profiling sql --format json``; ``where`` picks the catalog (--workdir W or --config C)."""
    return [json.loads(line) for line in profiling("sql", *where, "--format", "json", query).splitlines()]
