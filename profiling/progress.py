"""What the job is doing: a line when a step starts and ends, and which step an unexpected failure hit.

Stages announce their steps here and nowhere else, as records of the ``profiling.progress`` logger;
the CLI renders them on the console (``profiling.console``), a spark-submit run logs them as lines.
The CLI prints a stack trace for failures nobody foresaw; the last line then says what the job was
doing (``error: ... while validating the behaviour log /data/behaviour.csv.gz``), which a trace of
JVM frames rarely does.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

# A record attribute: the message is news of the moment (a training epoch, say), which a console may
# show in its status line in passing instead of keeping a line of it.
PASSING = "passing"

_running: list[str] = []
_failed: list[str] = []


@contextlib.contextmanager
def step(text: str) -> Iterator[None]:
    """Log ``text`` as started and finished (with its wall time); remember it if it raises.

    Each record carries ``step`` (the text), ``phase`` (started, finished, failed) and, once it
    ended, ``seconds``: what a console needs to show the running step as a status line and each
    finished one as a line of its own.
    """
    if not _running:  # a new outermost step: whatever failed before was handled by someone
        _failed.clear()
    _running.append(text)
    start = time.monotonic()
    log.info("%s", text, extra={"step": text, "phase": "started"})
    try:
        yield
    except BaseException:
        if not _failed:  # the innermost step names the failure best
            _failed.append(text)
        seconds = time.monotonic() - start
        log.info("%s: failed after %.1f s", text, seconds, extra={"step": text, "phase": "failed", "seconds": seconds})
        raise
    else:
        seconds = time.monotonic() - start
        log.info("%s: done in %.1f s", text, seconds, extra={"step": text, "phase": "finished", "seconds": seconds})
    finally:
        _running.pop()


def interrupted_step() -> str | None:
    """The step a failure interrupted (or the one running now), if any."""
    return _failed[0] if _failed else (_running[-1] if _running else None)


class _WorkerLines(io.TextIOBase):
    """A text stream that logs the lines starting with ``marker`` (without it) to ``logger``, as
    passing messages, and passes every other line on to ``rest``."""

    def __init__(self, marker: str, logger: logging.Logger, rest) -> None:
        super().__init__()
        self.marker, self.logger, self.rest = marker, logger, rest
        self.pending = ""
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self._route(line)
        return len(text)

    def _route(self, line: str) -> None:
        if line.startswith(self.marker):
            self.logger.info("%s", line[len(self.marker):], extra={PASSING: True})
        else:
            self.rest.write(line + "\n")

    def flush(self) -> None:
        self.rest.flush()

    def close_pending(self) -> None:
        if self.pending:
            self._route(self.pending)
            self.pending = ""


@contextlib.contextmanager
def worker_lines(marker: str, logger: logging.Logger) -> Iterator[None]:
    """Log the lines starting with ``marker`` that other processes print as passing messages of ``logger``.

    TorchDistributor relays its processes' output to the driver: to ``sys.stdout`` in local mode,
    to ``sys.stderr`` from a cluster's executors. Their other lines go on to ``sys.stderr``, where
    the CLI keeps what is not profiling's own (a log file, unless ``--verbose``), and the command's
    stdout stays for its result.
    """
    relay = _WorkerLines(marker, logger, sys.stderr)
    with contextlib.redirect_stdout(relay), contextlib.redirect_stderr(relay):
        try:
            yield
        finally:
            relay.close_pending()
