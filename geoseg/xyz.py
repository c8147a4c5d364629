r"""Georeferencing of XYZ (slippy-map) chips from their names.

OpenAerialMap, fAIr and most tile servers publish imagery as web-mercator tiles named by
their zoom ``z`` and column/row ``x``/``y``: ``z/x/y.png`` folders, or names ending in
``-X-Y-Z`` (``OAM-386690-220241-19.tif``). When such a chip carries no georeferencing of
its own (no CRS in the file or a ``.aux.xml``/world-file sidecar), its CRS is EPSG:3857
and its bounds those of tile ``(z, x, y)`` (XYZ/Google scheme: row 0 at the north).

The name patterns are regular expressions with named groups ``x``, ``y`` and ``z``,
searched in the path with ``/`` separators; :func:`xyz_pattern` replaces them for a block
of code (the CLI's ``--xyz-pattern``)::

    with xyz_pattern(r"tile_(?P<z>\d+)_(?P<x>\d+)_(?P<y>\d+)"):
        geoseg.predict("tiles/tile_19_386690_220241.png", "out.tif")
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from affine import Affine

from geoseg.errors import InputError

__all__ = ["DEFAULT_PATTERNS", "tile_transform", "xyz_georef", "xyz_pattern"]

#: Default name patterns: ``.../z/x/y.ext`` and ``...-X-Y-Z.ext``.
DEFAULT_PATTERNS = (
    r"(?:^|/)(?P<z>\d{1,2})/(?P<x>\d+)/(?P<y>\d+)\.[A-Za-z0-9]+$",
    r"-(?P<x>\d+)-(?P<y>\d+)-(?P<z>\d{1,2})\.[A-Za-z0-9]+$",
)

#: Half the side of the web-mercator square, in metres.
_ORIGIN = math.pi * 6378137.0

_PATTERNS: ContextVar[tuple[str, ...]] = ContextVar("geoseg_xyz_patterns",
                                                    default=DEFAULT_PATTERNS)


@contextmanager
def xyz_pattern(pattern: str | None) -> Iterator[None]:
    """Use ``pattern`` (a regex with groups ``x``, ``y``, ``z``) instead of the defaults.

    ``None`` keeps the defaults. Raises InputError for a pattern that does not compile or
    lacks one of the groups.
    """
    if pattern is None:
        yield
        return
    try:
        groups = set(re.compile(pattern).groupindex)
    except re.error as exc:
        raise InputError(f"--xyz-pattern {pattern!r} is not a regular expression "
                         f"({exc})") from None
    if not {"x", "y", "z"} <= groups:
        raise InputError(f"--xyz-pattern {pattern!r} needs the named groups (?P<x>...), "
                         f"(?P<y>...) and (?P<z>...)")
    token = _PATTERNS.set((pattern,))
    try:
        yield
    finally:
        _PATTERNS.reset(token)


def tile_transform(z: int, x: int, y: int, width: int, height: int) -> Affine:
    """Pixel -> EPSG:3857 transform of XYZ tile ``(z, x, y)`` sampled ``width x height``.

    Examples
    --------
    >>> t = tile_transform(1, 0, 0, 256, 256)
    >>> round(t.c), round(t.f), round(t.a, 3)
    (-20037508, 20037508, 78271.517)
    """
    if not 0 <= z <= 30 or not (0 <= x < 2 ** z and 0 <= y < 2 ** z):
        raise InputError(f"XYZ tile z={z} x={x} y={y} does not exist "
                         f"(x and y must be in 0..{2 ** z - 1} at zoom {z})")
    size = 2 * _ORIGIN / 2 ** z
    return Affine(size / width, 0.0, -_ORIGIN + x * size,
                  0.0, -size / height, _ORIGIN - y * size)


def xyz_georef(path: str | os.PathLike[str], width: int, height: int
               ) -> tuple[str, Affine] | None:
    """``("EPSG:3857", transform)`` when the name of ``path`` is an XYZ tile, else None."""
    text = Path(path).as_posix()
    for pattern in _PATTERNS.get():
        m = re.search(pattern, text)
        if m:
            z, x, y = (int(m.group(k)) for k in ("z", "x", "y"))
            return "EPSG:3857", tile_transform(z, x, y, width, height)
    return None
