"""Confusion matrices of label and prediction arrays (numpy or dask), chunk by chunk."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import numpy.typing as npt

from geoseg.errors import InputError
from geoseg.io import NODATA_CLASS
from geoseg.metrics import (
    ConfusionCounts,
    class_lut,
    code_dtype,
    collapse_histogram,
    encode,
    pair_histogram,
)
from geoseg.progress import Progress
from geoseg.scoring.report import ScoreReport


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
            f"class ids do not match: pass --label-map VALUE=CLASS to say which class "
            f"each label value is, or --ignore-index for a void value")
    if counts.unknown_pred:
        seen = _examples(pred_values)
        raise InputError(
            f"{pred} has {counts.unknown_pred:,} pixels with values{seen} that are "
            f"not its classes ({len(class_ids)} classes: {ids}); its class tags are "
            f"wrong: pass --classes to name every class in id order")


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
