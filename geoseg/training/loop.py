"""The training loop: model, optimiser, schedule, validation, checkpoints, resume.

:func:`fit` trains on in-memory labelled images (see :mod:`geoseg.training.data`) and
writes a model bundle that ``geoseg predict`` uses directly. The bundle at ``output`` is
the best epoch by validation mIoU; a resumable checkpoint (weights and optimiser state as
safetensors, counters as JSON, no pickle) sits beside it until the run completes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg._atomic import check_distinct, check_output, destination_locks
from geoseg.errors import InputError
from geoseg.models.spec import ModelSpec
from geoseg.models.value_range import image_range
from geoseg.prediction.inference import autocast
from geoseg.progress import NullProgress, Progress
from geoseg.training.data import IGNORE, ChipDataset, ClassTable, LabeledImage, Pair, names_for_ids
from geoseg.training.losses import auto_class_weights, make_loss

if TYPE_CHECKING:
    import torch
    from torch import nn
from geoseg.training.checkpoint import _load_checkpoint, _save_checkpoint, checkpoint_paths
from geoseg.training.config import EpochResult, TrainConfig, TrainResult, _config_json
from geoseg.training.evaluate import (
    _val_chips,
    confusion_matrix,
    evaluate_images,
    iou_from_confusion,
)
from geoseg.training.split import split_blocks, split_groups

__all__ = ["EpochResult", "TrainConfig", "TrainResult", "checkpoint_paths",
           "confusion_matrix", "evaluate_images", "fit", "iou_from_confusion",
           "split_blocks", "split_groups", "train"]


def _device_and_amp(config: TrainConfig) -> tuple[torch.device, str]:
    from geoseg.prediction.inference import select_device, select_precision

    device = select_device(config.device)
    return device, select_precision(config.precision, device)




def _lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` fraction, then cosine to 1 %."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    t = min((progress - warmup) / max(1.0 - warmup, 1e-9), 1.0)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))


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
        table: ClassTable, output: str | os.PathLike[str], **kwargs: Any) -> TrainResult:
    """Train a model and write its bundle to ``output`` (see :func:`_fit` for the options).

    ``output``, its checkpoint and metrics files are locked for the run (a second run to
    the same bundle fails at once), and none of them may be the ``init`` or ``weights``
    file.
    """
    out = Path(output)
    extra = [("checkpoint", p) for p in checkpoint_paths(out)]
    check_distinct([("-o", out), *extra, ("metrics", out.with_name(out.name + ".metrics.csv"))],
                   [("--init", kwargs.get("init")), ("--weights", _local(kwargs.get("weights")))])
    with destination_locks(out):
        return _fit(train_images, val_images, table, out, **kwargs)


def _local(path: str | None) -> str | None:
    """Return a weights argument that names a local file (not a torchgeo weight name)."""
    return path if path is not None and Path(path).is_file() else None


def _fit(train_images: Sequence[LabeledImage], val_images: Sequence[LabeledImage],
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
    if n_classes < 2:
        raise InputError(f"the labels hold {n_classes} class "
                         f"({', '.join(c.name for c in table.classes)}): a segmentation "
                         "model needs at least 2 (are colour-coded labels read as ids? pass "
                         "--class-colors)")
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
                     arch_params=dict(config.arch_params),
                     gsd_m=math.nan if config.gsd is None else float(config.gsd))
    torch.manual_seed(config.seed)
    model, spec, init_info = _build(config, spec, weights, init)
    # --init takes the architecture from the bundle: record that, not the CLI defaults
    config = dataclasses.replace(config, architecture=spec.architecture,
                                 backbone=spec.backbone, arch_params=dict(spec.arch_params))
    spec = spec.with_(input_dtype=train_images[0].image.dtype.name,  # for predict's check
                      input_range=image_range([im.image for im in train_images],
                                              [im.valid for im in train_images]))
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
                with autocast(device, precision):
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
        ids = table.ids
        if len(class_names) != len(ids) and max(ids) < len(class_names):
            ids = list(range(len(class_names)))  # names in id order: each one is a class
        table = ClassTable.from_ids(ids, names_for_ids(ids, class_names))
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
