"""Held-out evaluation of a bundle through the path users take (``geoseg predict``).

Each image is predicted to a temporary class map (tiled, blended, exactly as ``geoseg
predict`` does), compared with its mask, and the confusion matrices are summed. This is
the code that computes the figures on the default models' card, and the test that checks
the shipped models against the card runs it too.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.metrics import confusion_counts, iou_per_class, mean_defined
from geoseg.prediction.inference import autocast
from geoseg.training.data import IGNORE, LabeledImage, MaskClasses, Pair, read_pair

if TYPE_CHECKING:
    import torch
    from torch import nn



__all__ = ["HeldOut", "confusion_matrix", "evaluate_bundle", "evaluate_images",
           "iou_from_confusion"]


@dataclass(frozen=True, slots=True)
class HeldOut:
    """Held-out scores of a bundle: pooled over all images, and per image."""

    confusion: npt.NDArray[np.int64]
    iou: dict[str, float]
    miou: float
    miou_classes: tuple[str, ...]
    per_image: dict[str, float]
    pixels: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (stored in the bundle's provenance)."""
        return {"macro_miou": round(self.miou, 6), "miou_classes": list(self.miou_classes),
                "iou": {k: None if math.isnan(v) else round(v, 6)
                        for k, v in self.iou.items()},
                "per_image_miou": {k: round(v, 6) for k, v in self.per_image.items()},
                "pixels": self.pixels}


def _image_key(pair: Pair) -> str:
    return f"{pair.image.parent.parent.name}/{pair.image.name}"


def evaluate_bundle(model: str | os.PathLike[str] | Any, pairs: Sequence[Pair],
                    table: MaskClasses, *, exclude: Sequence[str] = (),
                    device: str = "cpu", batch_size: int = 4, engine: str = "eager",
                    precision: str = "auto", calibration: str | None = None,
                    keep: Path | None = None) -> HeldOut:
    """Predict every image of ``pairs`` with ``model`` and score it against its mask.

    Parameters
    ----------
    model : str, path or Bundle
        What ``geoseg.prediction.pipeline.predict`` accepts.
    table : MaskClasses
        How to decode the masks; its classes must be the model's, in the same order.
    exclude : sequence of str
        Class names left out of the macro mIoU (still reported per class).
    engine, precision, calibration : str
        How the model runs (as ``predict``'s; int8 calibrates on ``calibration``).
    keep : path, optional
        A directory to keep the class maps in (``pred{k}.tif``, ``k`` the pair's index).
    """
    from geoseg.prediction.pipeline import predict

    names = [c.name for c in table.classes]
    include = [k for k, n in enumerate(names) if n not in exclude]
    n = len(names)
    total = np.zeros((n, n), np.int64)
    per_image: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="geoseg-eval-") as tmp:
        for k, pair in enumerate(pairs):
            labelled, _ = read_pair(pair, table)
            out = (keep or Path(tmp)) / f"pred{k}.tif"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # JPEG tiles have no georeferencing
                predict(pair.image, out, model=model, device=device, batch_size=batch_size,
                        overwrite=True, engine=engine, precision=precision,
                        calibration=calibration)
            import rasterio

            with rasterio.open(out) as ds:
                pred = ds.read(1)
            cm = confusion_counts(labelled.mask, pred, range(n), ignore_index=IGNORE,
                                  pred_nodata=IGNORE).matrix
            total += cm
            per_image[_image_key(pair)] = iou_from_confusion(cm, include)[1]
    iou, miou = iou_from_confusion(total, include)
    return HeldOut(total, {nm: float(v) for nm, v in zip(names, iou, strict=True)}, miou,
                   tuple(names[k] for k in include), per_image, int(total.sum()))


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts, rows truth, columns prediction; ``IGNORE`` pixels skipped.

    Computed by :func:`geoseg.metrics.confusion_counts`, the code ``score`` uses.
    """
    import torch

    counts = confusion_counts(target.cpu().numpy(), pred.cpu().numpy(), range(n_classes),
                              ignore_index=IGNORE, pred_nodata=IGNORE)
    return torch.from_numpy(counts.matrix)


def iou_from_confusion(cm: npt.NDArray[np.int64], include: Sequence[int] | None = None
                       ) -> tuple[npt.NDArray[np.float64], float]:
    """IoU per class and the macro mIoU over ``include`` (default: all classes).

    IoU is NaN where a class is absent from truth and prediction; mIoU skips NaN classes
    (:func:`geoseg.metrics.iou_per_class` and :func:`geoseg.metrics.mean_defined`).
    """
    iou = iou_per_class(cm)
    return iou, mean_defined(iou if include is None else iou[list(include)])


def _val_chips(images: Sequence[LabeledImage], size: int, mean: npt.NDArray[np.float32],
               std: npt.NDArray[np.float32], limit: int | None
               ) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]]:
    """Cut non-overlapping chips covering the validation images.

    Edges are padded with IGNORE, so every pixel counts once; ``limit`` keeps an evenly
    spaced subset.
    """
    windows = []
    for k, im in enumerate(images):
        h, w = im.mask.shape
        for y in range(0, h, size):
            for x in range(0, w, size):
                if (im.mask[y:y + size, x:x + size] != IGNORE).any():
                    windows.append((k, y, x))
    if limit is not None and len(windows) > limit:
        idx = np.linspace(0, len(windows) - 1, limit).round().astype(int)
        windows = [windows[i] for i in idx]
    chips = []
    for k, y, x in windows:
        im = images[k]
        img = im.model_input(mean.ravel().tolist(), slice(y, y + size), slice(x, x + size))
        msk = im.mask[y:y + size, x:x + size]
        ph, pw = size - msk.shape[0], size - msk.shape[1]
        if ph or pw:
            img = np.pad(img, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(
                msk.shape) > max(ph, pw) else "constant")
            msk = np.pad(msk, ((0, ph), (0, pw)), constant_values=IGNORE)
        chips.append(((img - mean) / std, msk))
    return chips


def evaluate_images(model: nn.Module, chips: Sequence[tuple[npt.NDArray[np.float32],
                                                            npt.NDArray[np.uint8]]],
                    n_classes: int, *, loss_fn: nn.Module | None = None,
                    device: torch.device | None = None, precision: str = "fp32",
                    batch_size: int = 4, channels_last: bool = False
                    ) -> tuple[npt.NDArray[np.int64], float]:
    """Confusion matrix and mean loss of ``model`` over normalised validation chips."""
    import torch

    device = device or torch.device("cpu")
    cm = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    total, batches = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(chips), batch_size):
                part = chips[i:i + batch_size]
                x = torch.from_numpy(np.stack([c[0] for c in part])).to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = torch.from_numpy(np.stack([c[1] for c in part]).astype(np.int64)).to(device)
                with autocast(device, precision):
                    logits = model(x)
                if loss_fn is not None and bool((y != IGNORE).any()):  # all-ignore: NaN loss
                    total += float(loss_fn(logits.float(), y))
                    batches += 1
                cm += confusion_matrix(logits.argmax(1).cpu(), y.cpu(), n_classes)
    finally:
        model.train(was_training)
    return cm.numpy(), total / batches if batches else math.nan

