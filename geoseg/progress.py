"""Progress reporting: a tqdm bar, machine-readable JSON lines, or nothing.

The JSON form is the contract for callers such as the QGIS plugin: one object per line
on stderr, ``{"event": "progress", "fraction": 0.42}``, ``{"event": "log", "message":
...}`` and ``{"event": "done", "outputs": [...]}``; a failed run ends with ``{"event":
"error", "message": ...}`` and a stopped one with ``{"event": "terminated", "signal":
"SIGTERM"}`` (or ``"SIGINT"``) instead of ``done`` (see :func:`emit_event`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any, Literal

__all__ = ["JsonProgress", "NullProgress", "Progress", "TqdmProgress", "emit_event",
           "make_progress"]

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
