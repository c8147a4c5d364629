"""Label rasters (a file, or the tiles of a folder) on the prediction's grid.

A raster on the same or a pixel-aligned grid is read window by window; on any other grid it
is resampled with nearest neighbour through a :class:`rasterio.vrt.WarpedVRT`.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoseg.errors import InputError, NoOverlapError
from geoseg.metrics import class_lut, code_dtype, encode
from geoseg.scoring.classes import ScoreClasses
from geoseg.scoring.labels.grid import (
    _Grid,
    _Handles,
    _Labels,
    _mosaic,
    _union,
    _window_of_bounds,
)


@dataclass
class _RasterLabels:
    """One label raster (a file, or one tile of a directory) on the prediction grid."""

    path: str
    window: tuple[int, int, int, int]  # footprint on the prediction grid
    aligned: tuple[int, int] | None  # (row, col) offset of pred pixel (0,0) in the file
    nodata: float | None
    needs_mask: bool
    dtype: str
    georef: tuple[CRS, Affine] | None = None  # from an XYZ name, not from the file
    bands: tuple[int, ...] = (1,)  # (1, 2, 3) for a colour-coded RGB label raster

    def read(self, handles: _Handles, grid: _Grid, rows: tuple[int, int],
             cols: tuple[int, int]
             ) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]:
        """Label values over pred-grid window ``rows x cols`` and validity (or None)."""
        if self.aligned is not None:
            src = handles.get(self.path, lambda: [rasterio.open(self.path)])
            dy, dx = self.aligned
            win = Window(cols[0] + dx, rows[0] + dy, cols[1] - cols[0],
                         rows[1] - rows[0])
        else:
            src = handles.get("vrt:" + self.path, lambda: self._open_vrt(grid))
            win = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
        data = src.read(self.bands[0] if len(self.bands) == 1 else list(self.bands),
                        window=win)
        valid = src.read_masks(1, window=win) > 0 if self.needs_mask else None
        return data, valid

    def _open_vrt(self, grid: _Grid) -> list[Any]:
        from rasterio.vrt import WarpedVRT

        src = rasterio.open(self.path)
        given = {} if self.georef is None else {"src_crs": self.georef[0],
                                                 "src_transform": self.georef[1]}
        vrt = WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width,
                        height=grid.height, resampling=Resampling.nearest,
                        add_alpha=self.nodata is None, **given)
        return [src, vrt]


def _raster_labels(path: str, grid: _Grid, *, tile: bool = False, bands: int = 1
                   ) -> _RasterLabels | None:
    """Describe a label raster relative to the grid; None if it does not overlap.

    ``bands`` is 3 for colour-coded (RGB) labels (training's --class-colors).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as src:
                crs, transform = src.crs, src.transform
                bounds, nodata = src.bounds, src.nodata
                count, dtype = src.count, src.dtypes[0]
                shape = (src.height, src.width)
                flags = src.mask_flag_enums[0]
        except RasterioIOError as exc:
            msg = str(exc).splitlines()[0] if str(exc) else "unreadable"
            raise InputError(f"{path} is not a raster GDAL can read ({msg})") from None
    what = "label tile" if tile else "label raster"
    georef = None
    if crs is None and transform.is_identity:
        from geoseg.xyz import xyz_georef  # an XYZ chip: georeferenced by its name

        xyz = xyz_georef(path, shape[1], shape[0])
        if xyz is not None:
            crs, transform = georef = CRS.from_string(xyz[0]), xyz[1]
            bounds = rasterio.transform.array_bounds(*shape, transform)
    if bands == 1 and count != 1:
        raise InputError(f"{what} {path} has {count} bands; labels need 1 band of "
                         f"class values (colour-coded labels need --class-colors)")
    if count < bands:
        raise InputError(f"{what} {path} has {count} band(s); colour-coded labels need "
                         f"{bands} (RGB)")
    if crs is None or grid.crs is None:
        return _pixel_labels(path, grid, crs, shape, nodata=nodata, flags=flags,
                             dtype=dtype, what=what)
    if crs == grid.crs:
        lb = tuple(bounds)
    else:
        from rasterio.warp import transform_bounds

        lb = transform_bounds(crs, grid.crs, *bounds, densify_pts=21)
    window = _window_of_bounds(grid, lb)  # type: ignore[arg-type]
    if window is None:
        return None
    aligned = _offset_if_aligned(crs, transform, grid)
    needs_mask = MaskFlags.all_valid not in flags and nodata is None
    if aligned is None:
        needs_mask = True  # outside the file, the warped VRT marks pixels invalid
    elif nodata is None and not needs_mask:
        # Pixel-aligned but smaller than the window: cells off the file need a mask.
        r0, r1, c0, c1 = window
        dy, dx = aligned
        with rasterio.open(path) as src:
            inside = (r0 + dy >= 0 and c0 + dx >= 0 and r1 + dy <= src.height
                      and c1 + dx <= src.width)
        if not inside:
            aligned = None
            needs_mask = True
    return _RasterLabels(path=path, window=window, aligned=aligned, nodata=nodata,
                         needs_mask=needs_mask, dtype=dtype, georef=georef,
                         bands=tuple(range(1, bands + 1)))


def _pixel_labels(path: str, grid: _Grid, crs: CRS | None, shape: tuple[int, int], *,
                  nodata: float | None, flags: Any, dtype: str, what: str
                  ) -> _RasterLabels:
    """Labels and prediction without georeferencing: pixel by pixel, same size only."""
    if crs is None and grid.crs is not None:
        raise InputError(f"{what} {path} has no CRS; labels must be georeferenced "
                         f"(assign one with gdal_edit.py -a_srs EPSG:XXXX)")
    if crs is not None:
        raise InputError(f"the prediction has no CRS but {what} {path} has one; "
                         f"georeference the prediction (predict a georeferenced scene)")
    if shape != (grid.height, grid.width):
        raise InputError(
            f"neither the prediction ({grid.width}x{grid.height} px) nor {what} {path} "
            f"({shape[1]}x{shape[0]} px) is georeferenced, and their sizes differ, so "
            f"they cannot be aligned")
    return _RasterLabels(path=path, window=(0, grid.height, 0, grid.width),
                         aligned=(0, 0), nodata=nodata,
                         needs_mask=MaskFlags.all_valid not in flags and nodata is None,
                         dtype=dtype)


def _offset_if_aligned(crs: CRS, transform: Affine, grid: _Grid
                       ) -> tuple[int, int] | None:
    """Integer (row, col) offset when the file's pixels coincide with the grid's."""
    t, g = transform, grid.transform
    if crs != grid.crs or not (math.isclose(t.a, g.a, rel_tol=1e-9)
                               and math.isclose(t.e, g.e, rel_tol=1e-9)
                               and t.b == g.b == 0 and t.d == g.d == 0):
        return None
    dx = (g.c - t.c) / t.a
    dy = (g.f - t.f) / t.e
    if abs(dx - round(dx)) > 1e-6 or abs(dy - round(dy)) > 1e-6:
        return None
    return round(dy), round(dx)


class _Recode:
    """Recode labels from the model's classes to the score's (model + extras).

    Label values that ``classes.value_map`` maps are given their class
    (see :mod:`geoseg.scoring.classes`).
    """

    def __init__(self, class_ids: Sequence[int], classes: ScoreClasses | None) -> None:
        m = len(class_ids)
        self.model_ids = list(class_ids)
        self.n = m if classes is None else len(classes.ids)
        self.code_lut = None if classes is None else classes.pred_code_lut(m + 3)
        self.values = {} if classes is None else classes.numeric_map()

    def lut(self, lut: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Recode a raw-value table (index = label value)."""
        if self.code_lut is None:
            return lut
        out: npt.NDArray[Any] = self.code_lut[lut]
        for v, k in self.values.items():
            if v.is_integer() and 0 <= v < out.size and out[int(v)] != self.n + 1:
                out[int(v)] = k
        return out

    def codes(self, data: npt.NDArray[Any], codes: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Codes of a label block (``encode`` of ``data`` with the model's ids)."""
        if self.code_lut is None:
            return codes
        out: npt.NDArray[Any] = self.code_lut[codes]
        for v, k in self.values.items():
            out[(data == v) & (out != self.n + 1)] = k
        return out


def _raster_source(paths: Sequence[str], grid: _Grid, class_ids: Sequence[int],
                   ignore_index: int | None, description: str, *, tiles: bool,
                   classes: ScoreClasses | None = None) -> _Labels:
    """Label rasters as a block reader of codes; ``classes`` maps values to classes."""
    items = [_raster_labels(p, grid, tile=tiles) for p in paths]
    recode = _Recode(class_ids, classes)
    class_ids = recode.model_ids
    n = recode.n
    found = [it for it in items if it is not None]
    if not found:
        raise NoOverlapError(f"{description} does not overlap the prediction; check "
                             f"that both cover the same area (and their CRSs)")
    handles = _Handles()
    nodata_code = n + 1
    dtype = code_dtype(n)
    window = _union([f.window for f in found])
    if len(items) == 1 and found[0].dtype == "uint8":
        # Raw values: the histogram is encoded once at the end, not every pixel.
        item = found[0]
        lut = np.concatenate([recode.lut(class_lut(class_ids, 256, nodata=item.nodata,
                                                   ignore_index=ignore_index)),
                              np.array([nodata_code], dtype=dtype)])
        raw_dtype = np.uint16 if item.needs_mask else np.uint8

        def read_raw(rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[Any]:
            data, valid = item.read(handles, grid, rows, cols)
            if valid is None:
                return data
            out = data.astype(np.uint16)
            out[~valid] = 256
            return out

        return _Labels(description=description, window=window, read=read_raw,
                       n_values=257, lut=lut, dtype=raw_dtype, close=handles.close)
    labels = _Labels(description=description, window=window,
                     read=lambda rows, cols: np.empty(0), n_values=n + 3,
                     lut=np.arange(n + 3), dtype=dtype, close=handles.close)
    if tiles and len(found) < len(items):
        labels.notes.append(f"{len(items) - len(found)} of {len(items)} label tiles do "
                            f"not overlap the prediction and were skipped")
    lock = threading.Lock()

    def decode(item: Any, rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[Any]:
        data, valid = item.read(handles, grid, rows, cols)
        codes = recode.codes(data, encode(data, class_ids, nodata=item.nodata,
                                          valid=valid, ignore_index=ignore_index))
        if codes.max() == n + 2:  # unknown values: remember a few for the message
            bad = np.unique(data[codes == n + 2])[:8]
            with lock:
                labels.values_seen.update(bad.tolist())
        return codes

    def read_codes(rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[Any]:
        return _mosaic(found, rows, cols, nodata_code, dtype, decode)

    labels.read = read_codes
    return labels
