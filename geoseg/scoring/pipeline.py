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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoseg.classmap import ClassMapInfo
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
from geoseg.scoring.classes import ScoreClasses, score_classes, trim_absent
from geoseg.scoring.labels.grid import _Grid, _Handles, _Labels, _labels_kind, _tile_paths
from geoseg.scoring.labels.raster import _raster_source
from geoseg.scoring.labels.vector import _vector_source
from geoseg.scoring.mosaic import chip_paths, prediction_mosaic
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


def score(pred: str | os.PathLike[str], labels: str | os.PathLike[str] | Any, *,
          classes: Sequence[str] | None = None,
          label_map: str | Mapping[Any, Any] | None = None,
          ignore_index: int | None = None,
          label_field: str | None = None, label_fill: int | str | None = None,
          chunk_size: int = 1024, num_workers: int | None = None,
          progress: Progress | None = None, class_names: Sequence[str] | None = None,
          label_value: int | str | None = None) -> ScoreReport:
    """Score a class map against labels, streaming, with an exact confusion matrix.

    Parameters
    ----------
    pred : path
        Class map (as ``geoseg predict`` writes: one band of class ids, nodata 255, tags
        ``class_ids`` and ``class_names``), or a folder or glob of georeferenced class-map
        chips, scored as one virtual mosaic (:mod:`geoseg.scoring.mosaic`). Its grid is
        the reference grid. A map
        without georeferencing is scored pixel by pixel against a label raster without
        georeferencing of the same size.
    labels : path or GeoDataFrame
        A label raster (any grid and CRS), a vector file (or GeoDataFrame) with a class
        attribute, or a directory of georeferenced label tiles.
    classes : sequence of str, optional
        Class names in id order. With as many names as ``pred``'s tags list they rename
        those classes, otherwise they are ids ``0..k-1``. Without them and without tags,
        classes are named by their ids (said in the report's notes).
    label_map : str or mapping, optional
        What label values mean: ``"0=land,1=building"`` or ``{0: "land"}`` (values to
        class names or ids). A name the prediction lacks is reported with IoU 0; a label
        id that is no class of a named prediction is an error, never a guess. See
        :mod:`geoseg.scoring.classes` for every rule.
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
    class_names : sequence of str, optional
        Names of the label ids ``0..k-1``, as ``train --class-names`` takes them (the
        same as ``label_map`` ``0=NAME0,1=NAME1...``). Vector labels without
        ``label_field`` then mean what they mean to ``train``: every feature is class 1
        and pixels no feature covers are class 0 (unless ``label_fill`` says otherwise).
    label_value : int or str, optional
        Vector labels without ``label_field``: the class (name or id) of every feature.

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
    labels, label_field, label_fill, label_map, one_class = _one_class_labels(
        labels, label_field=label_field, label_fill=label_fill, label_map=label_map,
        class_names=class_names, label_value=label_value)
    kw: dict[str, Any] = {"classes": classes, "label_map": label_map,
                          "ignore_index": ignore_index, "label_field": label_field,
                          "label_fill": label_fill, "chunk_size": chunk_size,
                          "num_workers": num_workers, "progress": progress}
    chips = chip_paths(pred)
    if chips is not None:  # a folder or glob of chips: one VRT mosaic
        return _score_mosaic(chips, os.fspath(pred), labels, **kw)
    scene = _open_pred(pred)
    sc, source = _label_source(scene, labels, classes=classes, label_map=label_map,
                               ignore_index=ignore_index, label_field=label_field,
                               label_fill=label_fill, chunk_size=chunk_size,
                               num_workers=num_workers)
    notes = [*sc.notes, *source.notes, *([one_class] if one_class else [])]
    if scene.crs is None:
        notes.append(f"{scene.path} and its labels have no georeferencing: scored pixel "
                     f"by pixel ({scene.width}x{scene.height} px)")
    for note in notes:
        warnings.warn(note, GeosegWarning, stacklevel=2)
    hist, pred_lut = _histogram(scene, source, sc, chunk_size=chunk_size,
                                num_workers=num_workers, progress=progress)
    n = len(sc.ids)
    counts = ConfusionCounts.from_histogram(
        collapse_histogram(hist, source.lut, pred_lut, n))
    _check_unknown(counts, sc.ids, labels=source.description, pred=scene.path,
                   label_values=source.values_seen | _unknown_values(
                       hist, source.lut, n, axis=1),
                   pred_values=_unknown_values(hist, pred_lut, n, axis=0))
    if counts.scored == 0:
        raise InputError(
            f"no pixel to score: of {counts.total:,} overlapping pixels, "
            f"{counts.nodata_labels:,} have no label, {counts.ignored:,} are ignored "
            f"and {counts.nodata_pred:,} have no prediction")
    ids, names = sc.ids, sc.names
    if not sc.named:
        counts, ids, names = trim_absent(counts, sc)
    return ScoreReport.from_counts(counts, ids, names, ignore_index=ignore_index,
                                   pred=scene.path, labels=source.description,
                                   notes=notes)


def _score_mosaic(chips: Sequence[str], pred: str, labels: Any, **kw: Any) -> ScoreReport:
    """Score a folder or glob of class-map chips as one virtual mosaic."""
    with prediction_mosaic(chips, pred) as mosaic, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = score(mosaic.path, labels, **kw)
    for w in caught:  # said of the mosaic, not of its temporary VRT
        warnings.warn(str(w.message).replace(mosaic.path, mosaic.description),
                      w.category, stacklevel=3)
    return replace(report, pred=mosaic.description, notes=tuple(
        n.replace(mosaic.path, mosaic.description) for n in report.notes))


def _one_class_labels(labels: Any, *, label_field: str | None, label_fill: int | str | None,
                      label_map: str | Mapping[Any, Any] | None,
                      class_names: Sequence[str] | None, label_value: int | str | None
                      ) -> tuple[Any, str | None, int | str | None,
                                 str | Mapping[Any, Any] | None, str | None]:
    """Apply ``class_names`` / ``label_value``: labels, field, fill and label map to score.

    Vector labels without a class field are one class, as ``train`` reads them: every
    feature is ``label_value`` (or id 1, named by ``class_names``) and, with
    ``class_names``, uncovered pixels are id 0. The last item is a one-line warning
    (warned once the labels are read) when the labels then hold one class and no fill,
    so only the covered pixels are scored.
    """
    if class_names is not None:
        if label_map is not None:
            raise InputError("give --class-names or --label-map, not both")
        if len(class_names) < 2 and label_value is None:
            raise InputError("--class-names needs the background and the class, e.g. "
                             "background,building")
        label_map = {str(i): n for i, n in enumerate(class_names)}
    if _labels_kind(labels) != "vector":
        if label_value is not None:
            raise InputError("--label-value is for vector labels without a class field")
        return labels, label_field, label_fill, label_map, None
    if label_field is not None:
        if label_value is not None:
            raise InputError("give --label-field or --label-value, not both")
        note = None
        if label_fill is None and _field_values(labels, label_field) == 1:
            note = _one_class_note(labels, f"field {label_field!r} holds one value")
        return labels, label_field, label_fill, label_map, note
    if label_value is None and class_names is None:
        return labels, label_field, label_fill, label_map, None  # the source asks for a field
    from geoseg.scoring.labels.vector import _read_vector

    gdf, _ = _read_vector(labels)
    value: int | str = 1 if label_value is None else label_value
    if label_fill is None and class_names is not None and label_value is None:
        label_fill = 0
    note = None if label_fill is not None else _one_class_note(
        labels, f"every feature is class {value}")
    return gdf.assign(_geoseg_class=value), "_geoseg_class", label_fill, label_map, note


def _field_values(labels: Any, field: str) -> int | None:
    """How many distinct values ``field`` of vector ``labels`` holds (None: unknown)."""
    import geopandas as gpd

    try:
        if isinstance(labels, gpd.GeoDataFrame):
            values = labels[field]
        else:
            import pyogrio

            values = pyogrio.read_dataframe(labels, columns=[field], read_geometry=False)[field]
    except Exception:  # noqa: BLE001 - the label source reports unreadable files itself
        return None
    return int(values.dropna().nunique())


def _one_class_note(labels: Any, what: str) -> str:
    name = "the label GeoDataFrame" if not isinstance(labels, (str, os.PathLike)) \
        else os.fspath(labels)
    return (f"{name}: {what} and no --label-fill is given, so only pixels inside features "
            "are scored (that class's precision is 1 by construction); pass --label-fill "
            "background (or --class-names background,CLASS)")


def _label_source(scene: Scene, labels: Any, *, classes: Sequence[str] | None,
                  label_map: str | Mapping[Any, Any] | None, ignore_index: int | None,
                  label_field: str | None, label_fill: int | str | None, chunk_size: int,
                  num_workers: int | None) -> tuple[ScoreClasses, _Labels]:
    """Resolve the score's classes and put the labels on the prediction's grid."""
    kind = _labels_kind(labels)
    grid = _Grid(scene.crs, scene.transform, scene.height, scene.width)
    paths = (_tile_paths(Path(labels)) if kind == "tiles"
             else [os.fspath(labels)] if kind == "raster" else [])
    label_info = _label_classes(paths[0]) if paths else None
    pred_values = None
    if not classes and ClassMapInfo.from_tags(scene) is None:
        pred_values = _untagged_values(scene, paths if kind == "raster" else [],
                                       chunk_size, num_workers)
    sc = score_classes(scene, classes=classes, label_map=label_map,
                       label_info=label_info, pred_values=pred_values)
    names = [k for k in sc.value_map if isinstance(k, str)]
    if names and kind != "vector":  # a label raster holds numbers: a name matches nothing
        raise InputError(f"--label-map {names[0]}=...: {names[0]!r} is not a label value; "
                         f"{labels} holds numbers (class ids), e.g. --label-map "
                         f"1=building")
    if kind == "vector":
        if scene.crs is None:
            raise InputError(f"{scene.path} has no CRS; the prediction must be "
                             f"georeferenced to be aligned with vector labels")
        return sc, _vector_source(labels, grid, classes=sc, ignore_index=ignore_index,
                                  label_field=label_field, label_fill=label_fill)
    description = f"label tiles in {labels}" if kind == "tiles" else paths[0]
    return sc, _raster_source(paths, grid, sc.ids[:sc.n_model], ignore_index, description,
                              tiles=kind == "tiles", classes=sc)


def _histogram(scene: Scene, source: _Labels, sc: ScoreClasses, *, chunk_size: int,
               num_workers: int | None, progress: Progress | None
               ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """Joint histogram of label values and prediction codes, chunk by chunk (dask)."""
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
    pred_codes, n_pred, pred_lut = _space(pred_raw, sc.ids[:sc.n_model], nodata=scene.nodata)
    pred_lut = sc.pred_code_lut(sc.n_model + 3)[pred_lut]
    try:
        # Each block is read once: GDAL's block cache (5% of RAM by default) would only
        # make memory grow with the scene, so keep it small.
        with rasterio.Env(GDAL_CACHEMAX=64):
            hist: npt.NDArray[np.int64] = _reduce(
                truth, pred_codes, source.n_values, n_pred, num_workers=num_workers,
                progress=progress or NullProgress())
    finally:
        source.close()
        pred_handles.close()
    return hist, pred_lut


def _open_pred(pred: str | os.PathLike[str]) -> Scene:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeosegWarning)  # no georeferencing: said later
        scene = open_scene(pred)
    if scene.count != 1:
        raise InputError(f"{scene.path} has {scene.count} bands; a class map has 1")
    return scene


def _label_classes(path: str) -> ClassMapInfo | None:
    """Class names a label raster's tags give (None without, or for a non-raster)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as src:
                return ClassMapInfo.from_tags(src, strict=True)
        except RasterioIOError:
            return None  # reported by the label reader, with its own message


def _untagged_values(scene: Scene, label_paths: Sequence[str], chunk_size: int,
                     num_workers: int | None) -> list[int] | None:
    """Values present in a map without class tags and in its label raster.

    None when both are uint8: every id 0..254 is then scored in one pass (and the
    classes absent from both are dropped from the report).
    """
    labels = [open_scene(p) for p in label_paths]
    if scene.dtype == "uint8" and all(lb.dtype == "uint8" for lb in labels):
        return None
    values: set[int] = set()
    for s in (scene, *labels):
        values |= _values_present(s, chunk_size, num_workers)
    return sorted(values)


def _values_present(scene: Scene, chunk_size: int, num_workers: int | None
                    ) -> set[int]:
    """Integer values present in a raster's band 1, nodata excepted (one read)."""
    handles = _Handles()

    def block(block_info: dict[Any, Any] | None = None) -> npt.NDArray[Any]:
        (r0, r1), (c0, c1) = block_info[None]["array-location"]  # type: ignore[index]
        src = handles.get(scene.path, lambda: [rasterio.open(scene.path)])
        data = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
        return np.unique(data).astype(np.int64)

    chunks = (_chunks(0, scene.height, chunk_size), _chunks(0, scene.width, chunk_size))
    map_blocks: Callable[..., da.Array] = da.map_blocks
    arr = map_blocks(block, chunks=chunks, dtype=np.int64,
                     meta=np.empty((0, 0), dtype=np.int64))
    try:
        parts = dask.compute(  # type: ignore[attr-defined,no-untyped-call]
            *arr.to_delayed().ravel().tolist(),  # type: ignore[no-untyped-call]
            scheduler="threads", num_workers=num_workers)
    finally:
        handles.close()
    values = np.unique(np.concatenate([np.ravel(p) for p in parts]))
    nodata = scene.nodata
    return {int(v) for v in values if nodata is None or v != nodata}


def _chunks(start: int, stop: int, size: int) -> tuple[int, ...]:
    """Chunk lengths covering ``start..stop``, cut at multiples of ``size``.

    Chunks then line up with the prediction's internal tiles.
    """
    edges = [start, *range((start // size + 1) * size, stop, size), stop]
    return tuple(b - a for a, b in itertools.pairwise(edges) if b > a)
