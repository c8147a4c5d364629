"""Progress reporting: a tqdm bar, machine-readable JSON lines, or nothing.

The JSON form is the contract for callers such as the QGIS plugin: one object per line
on stderr, ``{"event": "progress", "fraction": 0.42}``, ``{"event": "log", "message":
...}`` and ``{"event": "done", "outputs": [...]}``; a failed run ends with ``{"event":
"error", "message": ...}`` and a stopped one with ``{"event": "terminated", "signal":
"SIGTERM"}`` (or ``"SIGINT"``) instead of ``done`` (see :func:`emit_event`).

Warnings (Python warnings and log records, routed here by the CLI through
:func:`report_warning` and :class:`ReportHandler`) print once per run: a ``Warning: ...``
line written around any tqdm bar, or in JSON mode ``{"event": "warning", "message": ...}``,
so the stream holds JSON lines only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, Literal

__all__ = ["JsonProgress", "NullProgress", "Progress", "ReportHandler", "TqdmProgress",
           "begin_reports", "emit_event", "make_progress", "report_warning", "said_if_slow"]

#: A step still running after this many seconds says what it does (see said_if_slow).
SLOW_STEP_S = 1.0

ProgressKind = Literal["bar", "json", "none"]


class Progress:
    """Base class: counts units of work; subclasses display them."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self._lock = threading.Lock()

    def start(self, total: int, desc: str = "") -> None:
        """Begin a run of ``total`` units."""
        self.total, self.done = max(int(total), 0), 0

    def advance(self, n: int = 1) -> None:
        """``n`` more units are done."""
        with self._lock:
            self.done += n
            self._show()

    def _show(self) -> None:
        """Display the current count (called with the lock held)."""

    def note(self, text: str) -> None:
        """Show ``text`` beside the count (e.g. the whole run's ETA); replaces the last."""

    def log(self, message: str) -> None:
        """Show a human-readable message to the user."""

    def finish(self, outputs: list[str]) -> None:
        """Report that the run completed and wrote ``outputs``."""

    def close(self) -> None:
        """Release the display (always called, also on failure)."""


class NullProgress(Progress):
    """Report nothing."""


class TqdmProgress(Progress):
    """A tqdm bar on stderr: units done (tiles, training steps), rate and ETA."""

    def __init__(self, stream: IO[str] | None = None, unit: str = "tile") -> None:
        super().__init__()
        self._stream = stream or sys.stderr
        self._unit = unit
        self._bar: Any = None

    def start(self, total: int, desc: str = "") -> None:
        from tqdm import tqdm

        super().start(total, desc)
        self.close()
        self._bar = tqdm(total=total, desc=desc, unit=self._unit, file=self._stream,
                         dynamic_ncols=True, leave=False, mininterval=0.5)

    def _show(self) -> None:
        if self._bar is not None:
            self._bar.n = self.done
            self._bar.refresh()

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def log(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=self._stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class JsonProgress(Progress):
    """One JSON object per line on stderr (throttled to ~10 lines per second)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self._stream = stream or sys.stderr
        self._last = 0.0
        self._note = ""

    def _emit(self, obj: dict[str, Any]) -> None:
        self._stream.write(json.dumps(obj) + "\n")
        self._stream.flush()

    def start(self, total: int, desc: str = "") -> None:
        super().start(total, desc)
        self._emit({"event": "progress", "fraction": 0.0})

    def _show(self) -> None:
        now = time.monotonic()
        if now - self._last >= 0.1 or self.done >= self.total:
            self._last = now
            frac = self.done / self.total if self.total else 1.0
            self._emit({"event": "progress", "fraction": round(min(frac, 1.0), 4),
                        **({"note": self._note} if self._note else {})})

    def note(self, text: str) -> None:
        self._note = text

    def log(self, message: str) -> None:
        self._emit({"event": "log", "message": message})

    def finish(self, outputs: list[str]) -> None:
        self._emit({"event": "done", "outputs": outputs})


def emit_event(event: str, stream: IO[str] | None = None, **fields: Any) -> None:
    """Write one JSON event line (``error``, ``terminated``) on stderr."""
    out = stream or sys.stderr
    out.write(json.dumps({"event": event, **fields}) + "\n")
    out.flush()


def make_progress(kind: str, *, unit: str = "tile") -> Progress:
    """``bar`` (tqdm, rate per ``unit``: ``tile/s``, ``step/s``), ``json`` or ``none``."""
    if kind == "bar":
        return TqdmProgress(unit=unit)
    if kind == "json":
        return JsonProgress()
    return NullProgress()


class _Reports:
    """The run's message form (text or JSON) and the warnings already shown."""

    def __init__(self) -> None:
        self.json = False
        self.seen: set[str] = set()
        self.lock = threading.Lock()


_REPORTS = _Reports()


def begin_reports(kind: str) -> None:
    """Start a run's messages: JSON events if ``kind == "json"``, else text lines.

    Forgets the warnings shown so far (each warning prints once per run).
    """
    with _REPORTS.lock:
        _REPORTS.json = kind == "json"
        _REPORTS.seen = set()


def _write_line(line: str, stream: IO[str] | None = None) -> None:
    """Write one text line on stderr, clearing and redrawing any tqdm bar around it."""
    out = stream or sys.stderr
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None:  # a bar may be on screen: tqdm.write clears and redraws it
        tqdm_module.tqdm.write(line, file=out)
    else:
        out.write(line + "\n")
        out.flush()


def report_warning(message: str, stream: IO[str] | None = None) -> None:
    """Show ``message`` as a warning, once per run (see :func:`begin_reports`)."""
    text = " ".join(str(message).split())  # one line
    with _REPORTS.lock:
        if text in _REPORTS.seen:
            return
        _REPORTS.seen.add(text)
        as_json = _REPORTS.json
    if as_json:
        emit_event("warning", stream, message=text)
    else:
        _write_line(f"Warning: {text}", stream)


class ReportHandler(logging.Handler):
    """Log records in the run's form (installed by the CLI on the root logger).

    Warnings and errors go through :func:`report_warning` (once each); lower levels
    become ``LEVEL: message`` lines or JSON ``log`` events.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                report_warning(message)
            elif _REPORTS.json:
                emit_event("log", message=" ".join(message.split()))
            else:
                _write_line(f"{record.levelname}: {message}")
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


@contextlib.contextmanager
def said_if_slow(say: Callable[[str], None], message: str,
                 after_s: float = SLOW_STEP_S) -> Iterator[None]:
    """Pass ``message`` to ``say`` once if the block is still running after ``after_s``.

    A step that is quick when cached (an exported model, a measured precision) says
    nothing then; the first, slow time it says what it is doing while it does it.
    """
    timer = threading.Timer(after_s, say, (message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
