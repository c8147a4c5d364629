"""Vector labels, reprojected and rasterized onto the prediction's grid chunk by chunk.

A label field may hold class ids or class names (:class:`~geoseg.scoring.classes.ScoreClasses`
resolves both, for ``score`` and for training alike).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine

from geoseg.errors import InputError, NoOverlapError
from geoseg.metrics import code_dtype
from geoseg.scoring.classes import ScoreClasses
from geoseg.scoring.labels.grid import _Grid, _Labels, _window_of_bounds


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


def _vector_source(path: str | Any, grid: _Grid, *, classes: ScoreClasses,
                   ignore_index: int | None, label_field: str | None,
                   label_fill: int | str | None) -> _Labels:
    gdf, description = _read_vector(path)
    fields = [c for c in gdf.columns if c != gdf.geometry.name]
    if label_field is None:
        raise InputError(f"pass --label-field to say which attribute of {description} "
                         f"holds the class (fields: {', '.join(fields) or 'none'}), or, when "
                         "every feature is one class, --label-value CLASS or --class-names "
                         "background,CLASS")
    if label_field not in gdf.columns:
        raise InputError(f"vector labels {description} have no field {label_field!r}; "
                         f"fields: {', '.join(fields) or 'none'}")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty & gdf[label_field].notna()]
    values = {str(v).strip() for v in gdf[label_field]}
    unknown = sorted(k for k in classes.value_map if isinstance(k, str) and k not in values)
    if unknown:  # a --label-map name no feature has: it would match nothing, silently
        raise InputError(f"--label-map {unknown[0]}=...: no feature of {description} has "
                         f"{label_field} = {unknown[0]!r} (values: "
                         f"{', '.join(sorted(values)[:10])})")
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
