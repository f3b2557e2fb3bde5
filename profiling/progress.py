"""What the job is doing: a line when a step starts and ends, and which step an unexpected failure hit.

The CLI prints a stack trace for failures nobody foresaw; the last line then says what the job was
doing (``error: ... while validating the behaviour log /data/behaviour.csv.gz``), which a trace of
JVM frames rarely does.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

_running: list[str] = []
_failed: list[str] = []


@contextlib.contextmanager
def step(text: str) -> Iterator[None]:
    """Log ``text`` as started and finished (with its wall time); remember it if it raises."""
    _running.append(text)
    start = time.monotonic()
    log.info("%s", text)
    try:
        yield
    except BaseException:
        if not _failed:  # the innermost step names the failure best
            _failed.append(text)
        raise
    else:
        log.info("%s: done in %.1f s", text, time.monotonic() - start)
    finally:
        _running.pop()


def interrupted_step() -> str | None:
    """The step a failure interrupted (or the one running now), if any."""
    return _failed[0] if _failed else (_running[-1] if _running else None)
