"""Training settings and results (all recorded in the bundle's provenance)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geoseg.training.augment import Augment
from geoseg.training.instances import InstanceTarget


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Settings of a training run (all stored in the bundle's provenance)."""

    architecture: str = "unet"
    backbone: str = "resnet18"
    arch_params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 8
    crop_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    loss: str = "ce+dice"
    class_weights: str | tuple[float, ...] | None = "auto"
    ignore_index: int | None = None
    seed: int = 0
    patience: int | None = None
    select: str = "miou"  # the best epoch: highest val "miou" or lowest val "loss"
    max_minutes: float | None = None
    freeze_backbone: int = 0
    device: str = "auto"
    precision: str = "auto"
    tile_size: int = 512
    overlap: int | None = None  # None: follows the tile (tile_size / 8, default_overlap)
    val_limit: int | None = None
    miou_exclude: tuple[str, ...] = ()
    augment: Augment = field(default_factory=lambda: Augment(
        scale=(0.75, 1.33), brightness=0.2, contrast=0.2, camera_only=True))
    half: bool = False
    channels_last: bool = True
    workers: int = 0
    gsd: float | None = None  # metres per pixel of the training imagery (recorded)
    #: train the instance target (interior/boundary/contact) of a class instead of it
    instances: InstanceTarget | None = None

    def __post_init__(self) -> None:
        # predict's tile limits, and an overlap that follows the tile: checked here, before
        # any data is read (the bundle's spec would refuse them only after training).
        from geoseg.errors import InputError
        from geoseg.prediction.limits import default_overlap, validate_tile

        validate_tile(self.tile_size, "tile size")
        if self.overlap is None:
            object.__setattr__(self, "overlap", default_overlap(self.tile_size))
        elif not 0 <= self.overlap <= self.tile_size // 2:
            raise InputError(f"overlap {self.overlap} must be between 0 and half the tile "
                             f"size ({self.tile_size // 2})")

    @property
    def overlap_px(self) -> int:
        """The overlap, px: the one given, else the tile's default."""
        from geoseg.prediction.limits import default_overlap

        return default_overlap(self.tile_size) if self.overlap is None else self.overlap


@dataclass(frozen=True, slots=True)
class EpochResult:
    """Metrics of one epoch."""

    epoch: int
    steps: int
    train_loss: float
    val_loss: float
    miou: float
    iou: tuple[float, ...]
    lr: float
    seconds: float


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What :func:`fit` produced."""

    output: Path
    best_epoch: int
    best_miou: float
    best_iou: tuple[float, ...]
    history: tuple[EpochResult, ...]
    metrics_csv: Path
    stopped: str

    def summary(self) -> str:
        """One line for the user."""
        return (f"wrote {self.output} (best epoch {self.best_epoch}, val mIoU "
                f"{self.best_miou:.4f}; {self.stopped}); metrics in {self.metrics_csv}")


def _config_json(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["augment"] = asdict(config.augment)
    out: dict[str, Any] = json.loads(json.dumps(d, default=list))
    return out
