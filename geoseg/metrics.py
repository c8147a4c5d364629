"""Confusion matrices and the segmentation metrics computed from them (pure numpy).

Conventions (the same everywhere in geoseg, and written into every report)
---------------------------------------------------------------------------
- The confusion matrix has ground truth in rows and predictions in columns, in pixels.
- A pixel is *scored* only when its label is a class, its label is not the ignore
  index and its prediction is a class. The other pixels are counted, each in exactly one
  bucket, in this order of precedence: label nodata (or outside every label), label
  equal to the ignore index, prediction nodata.
- Per-class IoU, precision, recall and F1 are NaN when undefined (0/0): IoU and F1 for a
  class absent from both labels and prediction, precision for a class never predicted,
  recall for a class absent from the labels.
- mIoU (and mean F1, mean precision, mean recall) is the mean over the classes where the
  value is defined, i.e. NaN entries are skipped: mIoU averages over the classes present
  in the labels OR the prediction. A class predicted but absent from the labels counts
  with IoU 0.
- When the ignore index is one of the class ids, that class gets NaN for every
  per-class metric and takes no part in the means (its label pixels are excluded;
  predictions of it on scored pixels still count as errors of the true class).
- Frequency-weighted IoU weighs each class's IoU by its share of scored label pixels.

Labels and predictions are first *encoded*: class ids become indexes ``0..C-1``; three
extra codes mark ignored, nodata and unknown values. The joint histogram of the codes
(one ``np.bincount``) holds the confusion matrix and every exclusion count at once, and
histograms of chunks simply add, which is what makes streaming exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ConfusionCounts",
    "accuracy",
    "class_lut",
    "cohen_kappa",
    "collapse_histogram",
    "confusion_counts",
    "encode",
    "f1_per_class",
    "frequency_weighted_iou",
    "iou_per_class",
    "joint_histogram",
    "mean_defined",
    "pair_histogram",
    "precision_per_class",
    "recall_per_class",
]

Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def code_dtype(n_classes: int) -> type[np.unsignedinteger[Any]]:
    """Smallest unsigned dtype holding codes ``0..n_classes+2``."""
    return np.uint8 if n_classes + 3 <= 256 else np.uint16


def class_lut(class_ids: Sequence[int], size: int = 256, *, offset: int = 0,
              nodata: float | None = None, ignore_index: int | None = None
              ) -> npt.NDArray[Any]:
    """Code of every value ``offset .. offset+size-1`` (see :func:`encode`)."""
    n = len(class_ids)
    dtype = code_dtype(n)
    ids = np.asarray(class_ids, dtype=np.int64)
    lut = np.full(size, n + 2, dtype=dtype)
    inside = (ids >= offset) & (ids - offset < size)
    lut[ids[inside] - offset] = np.arange(n, dtype=dtype)[inside]
    for value, code in ((ignore_index, n), (nodata, n + 1)):
        if (value is not None and float(value).is_integer()
                and 0 <= value - offset < size):
            lut[int(value) - offset] = code
    return lut


def pair_histogram(truth: npt.NDArray[Any], pred: npt.NDArray[Any], n_truth: int,
                   n_pred: int) -> Int64Array:
    """Count pixels per (truth value, prediction value) pair: ``(n_truth, n_pred)``.

    Values must be integers in ``0..n_truth-1`` and ``0..n_pred-1``. This is the
    streaming kernel, one ``np.bincount(truth * n_pred + pred)``; histograms of
    disjoint chunks add up to the histogram of the whole.
    """
    wide = np.uint16 if n_truth * n_pred <= 65536 else np.uint32
    flat: npt.NDArray[Any] = truth.astype(wide).ravel()
    flat *= n_pred
    flat += pred.astype(wide, copy=False).ravel()
    hist = np.bincount(flat, minlength=n_truth * n_pred)
    return hist.astype(np.int64, copy=False).reshape(n_truth, n_pred)


def collapse_histogram(hist: Int64Array, truth_lut: npt.NDArray[Any],
                       pred_lut: npt.NDArray[Any], n_classes: int) -> Int64Array:
    """Turn a histogram of raw value pairs into one of codes, ``(C+3, C+3)``.

    ``truth_lut[v]`` / ``pred_lut[v]`` is the code of raw value ``v``. Scoring raw uint8
    values and encoding the (small) histogram once is exact and saves a pass per pixel.
    """
    k = n_classes + 3
    out = np.zeros((k, k), np.int64)
    rows = np.asarray(truth_lut, np.intp)[:, None]
    cols = np.asarray(pred_lut, np.intp)[None, :]
    index = (np.broadcast_to(rows, hist.shape), np.broadcast_to(cols, hist.shape))
    np.add.at(out, index, hist)
    return out


def encode(values: npt.NDArray[Any], class_ids: Sequence[int], *,
           nodata: float | None = None, ignore_index: int | None = None,
           valid: npt.NDArray[np.bool_] | None = None) -> npt.NDArray[Any]:
    """Encode class values as ``0..C-1``; ``C`` ignored, ``C+1`` nodata, ``C+2`` other.

    Parameters
    ----------
    values : ndarray
        Class values (any integer or float dtype).
    class_ids : sequence of int
        The class values, in class order (``class_ids[k]`` becomes code ``k``).
    nodata : number, optional
        Value meaning "no data" (NaN and +-inf also count as nodata for float arrays).
    ignore_index : int, optional
        Value to exclude from scoring (checked after ``nodata``).
    valid : bool ndarray, optional
        False where the pixel holds no data (a dataset mask); overrides everything.

    Returns
    -------
    ndarray of :func:`code_dtype`
        Codes with the same shape as ``values``.
    """
    n = len(class_ids)
    ignored, nodata_code, unknown = n, n + 1, n + 2
    dtype = code_dtype(n)
    arr = np.asarray(values)
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
        # A lookup table over every possible value: one pass, the fast path for rasters.
        lo = int(np.iinfo(arr.dtype).min)
        lut = class_lut(class_ids, int(np.iinfo(arr.dtype).max) - lo + 1, offset=lo,
                        nodata=nodata, ignore_index=ignore_index)
        out = np.take(lut, arr.astype(np.int64) - lo if lo else arr)
    else:
        out = np.full(arr.shape, unknown, dtype=dtype)
        for k, cid in enumerate(class_ids):
            out[arr == cid] = k
        if ignore_index is not None:
            out[arr == ignore_index] = ignored
        if nodata is not None:
            out[arr == nodata] = nodata_code
        if arr.dtype.kind == "f":  # NaN and +-inf are nodata, never a class
            out[~np.isfinite(arr)] = nodata_code
    if valid is not None:
        out[~np.asarray(valid, dtype=bool)] = nodata_code
    return out


def joint_histogram(truth_codes: npt.NDArray[Any], pred_codes: npt.NDArray[Any],
                    n_classes: int) -> Int64Array:
    """Count pixels per (label code, prediction code) pair: a ``(C+3, C+3)`` matrix.

    This is the streaming kernel: ``np.bincount(truth * K + pred)``; histograms of
    disjoint chunks add up to the histogram of the whole.
    """
    k = n_classes + 3
    return pair_histogram(truth_codes, pred_codes, k, k)


@dataclass(frozen=True)
class ConfusionCounts:
    """A confusion matrix plus the pixels left out of it, each counted once.

    Attributes
    ----------
    matrix : (C, C) int64 ndarray
        Scored pixels; rows are labels (truth), columns are predictions.
    nodata_labels : int
        Pixels whose label is nodata, or that no label covers.
    ignored : int
        Pixels whose label equals the ignore index.
    nodata_pred : int
        Labelled, not ignored pixels where the prediction is nodata.
    unknown_labels, unknown_pred : int
        Pixels holding a value that is no class id (an input error to report).
    """

    matrix: Int64Array
    nodata_labels: int = 0
    ignored: int = 0
    nodata_pred: int = 0
    unknown_labels: int = 0
    unknown_pred: int = 0

    @classmethod
    def from_histogram(cls, hist: Int64Array) -> ConfusionCounts:
        """Split a :func:`joint_histogram` into the matrix and the exclusion counts."""
        n = hist.shape[0] - 3
        ignored, nodata, unknown = n, n + 1, n + 2
        return cls(
            matrix=np.ascontiguousarray(hist[:n, :n]),
            nodata_labels=int(hist[nodata].sum()),
            unknown_labels=int(hist[unknown].sum()),
            ignored=int(hist[ignored].sum()),
            nodata_pred=int(hist[:n, nodata].sum()),
            unknown_pred=int(hist[:, unknown].sum()),
        )

    @property
    def scored(self) -> int:
        """Pixels in the confusion matrix."""
        return int(self.matrix.sum())

    @property
    def total(self) -> int:
        """Every pixel looked at (scored plus every exclusion)."""
        return (self.scored + self.nodata_labels + self.ignored + self.nodata_pred
                + self.unknown_labels + int(self.unknown_pred))


def confusion_counts(truth: npt.NDArray[Any], pred: npt.NDArray[Any],
                     class_ids: Sequence[int], *, ignore_index: int | None = None,
                     truth_nodata: float | None = None, pred_nodata: float | None = None
                     ) -> ConfusionCounts:
    """Confusion matrix and exclusion counts of two class maps of the same shape.

    Examples
    --------
    >>> c = confusion_counts(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 255]),
    ...                      [0, 1, 2], pred_nodata=255)
    >>> c.matrix.tolist(), c.nodata_pred
    ([[1, 1, 0], [0, 1, 0], [0, 0, 0]], 1)
    """
    if np.shape(truth) != np.shape(pred):
        raise ValueError(f"shapes differ: labels {np.shape(truth)}, "
                         f"prediction {np.shape(pred)}")
    t = encode(truth, class_ids, nodata=truth_nodata, ignore_index=ignore_index)
    p = encode(pred, class_ids, nodata=pred_nodata)
    return ConfusionCounts.from_histogram(joint_histogram(t, p, len(class_ids)))


def _divide(num: npt.ArrayLike, den: npt.ArrayLike) -> FloatArray:
    """``num / den`` with NaN where ``den`` is 0 (an undefined value, not an error)."""
    n = np.asarray(num, dtype=np.float64)
    d = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(n, d).shape, np.nan)
    np.divide(n, d, out=out, where=d != 0)
    return out


def _parts(cm: npt.ArrayLike) -> tuple[Int64Array, Int64Array, Int64Array]:
    m = np.asarray(cm, dtype=np.int64)
    tp = np.diag(m)
    return tp, m.sum(axis=0) - tp, m.sum(axis=1) - tp


def iou_per_class(cm: npt.ArrayLike) -> FloatArray:
    """Intersection over union for each class: ``TP / (TP + FP + FN)``.

    Parameters
    ----------
    cm : (C, C) array
        Rows are ground truth and columns are predictions, pixel counts.

    Returns
    -------
    (C,) float64 ndarray
        NaN where a class is absent from both truth and prediction.

    Examples
    --------
    >>> iou_per_class(np.array([[2, 0, 0], [1, 1, 0], [0, 0, 0]]))
    array([0.66666667, 0.5       ,        nan])
    """
    tp, fp, fn = _parts(cm)
    return _divide(tp, tp + fp + fn)


def precision_per_class(cm: npt.ArrayLike) -> FloatArray:
    """``TP / (TP + FP)`` per class; NaN for a class never predicted."""
    tp, fp, _ = _parts(cm)
    return _divide(tp, tp + fp)


def recall_per_class(cm: npt.ArrayLike) -> FloatArray:
    """``TP / (TP + FN)`` per class; NaN for a class absent from the labels."""
    tp, _, fn = _parts(cm)
    return _divide(tp, tp + fn)


def f1_per_class(cm: npt.ArrayLike) -> FloatArray:
    """``2 TP / (2 TP + FP + FN)`` per class (Dice); NaN for a class absent in both."""
    tp, fp, fn = _parts(cm)
    return _divide(2 * tp, 2 * tp + fp + fn)


def mean_defined(values: npt.ArrayLike) -> float:
    """Mean of the defined (non-NaN) values; NaN if none is defined.

    Examples
    --------
    >>> mean_defined([0.5, float("nan"), 1.0])
    0.75
    """
    arr = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(arr)
    return float(arr[ok].mean()) if ok.any() else math.nan


def accuracy(cm: npt.ArrayLike) -> float:
    """Overall accuracy: correctly classified scored pixels over all scored pixels."""
    m = np.asarray(cm, dtype=np.int64)
    total = int(m.sum())
    return float(np.trace(m)) / total if total else math.nan


def frequency_weighted_iou(cm: npt.ArrayLike) -> float:
    """Sum of per-class IoU weighted by each class's share of the labelled pixels."""
    m = np.asarray(cm, dtype=np.int64)
    support = m.sum(axis=1)
    total = int(support.sum())
    if not total:
        return math.nan
    iou = iou_per_class(m)
    present = support > 0  # a class with labels always has a defined IoU
    return float(np.sum(support[present] * iou[present]) / total)


def cohen_kappa(cm: npt.ArrayLike) -> float:
    """Cohen's kappa: agreement beyond chance, ``(p_o - p_e) / (1 - p_e)``.

    NaN when chance agreement is 1 (a single class everywhere in both maps).
    """
    m = np.asarray(cm, dtype=np.int64)
    total = float(m.sum())
    if not total:
        return math.nan
    po = float(np.trace(m)) / total
    pe = float(np.sum(m.sum(axis=0).astype(np.float64) * m.sum(axis=1))) / total**2
    return (po - pe) / (1.0 - pe) if pe != 1.0 else math.nan
