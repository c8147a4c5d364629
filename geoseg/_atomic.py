"""Atomic, never-clobbering output paths."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from geoseg.errors import OutputError, OutputExistsError

__all__ = ["atomic_path", "check_output", "partial_path"]


def check_output(dst: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Fail fast, before any compute, when ``dst`` cannot be (over)written.

    Parameters
    ----------
    dst : path
        The destination file.
    overwrite : bool
        Whether an existing ``dst`` may be replaced.

    Returns
    -------
    Path
        ``dst`` as an absolute path.

    Raises
    ------
    OutputExistsError
        ``dst`` exists and ``overwrite`` is false.
    OutputError
        The parent directory does not exist or is not writable, or ``dst`` is a directory.
    """
    path = Path(dst).expanduser().absolute()
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name for the output")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {parent} does not exist")
    if not _writable(parent):
        raise OutputError(f"cannot write {path}: directory {parent} is not writable")
    return path


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def partial_path(dst: Path, tag: str = "") -> Path:
    """Return the hidden temporary name used while ``dst`` is being written."""
    suffix = f".{tag}" if tag else ""
    return dst.with_name(f".{dst.name}{suffix}.{uuid.uuid4().hex[:8]}.partial{dst.suffix}")


@contextmanager
def atomic_path(dst: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; rename it onto ``dst`` only on success.

    A crash or exception never leaves a half-written file at ``dst`` and never touches an
    existing ``dst``. Sidecar files GDAL may write next to the temporary (``.aux.xml``,
    ``.ovr``) are removed too.
    """
    path = check_output(dst, overwrite=overwrite)
    tmp = partial_path(path)
    try:
        yield tmp
        if path.exists() and not overwrite:  # appeared while we were working
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml"),
                         tmp.with_name(tmp.name + ".ovr")):
            leftover.unlink(missing_ok=True)
