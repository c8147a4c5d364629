"""The prediction's pixel grid, label block readers, and what kind of labels a path is."""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from geoseg.errors import InputError

VECTOR_SUFFIXES = frozenset({".geojson", ".json", ".gpkg", ".shp", ".fgb", ".parquet",
                             ".geoparquet", ".kml", ".gml", ".sqlite"})


RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".img", ".jp2", ".png"})


@dataclass(frozen=True)
class _Grid:
    """The prediction's grid and the pixel window being scored."""

    crs: CRS | None  # None: not georeferenced (scored pixel by pixel)
    transform: Affine
    height: int
    width: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        bounds: tuple[float, float, float, float] = rasterio.transform.array_bounds(
            self.height, self.width, self.transform)
        return bounds


def _window_of_bounds(grid: _Grid, bounds: tuple[float, float, float, float]
                      ) -> tuple[int, int, int, int] | None:
    """Pixel window ``(row0, row1, col0, col1)`` of ``bounds`` in the grid's CRS.

    Rounded outward with a small tolerance and clipped to the grid; None if empty.
    """
    inv = ~grid.transform
    xs, ys = [], []
    for x in (bounds[0], bounds[2]):
        for y in (bounds[1], bounds[3]):
            c, r = inv @ (x, y)
            xs.append(c)
            ys.append(r)
    eps = 1e-6
    row0 = max(0, math.floor(min(ys) + eps))
    row1 = min(grid.height, math.ceil(max(ys) - eps))
    col0 = max(0, math.floor(min(xs) + eps))
    col1 = min(grid.width, math.ceil(max(xs) - eps))
    if row1 <= row0 or col1 <= col0:
        return None
    return row0, row1, col0, col1


class _Handles:
    """Per-thread dataset handles (GDAL handles are not thread-safe), closed at once."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self, key: str, opener: Callable[[], Any]) -> Any:
        cache: dict[str, Any] | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        if key not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                handles = opener()
            cache[key] = handles[-1]
            with self._lock:
                self._all.extend(handles)
        return cache[key]

    def close(self) -> None:
        with self._lock:
            for h in reversed(self._all):
                h.close()
            self._all.clear()


@dataclass
class _Labels:
    """Labels brought onto the prediction grid: a block reader.

    ``read`` returns values in ``0..n_values-1`` that ``lut`` maps to codes: raw uint8
    class values (plus 256 for masked pixels) for one uint8 raster, codes otherwise.
    """

    description: str
    window: tuple[int, int, int, int]
    read: Callable[[tuple[int, int], tuple[int, int]], npt.NDArray[Any]]
    n_values: int
    lut: npt.NDArray[Any]
    dtype: Any
    close: Callable[[], None] = lambda: None
    values_seen: set[float] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _union(windows: Sequence[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    return (min(w[0] for w in windows), max(w[1] for w in windows),
            min(w[2] for w in windows), max(w[3] for w in windows))


def _intersect(a: tuple[int, int, int, int], rows: tuple[int, int],
               cols: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    r0, r1 = max(a[0], rows[0]), min(a[1], rows[1])
    c0, c1 = max(a[2], cols[0]), min(a[3], cols[1])
    if r1 <= r0 or c1 <= c0:
        return None
    return (r0, r1), (c0, c1)


def _mosaic(items: Sequence[Any], rows: tuple[int, int], cols: tuple[int, int],
            fill: Any, dtype: Any,
            decode: Callable[[Any, tuple[int, int], tuple[int, int]], npt.NDArray[Any]]
            ) -> npt.NDArray[Any]:
    """Paste each label item's decoded window into a ``rows x cols`` array.

    Where tiles overlap, the first item (name order) holding data wins;
    ``decode(item, rows, cols)`` reads one item's part.
    """
    import numpy as np

    out = np.full((rows[1] - rows[0], cols[1] - cols[0]), fill, dtype=dtype)
    for item in items:
        inter = _intersect(item.window, rows, cols)
        if inter is None:
            continue
        (r0, r1), (c0, c1) = inter
        part = decode(item, (r0, r1), (c0, c1))
        dst = out[r0 - rows[0]:r1 - rows[0], c0 - cols[0]:c1 - cols[0]]
        free = dst == fill
        dst[free] = part[free]
    return out


def _tile_paths(directory: Path) -> list[str]:
    paths = sorted(str(p) for p in directory.rglob("*")
                   if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
    if not paths:
        raise InputError(f"label directory {directory} holds no raster tiles "
                         f"({', '.join(sorted(RASTER_SUFFIXES))})")
    return paths


def _labels_kind(labels: str | os.PathLike[str] | Any) -> str:
    if not isinstance(labels, (str, os.PathLike)):
        return "vector"
    p = Path(labels)
    if p.is_dir():
        return "tiles"
    if not p.exists():
        raise InputError(f"labels not found: {p}")
    return "vector" if p.suffix.lower() in VECTOR_SUFFIXES else "raster"
