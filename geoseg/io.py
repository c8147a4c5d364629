"""Raster input and output: lazy scenes, windowed reads, georeferenced class maps.

Reading honours GDAL sidecars (``.aux.xml`` PAM georeferencing), nodata values, alpha
bands and internal masks. Each thread keeps its own dataset handle: GDAL handles are not
thread-safe, and re-opening per window would cost more than the read.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoseg.errors import BandMismatchError, GeosegWarning, InputError

__all__ = [
    "NODATA_CLASS",
    "Scene",
    "class_colormap",
    "open_scene",
    "read_window",
    "select_bands",
]

#: Value written for "no prediction" in class maps (class ids are 0..254).
NODATA_CLASS = 255

_local = threading.local()


def is_remote(path: str) -> bool:
    """Whether ``path`` is a GDAL virtual/remote path or URL (not a local file)."""
    return path.startswith(("/vsi", "http://", "https://", "s3://", "gs://", "az://"))


@dataclass(frozen=True)
class Scene:
    """What geoseg needs to know about an input raster, read once from its header.

    Attributes
    ----------
    path : str
        Path or GDAL URL.
    height, width, count : int
        Size in pixels and number of bands.
    dtype : str
        Data type of the bands.
    crs : CRS or None
        Coordinate reference system (None for non-georeferenced images).
    transform : Affine
        Pixel to CRS coordinates.
    nodata : float or None
        Nodata value of the bands, if any.
    band_names : tuple of str
        Band descriptions, or ``B1..Bn`` when the file has none.
    has_mask : bool
        Whether some pixels may be invalid (nodata value, alpha band or mask).
    """

    path: str
    height: int
    width: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    band_names: tuple[str, ...]
    has_mask: bool
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return self.height, self.width

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units."""
        return abs(self.transform.a), abs(self.transform.e)


def open_scene(path: str | os.PathLike[str]) -> Scene:
    """Read a raster's header and check that it is usable.

    Raises
    ------
    InputError
        The file does not exist, is not a raster GDAL can read, or has no bands.
    """
    text = os.fspath(path)
    if not is_remote(text) and not Path(text).exists():
        raise InputError(f"input not found: {text}")
    if not is_remote(text) and Path(text).is_dir():
        raise InputError(f"{text} is a directory, not a raster")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(text) as src:
                georef = not (src.crs is None and src.transform == Affine.identity())
                flags = src.mask_flag_enums
                has_mask = any(MaskFlags.all_valid not in f for f in flags)
                names = tuple(d or f"B{i + 1}" for i, d in enumerate(src.descriptions))
                alpha = [i for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha]
                if alpha and len(names) > 1:
                    names = tuple(n for i, n in enumerate(names) if i not in alpha)
                scene = Scene(
                    path=text, height=src.height, width=src.width,
                    count=src.count - len(alpha), dtype=src.dtypes[0],
                    crs=src.crs, transform=src.transform, nodata=src.nodata,
                    band_names=names, has_mask=has_mask, tags=dict(src.tags()))
    except RasterioIOError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise InputError(f"{text} is not a raster GDAL can read ({msg})") from None
    if scene.count < 1:
        raise InputError(f"{text} has no data bands")
    if not georef:
        from geoseg.xyz import xyz_georef  # an XYZ chip: georeferenced by its name

        tile = xyz_georef(text, scene.width, scene.height)
        if tile is not None:
            return replace(scene, crs=CRS.from_string(tile[0]), transform=tile[1])
        warnings.warn(f"{text} has no georeferencing; outputs will have none either",
                      GeosegWarning, stacklevel=2)
    return scene


def select_bands(scene: Scene, bands: Sequence[int] | None, expected: int,
                 expected_names: Sequence[str] = ()) -> tuple[int, ...]:
    """Resolve 1-based band indexes to read and check the count against the model.

    Parameters
    ----------
    bands : sequence of int or None
        1-based band indexes chosen by the user; None means all bands in file order.
    expected : int
        Number of input bands the model takes.
    """
    if bands is None:
        chosen = tuple(range(1, scene.count + 1))
        if len(chosen) != expected:
            names = f" ({','.join(expected_names)})" if expected_names else ""
            raise BandMismatchError(
                f"{scene.path} has {scene.count} bands; the model expects {expected}{names}. "
                f"Pass --bands to select {expected} of them")
        return chosen
    chosen = tuple(int(b) for b in bands)
    bad = [b for b in chosen if not 1 <= b <= scene.count]
    if bad:
        raise BandMismatchError(f"band {bad[0]} does not exist: {scene.path} has bands "
                                f"1..{scene.count}")
    if len(chosen) != expected:
        raise BandMismatchError(f"--bands selects {len(chosen)} bands; the model expects "
                                f"{expected}")
    return chosen


def _dataset(path: str) -> Any:
    """Return this thread's open handle on ``path`` (opened on first use, then kept)."""
    handles: dict[str, Any] | None = getattr(_local, "handles", None)
    if handles is None:
        handles = _local.handles = {}
    src = handles.get(path)
    if src is None or src.closed:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = handles[path] = rasterio.open(path)
    return src


def read_window(path: str, bands: Sequence[int], rows: tuple[int, int],
                cols: tuple[int, int], *, with_mask: bool
                ) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]:
    """Read ``bands`` over a pixel window, plus the validity mask if asked.

    Returns
    -------
    data : (len(bands), h, w) ndarray
        Raw pixel values in the file's dtype.
    valid : (h, w) bool ndarray or None
        True where the pixel holds data (GDAL's dataset mask: nodata, alpha, mask band).
    """
    src = _dataset(path)
    win = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
    data = src.read(list(bands), window=win)
    valid = src.dataset_mask(window=win).astype(bool) if with_mask else None
    return data, valid


def class_colormap(colors: Sequence[tuple[int, int, int]]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table for a class map: class colours, then transparent nodata."""
    cmap = {i: (int(r), int(g), int(b), 255) for i, (r, g, b) in enumerate(colors)}
    cmap[NODATA_CLASS] = (0, 0, 0, 0)
    return cmap
