"""Segmentation losses with class weights and an ignore index.

``ce`` (cross-entropy), ``dice`` (soft Dice over the classes present), ``focal`` and
``ce+dice``. Pixels labelled ``ignore_index`` take no part in any of them. smp's losses
are not used because its Dice and focal losses take no per-class weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from geoseg.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["LOSSES", "auto_class_weights", "make_loss"]

LOSSES = ("ce", "dice", "focal", "ce+dice")


def auto_class_weights(counts: npt.NDArray[np.int64]) -> list[float]:
    """Class weights from label frequencies: ``1 / sqrt(frequency)``, mean 1.

    The square root keeps rare classes from dominating; classes absent from the
    training labels get weight 0 (nothing to learn from).
    """
    freq = counts / max(int(counts.sum()), 1)
    w = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1e-12)), 0.0)
    present = w > 0
    if present.any():
        w[present] /= w[present].mean()
    return [float(v) for v in w]


def make_loss(name: str, *, n_classes: int, weights: Sequence[float] | None = None,
              ignore_index: int = 255, focal_gamma: float = 2.0) -> nn.Module:
    """Build the loss ``name`` (one of ``LOSSES``) as a module ``loss(logits, target)``."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    if name not in LOSSES:
        raise InputError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")
    if weights is not None and len(weights) != n_classes:
        raise InputError(f"{len(weights)} class weights given for {n_classes} classes")
    w = torch.tensor(list(weights), dtype=torch.float32) if weights is not None else None

    class SegLoss(nn.Module):
        weight: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("weight", w if w is not None else torch.ones(n_classes))

        def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits, target, weight=self.weight,
                                   ignore_index=ignore_index)

        def _focal(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            valid = target != ignore_index
            t = torch.where(valid, target, torch.zeros_like(target))
            logp = F.log_softmax(logits, dim=1).gather(1, t[:, None])[:, 0]
            loss = -((1 - logp.exp()) ** focal_gamma) * logp * self.weight[t]
            denom = (self.weight[t] * valid).sum().clamp_min(1e-6)
            return (loss * valid).sum() / denom

        def _dice(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            valid = (target != ignore_index)[:, None].to(logits.dtype)
            t = torch.where(target == ignore_index, torch.zeros_like(target), target)
            prob = logits.softmax(dim=1) * valid
            onehot = F.one_hot(t, n_classes).permute(0, 3, 1, 2).to(logits.dtype) * valid
            dims = (0, 2, 3)
            inter = (prob * onehot).sum(dims)
            card = prob.sum(dims) + onehot.sum(dims)
            dice = (2 * inter + 1.0) / (card + 1.0)
            present = (onehot.sum(dims) > 0).to(logits.dtype) * self.weight
            return ((1 - dice) * present).sum() / present.sum().clamp_min(1e-6)

        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            logits = logits.float()
            if name == "ce":
                return self._ce(logits, target)
            if name == "focal":
                return self._focal(logits, target)
            if name == "dice":
                return self._dice(logits, target)
            return self._ce(logits, target) + self._dice(logits, target)

    return SegLoss()
