"""The score report: metrics from a confusion matrix, as text, JSON, CSV and a plot."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from geoseg.metrics import (
    ConfusionCounts,
    accuracy,
    cohen_kappa,
    f1_per_class,
    frequency_weighted_iou,
    iou_per_class,
    mean_defined,
    precision_per_class,
    recall_per_class,
)

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


#: Formats :func:`plot_confusion` writes (matplotlib's Agg backend), by extension.
PLOT_EXTENSIONS = (".png", ".svg", ".pdf")


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
        with atomic_path(dst, overwrite=overwrite, extensions=PLOT_EXTENSIONS) as tmp:
            fig.savefig(tmp, dpi=120, format=dst.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return dst
