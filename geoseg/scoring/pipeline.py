"""Score a class map against labels: exact, streaming confusion matrix and its metrics.

The prediction's grid is the reference. Labels are brought onto it one chunk at a time:

- a label raster on the same grid (or a pixel-aligned one) is read window by window;
  on any other grid (other CRS, resolution or sub-pixel offset) it is resampled with
  nearest neighbour through a :class:`rasterio.vrt.WarpedVRT` on the prediction's grid;
- a vector file is reprojected to the prediction's CRS and rasterized per chunk
  (:func:`rasterio.features.rasterize`, pixel centres, later features drawn over
  earlier ones);
- a directory of georeferenced label tiles is a mosaic: each tile is matched to the
  prediction window it covers (where tiles overlap, the first in name order wins).

Each chunk is encoded and reduced to a joint histogram with one ``np.bincount``
(:mod:`geoseg.metrics`); dask sums the histograms, so memory depends on the chunk size
and the number of threads, never on the scene size, and the result is exact.
See :mod:`geoseg.metrics` for the conventions (absent classes, ignore index, nodata).
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.windows import Window

from geoseg.errors import GeosegWarning, InputError
from geoseg.io import Scene, open_scene
from geoseg.metrics import (
    ConfusionCounts,
    collapse_histogram,
)
from geoseg.progress import NullProgress, Progress
from geoseg.scoring.arrays import (
    _check_unknown,
    _reduce,
    _space,
    _unknown_values,
    confusion_from_arrays,
    score_arrays,
)
from geoseg.scoring.labels import (
    _Grid,
    _Handles,
    _labels_kind,
    _raster_source,
    _tile_paths,
    _vector_source,
)
from geoseg.scoring.report import (
    CONVENTION,
    ScoreReport,
    plot_confusion,
    write_confusion_csv,
)

__all__ = [
    "CONVENTION",
    "ScoreReport",
    "confusion_from_arrays",
    "plot_confusion",
    "score",
    "score_arrays",
    "write_confusion_csv",
]


def pred_classes(scene: Scene, classes: Sequence[str] | None
                 ) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Class ids and names of a class map, from its tags and/or ``classes``.

    Raises
    ------
    InputError
        Neither the tags nor ``classes`` give the classes, or their counts differ.
    """
    tag_ids = scene.tags.get("class_ids")
    tag_names = scene.tags.get("class_names")
    ids: tuple[int, ...] | None = None
    if tag_ids:
        try:
            ids = tuple(int(v) for v in tag_ids.split(","))
        except ValueError:
            raise InputError(f"{scene.path} has a malformed class_ids tag {tag_ids!r}; "
                             f"pass --classes") from None
    names = tuple(tag_names.split(",")) if tag_names else None
    if ids is None and names is not None:
        ids = tuple(range(len(names)))
    if classes is not None:
        given = tuple(c.strip() for c in classes if c.strip())
        if ids is not None and len(given) != len(ids):
            raise InputError(
                f"--classes gives {len(given)} classes ({','.join(given)}) but "
                f"{scene.path} has {len(ids)} ({','.join(names or map(str, ids))}); "
                f"the class counts must match")
        return (ids or tuple(range(len(given)))), given
    if ids is None:
        raise InputError(f"{scene.path} has no class_names tag (it was not written by "
                         f"geoseg predict); pass --classes name0,name1,... in id order")
    if names is None or len(names) != len(ids):
        names = tuple(map(str, ids))
    return ids, names


def score(pred: str | os.PathLike[str], labels: str | os.PathLike[str] | Any, *,
          classes: Sequence[str] | None = None, ignore_index: int | None = None,
          label_field: str | None = None, label_fill: int | str | None = None,
          chunk_size: int = 1024, num_workers: int | None = None,
          progress: Progress | None = None) -> ScoreReport:
    """Score a class map against labels, streaming, with an exact confusion matrix.

    Parameters
    ----------
    pred : path
        Class map (as ``geoseg predict`` writes: one band of class ids, nodata 255, tags
        ``class_ids`` and ``class_names``). Its grid is the reference grid.
    labels : path or GeoDataFrame
        A label raster (any grid and CRS), a vector file (or GeoDataFrame) with a class
        attribute, or a directory of georeferenced label tiles.
    classes : sequence of str, optional
        Class names in id order; required when ``pred`` has no ``class_names`` tag, and
        must have as many entries as the map has classes.
    ignore_index : int, optional
        Label value excluded from scoring (counted as ``ignored``).
    label_field : str, optional
        Vector labels: the attribute holding class ids or class names (required).
    label_fill : int or str, optional
        Vector labels: class (id or name) of pixels no feature covers; by default they
        are unlabeled (excluded, counted as label nodata).
    chunk_size : int
        Side of the square chunks, px; memory grows with its square times the threads.
    num_workers : int, optional
        Threads (default: dask's, one per core).
    progress : Progress, optional
        Receives one unit per chunk.

    Returns
    -------
    ScoreReport
        See :data:`CONVENTION` for how absent classes, ignore index and nodata count.

    Raises
    ------
    InputError
        Unreadable or ungeoreferenced inputs, mismatched class counts, a missing label
        field, vector labels without a CRS.
    NoOverlapError
        Prediction and labels do not overlap.
    """
    if chunk_size < 16:
        raise InputError(f"chunk size must be at least 16 px, got {chunk_size}")
    scene = open_scene(pred)
    if scene.count != 1:
        raise InputError(f"{scene.path} has {scene.count} bands; a class map has 1")
    if scene.crs is None:
        raise InputError(f"{scene.path} has no CRS; the prediction must be "
                         f"georeferenced to be aligned with labels")
    class_ids, class_names = pred_classes(scene, classes)
    n = len(class_ids)
    grid = _Grid(scene.crs, scene.transform, scene.height, scene.width)
    kind = _labels_kind(labels)
    if kind == "tiles":
        paths = _tile_paths(Path(labels))
        source = _raster_source(paths, grid, class_ids, ignore_index,
                                f"label tiles in {labels}", tiles=True)
    elif kind == "raster":
        source = _raster_source([os.fspath(labels)], grid, class_ids, ignore_index,
                                os.fspath(labels), tiles=False)
    else:
        source = _vector_source(labels, grid, class_ids=class_ids,
                                class_names=class_names, ignore_index=ignore_index,
                                label_field=label_field, label_fill=label_fill)
    for note in source.notes:
        warnings.warn(note, GeosegWarning, stacklevel=2)
    row0, row1, col0, col1 = source.window
    chunks = (_chunks(row0, row1, chunk_size), _chunks(col0, col1, chunk_size))
    pred_handles = _Handles()

    def truth_block(block_info: dict[Any, Any] | None = None) -> npt.NDArray[Any]:
        (r0, r1), (c0, c1) = block_info[None]["array-location"]  # type: ignore[index]
        return source.read((r0 + row0, r1 + row0), (c0 + col0, c1 + col0))

    def pred_block(block_info: dict[Any, Any] | None = None) -> npt.NDArray[Any]:
        (r0, r1), (c0, c1) = block_info[None]["array-location"]  # type: ignore[index]
        src = pred_handles.get(scene.path, lambda: [rasterio.open(scene.path)])
        data: npt.NDArray[Any] = src.read(
            1, window=Window(c0 + col0, r0 + row0, c1 - c0, r1 - r0))
        return data

    map_blocks: Callable[..., da.Array] = da.map_blocks
    truth = map_blocks(truth_block, chunks=chunks, dtype=source.dtype,
                       meta=np.empty((0, 0), dtype=source.dtype))
    pred_raw = map_blocks(pred_block, chunks=chunks, dtype=np.dtype(scene.dtype),
                          meta=np.empty((0, 0), dtype=scene.dtype))
    pred_values, n_pred, pred_lut = _space(pred_raw, class_ids, nodata=scene.nodata)
    progress = progress or NullProgress()
    try:
        # Each block is read once: GDAL's block cache (5% of RAM by default) would only
        # make memory grow with the scene, so keep it small.
        with rasterio.Env(GDAL_CACHEMAX=64):
            hist = _reduce(truth, pred_values, source.n_values, n_pred,
                           num_workers=num_workers, progress=progress)
    finally:
        source.close()
        pred_handles.close()
    counts = ConfusionCounts.from_histogram(
        collapse_histogram(hist, source.lut, pred_lut, n))
    _check_unknown(counts, class_ids, labels=source.description, pred=scene.path,
                   label_values=source.values_seen | _unknown_values(
                       hist, source.lut, n, axis=1),
                   pred_values=_unknown_values(hist, pred_lut, n, axis=0))
    if counts.scored == 0:
        raise InputError(
            f"no pixel to score: of {counts.total:,} overlapping pixels, "
            f"{counts.nodata_labels:,} have no label, {counts.ignored:,} are ignored "
            f"and {counts.nodata_pred:,} have no prediction")
    return ScoreReport.from_counts(counts, class_ids, class_names,
                                   ignore_index=ignore_index, pred=scene.path,
                                   labels=source.description, notes=source.notes)


def _chunks(start: int, stop: int, size: int) -> tuple[int, ...]:
    """Chunk lengths covering ``start..stop``, cut at multiples of ``size``.

    Chunks then line up with the prediction's internal tiles.
    """
    edges = [start, *range((start // size + 1) * size, stop, size), stop]
    return tuple(b - a for a, b in itertools.pairwise(edges) if b > a)
