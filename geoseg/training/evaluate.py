"""Held-out evaluation of a bundle through the same path users take: ``geoseg.pipeline.predict``.

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
from typing import Any

import numpy as np
import numpy.typing as npt

from geoseg.training.data import IGNORE, ClassTable, Pair, read_pair

__all__ = ["HeldOut", "evaluate_bundle"]


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
                    table: ClassTable, *, exclude: Sequence[str] = (),
                    device: str = "cpu", batch_size: int = 4) -> HeldOut:
    """Predict every image of ``pairs`` with ``model`` and score it against its mask.

    Parameters
    ----------
    model : str, path or Bundle
        What ``geoseg.pipeline.predict`` accepts.
    table : ClassTable
        How to decode the masks; its classes must be the model's, in the same order.
    exclude : sequence of str
        Class names left out of the macro mIoU (still reported per class).
    """
    from geoseg.pipeline import predict
    from geoseg.training.loop import iou_from_confusion

    names = [c.name for c in table.classes]
    include = [k for k, n in enumerate(names) if n not in exclude]
    n = len(names)
    total = np.zeros((n, n), np.int64)
    per_image: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="geoseg-eval-") as tmp:
        for k, pair in enumerate(pairs):
            labelled, _ = read_pair(pair, table)
            out = Path(tmp) / f"pred{k}.tif"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # JPEG tiles have no georeferencing
                predict(pair.image, out, model=model, device=device, batch_size=batch_size,
                        overwrite=True, engine="eager")
            import rasterio

            with rasterio.open(out) as ds:
                pred = ds.read(1)
            truth = labelled.mask
            valid = (truth != IGNORE) & (pred != IGNORE)
            cm = np.bincount(truth[valid].astype(np.int64) * n + pred[valid],
                             minlength=n * n).reshape(n, n)
            total += cm
            per_image[_image_key(pair)] = iou_from_confusion(cm, include)[1]
    iou, miou = iou_from_confusion(total, include)
    return HeldOut(total, {nm: float(v) for nm, v in zip(names, iou, strict=True)}, miou,
                   tuple(names[k] for k in include), per_image, int(total.sum()))
