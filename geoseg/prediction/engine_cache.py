"""The engine cache: where exported and compiled models live, and how they are written.

Entries are written under a temporary name and renamed under a file lock, so concurrent
runs never see a half-written model; an entry that no longer reads is rebuilt. Shared by the
engines (:mod:`geoseg.prediction.engines`), int8 quantisation
(:mod:`geoseg.prediction.quantize`) and the precision probe.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["build_once", "cache_dir"]


def cache_dir() -> Path:
    """Geoseg's cache: ``$GEOSEG_CACHE``, else ``$XDG_CACHE_HOME/geoseg``, else ~/.cache/geoseg."""
    env = os.environ.get("GEOSEG_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "geoseg"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``.NAME.lock`` beside ``path``; the lock file is removed after.

    :func:`geoseg._atomic.waiting_lock`: a second process (or thread) waits; the lock file
    is unlinked before it is unlocked, so failed runs leave no 0-byte lock files behind.
    """
    from geoseg._atomic import waiting_lock

    path.parent.mkdir(parents=True, exist_ok=True)
    with waiting_lock(path.parent / f".{path.name}.lock"):
        yield


def _readable(path: Path, *, warn: bool = False) -> bool:
    """Whether the cache entry ``path`` exists and reads as a model (ONNX, or OpenVINO IR).

    A corrupt entry (a truncated file, a disk error) reads as False, so it is built again
    (atomically, under its lock); with ``warn`` a one-line warning names the file. A
    cached head is parsed once more for this (milliseconds: ~65 ms for a 20 MB head).
    """
    if not path.is_file():
        return False
    try:
        if path.suffix == ".xml":
            import openvino as ov

            if not path.with_suffix(".bin").is_file():
                raise FileNotFoundError(f"{path.with_suffix('.bin').name} is missing")
            ov.Core().read_model(str(path))
        else:
            import onnx

            onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf/OpenVINO errors come in many kinds
        if warn:
            import warnings

            from geoseg.errors import GeosegWarning

            why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
            warnings.warn(f"the cached engine file {path} is corrupt ({type(exc).__name__}"
                          f"{': ' + why if why else ''}); rebuilding it", GeosegWarning,
                          stacklevel=3)
        return False
    return True


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}{path.suffix}")


def build_once(path: Path, build: Callable[[], None]) -> Path:
    """Return the cache entry ``path``, ``build()``-ing it first if it is missing or corrupt.

    Checked without the lock first (the usual case: it is there), then again under it, so
    one process builds while the others wait and then use its result.
    """
    if _readable(path):
        return path
    with _locked(path):
        if not _readable(path, warn=True):
            build()
    return path
