"""What a person running the CLI sees: profiling's own lines on the console, Spark's in a log file.

The JVM is a child process that pyspark starts with the parent's stdout and stderr, and the Python
workers and the JVM's other children inherit its descriptors in turn: Ivy's resolution report,
log4j's WARN lines from Hive and the metastore and Spark's stage bars reach the terminal through
file descriptors 1 and 2 from other processes, which no Python stream or logger setting reaches;
MLflow, py4j and torch's processes add their own lines through this process's stderr. So, from the
moment the CLI starts Spark to the end of the command, both descriptors point at
``<workdir>/logs/<command>-<UTC time>.log``, and only Python's ``sys.stdout`` (the command's
result) and the progress lines below keep copies of the original ones.

The progress lines are the ``profiling`` logger's records (``profiling.progress.step`` and the
stages' own messages), drawn with rich: the running step as a status line with a spinner, each
finished step as one line with its wall time, every other message as a line under its step.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from profiling.progress import PASSING

PLAIN_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")


def shown_path(path: Path | str) -> str:
    """``path`` relative to the current folder when it is inside it (what a user can paste), else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def profiling_command() -> str:
    """The command that runs profiling from the current folder: this interpreter's console script
    (``.venv/bin/profiling`` in the repository after ``make demo``, where ``profiling`` alone is not
    on PATH), or the interpreter with ``-m profiling.cli`` where there is no script."""
    script = Path(sys.executable).parent / "profiling"
    if script.exists():
        shown = shown_path(script)
        return shlex.quote(shown if os.sep in shown else f".{os.sep}{shown}")
    return f"{shlex.quote(shown_path(sys.executable))} -m profiling.cli"


@dataclass
class _RunningStep:
    text: str
    started: float  # time.monotonic()
    name: str  # the text without its parent step's, as shown
    shown: bool = False  # its name is on a line of its own above the lines it holds
    latest: str = ""  # its newest passing message (the status line shows it)


class ProgressLines(logging.Handler):
    """The ``profiling`` logger's records on a rich console.

    A finished step is one line with its wall time (``✓``; ``✗`` when it failed); any other record
    is one line, indented under the steps it came from, which get a line with their name first
    (without the parent's name, which ``ingest: validating ...`` repeats under ``ingest``). While
    the console is a terminal that nothing else writes to, the running steps and their time so far
    show as a status line with a spinner, which also shows passing messages (``progress.PASSING``,
    such as one line per training epoch) instead of keeping each.
    """

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console
        self.running: list[_RunningStep] = []
        self.spinner = Spinner("dots")
        self.live: Live | None = None
        self.status_line = False

    def show_status_line(self, on: bool) -> None:
        """Draw the running steps as a status line (only when this console has the terminal to itself)."""
        self.status_line = on and self.console.is_terminal
        self._refresh_live()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            phase = getattr(record, "phase", None)
            if phase == "started":
                self.running.append(_RunningStep(record.step, time.monotonic(), self._short(record.step)))
            elif phase in ("finished", "failed"):
                step = self.running.pop()
                done = phase == "finished"
                line = Text("✓ " if done else "✗ ", style="green" if done else "red")
                line.append(step.name)
                line.append(f"  {record.seconds:.1f} s", style="dim")
                self._line(line)
            elif getattr(record, PASSING, False) and self.status_line and self.running:
                self.running[-1].latest = record.getMessage()
            else:
                text = self._short(record.getMessage())
                self._line(Text(f"warning: {text}", style="yellow") if record.levelno >= logging.WARNING
                           else Text(text))
            self._refresh_live()
        except Exception:  # noqa: BLE001 - logging must not break the job
            self.handleError(record)

    def _short(self, text: str) -> str:
        parent = self.running[-1].text if self.running else None
        return text[len(parent) + 2:] if parent and text.startswith(f"{parent}: ") else text

    def _line(self, text: Text) -> None:
        for depth, step in enumerate(self.running):
            if not step.shown:
                self._print(depth, Text(step.name))
                step.shown = True
        self._print(len(self.running), text)

    def _print(self, depth: int, text: Text) -> None:
        self.console.print(Text("  " * depth) + text, soft_wrap=True, highlight=False)

    def _status(self) -> Spinner | Text:
        running = list(self.running)  # the live display refreshes from its own thread
        if not running:
            return Text()
        innermost = running[-1]
        shown = Text(" › ".join(step.name for step in running), no_wrap=True, overflow="ellipsis")
        if innermost.latest:
            shown.append(f": {innermost.latest}")
        shown.append(f"  {time.monotonic() - innermost.started:.0f} s", style="dim")
        self.spinner.update(text=shown)
        return self.spinner

    def _refresh_live(self) -> None:
        wanted = self.status_line and bool(self.running)
        if wanted and self.live is None:
            self.live = Live(console=self.console, get_renderable=self._status, transient=True,
                             redirect_stdout=False, redirect_stderr=False, refresh_per_second=8)
            self.live.start()
        elif not wanted and self.live is not None:
            self.live.stop()
            self.live = None


@dataclass
class SparkLog:
    """Where fds 1 and 2 point while Spark runs, and what to put back."""

    path: Path
    terminal_fds: tuple[int, int]  # copies of the original 1 and 2
    python_stdout: object  # sys.stdout before
    console_file: object  # the progress console's file before
    stamped: logging.Handler  # profiling's records, with their time, into the log file too
    terminal_streams: list  # Python streams on the copies, closed with them


_progress: ProgressLines | None = None
_spark_log: SparkLog | None = None


def show_progress(stream) -> ProgressLines:
    """Draw the ``profiling`` logger's records as progress lines on ``stream`` (the CLI's stderr)."""
    global _progress
    _progress = ProgressLines(Console(file=stream))
    return _progress


def _writes_to(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


def log_spark_output(log_dir: Path, command: str) -> Path:
    """Point fds 1 and 2 at a new log file in ``log_dir`` until :func:`restore_terminal`; Python's
    ``sys.stdout`` and the progress lines keep the terminal. Returns the file's path."""
    global _spark_log
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{command}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.log"
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    terminal = (os.dup(1), os.dup(2))
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    # Python's own stderr writes to the log now: profiling's records go there too, with their time.
    stamped = logging.StreamHandler(sys.stderr)
    stamped.setFormatter(PLAIN_FORMAT)
    logging.getLogger("profiling").addHandler(stamped)
    _spark_log = SparkLog(path, terminal, sys.stdout, _progress.console.file if _progress else None, stamped, [])
    if _writes_to(sys.stdout, 1):
        sys.stdout = os.fdopen(terminal[0], "w", buffering=1, encoding=sys.stdout.encoding,
                               errors=sys.stdout.errors, closefd=False)
        _spark_log.terminal_streams.append(sys.stdout)
    if _progress is not None:
        if _writes_to(_progress.console.file, 2):
            _progress.console.file = os.fdopen(terminal[1], "w", buffering=1, encoding=sys.stderr.encoding,
                                               errors=sys.stderr.errors, closefd=False)
            _spark_log.terminal_streams.append(_progress.console.file)
        _progress.show_status_line(True)
    return path


def restore_terminal() -> Path | None:
    """Put fds 1 and 2, ``sys.stdout`` and the progress lines back on the terminal; the log file's
    path if :func:`log_spark_output` made one. The JVM keeps writing to the log to the end."""
    global _spark_log
    spark_log, _spark_log = _spark_log, None
    if spark_log is None:
        return None
    logging.getLogger("profiling").removeHandler(spark_log.stamped)
    if _progress is not None:
        _progress.show_status_line(False)
        _progress.console.file = spark_log.console_file
    sys.stdout = spark_log.python_stdout
    for stream in spark_log.terminal_streams:
        stream.close()  # flushed; its descriptor is closed below
    sys.stderr.flush()
    for fd, saved in zip((1, 2), spark_log.terminal_fds):
        os.dup2(saved, fd)
        os.close(saved)
    return spark_log.path
