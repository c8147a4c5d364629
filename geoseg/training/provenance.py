"""What a trained bundle records about its data, without the training machine's paths.

A bundle travels: its provenance names the data by file and folder names (``tiles``,
``labels.tif``) and keeps relative paths as given, but never an absolute path of the
machine it was trained on (``/home/me/project/tiles``), also not inside the recorded
command line.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

__all__ = ["portable"]

T = TypeVar("T")

# An absolute path (POSIX, or a Windows drive path): a separator not preceded by a name,
# a dot or a colon (so ``tiles/t0``, ``../x`` and ``https://`` are left alone), then
# components up to a space or a list separator. The last name is kept.
_ABSOLUTE = re.compile(
    r"(?<![\w.:/\\])(?:[A-Za-z]:)?[\\/][^\s,;+'\"]*")


def _name(match: re.Match[str]) -> str:
    name = re.split(r"[\\/]", match.group(0).rstrip("\\/"))[-1]
    return name or match.group(0)


def _strip(text: str) -> str:
    return _ABSOLUTE.sub(_name, text)


def portable(value: T) -> T:
    """``value`` (a provenance dict, list or string) with absolute paths cut to names.

    >>> portable({"train": "/home/me/tiles/t0, /home/me/tiles/t1",
    ...           "command": "/venv/bin/geoseg train /data/tiles -o m.safetensors"})
    {'train': 't0, t1', 'command': 'geoseg train tiles -o m.safetensors'}
    >>> portable("../tiles and p = value / 254")
    '../tiles and p = value / 254'
    """
    out: Any = value
    if isinstance(value, str):
        out = _strip(value)
    elif isinstance(value, dict):
        out = {k: portable(v) for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        out = type(value)(portable(v) for v in value)
    return cast("T", out)
