"""Labels as uint8 class ids on a scene's grid, window by window: training's label source.

The same alignment as scoring (the raster and vector sources of this package); reads
return class ids with :data:`NO_LABEL` where no label covers a pixel.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.errors import GeosegWarning, InputError, NoOverlapError, UnknownNameError
from geoseg.io import open_raster
from geoseg.metrics import encode
from geoseg.scoring.classes import ScoreClasses
from geoseg.scoring.labels.grid import (
    _Grid,
    _Handles,
    _intersect,
    _labels_kind,
    _mosaic,
    _tile_paths,
    _union,
)
from geoseg.scoring.labels.raster import _raster_labels, _raster_source
from geoseg.scoring.labels.vector import _read_vector, _vector_source

#: Training masks: class ids 0..254, 255 where no label covers a pixel.
NO_LABEL = 255


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

    def decode(item: Any, rows: tuple[int, int], cols: tuple[int, int]
               ) -> npt.NDArray[np.uint8]:
        rgb, valid = item.read(handles, grid, rows, cols)
        ids = colors(rgb, item.path)
        return ids if valid is None else np.where(valid, ids, NO_LABEL).astype(np.uint8)

    def read(rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[np.uint8]:
        return _mosaic(found, rows, cols, NO_LABEL, np.uint8, decode)

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
