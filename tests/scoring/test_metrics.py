"""Exactness of the confusion matrix and metrics against independent references.

References: an exact rational implementation written here (per-class boolean masks and
``fractions.Fraction``, no bincount, no confusion matrix) compared to 1e-9, and
torchmetrics' multiclass metrics (its confusion matrix exactly; its float32 metrics to
1e-6, the precision float32 allows).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from geoseg.metrics import (
    ConfusionCounts,
    accuracy,
    cohen_kappa,
    confusion_counts,
    encode,
    f1_per_class,
    frequency_weighted_iou,
    iou_per_class,
    mean_defined,
    precision_per_class,
    recall_per_class,
)
from geoseg.scoring.pipeline import confusion_from_arrays, score_arrays
from geoseg.testing import make_class_map

C = 5
IDS = list(range(C))
NODATA_T = 254
NODATA_P = 255


def _maps(kind: str, seed: int, *, ignore: int | None, nodata: bool):
    rng = np.random.default_rng(seed)
    shape = (173, 141)
    if kind == "random":
        truth = rng.integers(0, C, shape).astype(np.uint8)
        pred = rng.integers(0, C, shape).astype(np.uint8)
    else:  # structured: blocky regions, prediction = truth with blocky errors
        truth = make_class_map(shape, n_classes=C, block=12, seed=seed)
        pred = truth.copy()
        wrong = make_class_map(shape, n_classes=3, block=7, seed=seed + 1) == 0
        pred[wrong] = (truth[wrong] + 1 + rng.integers(0, C - 1, wrong.sum())) % C
        pred[truth == 3] = 1  # class 3 never predicted: precision undefined
        truth[truth == 4] = 0  # class 4 only predicted: recall undefined
        pred[pred == 2] = 0  # class 2 never predicted either
    if ignore is not None:
        truth[rng.random(shape) < 0.07] = ignore
    if nodata:
        truth[rng.random(shape) < 0.05] = NODATA_T
        pred[rng.random(shape) < 0.05] = NODATA_P
        pred[:9, :] = NODATA_P
    return truth, pred


def _reference(truth, pred, ignore):
    """Exact metrics from boolean masks and fractions (independent of geoseg)."""
    scored = (truth != NODATA_T) & (pred != NODATA_P)
    if ignore is not None:
        scored &= truth != ignore
    t, p = truth[scored], pred[scored]
    n = t.size
    out = {"iou": [], "precision": [], "recall": [], "f1": [], "support": []}
    for c in IDS:
        tp = int(np.sum((t == c) & (p == c)))
        fp = int(np.sum((t != c) & (p == c)))
        fn = int(np.sum((t == c) & (p != c)))
        if ignore == c:
            tp = fp = fn = 0
        def frac(a, b):
            return Fraction(a, b) if b else None
        out["iou"].append(frac(tp, tp + fp + fn))
        out["precision"].append(frac(tp, tp + fp))
        out["recall"].append(frac(tp, tp + fn))
        out["f1"].append(frac(2 * tp, 2 * tp + fp + fn))
        out["support"].append(int(np.sum(t == c)))
    defined = [v for v in out["iou"] if v is not None]
    out["miou"] = sum(defined) / len(defined)
    out["accuracy"] = Fraction(int(np.sum(t == p)), n)
    pairs = zip(out["support"], out["iou"], strict=True)
    out["fw_iou"] = sum(Fraction(s, n) * v for s, v in pairs
                        if v is not None and s)
    po = out["accuracy"]
    pe = sum(Fraction(int(np.sum(t == c)) * int(np.sum(p == c)), n * n) for c in IDS)
    out["kappa"] = (po - pe) / (1 - pe)
    out["excluded"] = {
        "nodata_labels": int(np.sum(truth == NODATA_T)),
        "ignored": int(np.sum((truth == ignore) if ignore is not None else 0)),
        "nodata_pred": int(np.sum((truth != NODATA_T)
                                  & ((truth != ignore) if ignore is not None else True)
                                  & (pred == NODATA_P))),
    }
    return out


def _close(a, b):
    if b is None:
        return math.isnan(a)
    return abs(a - float(b)) <= 1e-9


@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize(("ignore", "nodata"), [(None, False), (250, False),
                                                (None, True),
                                                (250, True), (1, True)])
@pytest.mark.parametrize("chunks", [(173, 141), 64, (17, 29)])
def test_metrics_match_exact_reference(kind, ignore, nodata, chunks):
    truth, pred = _maps(kind, 3, ignore=ignore, nodata=nodata)
    ref = _reference(truth, pred, ignore)
    report = score_arrays(truth, pred, IDS, ignore_index=ignore, chunks=chunks,
                          truth_nodata=NODATA_T if nodata else None,
                          pred_nodata=NODATA_P)
    for key in ("iou", "precision", "recall", "f1"):
        got = getattr(report, key)
        assert all(_close(g, r) for g, r in zip(got, ref[key], strict=True)), (key, got)
    for key in ("miou", "accuracy", "fw_iou", "kappa"):
        assert abs(getattr(report, key) - float(ref[key])) <= 1e-9, key
    c = report.counts
    assert c.nodata_labels == ref["excluded"]["nodata_labels"]
    assert c.ignored == ref["excluded"]["ignored"]
    assert c.nodata_pred == ref["excluded"]["nodata_pred"]
    assert c.total == truth.size


@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("ignore", [None, 2])
def test_matches_torchmetrics(kind, ignore):
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.classification")
    truth, pred = _maps(kind, 5, ignore=ignore, nodata=True)
    report = score_arrays(truth, pred, IDS, ignore_index=ignore, chunks=50,
                          truth_nodata=NODATA_T, pred_nodata=NODATA_P)
    # torchmetrics has no notion of nodata: drop those pixels, let it handle ignore.
    keep = (truth != NODATA_T) & (pred != NODATA_P)
    t = torch.from_numpy(truth[keep].astype(np.int64))
    p = torch.from_numpy(pred[keep].astype(np.int64))
    kw = {"num_classes": C, "ignore_index": ignore}
    cm = tm.MulticlassConfusionMatrix(**kw)(p, t).numpy()
    np.testing.assert_array_equal(report.matrix, cm)  # exact integer counts
    iou = tm.MulticlassJaccardIndex(average=None, **kw)(p, t).numpy()
    present = ~np.isnan(report.iou)
    np.testing.assert_allclose(report.iou[present], iou[present], rtol=1e-6)
    f1 = tm.MulticlassF1Score(average=None, **kw)(p, t).numpy()
    np.testing.assert_allclose(report.f1[present], f1[present], rtol=1e-6, atol=1e-7)
    acc = tm.MulticlassAccuracy(average="micro", **kw)(p, t).item()
    assert report.accuracy == pytest.approx(acc, rel=1e-6)
    kappa = tm.MulticlassCohenKappa(**kw)(p, t).item()
    assert report.kappa == pytest.approx(kappa, rel=1e-5)


def test_chunked_equals_whole_on_dask_input():
    da = pytest.importorskip("dask.array")
    truth, pred = _maps("structured", 9, ignore=250, nodata=True)
    whole = confusion_counts(truth, pred, IDS, ignore_index=250, truth_nodata=NODATA_T,
                             pred_nodata=NODATA_P)
    chunked = confusion_from_arrays(da.from_array(truth, chunks=(40, 23)),
                                    da.from_array(pred, chunks=(31, 60)), IDS,
                                    ignore_index=250, truth_nodata=NODATA_T,
                                    pred_nodata=NODATA_P)
    np.testing.assert_array_equal(whole.matrix, chunked.matrix)
    assert (whole.nodata_labels, whole.ignored, whole.nodata_pred) == \
        (chunked.nodata_labels, chunked.ignored, chunked.nodata_pred)


def test_absent_classes_are_nan_and_skipped():
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    assert math.isnan(iou_per_class(cm)[2])
    assert mean_defined(iou_per_class(cm)) == pytest.approx((5 / 8 + 3 / 6) / 2)
    # A class predicted but absent from labels counts with IoU 0 in the mean.
    cm2 = np.array([[5, 1], [0, 0]])
    assert iou_per_class(cm2).tolist() == [5 / 6, 0.0]
    assert math.isnan(recall_per_class(cm2)[1])
    assert precision_per_class(cm2)[1] == 0.0
    assert f1_per_class(cm2)[1] == 0.0


def test_degenerate_matrices():
    empty = np.zeros((3, 3), np.int64)
    assert math.isnan(accuracy(empty))
    assert math.isnan(cohen_kappa(empty))
    assert math.isnan(frequency_weighted_iou(empty))
    assert math.isnan(mean_defined(iou_per_class(empty)))
    one = np.array([[7, 0], [0, 0]])  # one class everywhere: kappa undefined
    assert math.isnan(cohen_kappa(one))
    assert accuracy(one) == 1.0
    perfect = np.diag([3, 4, 5])
    assert cohen_kappa(perfect) == 1.0
    assert frequency_weighted_iou(perfect) == 1.0


def test_encode_codes_and_precedence():
    ids = [0, 3, 7]
    values = np.array([0, 3, 7, 5, 9, 200, 7], dtype=np.uint8)
    # 7 is nodata here and nodata wins over being a class; 9 is ignored; others unknown
    codes = encode(values, ids, nodata=7, ignore_index=9)
    assert codes.tolist() == [0, 1, 4, 5, 3, 5, 4]
    wide = encode(values.astype(np.int32) - 1000, [-1000, -997], nodata=-9999)
    assert wide.tolist() == [0, 1, 4, 4, 4, 4, 4]
    floats = encode(np.array([0.0, 1.0, np.nan, 2.5]), [0, 1])
    assert floats.tolist() == [0, 1, 3, 4]
    valid = np.array([True, False, True])
    masked = encode(np.array([0, 1, 1], np.uint8), [0, 1], valid=valid)
    assert masked.tolist() == [0, 3, 1]


def test_counts_from_histogram_keep_unknowns_apart():
    c = confusion_counts(np.array([0, 1, 9, 1]), np.array([0, 8, 1, 1]), [0, 1])
    assert isinstance(c, ConfusionCounts)
    assert c.unknown_labels == 1
    assert c.unknown_pred == 1
    assert c.scored == 2
    assert c.total == 4
