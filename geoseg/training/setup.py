"""One training run's setup: data checks, model, optimiser, loss, data sets, start-up block.

:func:`_setup` builds a :class:`_Run`, everything the epoch loop
(:mod:`geoseg.training.loop`) needs; :func:`_announce` prints the block a run starts with.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg._atomic import atomic_path
from geoseg.errors import InputError
from geoseg.models.spec import ModelSpec
from geoseg.models.value_range import image_range
from geoseg.progress import Progress
from geoseg.training.config import TrainConfig
from geoseg.training.data import IGNORE, ChipDataset, LabeledImage, MaskClasses
from geoseg.training.evaluate import _val_chips
from geoseg.training.losses import auto_class_weights, make_loss

if TYPE_CHECKING:
    import torch
    from torch import nn


def _device_and_amp(config: TrainConfig) -> tuple[torch.device, str]:
    from geoseg.prediction.inference import select_device, select_precision

    device = select_device(config.device)
    return device, select_precision(config.precision, device)


def _build(config: TrainConfig, spec: ModelSpec, weights: str | None,
           init: str | None) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    from geoseg.models.architectures import build_model

    info: dict[str, Any] = {}
    if init is not None:
        from geoseg.models import resolve_model

        base = resolve_model(init)  # a bundle file or a default-model name
        if base.model is None:
            raise InputError(f"--init {init} holds an imported ONNX model; fine-tuning needs "
                             "a torch bundle")
        if base.spec.n_bands != spec.n_bands:
            raise InputError(f"--init {init} expects {base.spec.n_bands} bands; the training "
                             f"images have {spec.n_bands}")
        spec = spec.with_(architecture=base.spec.architecture, backbone=base.spec.backbone,
                          arch_params=base.spec.arch_params, mean=base.spec.mean,
                          std=base.spec.std, bands=base.spec.bands,
                          input_kind=base.spec.input_kind)
        model = build_model(spec)
        target = model.state_dict()
        state = {k: v for k, v in base.model.state_dict().items()
                 if k in target and v.shape == target[k].shape}
        model.load_state_dict(state, strict=False)
        info["init"] = {"bundle": str(init), "sha256": base.sha256,
                        "head_replaced": len(state) < len(target)}
        return model, spec, info
    model = build_model(spec)
    if weights is not None:
        from geoseg.models.weights import load_backbone_weights

        report = load_backbone_weights(model, weights, backbone=spec.backbone)
        info["weights"] = {"source": report.source, "tensors": report.loaded}
    return model, spec, info


@dataclass
class _Run:
    """Everything one training run needs, built once by :func:`_setup`."""

    out: Path
    config: TrainConfig
    spec: ModelSpec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    scaler: Any
    device: torch.device
    precision: str
    dataset: ChipDataset
    val_chips: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]]
    names: list[str]
    include: list[int]
    class_weights: list[float] | None
    provenance: dict[str, Any]
    init_info: dict[str, Any]

    @property
    def metrics_csv(self) -> Path:
        """The per-epoch metrics file beside the bundle."""
        return self.out.with_name(self.out.name + ".metrics.csv")

    @property
    def widths(self) -> list[int]:
        """Column widths of the per-epoch log rows."""
        return [5, 7, 8, 8, 7, *[max(6, min(len(n), 10)) for n in self.names]]


def _check_classes(table: MaskClasses, config: TrainConfig, counts: Any
                   ) -> tuple[list[str], list[int], list[float] | None]:
    """Class names, the channels in the macro mIoU, and the loss's class weights."""
    names = [c.name for c in table.classes]
    if len(names) < 2:
        raise InputError(f"the labels hold {len(names)} class ({', '.join(names)}): a "
                         "segmentation model needs at least 2 (are colour-coded labels "
                         "read as ids? pass --class-colors)")
    if config.class_weights == "auto":
        class_weights: list[float] | None = auto_class_weights(counts)
    elif isinstance(config.class_weights, tuple):
        class_weights = list(config.class_weights)
        if len(class_weights) != len(names):
            raise InputError(f"--class-weights has {len(class_weights)} values for "
                             f"{len(names)} classes ({', '.join(names)})")
    else:
        class_weights = None
    unknown = [n for n in config.miou_exclude if n not in names]
    if unknown:
        raise InputError(f"--miou-exclude names unknown class {unknown[0]!r}; classes: "
                         f"{', '.join(names)}")
    include = [k for k, n in enumerate(names) if n not in config.miou_exclude]
    return names, include, class_weights


def _setup(train_images: Sequence[LabeledImage], val_images: Sequence[LabeledImage],
           table: MaskClasses, out: Path, *, config: TrainConfig,
           bands: Sequence[str] | None, weights: str | None, init: str | None,
           provenance: dict[str, Any]) -> _Run:
    """Check the data, build the model, optimiser, loss and data sets (one run's setup)."""
    import torch

    from geoseg.training.data import band_stats, class_counts

    if not train_images:
        raise InputError("the training set is empty")
    if not val_images:
        raise InputError("the validation set is empty: give --val, or a --val-fraction that "
                         "leaves at least one image/block for validation")
    if init is not None:  # the init's names and colours where its classes match
        from geoseg.models import resolve_spec
        from geoseg.training.chip_classes import inherit_classes

        table = dataclasses.replace(table, classes=inherit_classes(
            table.classes, resolve_spec(init).classes, table.palette_ids))
    names, include, class_weights = _check_classes(
        table, config, class_counts(train_images, len(table.classes)))
    n_bands = train_images[0].image.shape[0]
    band_names = tuple(bands) if bands else tuple(f"band{i + 1}" for i in range(n_bands))
    if len(band_names) != n_bands:
        raise InputError(f"{len(band_names)} band names for {n_bands}-band images")
    mean, std = band_stats(train_images)
    spec = ModelSpec(architecture=config.architecture, backbone=config.backbone,
                     bands=band_names, mean=mean, std=std, classes=table.classes,
                     tile_size=config.tile_size, overlap=config.overlap_px,
                     arch_params=dict(config.arch_params),
                     gsd_m=math.nan if config.gsd is None else float(config.gsd))
    torch.manual_seed(config.seed)
    model, spec, init_info = _build(config, spec, weights, init)
    # --init takes the architecture from the bundle: record that, not the CLI defaults;
    # the augmentation as it applies to this imagery (radiometric jitter: camera-like only)
    config = dataclasses.replace(
        config, architecture=spec.architecture, backbone=spec.backbone,
        arch_params=dict(spec.arch_params),
        augment=config.augment.for_imagery(train_images[0].image.dtype, n_bands))
    spec = spec.with_(scale_range=config.augment.scale,  # the zoom range it sees (resample)
                      input_dtype=train_images[0].image.dtype.name,  # for predict's check
                      input_range=image_range([im.image for im in train_images],
                                              [im.valid for im in train_images]))
    device, precision = _device_and_amp(config)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = make_loss(config.loss, n_classes=len(names), weights=class_weights,
                        ignore_index=IGNORE).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    dataset = ChipDataset(train_images, size=config.crop_size,
                          length=config.steps_per_epoch * config.batch_size,
                          mean=spec.mean, std=spec.std, seed=config.seed,
                          augment=config.augment)
    m32 = np.asarray(spec.mean, np.float32)[:, None, None]
    s32 = np.asarray(spec.std, np.float32)[:, None, None]
    return _Run(out=out, config=config, spec=spec, model=model, optimizer=optimizer,
                loss_fn=loss_fn, device=device, precision=precision,
                scaler=torch.amp.GradScaler("cuda") if precision == "fp16" else None,
                dataset=dataset,
                val_chips=_val_chips(val_images, config.tile_size, m32, s32,
                                     config.val_limit),
                names=names, include=include, class_weights=class_weights,
                provenance=provenance, init_info=init_info)


def _initial_state() -> dict[str, Any]:
    return {"epoch": 0, "step": 0, "elapsed_s": 0.0, "best_miou": -1.0,
            "best_key": -math.inf, "best_epoch": 0,
            "best_iou": [], "bad_epochs": 0, "history": []}


def _announce(run: _Run, progress: Progress, n_train: int, n_val: int,
              state: dict[str, Any]) -> None:
    """Print the block a run starts with: data, split, device, precision, engine, output."""
    cfg, prov = run.config, run.provenance
    unit, val_unit = prov.get("unit", "images"), prov.get("val_unit", "images")
    split = prov.get("split") or f"validation: {prov.get('val', 'given')}"
    gsd = "unknown" if math.isnan(run.spec.gsd_m) else f"{run.spec.gsd_m:.3g} m"
    progress.log(f"data: {n_train} training {unit}, {n_val} validation {val_unit} "
                 f"({split}); {len(run.names)} classes; gsd {gsd}")
    progress.log(f"device {run.device.type}, precision {run.precision}, engine eager; "
                 f"{cfg.epochs} epochs x {cfg.steps_per_epoch} steps of batch "
                 f"{cfg.batch_size}; augment: {cfg.augment.describe()}")
    resumed = f", resuming after epoch {state['epoch']}" if state["epoch"] else ""
    progress.log(f"output {run.out} (metrics {run.metrics_csv.name}{resumed})")


def _open_metrics(run: _Run, *, resume: bool, done: int) -> None:
    """Start the metrics CSV, or on resume keep its rows of the finished epochs only."""
    path = run.metrics_csv
    header = ["epoch", "step", "train_loss", "val_loss", "val_miou",
              *[f"iou_{n}" for n in run.names], "lr", "seconds"]
    rows: list[list[str]] = []
    if resume and path.exists():
        with path.open(newline="") as f:
            rows = [r for r in list(csv.reader(f))[1:] if r and r[0].isdigit()
                    and int(r[0]) <= done]
    with atomic_path(path, overwrite=True) as tmp, tmp.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
