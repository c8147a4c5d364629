"""The training loop: model, optimiser, schedule, validation, checkpoints, resume.

:func:`fit` trains on in-memory labelled images (see :mod:`geoseg.training.data`) and
writes a model bundle that ``geoseg predict`` uses directly. The bundle at ``output`` is
the best epoch by validation mIoU; a resumable checkpoint (weights and optimiser state as
safetensors, counters as JSON, no pickle) sits beside it until the run completes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg._atomic import atomic_path, check_output
from geoseg.errors import InputError
from geoseg.models.spec import ModelSpec
from geoseg.progress import NullProgress, Progress
from geoseg.training.augment import Augment
from geoseg.training.data import IGNORE, ChipDataset, ClassTable, LabeledImage, Pair
from geoseg.training.losses import auto_class_weights, make_loss

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["EpochResult", "TrainConfig", "TrainResult", "checkpoint_paths",
           "confusion_matrix", "evaluate_images", "fit", "iou_from_confusion",
           "split_blocks", "split_groups", "train"]


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
    max_minutes: float | None = None
    freeze_backbone: int = 0
    device: str = "auto"
    precision: str = "auto"
    tile_size: int = 512
    overlap: int = 64
    val_limit: int | None = None
    miou_exclude: tuple[str, ...] = ()
    augment: Augment = field(default_factory=lambda: Augment(
        scale=(0.75, 1.33), brightness=0.2, contrast=0.2))
    half: bool = False
    channels_last: bool = True
    workers: int = 0


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


def checkpoint_paths(output: Path) -> tuple[Path, Path]:
    """Return the resumable checkpoint (weights + optimiser, safetensors) and its JSON state."""
    return (output.with_name(output.name + ".last.safetensors"),
            output.with_name(output.name + ".state.json"))


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts, rows truth, columns prediction; ``IGNORE`` pixels skipped."""
    import torch

    valid = target != IGNORE
    t = target[valid].long()
    p = pred[valid].long()
    return torch.bincount(t * n_classes + p, minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def iou_from_confusion(cm: npt.NDArray[np.int64], include: Sequence[int] | None = None
                       ) -> tuple[npt.NDArray[np.float64], float]:
    """IoU per class and the macro mIoU over ``include`` (default: all classes).

    IoU is NaN where a class is absent from truth and prediction; mIoU skips NaN classes.
    """
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    sel = iou if include is None else iou[list(include)]
    miou = float(np.nanmean(sel)) if np.isfinite(sel).any() else math.nan
    return iou, miou


def _device_and_amp(config: TrainConfig) -> tuple[torch.device, str]:
    from geoseg.inference import select_device, select_precision

    device = select_device(config.device)
    return device, select_precision(config.precision, device)


def _autocast(device: torch.device, precision: str) -> Any:
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
        img = im.image[:, y:y + size, x:x + size].astype(np.float32)
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
                with _autocast(device, precision):
                    logits = model(x)
                if loss_fn is not None:
                    total += float(loss_fn(logits.float(), y))
                    batches += 1
                cm += confusion_matrix(logits.argmax(1).cpu(), y.cpu(), n_classes)
    finally:
        model.train(was_training)
    return cm.numpy(), total / max(batches, 1)


def _lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` fraction, then cosine to 1 %."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    t = min((progress - warmup) / max(1.0 - warmup, 1e-9), 1.0)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))


def _save_checkpoint(output: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    ckpt, state_path = checkpoint_paths(output)
    tensors: dict[str, Any] = {f"model.{k}": v.detach().cpu().contiguous()
                               for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, pstate in opt["state"].items():
        for key, value in pstate.items():
            tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous() \
                if hasattr(value, "detach") else __import__("torch").tensor(value)
    state = {**state, "param_groups": opt["param_groups"]}
    with atomic_path(ckpt, overwrite=True) as tmp:
        save_file(tensors, str(tmp))
    with atomic_path(state_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(state, indent=1))


def _load_checkpoint(output: Path, model: nn.Module, optimizer: torch.optim.Optimizer
                     ) -> dict[str, Any]:
    from safetensors.torch import load_file

    ckpt, state_path = checkpoint_paths(output)
    if not ckpt.is_file() or not state_path.is_file():
        raise InputError(f"cannot resume: no checkpoint for {output} (expected {ckpt} and "
                         f"{state_path}); start without --resume")
    tensors = load_file(str(ckpt))
    state: dict[str, Any] = json.loads(state_path.read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    return state


def _fmt_row(values: Sequence[str], widths: Sequence[int]) -> str:
    return " ".join(v.rjust(w) for v, w in zip(values, widths, strict=True))


@contextlib.contextmanager
def _tensorboard(output: Path) -> Iterator[Any]:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: only when the user has it installed
        yield None
        return
    writer = SummaryWriter(log_dir=str(output.with_name(output.name + ".tb")))
    try:
        yield writer
    finally:
        writer.close()


def _build(config: TrainConfig, spec: ModelSpec, weights: str | None,
           init: str | None) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    from geoseg.models.architectures import build_model

    info: dict[str, Any] = {}
    if init is not None:
        from geoseg.models.bundle import load_bundle

        base = load_bundle(init)
        if base.spec.n_bands != spec.n_bands:
            raise InputError(f"--init {init} expects {base.spec.n_bands} bands; the training "
                             f"images have {spec.n_bands}")
        spec = spec.with_(architecture=base.spec.architecture, backbone=base.spec.backbone,
                          arch_params=base.spec.arch_params, mean=base.spec.mean,
                          std=base.spec.std, bands=base.spec.bands)
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

        report = load_backbone_weights(model, weights)
        info["weights"] = {"source": report.source, "tensors": report.loaded}
    return model, spec, info


def fit(train_images: Sequence[LabeledImage], val_images: Sequence[LabeledImage],
        table: ClassTable, output: str | os.PathLike[str], *,
        config: TrainConfig = TrainConfig(), bands: Sequence[str] | None = None,
        weights: str | None = None, init: str | None = None, resume: bool = False,
        overwrite: bool = False, progress: Progress | None = None,
        provenance: dict[str, Any] | None = None) -> TrainResult:
    """Train a model and write the best epoch's bundle to ``output``.

    Parameters
    ----------
    train_images, val_images : sequence of LabeledImage
        Training and validation data (masks of channel indices, ``IGNORE`` = no label).
        Validation images are cut into non-overlapping chips of ``config.crop_size``...
        ``config.tile_size``: every labelled pixel counted once.
    table : ClassTable
        The classes (model channel ``k`` is ``table.classes[k]``).
    output : path
        Bundle to write (the best epoch by validation mIoU); a ``.metrics.csv`` and,
        while the run is not finished, a resumable checkpoint sit beside it.
    bands : sequence of str, optional
        Band names (default ``band1..bandN``).
    weights : str, optional
        Pretrained backbone weights (a local file or torchgeo weight name).
    init : str, optional
        A bundle to fine-tune; its head is replaced when the classes differ.
    resume : bool
        Continue an interrupted run from its checkpoint.
    """
    import torch

    from geoseg import __version__
    from geoseg.training.data import band_stats, class_counts

    out = Path(output)
    if resume:
        check_output(out, overwrite=True)
    else:
        check_output(out, overwrite=overwrite)
    if not train_images:
        raise InputError("the training set is empty")
    if not val_images:
        raise InputError("the validation set is empty: give --val, or a --val-fraction that "
                         "leaves at least one image/block for validation")
    progress = progress or NullProgress()
    n_classes = len(table.classes)
    n_bands = train_images[0].image.shape[0]
    band_names = tuple(bands) if bands else tuple(f"band{i + 1}" for i in range(n_bands))
    if len(band_names) != n_bands:
        raise InputError(f"{len(band_names)} band names for {n_bands}-band images")
    mean, std = band_stats(train_images)
    counts = class_counts(train_images, n_classes)
    if config.class_weights == "auto":
        class_weights: list[float] | None = auto_class_weights(counts)
    elif isinstance(config.class_weights, tuple):
        class_weights = list(config.class_weights)
        if len(class_weights) != n_classes:
            raise InputError(f"--class-weights has {len(class_weights)} values for "
                             f"{n_classes} classes ({', '.join(c.name for c in table.classes)})")
    else:
        class_weights = None
    names = [c.name for c in table.classes]
    unknown = [n for n in config.miou_exclude if n not in names]
    if unknown:
        raise InputError(f"--miou-exclude names unknown class {unknown[0]!r}; classes: "
                         f"{', '.join(names)}")
    include = [k for k, n in enumerate(names) if n not in config.miou_exclude]

    spec = ModelSpec(architecture=config.architecture, backbone=config.backbone,
                     bands=band_names, mean=mean, std=std, classes=table.classes,
                     tile_size=config.tile_size, overlap=config.overlap,
                     arch_params=dict(config.arch_params))
    torch.manual_seed(config.seed)
    model, spec, init_info = _build(config, spec, weights, init)
    device, precision = _device_and_amp(config)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = make_loss(config.loss, n_classes=n_classes, weights=class_weights,
                        ignore_index=IGNORE).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    total_steps = config.epochs * config.steps_per_epoch
    warmup = min(config.warmup_steps / max(total_steps, 1), 0.5)
    max_s = config.max_minutes * 60 if config.max_minutes else None

    dataset = ChipDataset(train_images, size=config.crop_size,
                          length=config.steps_per_epoch * config.batch_size,
                          mean=spec.mean, std=spec.std, seed=config.seed,
                          augment=config.augment)
    m32 = np.asarray(spec.mean, np.float32)[:, None, None]
    s32 = np.asarray(spec.std, np.float32)[:, None, None]
    val_chips = _val_chips(val_images, config.tile_size, m32, s32, config.val_limit)

    state: dict[str, Any] = {"epoch": 0, "step": 0, "elapsed_s": 0.0, "best_miou": -1.0,
                             "best_epoch": 0, "best_iou": [], "bad_epochs": 0,
                             "history": []}
    if resume:
        state = _load_checkpoint(out, model, optimizer)
        progress.log(f"resuming after epoch {state['epoch']} (step {state['step']})")
    metrics_csv = out.with_name(out.name + ".metrics.csv")
    header = ["epoch", "step", "train_loss", "val_loss", "val_miou",
              *[f"iou_{n}" for n in names], "lr", "seconds"]
    if not resume or not metrics_csv.exists():
        with metrics_csv.open("w", newline="") as f:
            csv.writer(f).writerow(header)
    widths = [5, 7, 8, 8, 7, *[max(6, min(len(n), 10)) for n in names]]
    progress.log(_fmt_row(["epoch", "step", "loss", "val_loss", "mIoU",
                           *[n[:10] for n in names]], widths))
    history = [EpochResult(**{**h, "iou": tuple(h["iou"])}) for h in state["history"]]
    stopped = "all epochs done"
    t_start = time.monotonic() - float(state["elapsed_s"])
    encoder = getattr(model, "encoder", None)
    with _tensorboard(out) as tb:
        for epoch in range(int(state["epoch"]) + 1, config.epochs + 1):
            t_epoch = time.monotonic()
            frozen = encoder is not None and epoch <= config.freeze_backbone
            if encoder is not None:
                for p in encoder.parameters():
                    p.requires_grad_(not frozen)
            dataset.set_epoch(epoch)
            torch.manual_seed(config.seed * 100_003 + epoch)
            loader: Any = torch.utils.data.DataLoader(
                dataset,  # type: ignore[arg-type]  # a map-style dataset (duck-typed)
                batch_size=config.batch_size, shuffle=False, num_workers=config.workers,
                drop_last=True)
            model.train()
            losses: list[float] = []
            lr = config.lr
            progress.start(config.steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}")
            timed_out = False
            for xb, yb in loader:
                frac = state["step"] / max(total_steps, 1)
                if max_s:
                    frac = max(frac, (time.monotonic() - t_start) / max_s)
                lr = config.lr * _lr_factor(frac, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = xb.to(device), yb.to(device)
                if config.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(device, precision):
                    logits = model(x)
                loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                losses.append(float(loss))
                state["step"] += 1
                progress.advance()
                if max_s and time.monotonic() - t_start >= max_s:
                    timed_out = True
                    break
            progress.close()
            cm, val_loss = evaluate_images(model, val_chips, n_classes, loss_fn=loss_fn,
                                           device=device, precision=precision,
                                           channels_last=config.channels_last)
            iou, miou = iou_from_confusion(cm, include)
            miou_key = -1.0 if math.isnan(miou) else miou
            result = EpochResult(epoch, int(state["step"]), float(np.mean(losses)) if losses
                                 else math.nan, val_loss, miou, tuple(float(v) for v in iou),
                                 lr, time.monotonic() - t_epoch)
            history.append(result)
            progress.log(_fmt_row([str(epoch), str(result.steps), f"{result.train_loss:.4f}",
                                   f"{val_loss:.4f}", f"{miou:.4f}",
                                   *[f"{v:.3f}" for v in iou]], widths))
            with metrics_csv.open("a", newline="") as f:
                csv.writer(f).writerow([epoch, result.steps, f"{result.train_loss:.6f}",
                                        f"{val_loss:.6f}", f"{miou:.6f}",
                                        *[f"{v:.6f}" for v in iou], f"{lr:.3e}",
                                        f"{result.seconds:.1f}"])
            if tb is not None:
                tb.add_scalar("loss/train", result.train_loss, epoch)
                tb.add_scalar("loss/val", val_loss, epoch)
                tb.add_scalar("miou/val", miou, epoch)
            state["epoch"] = epoch
            state["elapsed_s"] = time.monotonic() - t_start
            state["history"] = [asdict(h) for h in history]
            if miou_key > state["best_miou"]:
                state.update(best_miou=miou_key, best_epoch=epoch,
                             best_iou=[float(v) for v in iou], bad_epochs=0)
                prov = {
                    "geoseg_version": __version__,
                    "data": provenance or {},
                    "epochs": epoch, "steps": int(state["step"]),
                    "train_seconds": round(state["elapsed_s"], 1),
                    "val_miou": round(miou, 6),
                    "val_iou": {n: (None if math.isnan(v) else round(float(v), 6))
                                for n, v in zip(names, iou, strict=True)},
                    "miou_classes": [names[k] for k in include],
                    "class_weights": class_weights,
                    "config": _config_json(config),
                    "command": " ".join(sys.argv) if sys.argv else "",
                    **init_info,
                }
                from geoseg.models.bundle import save_bundle

                save_bundle(out, model, spec.with_(provenance=prov), half=config.half,
                            overwrite=True)
            else:
                state["bad_epochs"] += 1
            _save_checkpoint(out, model, optimizer, state)
            if timed_out:
                stopped = f"time limit {config.max_minutes} min reached"
                break
            if config.patience is not None and state["bad_epochs"] >= config.patience:
                stopped = f"early stop: no val mIoU gain in {config.patience} epochs"
                break
    if not history:
        raise InputError(f"nothing to do: the checkpoint of {out} is already at epoch "
                         f"{state['epoch']} of {config.epochs}")
    if not stopped.startswith("time limit"):  # a timed-out run may be resumed later
        for path in checkpoint_paths(out):
            path.unlink(missing_ok=True)
    return TrainResult(out, int(state["best_epoch"]), float(state["best_miou"]),
                       tuple(state["best_iou"]), tuple(history), metrics_csv, stopped)


def _config_json(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["augment"] = asdict(config.augment)
    out: dict[str, Any] = json.loads(json.dumps(d, default=list))
    return out


def split_groups(pairs: Sequence[Pair], fraction: float, seed: int
                 ) -> tuple[list[Pair], list[Pair]]:
    """Hold out whole groups of pairs for validation, never overlapping chips.

    A group is the folder above ``images/`` (e.g. ``tile_7``) when there are several,
    else a single image. The last ``fraction`` of groups in a seeded shuffle is held out.
    """
    if not 0 < fraction < 1:
        raise InputError(f"--val-fraction must be between 0 and 1, got {fraction}")
    groups: dict[Path, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p.image.parent.parent, []).append(p)
    keys: list[Any] = sorted(groups) if len(groups) > 1 else [p.image for p in pairs]
    by_key = groups if len(groups) > 1 else {p.image: [p] for p in pairs}
    if len(keys) < 2:
        raise InputError("cannot split one image into training and validation without "
                         "overlap; give --val DIR")
    order = np.random.default_rng(seed).permutation(len(keys))
    n_val = min(max(1, round(len(keys) * fraction)), len(keys) - 1)
    val_keys = {keys[i] for i in order[len(keys) - n_val:]}
    train_pairs = [p for k in keys if k not in val_keys for p in by_key[k]]
    val_pairs = [p for k in keys if k in val_keys for p in by_key[k]]
    return train_pairs, val_pairs


def split_blocks(blocks: Sequence[LabeledImage], fraction: float, seed: int
                 ) -> tuple[list[LabeledImage], list[LabeledImage]]:
    """Hold out a seeded ``fraction`` of whole, non-overlapping spatial blocks."""
    if not 0 < fraction < 1:
        raise InputError(f"--val-fraction must be between 0 and 1, got {fraction}")
    if len(blocks) < 2:
        raise InputError("the scene gives only one block: too small to split into training "
                         "and validation without overlap; give --val, or a smaller --crop-size")
    order = np.random.default_rng(seed).permutation(len(blocks))
    n_val = min(max(1, round(len(blocks) * fraction)), len(blocks) - 1)
    held = set(order[len(blocks) - n_val:].tolist())
    return ([b for i, b in enumerate(blocks) if i not in held],
            [b for i, b in enumerate(blocks) if i in held])


def train(data: str | os.PathLike[str] | Sequence[str | os.PathLike[str] | Pair],
          output: str | os.PathLike[str], *,
          val: str | os.PathLike[str] | Sequence[str | os.PathLike[str] | Pair] | None = None,
          val_fraction: float = 0.2, class_colors: str | os.PathLike[str] | None = None,
          class_names: Sequence[str] | None = None, bands: Sequence[int] | None = None,
          band_names: Sequence[str] | None = None, config: TrainConfig = TrainConfig(),
          weights: str | None = None, init: str | None = None, resume: bool = False,
          overwrite: bool = False, progress: Progress | None = None) -> TrainResult:
    """Train on a folder of image/mask pairs (or a list of pairs) and write a bundle.

    Parameters
    ----------
    data : path, or sequence of paths or Pairs
        Folders each with ``images/`` and ``masks/`` (possibly in sub-folders, one per tile),
        or pairs from :func:`geoseg.training.data.find_pairs` / ``tile_scene``.
    val : path or sequence of Pair, optional
        Validation pairs; default: hold out ``val_fraction`` of the tiles (sub-folders)
        or images of ``data``.
    class_colors : path, optional
        Class-colour file for colour-coded masks (:func:`read_class_table`); without it
        masks hold class ids.
    class_names : sequence of str, optional
        Names for id masks, in class-id order.
    bands : sequence of int, optional
        1-based bands of the images to train on (default: all).
    band_names : sequence of str, optional
        Names of the bands stored in the bundle.
    """
    from geoseg.training.data import load_pairs, read_class_table

    out = check_output(output, overwrite=overwrite or resume)
    pairs = _pairs(data)
    if val is None:
        train_pairs, val_pairs = split_groups(pairs, val_fraction, config.seed)
    else:
        train_pairs = pairs
        val_pairs = _pairs(val)
    table = read_class_table(class_colors) if class_colors is not None else None
    ignore = config.ignore_index
    train_images, table = load_pairs(train_pairs, table, ignore_index=ignore, bands=bands)
    if class_names is not None and class_colors is None:
        table = ClassTable.from_ids(table.ids, class_names)
    val_images, _ = load_pairs(val_pairs, table, ignore_index=ignore, bands=bands)
    prov = {"train": _describe(train_pairs, data), "val": _describe(val_pairs, val),
            "train_images": len(train_pairs), "val_images": len(val_pairs),
            "class_colors": str(class_colors) if class_colors else None}
    return fit(train_images, val_images, table, out, config=config, bands=band_names,
               weights=weights, init=init, resume=resume, overwrite=overwrite,
               progress=progress, provenance=prov)


def _pairs(data: str | os.PathLike[str] | Sequence[str | os.PathLike[str] | Pair]
           ) -> list[Pair]:
    from geoseg.training.data import find_pairs

    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    out: list[Pair] = []
    for item in items:
        out.extend([item] if isinstance(item, Pair) else find_pairs(item))
    return out


def _describe(pairs: Sequence[Pair], source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if source is not None and not any(isinstance(s, Pair) for s in source):
        return ", ".join(os.fspath(s) for s in source)
    parents = sorted({str(p.image.parent.parent) for p in pairs})
    return ", ".join(parents)
