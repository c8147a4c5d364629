"""Run the ``geoseg`` command line in a child process (no QGIS imports here).

The plugin never imports geoseg, torch or numpy: geoseg lives in its own environment
(another Python, another numpy, GDAL and PROJ), so it is run as a subprocess with a
cleaned environment and read through its ``--progress json`` contract: one JSON object
per line on stderr, ``{"event": "progress", "fraction": 0.42}``, ``{"event": "log",
"message": ...}`` and ``{"event": "done", "outputs": [...]}``; any other line is text
(``Error: ...`` is geoseg's one-line failure message).

This module only uses the standard library so it can be unit-tested outside QGIS and
runs under any Python QGIS ships (3.9 on Windows).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MODELS",
    "SETTING_EXECUTABLE",
    "Cancelled",
    "GeosegFailed",
    "GeosegNotFound",
    "RunResult",
    "clean_env",
    "find_executable",
    "list_models",
    "models_cache_key",
    "parse_class_tags",
    "parse_event",
    "remove_partials",
    "run_geoseg",
    "stop",
    "write_models_cache",
]

SETTING_EXECUTABLE = "GEOSEG_EXECUTABLE"
DEFAULT_MODELS = ("deeplab", "unet", "dynamicworld")

# Variables QGIS (or OSGeo4W, or a conda activation) sets for its own Python, GDAL and
# PROJ. Passed on, they make geoseg's Python import QGIS's modules, or its GDAL/PROJ read
# another version's data (PROJ: "proj.db ... comes from another PROJ installation").
_SCRUBBED = frozenset({
    "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONEXECUTABLE",
    "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYQGIS_STARTUP", "VIRTUAL_ENV", "CONDA_PREFIX",
    "GDAL_DATA", "GDAL_DRIVER_PATH", "GDAL_PLUGINS", "GDAL_FILENAME_IS_UTF8",
    "PROJ_LIB", "PROJ_DATA", "PROJ_NETWORK", "PROJ_USER_WRITABLE_DIRECTORY",
    "LD_LIBRARY_PATH", "LD_PRELOAD", "DYLD_LIBRARY_PATH", "DYLD_FALLBACK_LIBRARY_PATH",
    "DYLD_FRAMEWORK_PATH", "QT_PLUGIN_PATH", "QT_QPA_PLATFORM_PLUGIN_PATH",
    "O4W_QT_PREFIX", "OSGEO4W_ROOT", "GISBASE",
})
_SCRUBBED_PREFIXES = ("QGIS_", "PYTHON_")

KILL_AFTER_S = 5.0  # SIGTERM first; SIGKILL if geoseg has not exited by then
POLL_S = 0.1


class GeosegNotFound(RuntimeError):
    """The geoseg executable could not be located."""


class GeosegFailed(RuntimeError):
    """geoseg exited with a non-zero status; the message is its one-line error."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


class Cancelled(RuntimeError):
    """The user cancelled; geoseg was stopped."""


class RunResult:
    """What a successful run reported: outputs, log lines and stdout."""

    def __init__(self, outputs: list[str], logs: list[str], stdout: str,
                 last_fraction: float | None) -> None:
        self.outputs = outputs
        self.logs = logs
        self.stdout = stdout
        self.last_fraction = last_fraction


def find_executable(setting: str | None = None,
                    env: dict[str, str] | None = None) -> str:
    """Locate geoseg: env ``GEOSEG_EXECUTABLE``, then the Processing setting, then PATH.

    Never ``sys.executable``: inside QGIS that is QGIS's own binary or whatever ``python3``
    comes first on PATH, not geoseg's environment.

    Raises
    ------
    GeosegNotFound
        None of the three names an existing executable.
    """
    env = os.environ if env is None else env
    for origin, value in (("environment variable GEOSEG_EXECUTABLE", env.get(SETTING_EXECUTABLE)),
                          ("Processing setting 'geoseg executable'", setting)):
        if value:
            path = Path(value).expanduser()
            if path.is_file() and os.access(str(path), os.X_OK):
                return str(path)
            raise GeosegNotFound(
                f"{origin} is {value!r}, which is not an executable file; point it at "
                "<geoseg environment>/bin/geoseg (Scripts\\geoseg.exe on Windows)")
    found = shutil.which("geoseg", path=env.get("PATH"))
    if found:
        return found
    raise GeosegNotFound(
        "geoseg executable not found: set Processing > Options > Providers > GeoSeg > "
        "'geoseg executable' to <geoseg environment>/bin/geoseg, or set GEOSEG_EXECUTABLE "
        "(run 'geoseg qgis install' to see the path)")


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Copy ``env`` (default ``os.environ``) without QGIS's Python, GDAL and PROJ settings."""
    env = dict(os.environ if env is None else env)
    out = {k: v for k, v in env.items()
           if k not in _SCRUBBED and not k.startswith(_SCRUBBED_PREFIXES)}
    out["PYTHONIOENCODING"] = "utf-8"
    out["PYTHONUNBUFFERED"] = "1"
    return out


def parse_event(line: str) -> dict[str, Any]:
    """Parse one stderr line: a JSON event, or ``{"event": "text", "message": line}``."""
    text = line.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("event"), str):
            return obj
    return {"event": "text", "message": text}


def parse_class_tags(tags: dict[str, str]) -> list[tuple[int, str, tuple[int, int, int]]]:
    """Classes ``(id, name, (r, g, b))`` from a geoseg class map's tags; ``[]`` if absent.

    geoseg writes ``class_ids`` ("0,1,2"), ``class_names`` ("a,b,c") and ``class_colors``
    ("r,g,b;r,g,b;..."). Colours fall back to grey when missing or malformed.
    """
    names = [n for n in (tags.get("class_names") or "").split(",") if n]
    if not names:
        return []
    try:
        ids = [int(i) for i in (tags.get("class_ids") or "").split(",") if i.strip()]
    except ValueError:
        ids = []
    if len(ids) != len(names):
        ids = list(range(len(names)))
    colors: list[tuple[int, int, int]] = []
    for chunk in (tags.get("class_colors") or "").split(";"):
        try:
            r, g, b = (int(c) for c in chunk.split(","))
            colors.append((r, g, b))
        except ValueError:
            break
    if len(colors) != len(names):
        colors = [(128, 128, 128)] * len(names)
    return list(zip(ids, names, colors))  # noqa: B905 (Python 3.9 in older QGIS)


def list_models(executable: str, cache: Path | None = None,
                timeout: float = 60.0) -> list[str]:
    """Names of geoseg's default models (``geoseg models --json``), cached on disk.

    Spawning geoseg costs seconds (it imports torch), and QGIS builds algorithms often,
    so the answer is kept in memory and in ``cache`` keyed by the executable's path and
    modification time. Falls back to :data:`DEFAULT_MODELS` if geoseg cannot answer.
    """
    try:
        key = models_cache_key(executable)
    except OSError:
        return list(DEFAULT_MODELS)
    if key in _MODELS_MEMO:
        return list(_MODELS_MEMO[key])
    if cache is not None:
        try:
            data = json.loads(cache.read_text(encoding="utf-8"))
            if data.get("key") == key and data.get("models"):
                _MODELS_MEMO[key] = [str(m) for m in data["models"]]
                return list(_MODELS_MEMO[key])
        except (OSError, ValueError, AttributeError):
            pass
    try:
        proc = subprocess.run([executable, "models", "--json"], capture_output=True,
                              text=True, timeout=timeout, env=clean_env(),
                              stdin=subprocess.DEVNULL, check=False, **_popen_flags())
        names = [str(m["name"]) for m in json.loads(proc.stdout)["models"]]
    except (OSError, ValueError, KeyError, TypeError, subprocess.SubprocessError):
        return list(DEFAULT_MODELS)
    if not names:
        return list(DEFAULT_MODELS)
    _MODELS_MEMO[key] = names
    if cache is not None:
        with contextlib.suppress(OSError):
            write_models_cache(cache, executable, names)
    return list(names)


_MODELS_MEMO: dict[str, list[str]] = {}


def models_cache_key(executable: str) -> str:
    """Key of :func:`list_models`'s disk cache: the executable's real path and mtime."""
    return f"{Path(executable).resolve()}:{os.stat(executable).st_mtime_ns}"


def write_models_cache(cache: Path, executable: str, names: list[str]) -> None:
    """Store ``names`` as :func:`list_models`'s answer for ``executable``."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": models_cache_key(executable), "models": names}),
                     encoding="utf-8")


def _popen_flags() -> dict[str, Any]:
    if sys.platform == "win32":  # no console window flashing up from the QGIS GUI
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {}


def _pump(stream: Any, name: str, q: queue.Queue[tuple[str, str | None]]) -> None:
    for line in iter(stream.readline, ""):
        q.put((name, line))
    q.put((name, None))


def stop(proc: subprocess.Popen[str], kill_after: float = KILL_AFTER_S) -> None:
    """SIGTERM ``proc`` (geoseg removes its partial outputs and exits 143), then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(kill_after)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def remove_partials(output: str) -> None:
    """Remove ``output`` and geoseg's hidden ``.NAME.*.partial*`` files beside it.

    geoseg removes its own temporaries on SIGTERM; this covers a SIGKILL.
    """
    path = Path(output)
    for p in [path, *path.parent.glob(f".{path.name}*.partial*")]:
        if p.is_dir() and not p.is_symlink():  # a chunked run's .partial.tails folder
            shutil.rmtree(p, ignore_errors=True)
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError:  # locked (Windows) or a directory: leave it
            pass


def run_geoseg(args: list[str], *, executable: str,
               on_progress: Callable[[float], None] = lambda f: None,
               on_log: Callable[[str], None] = lambda m: None,
               on_text: Callable[[str], None] = lambda m: None,
               is_canceled: Callable[[], bool] = lambda: False,
               kill_after: float = KILL_AFTER_S) -> RunResult:
    """Run ``executable args...`` and relay its JSON progress stream.

    Callbacks are called from the calling thread (QGIS feedback objects are not
    thread-safe); two reader threads only fill a queue.

    Raises
    ------
    Cancelled
        ``is_canceled()`` became true; geoseg got SIGTERM (SIGKILL after ``kill_after`` s).
    GeosegFailed
        geoseg exited non-zero; the message is its ``Error: ...`` line (or the last line).
    """
    proc = subprocess.Popen([executable, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", errors="replace", env=clean_env(),
                            bufsize=1, **_popen_flags())
    q: queue.Queue[tuple[str, str | None]] = queue.Queue()
    threads = [threading.Thread(target=_pump, args=(s, n, q), daemon=True)
               for s, n in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
    for t in threads:
        t.start()
    outputs: list[str] = []
    logs: list[str] = []
    texts: list[str] = []
    stdout: list[str] = []
    last: float | None = None
    open_streams = 2
    try:
        while open_streams:
            if is_canceled():
                stop(proc, kill_after)
                raise Cancelled("cancelled: geoseg was stopped")
            try:
                name, line = q.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            if name == "stdout":
                stdout.append(line)
                continue
            event = parse_event(line)
            kind = event["event"]
            if kind == "progress":
                try:
                    last = float(event["fraction"])
                except (KeyError, TypeError, ValueError):
                    continue
                on_progress(last)
            elif kind == "log":
                logs.append(str(event.get("message", "")))
                on_log(logs[-1])
            elif kind == "done":
                outputs = [str(o) for o in event.get("outputs") or []]
            elif kind == "error":  # geoseg's one-line error, as a JSON event
                texts.append(f"Error: {event.get('message', '')}")
            elif kind == "terminated":
                texts.append(f"geoseg was stopped ({event.get('signal', 'signal')})")
            elif event.get("message"):
                texts.append(event["message"])
                on_text(event["message"])
        while proc.poll() is None:
            if is_canceled():
                stop(proc, kill_after)
                raise Cancelled("cancelled: geoseg was stopped")
            time.sleep(POLL_S / 2)
    finally:
        if proc.poll() is None:  # an exception in a callback: never leave geoseg running
            stop(proc, kill_after)
        for t in threads:  # EOF follows the exit, unless a grandchild holds the pipe
            t.join(1.0)
        if not any(t.is_alive() for t in threads):
            for s in (proc.stdout, proc.stderr):
                if s is not None:
                    s.close()
    if proc.returncode != 0:
        errors = [t for t in texts if t.startswith("Error:")]
        message = (errors or texts or [f"geoseg exited with status {proc.returncode}"])[-1]
        if proc.returncode < 0 or proc.returncode in (130, 143):
            message = f"geoseg was stopped by signal ({proc.returncode}): {message}"
        raise GeosegFailed(message, proc.returncode)
    return RunResult(outputs, logs, "".join(stdout), last)

