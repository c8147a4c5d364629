"""Labels onto a prediction's pixel grid: label rasters on any grid, vector files, label tiles.

The prediction's grid is the reference. A label raster on the same (or a pixel-aligned)
grid is read window by window; on any other grid it is resampled with nearest neighbour
through a :class:`rasterio.vrt.WarpedVRT`; a vector file is reprojected and rasterized per
chunk; a directory of georeferenced label tiles is a mosaic.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoseg.errors import GeosegWarning, InputError, NoOverlapError, UnknownNameError
from geoseg.io import open_raster
from geoseg.metrics import (
    class_lut,
    code_dtype,
    encode,
)
from geoseg.scoring.classes import ScoreClasses

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

    def read_codes(rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[Any]:
        out = np.full((rows[1] - rows[0], cols[1] - cols[0]), nodata_code, dtype=dtype)
        for item in found:
            inter = _intersect(item.window, rows, cols)
            if inter is None:
                continue
            (r0, r1), (c0, c1) = inter
            data, valid = item.read(handles, grid, (r0, r1), (c0, c1))
            codes = recode.codes(data, encode(data, class_ids, nodata=item.nodata,
                                              valid=valid, ignore_index=ignore_index))
            if codes.max() == n + 2:  # unknown values: remember a few for the message
                bad = np.unique(data[codes == n + 2])[:8]
                with lock:
                    labels.values_seen.update(bad.tolist())
            dst = out[r0 - rows[0]:r1 - rows[0], c0 - cols[0]:c1 - cols[0]]
            if len(found) == 1:
                dst[...] = codes
            else:  # mosaic: the first tile (name order) holding data wins
                free = dst == nodata_code
                dst[free] = codes[free]
        return out

    labels.read = read_codes
    return labels


def _vector_source(path: str | Any, grid: _Grid, *, classes: ScoreClasses,
                   ignore_index: int | None, label_field: str | None,
                   label_fill: int | str | None) -> _Labels:
    gdf, description = _read_vector(path)
    fields = [c for c in gdf.columns if c != gdf.geometry.name]
    if label_field is None:
        raise InputError(f"pass --label-field to say which attribute of {description} "
                         f"holds the class (fields: {', '.join(fields) or 'none'})")
    if label_field not in gdf.columns:
        raise InputError(f"vector labels {description} have no field {label_field!r}; "
                         f"fields: {', '.join(fields) or 'none'}")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty & gdf[label_field].notna()]
    codes = np.array([_class_code(v, classes, ignore_index, description)
                      for v in gdf[label_field]], dtype=np.int64)
    fill_code = -2 if label_fill is None else _class_code(
        label_fill, classes, ignore_index, "--label-fill")
    classes.check_some_match(codes, description)
    n = len(classes.ids)  # after the codes: label classes the model lacks were added
    codes[codes == -1] = n
    fill_code = {-1: n, -2: n + 1}.get(fill_code, fill_code)
    return _rasterized(gdf, grid, codes, fill_code, n, description=description,
                       label_field=label_field, label_fill=label_fill)


def _rasterized(gdf: Any, grid: _Grid, codes: npt.NDArray[np.int64], fill_code: int, n: int,
                *, description: str, label_field: str, label_fill: int | str | None
                ) -> _Labels:
    """Vector features with one code each, rasterized onto ``grid`` window by window."""
    import shapely
    from rasterio.features import rasterize

    geoms = gdf.geometry.to_crs(grid.crs).to_numpy() if gdf.crs != grid.crs \
        else gdf.geometry.to_numpy()
    if len(geoms) == 0:
        raise NoOverlapError(f"{description} has no features with a {label_field!r} "
                             f"value, so nothing overlaps the prediction")
    xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
    if label_fill is None:
        window = _window_of_bounds(grid, (xmin, ymin, xmax, ymax))
    else:  # an explicit background labels every pixel of the prediction
        window = (0, grid.height, 0, grid.width)
    if window is None or not _any_overlap(geoms, grid):
        raise NoOverlapError(f"{description} does not overlap the prediction; check "
                             f"that both cover the same area (and their CRSs)")
    tree = shapely.STRtree(geoms)
    dtype = code_dtype(n)
    rast_dtype = "uint8" if dtype == np.uint8 else "uint16"

    def read_codes(rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[Any]:
        shape = (rows[1] - rows[0], cols[1] - cols[0])
        transform = grid.transform @ Affine.translation(cols[0], rows[0])
        x0, y0 = transform @ (0, 0)
        x1, y1 = transform @ (shape[1], shape[0])
        hits = np.sort(tree.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1),
                                              max(y0, y1))))
        if hits.size == 0:
            return np.full(shape, fill_code, dtype=dtype)
        out = rasterize(zip(geoms[hits], codes[hits].tolist(), strict=True),
                        out_shape=shape, transform=transform, fill=fill_code,
                        dtype=rast_dtype)
        block: npt.NDArray[Any] = out.astype(dtype, copy=False)
        return block

    return _Labels(description=description, window=window, read=read_codes,
                   n_values=n + 3, lut=np.arange(n + 3), dtype=dtype)


def _any_overlap(geoms: npt.NDArray[Any], grid: _Grid) -> bool:
    import shapely

    return bool(shapely.intersects(geoms, shapely.box(*grid.bounds)).any())


def _class_code(value: Any, classes: ScoreClasses, ignore_index: int | None,
                where: str) -> int:
    """Matrix index of a label value given as a class id or name; -1 for ignore."""
    cid = classes.mapped(value)
    if cid is not None:
        return classes.index(cid)
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        return classes.index(classes.target(value, where=where))
    number = float(value)
    if ignore_index is not None and number == ignore_index:
        return -1
    model = classes.ids[:classes.n_model]
    if number.is_integer() and int(number) in model:
        return model.index(int(number))
    raise InputError(f"{where} has class value {value!r}, which is not a class of the "
                     f"prediction ({classes.describe()}); pass --label-map "
                     f"{value}=CLASS to say which class it is")


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


# ---------------------------------------------------------------- training's label source

#: Training masks: class ids 0..254, 255 where no label covers a pixel.
NO_LABEL = 255


def _read_vector(path: str | os.PathLike[str] | Any) -> tuple[Any, str]:
    """Vector labels (a file or a GeoDataFrame) with a CRS, and how to name them."""
    import geopandas as gpd

    if isinstance(path, gpd.GeoDataFrame):
        gdf, description = path, "label GeoDataFrame"
    else:
        description = os.fspath(path)
        try:
            gdf = gpd.read_file(path)
        except Exception as exc:  # noqa: BLE001 - pyogrio raises several unrelated types for bad files
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"cannot read vector labels {path} ({msg})") from None
    if gdf.crs is None:
        raise InputError(f"vector labels {description} have no CRS; set one (e.g. "
                         f"ogr2ogr -a_srs EPSG:4326) so they can be placed on the "
                         f"prediction")
    return gdf, description


@dataclass
class GridLabels:
    """Label class ids on a pixel grid, read window by window: training's label source.

    The same alignment as scoring (nearest neighbour for classes, per-chunk rasterizing
    of vectors); reads return uint8 class ids with :data:`NO_LABEL` where no label
    covers a pixel. Build with :func:`grid_labels`.
    """

    description: str
    window: tuple[int, int, int, int]
    read_window: Callable[[tuple[int, int], tuple[int, int]], npt.NDArray[np.uint8]]
    names: dict[int, str] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[np.uint8]:
        """Class ids over grid window ``rows x cols`` (:data:`NO_LABEL` where none)."""
        out = np.full((rows[1] - rows[0], cols[1] - cols[0]), NO_LABEL, np.uint8)
        inter = _intersect(self.window, rows, cols)
        if inter is not None:
            (r0, r1), (c0, c1) = inter
            out[r0 - rows[0]:r1 - rows[0], c0 - cols[0]:c1 - cols[0]] = \
                self.read_window((r0, r1), (c0, c1))
        return out


_ALL_IDS = tuple(range(NO_LABEL))  # every class id a uint8 label can hold


def grid_labels(labels: str | os.PathLike[str] | Any, *, crs: CRS | None,
                transform: Affine, height: int, width: int,
                label_field: str | None = None, background: int = 0,
                class_names: Sequence[str] | None = None,
                colors: Callable[[npt.NDArray[Any], str], npt.NDArray[np.uint8]]
                | None = None, ignore_index: int | None = None) -> GridLabels:
    """Put training labels (raster, label tiles or vector) onto a scene's pixel grid.

    Parameters
    ----------
    labels : path or GeoDataFrame
        A label raster on any grid (other CRS, resolution or extent), a folder of label
        tiles, or a vector file.
    crs, transform, height, width
        The scene's grid. Without a CRS, only a label raster of the same size works.
    label_field : str, optional
        Vector labels: the attribute holding class ids or class names (default: every
        feature is class 1). Names are ``class_names[id]``; without ``class_names`` the
        names found get ids 0, 1, ... in sorted order (see ``GridLabels.names``).
    background : int
        Vector labels: class id of the pixels no feature covers.
    colors : callable, optional
        Colour-coded RGB label rasters: ``colors(rgb, source)`` decodes ``(3, h, w)``
        values to class ids (:data:`NO_LABEL` for ignored colours).
    ignore_index : int, optional
        Label value that means "no label".
    """
    kind = _labels_kind(labels)
    if crs is None:
        if kind != "raster":
            raise InputError(f"the scene has no CRS: {kind} labels cannot be placed on it "
                             "(give a label raster of the same size, or georeference it)")
        return _plain_labels(os.fspath(labels), (height, width), colors, ignore_index)
    grid = _Grid(crs, transform, height, width)
    if kind == "vector":
        return _vector_grid_labels(labels, grid, label_field, background, class_names,
                                   ignore_index)
    paths = _tile_paths(Path(labels)) if kind == "tiles" else [os.fspath(labels)]
    description = f"label tiles in {labels}" if kind == "tiles" else os.fspath(labels)
    if colors is not None:
        return _color_grid_labels(paths, grid, colors, description, tiles=kind == "tiles")
    source = _raster_source(paths, grid, _ALL_IDS, ignore_index, description,
                            tiles=kind == "tiles")
    for note in source.notes:
        warnings.warn(note, GeosegWarning, stacklevel=2)

    def read(rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[np.uint8]:
        codes = source.lut[source.read(rows, cols)]
        unknown = codes == NO_LABEL + 2
        if unknown.any() and source.values_seen - {float(NO_LABEL)}:
            bad = sorted(source.values_seen - {float(NO_LABEL)})[:5]
            raise InputError(f"labels {description} hold values {bad}: class ids must be "
                             f"integers 0..254 (255 = no label)")
        return np.where(codes < NO_LABEL, codes, NO_LABEL).astype(np.uint8)

    return GridLabels(description, source.window, read, close=source.close)


def _plain_labels(path: str, shape: tuple[int, int],
                  colors: Callable[[npt.NDArray[Any], str], npt.NDArray[np.uint8]] | None,
                  ignore_index: int | None) -> GridLabels:
    """Read a label raster pixel for pixel (scene and labels without georeferencing)."""
    handles = _Handles()
    with open_raster(path) as src:
        if src.shape != shape:
            raise InputError(f"labels {path} are {src.width}x{src.height} px but the scene "
                             f"is {shape[1]}x{shape[0]}, and neither has a CRS to align "
                             f"them")

    def read(rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[np.uint8]:
        src = handles.get(path, lambda: [open_raster(path)])
        win = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
        if colors is not None:
            return colors(src.read(window=win), path)
        data = src.read(1, window=win)
        codes = encode(data, _ALL_IDS, nodata=src.nodata, ignore_index=ignore_index,
                       valid=src.read_masks(1, window=win) > 0)
        if (codes == NO_LABEL + 2).any() and (data[codes == NO_LABEL + 2] != NO_LABEL).any():
            raise InputError(f"labels {path} hold values outside 0..254 (255 = no label)")
        return np.where(codes < NO_LABEL, codes, NO_LABEL).astype(np.uint8)

    return GridLabels(path, (0, shape[0], 0, shape[1]), read, close=handles.close)


def _color_grid_labels(paths: Sequence[str], grid: _Grid,
                       colors: Callable[[npt.NDArray[Any], str], npt.NDArray[np.uint8]],
                       description: str, *, tiles: bool) -> GridLabels:
    """Colour-coded RGB label rasters, aligned like id rasters, decoded per window."""
    items = [_raster_labels(p, grid, tile=tiles, bands=3) for p in paths]
    found = [it for it in items if it is not None]
    if not found:
        raise NoOverlapError(f"{description} does not overlap the scene; check that both "
                             f"cover the same area (and their CRSs)")
    handles = _Handles()

    def read(rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[np.uint8]:
        out = np.full((rows[1] - rows[0], cols[1] - cols[0]), NO_LABEL, np.uint8)
        for item in found:
            inter = _intersect(item.window, rows, cols)
            if inter is None:
                continue
            (r0, r1), (c0, c1) = inter
            rgb, valid = item.read(handles, grid, (r0, r1), (c0, c1))
            ids = colors(rgb, item.path)
            if valid is not None:
                ids = np.where(valid, ids, NO_LABEL).astype(np.uint8)
            dst = out[r0 - rows[0]:r1 - rows[0], c0 - cols[0]:c1 - cols[0]]
            free = dst == NO_LABEL  # mosaic: the first tile (name order) holding data wins
            dst[free] = ids[free]
        return out

    return GridLabels(description, _union([f.window for f in found]), read,
                      close=handles.close)


def _vector_grid_labels(labels: str | os.PathLike[str] | Any, grid: _Grid,
                        label_field: str | None, background: int,
                        class_names: Sequence[str] | None, ignore_index: int | None
                        ) -> GridLabels:
    """Vector labels holding class ids or names, rasterized per window."""
    gdf, description = _read_vector(labels)
    if label_field is None:
        gdf = gdf.assign(_class=1)
        label_field = "_class"
    if label_field not in gdf.columns:
        fields = [c for c in gdf.columns if c != gdf.geometry.name]
        raise InputError(f"vector labels {description} have no field {label_field!r}; "
                         f"fields: {', '.join(fields) or 'none'}")
    names = _field_names(gdf[label_field].dropna(), class_names, background, description)
    # Every uint8 class id is a class; the field's names resolve to their ids as score's do.
    classes = ScoreClasses(list(_ALL_IDS), [names.get(i, f"\0{i}") for i in _ALL_IDS],
                           n_model=len(_ALL_IDS), named=True)
    source = _vector_source(gdf, grid, classes=classes, ignore_index=ignore_index,
                            label_field=label_field, label_fill=background)
    source.description = description

    def read(rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[np.uint8]:
        codes = source.read(rows, cols)
        return np.where(codes < NO_LABEL, codes, NO_LABEL).astype(np.uint8)

    return GridLabels(description, source.window, read, names=names)


def _field_names(values: Any, class_names: Sequence[str] | None, background: int,
                 description: str) -> dict[int, str]:
    """Class id of each name a label field may hold; checks the field's ids and names.

    With ``class_names``, a name's id is its position there. Without, the names found
    get the ids after ``background`` in sorted order (``background`` is "background").
    """
    found = sorted({str(v) for v in values
                    if isinstance(v, str) and not v.strip().lstrip("-").isdigit()})
    numbers = [v for v in values if not (isinstance(v, str) and str(v) in found)]
    bad = [v for v in numbers if not float(v).is_integer() or not 0 <= float(v) < NO_LABEL]
    if bad:
        raise InputError(f"{description}: class id {bad[0]!r} is not an integer 0..254")
    if class_names is not None:
        unknown = [v for v in found if v not in class_names]
        if unknown:
            raise UnknownNameError(f"{description} holds class name {unknown[0]!r}, which "
                                   f"is not in --class-names ({', '.join(class_names)})")
        return dict(enumerate(class_names))
    if not found:
        return {}
    ids = [i for i in _ALL_IDS if i != background][:len(found)]
    if len(ids) < len(found):
        raise InputError(f"{description}: {len(found)} class names; at most "
                         f"{NO_LABEL - 1} besides the background")
    return {background: "background", **dict(zip(ids, found, strict=True))}
