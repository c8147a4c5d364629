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
import json
import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoseg.errors import GeosegWarning, InputError, NoOverlapError, UnknownNameError
from geoseg.io import NODATA_CLASS, Scene, open_scene
from geoseg.metrics import (
    ConfusionCounts,
    accuracy,
    class_lut,
    code_dtype,
    cohen_kappa,
    collapse_histogram,
    encode,
    f1_per_class,
    frequency_weighted_iou,
    iou_per_class,
    mean_defined,
    pair_histogram,
    precision_per_class,
    recall_per_class,
)
from geoseg.progress import NullProgress, Progress

__all__ = [
    "CONVENTION",
    "ScoreReport",
    "confusion_from_arrays",
    "plot_confusion",
    "score",
    "score_arrays",
    "write_confusion_csv",
]

#: The metric conventions, copied into every report.
CONVENTION = (
    "Confusion matrix rows are labels (truth), columns are predictions, in pixels. "
    "Pixels whose label is nodata or uncovered, whose label equals the ignore index, "
    "or whose prediction is nodata are excluded and counted separately (in this "
    "order). "
    "Per-class metrics are NaN (null in JSON) when undefined (0/0): IoU and F1 for a "
    "class absent from both labels and prediction, precision for a class never "
    "predicted, recall for a class absent from the labels. mIoU and the other means "
    "skip NaN, i.e. they average over classes present in the labels or the prediction. "
    "A class equal to the ignore index takes no part in per-class metrics or means. "
    "Frequency-weighted IoU weighs IoU by label pixel share."
)

VECTOR_SUFFIXES = frozenset({".geojson", ".json", ".gpkg", ".shp", ".fgb", ".parquet",
                             ".geoparquet", ".kml", ".gml", ".sqlite"})
RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".img", ".jp2", ".png"})


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class ScoreReport:
    """Pixel-level scores of a class map against labels.

    Attributes
    ----------
    class_ids, class_names : tuple
        The classes, in confusion-matrix order.
    counts : ConfusionCounts
        The confusion matrix (rows truth, columns prediction) and excluded pixel counts.
    ignore_index : int or None
        Label value excluded from scoring.
    iou, precision, recall, f1 : (C,) float64 ndarray
        Per-class metrics, NaN where undefined (see :data:`CONVENTION`).
    miou, mean_f1, fw_iou, accuracy, kappa : float
        Mean IoU over the classes where it is defined, mean F1 likewise,
        frequency-weighted IoU, overall accuracy and Cohen's kappa.
    pred, labels : str
        What was scored (paths, or a description for arrays).
    """

    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    counts: ConfusionCounts
    ignore_index: int | None
    iou: npt.NDArray[np.float64]
    precision: npt.NDArray[np.float64]
    recall: npt.NDArray[np.float64]
    f1: npt.NDArray[np.float64]
    miou: float
    mean_f1: float
    fw_iou: float
    accuracy: float
    kappa: float
    pred: str = ""
    labels: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_counts(cls, counts: ConfusionCounts, class_ids: Sequence[int],
                    class_names: Sequence[str] | None = None, *,
                    ignore_index: int | None = None, pred: str = "", labels: str = "",
                    notes: Sequence[str] = ()) -> ScoreReport:
        """Compute every metric from a confusion matrix and its exclusion counts."""
        ids = tuple(int(i) for i in class_ids)
        names = tuple(class_names) if class_names is not None else tuple(map(str, ids))
        cm = counts.matrix
        per_class = [f(cm) for f in (iou_per_class, precision_per_class,
                                     recall_per_class, f1_per_class)]
        if ignore_index is not None and ignore_index in ids:
            for arr in per_class:
                arr[ids.index(ignore_index)] = np.nan
        iou, precision, recall, f1 = per_class
        return cls(class_ids=ids, class_names=names, counts=counts,
                   ignore_index=ignore_index, iou=iou, precision=precision,
                   recall=recall, f1=f1, miou=mean_defined(iou),
                   mean_f1=mean_defined(f1),
                   fw_iou=frequency_weighted_iou(cm), accuracy=accuracy(cm),
                   kappa=cohen_kappa(cm), pred=pred, labels=labels, notes=tuple(notes))

    @property
    def matrix(self) -> npt.NDArray[np.int64]:
        """The confusion matrix: rows truth, columns prediction."""
        return self.counts.matrix

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN becomes None)."""
        cm = self.counts.matrix
        classes = [
            {"id": cid, "name": name, "iou": _num(self.iou[k]),
             "precision": _num(self.precision[k]), "recall": _num(self.recall[k]),
             "f1": _num(self.f1[k]), "label_pixels": int(cm[k].sum()),
             "predicted_pixels": int(cm[:, k].sum())}
            for k, (cid, name) in enumerate(zip(self.class_ids, self.class_names,
                                                strict=True))]
        c = self.counts
        return {
            "pred": self.pred, "labels": self.labels,
            "miou": _num(self.miou), "mean_f1": _num(self.mean_f1),
            "fw_iou": _num(self.fw_iou), "accuracy": _num(self.accuracy),
            "kappa": _num(self.kappa), "classes": classes,
            "confusion_matrix": {"rows": "labels (truth)", "columns": "prediction",
                                 "class_ids": list(self.class_ids),
                                 "counts": cm.tolist()},
            "pixels": {"total": c.total, "scored": c.scored,
                       "nodata_labels": c.nodata_labels, "ignored": c.ignored,
                       "nodata_pred": c.nodata_pred},
            "ignore_index": self.ignore_index, "convention": CONVENTION,
            "notes": list(self.notes),
        }

    def to_json(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        from geoseg._atomic import atomic_path

        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return Path(path)

    def table(self) -> str:
        """Return the report as a readable text table."""
        width = max([5, *(len(n) for n in self.class_names)])
        cm = self.counts.matrix
        head = (f"{'class':<{width}}  {'IoU':>6}  {'prec':>6}  {'recall':>6}  "
                f"{'F1':>6}  {'labels':>12}  {'predicted':>12}")
        lines = [head, "-" * len(head)]
        for k, name in enumerate(self.class_names):
            lines.append(
                f"{name:<{width}}  {_fmt(self.iou[k])}  {_fmt(self.precision[k])}  "
                f"{_fmt(self.recall[k])}  {_fmt(self.f1[k])}  {int(cm[k].sum()):>12,}  "
                f"{int(cm[:, k].sum()):>12,}")
        c = self.counts
        lines += [
            "-" * len(head),
            f"mIoU {_fmt(self.miou).strip()}  fwIoU {_fmt(self.fw_iou).strip()}  "
            f"accuracy {_fmt(self.accuracy).strip()}  "
            f"kappa {_fmt(self.kappa).strip()}  mean F1 {_fmt(self.mean_f1).strip()}",
            f"pixels: {c.scored:,} scored of {c.total:,}; excluded: "
            f"{c.nodata_labels:,} label nodata/uncovered, {c.ignored:,} ignored"
            + (f" (label {self.ignore_index})" if self.ignore_index is not None else "")
            + f", {c.nodata_pred:,} prediction nodata",
            "NaN: undefined (class absent); means skip NaN (classes present in labels "
            "or prediction).",
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _num(x: float) -> float | None:
    return None if math.isnan(float(x)) else float(x)


def _fmt(x: float) -> str:
    return f"{'nan':>6}" if math.isnan(float(x)) else f"{float(x):6.4f}"


def write_confusion_csv(report: ScoreReport, path: str | os.PathLike[str], *,
                        overwrite: bool = False) -> Path:
    """Write the confusion matrix as CSV (rows truth, columns prediction, pixels).

    The header holds the predicted classes; each row starts with its label class.
    """
    import csv

    from geoseg._atomic import atomic_path

    with atomic_path(path, overwrite=overwrite) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["truth \\ prediction", *report.class_names])
        for name, row in zip(report.class_names, report.counts.matrix.tolist(),
                             strict=True):
            writer.writerow([name, *row])
    return Path(path)


def plot_confusion(report: ScoreReport, path: str | os.PathLike[str], *,
                   overwrite: bool = False) -> Path:
    """Draw the row-normalised confusion matrix (recall on the diagonal) as an image.

    Rows without labels are left blank. Needs matplotlib (imported here, lazily).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from geoseg._atomic import atomic_path

    cm = report.counts.matrix.astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.full_like(cm, np.nan), where=rows > 0)
    n = len(report.class_names)
    size = max(4.0, 0.6 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    try:
        im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(n), report.class_names, rotation=45, ha="right")
        ax.set_yticks(range(n), report.class_names)
        ax.set_xlabel("prediction")
        ax.set_ylabel("labels (truth)")
        ax.set_title(f"mIoU {report.miou:.4f}, accuracy {report.accuracy:.4f}")
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if not math.isnan(norm[i, j]):
                        colour = "white" if norm[i, j] > 0.5 else "black"
                        ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                                fontsize=8, color=colour)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of label row")
        fig.tight_layout()
        dst = Path(path)
        with atomic_path(dst, overwrite=overwrite) as tmp:
            fig.savefig(tmp, dpi=120, format=dst.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return dst


# --------------------------------------------------------------------------- arrays


def _hist_block(truth: npt.NDArray[Any], pred: npt.NDArray[Any], n_truth: int,
                n_pred: int, progress: Progress | None = None) -> npt.NDArray[np.int64]:
    hist = pair_histogram(truth, pred, n_truth, n_pred)
    if progress is not None:
        progress.advance(1)
    return hist.reshape(1, 1, -1)


def _reduce(truth: da.Array, pred: da.Array, n_truth: int, n_pred: int, *,
            num_workers: int | None, progress: Progress | None
            ) -> npt.NDArray[np.int64]:
    """Sum per-chunk value-pair histograms of two dask arrays: ``(n_truth, n_pred)``.

    Values are raw uint8 class values or codes; the histogram is encoded afterwards
    (:func:`geoseg.metrics.collapse_histogram`), once, instead of every pixel.
    """
    pred = pred.rechunk(truth.chunks)  # type: ignore[no-untyped-call]
    nby, nbx = truth.numblocks
    hists = da.map_blocks(  # type: ignore[no-untyped-call]
        _hist_block, truth, pred, n_truth, n_pred, progress, new_axis=2,
        chunks=((1,) * nby, (1,) * nbx, (n_truth * n_pred,)), dtype=np.int64,
        meta=np.empty((0, 0, 0), np.int64))  # no dummy call (it would tick the progress)
    if progress is not None:
        progress.start(nby * nbx, "scoring")
    total = hists.sum(axis=(0, 1), dtype=np.int64)
    (hist,) = dask.compute(  # type: ignore[attr-defined,no-untyped-call]
        total, scheduler="threads", num_workers=num_workers)
    return np.asarray(hist, dtype=np.int64).reshape(n_truth, n_pred)


def _space(arr: da.Array, class_ids: Sequence[int], *, nodata: float | None,
           ignore_index: int | None = None
           ) -> tuple[da.Array, int, npt.NDArray[Any]]:
    """Raw uint8 values (256, encoded later) or codes, and the table to codes."""
    n = len(class_ids)
    if arr.dtype == np.uint8:
        return arr, 256, class_lut(class_ids, 256, nodata=nodata,
                                   ignore_index=ignore_index)
    codes = arr.map_blocks(encode, class_ids, nodata=nodata,  # type: ignore[arg-type]
                           ignore_index=ignore_index, dtype=code_dtype(n))
    return codes, n + 3, np.arange(n + 3)


def _unknown_values(hist: npt.NDArray[np.int64], lut: npt.NDArray[Any], n: int,
                    axis: int) -> set[float]:
    """Raw values present in the histogram that are no class (only for raw spaces)."""
    if lut.size < 256:  # a code space: raw values are not known here
        return set()
    present = hist.sum(axis=axis) > 0
    return {float(v) for v in np.flatnonzero(present[:256] & (lut[:256] == n + 2))}


def confusion_from_arrays(truth: npt.ArrayLike | da.Array,
                          pred: npt.ArrayLike | da.Array, class_ids: Sequence[int],
                          *, ignore_index: int | None = None,
                          truth_nodata: float | None = None,
                          pred_nodata: float | None = NODATA_CLASS,
                          chunks: int | tuple[int, int] | str = "auto",
                          num_workers: int | None = None) -> ConfusionCounts:
    """Streaming confusion matrix of two 2-D class maps (numpy or dask arrays).

    Parameters
    ----------
    truth, pred : (H, W) array
        Labels and prediction, class values (not indexes), same shape.
    class_ids : sequence of int
        Class values in matrix order.
    ignore_index : int, optional
        Label value to exclude.
    truth_nodata, pred_nodata : number, optional
        Nodata values of each map (prediction: 255 by default, as geoseg writes it).
    chunks : int, (int, int) or "auto"
        Chunk shape used for numpy inputs (dask inputs keep theirs).
    """
    from_array: Callable[..., da.Array] = da.from_array
    t = truth if isinstance(truth, da.Array) else from_array(np.asarray(truth),
                                                              chunks=chunks)
    p = pred if isinstance(pred, da.Array) else from_array(np.asarray(pred),
                                                            chunks=t.chunks)
    if t.shape != p.shape or t.ndim != 2:
        raise InputError(f"labels and prediction must be 2-D arrays of the same shape; "
                         f"got {t.shape} and {p.shape}")
    ids = tuple(int(i) for i in class_ids)
    tv, n_truth, truth_lut = _space(t, ids, nodata=truth_nodata,
                                    ignore_index=ignore_index)
    pv, n_pred, pred_lut = _space(p, ids, nodata=pred_nodata)
    hist = _reduce(tv, pv, n_truth, n_pred, num_workers=num_workers, progress=None)
    return ConfusionCounts.from_histogram(
        collapse_histogram(hist, truth_lut, pred_lut, len(ids)))


def score_arrays(truth: npt.ArrayLike | da.Array, pred: npt.ArrayLike | da.Array,
                 class_ids: Sequence[int], class_names: Sequence[str] | None = None, *,
                 ignore_index: int | None = None, truth_nodata: float | None = None,
                 pred_nodata: float | None = NODATA_CLASS,
                 chunks: int | tuple[int, int] | str = "auto",
                 num_workers: int | None = None) -> ScoreReport:
    """:func:`confusion_from_arrays`, then every metric: a :class:`ScoreReport`.

    Values that are not class ids (nor nodata, nor the ignore index) raise InputError.
    """
    counts = confusion_from_arrays(truth, pred, class_ids, ignore_index=ignore_index,
                                   truth_nodata=truth_nodata, pred_nodata=pred_nodata,
                                   chunks=chunks, num_workers=num_workers)
    _check_unknown(counts, class_ids, labels="labels", pred="prediction",
                   label_values=set(), pred_values=set())
    return ScoreReport.from_counts(counts, class_ids, class_names, pred="array",
                                   ignore_index=ignore_index, labels="array")


def _check_unknown(counts: ConfusionCounts, class_ids: Sequence[int], *, labels: str,
                   pred: str, label_values: set[float], pred_values: set[float]
                   ) -> None:
    ids = _describe_ids(class_ids)
    if counts.unknown_labels:
        seen = _examples(label_values)
        raise InputError(
            f"{labels} has {counts.unknown_labels:,} pixels with values{seen} that "
            f"are not classes of the prediction ({len(class_ids)} classes: {ids}); the "
            f"class counts do not match: pass --classes to list every class, or "
            f"--ignore-index for a void value")
    if counts.unknown_pred:
        seen = _examples(pred_values)
        raise InputError(
            f"{pred} has {counts.unknown_pred:,} pixels with values{seen} that are "
            f"not its classes ({len(class_ids)} classes: {ids}); pass --classes to "
            f"list every class")


def _describe_ids(class_ids: Sequence[int]) -> str:
    ids = list(class_ids)
    if ids == list(range(len(ids))):
        return f"ids 0..{len(ids) - 1}"
    return "ids " + ",".join(map(str, ids[:20])) + ("..." if len(ids) > 20 else "")


def _examples(values: set[float]) -> str:
    if not values:
        return ""
    shown = sorted(values)[:8]
    text = ", ".join(str(int(v)) if float(v).is_integer() else str(v) for v in shown)
    return f" such as {text}"


# --------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class _Grid:
    """The prediction's grid and the pixel window being scored."""

    crs: CRS
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
        data = src.read(1, window=win)
        valid = src.read_masks(1, window=win) > 0 if self.needs_mask else None
        return data, valid

    def _open_vrt(self, grid: _Grid) -> list[Any]:
        from rasterio.vrt import WarpedVRT

        src = rasterio.open(self.path)
        vrt = WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width,
                        height=grid.height, resampling=Resampling.nearest,
                        add_alpha=self.nodata is None)
        return [src, vrt]


def _raster_labels(path: str, grid: _Grid, n_classes: int, *, tile: bool = False
                   ) -> _RasterLabels | None:
    """Describe a label raster relative to the grid; None if it does not overlap."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as src:
                crs, transform = src.crs, src.transform
                bounds, nodata, tags = src.bounds, src.nodata, src.tags()
                count, dtype = src.count, src.dtypes[0]
                flags = src.mask_flag_enums[0]
        except RasterioIOError as exc:
            msg = str(exc).splitlines()[0] if str(exc) else "unreadable"
            raise InputError(f"{path} is not a raster GDAL can read ({msg})") from None
    what = "label tile" if tile else "label raster"
    if crs is None:
        raise InputError(f"{what} {path} has no CRS; labels must be georeferenced "
                         f"(assign one with gdal_edit.py -a_srs EPSG:XXXX)")
    if count != 1:
        raise InputError(f"{what} {path} has {count} bands; labels need 1 band of "
                         f"class values")
    names = tags.get("class_names")
    if names and len(names.split(",")) != n_classes:
        raise InputError(
            f"{what} {path} has {len(names.split(','))} classes ({names}); the "
            f"prediction has {n_classes}: the class counts must match")
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
                         needs_mask=needs_mask, dtype=dtype)


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


# --------------------------------------------------------------------------- sources


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
                   ignore_index: int | None, description: str, *, tiles: bool
                   ) -> _Labels:
    n = len(class_ids)
    items = [_raster_labels(p, grid, n, tile=tiles) for p in paths]
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
        lut = np.concatenate([class_lut(class_ids, 256, nodata=item.nodata,
                                        ignore_index=ignore_index),
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
            codes = encode(data, class_ids, nodata=item.nodata, valid=valid,
                           ignore_index=ignore_index)
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


def _vector_source(path: str | Any, grid: _Grid, *, class_ids: Sequence[int],
                   class_names: Sequence[str], ignore_index: int | None,
                   label_field: str | None, label_fill: int | str | None) -> _Labels:
    import geopandas as gpd
    import shapely
    from rasterio.features import rasterize

    if isinstance(path, gpd.GeoDataFrame):
        gdf, description = path, "label GeoDataFrame"
    else:
        description = str(path)
        try:
            gdf = gpd.read_file(path)
        except Exception as exc:  # noqa: BLE001 - pyogrio raises several unrelated types for bad files
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"cannot read vector labels {path} ({msg})") from None
    if gdf.crs is None:
        raise InputError(f"vector labels {description} have no CRS; set one (e.g. "
                         f"ogr2ogr -a_srs EPSG:4326) so they can be placed on the "
                         f"prediction")
    fields = [c for c in gdf.columns if c != gdf.geometry.name]
    if label_field is None:
        raise InputError(f"pass --label-field to say which attribute of {description} "
                         f"holds the class (fields: {', '.join(fields) or 'none'})")
    if label_field not in gdf.columns:
        raise InputError(f"vector labels {description} have no field {label_field!r}; "
                         f"fields: {', '.join(fields) or 'none'}")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty & gdf[label_field].notna()]
    n = len(class_ids)
    codes = np.array([_class_code(v, class_ids, class_names, ignore_index, description)
                      for v in gdf[label_field]], dtype=np.int64)
    fill_code = n + 1 if label_fill is None else _class_code(
        label_fill, class_ids, class_names, ignore_index, "--label-fill")
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


def _class_code(value: Any, class_ids: Sequence[int], class_names: Sequence[str],
                ignore_index: int | None, where: str) -> int:
    """Code of a label value given as a class id or a class name."""
    n = len(class_ids)
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        if value in class_names:
            return class_names.index(value)
        raise UnknownNameError(f"unknown class name {value!r} in {where}; classes of "
                               f"the prediction: {', '.join(class_names)}")
    number = float(value)
    if ignore_index is not None and number == ignore_index:
        return n
    if number.is_integer() and int(number) in class_ids:
        return list(class_ids).index(int(number))
    raise InputError(f"{where} has class value {value!r}, which is not a class of the "
                     f"prediction ({n} classes: {_describe_ids(class_ids)}); the class "
                     f"counts do not match")


def _tile_paths(directory: Path) -> list[str]:
    paths = sorted(str(p) for p in directory.rglob("*")
                   if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
    if not paths:
        raise InputError(f"label directory {directory} holds no raster tiles "
                         f"({', '.join(sorted(RASTER_SUFFIXES))})")
    return paths


# --------------------------------------------------------------------------- score


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


def _labels_kind(labels: str | os.PathLike[str] | Any) -> str:
    if not isinstance(labels, (str, os.PathLike)):
        return "vector"
    p = Path(labels)
    if p.is_dir():
        return "tiles"
    if not p.exists():
        raise InputError(f"labels not found: {p}")
    return "vector" if p.suffix.lower() in VECTOR_SUFFIXES else "raster"


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

