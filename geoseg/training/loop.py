"""The training loop: model, optimiser, schedule, validation, checkpoints, resume.

:func:`fit` trains on in-memory labelled images (see :mod:`geoseg.training.data`) and
writes a model bundle that ``geoseg predict`` uses directly. The bundle at ``output`` is
the best epoch by validation mIoU; a resumable checkpoint (weights and optimiser state as
safetensors, counters as JSON, no pickle) sits beside it until the run completes.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg._atomic import check_distinct, check_output, destination_locks
from geoseg.errors import InputError
from geoseg.prediction.inference import autocast
from geoseg.progress import NullProgress, Progress, said_if_slow
from geoseg.training.checkpoint import _load_checkpoint, _save_checkpoint, checkpoint_paths
from geoseg.training.config import EpochResult, TrainConfig, TrainResult, _config_json
from geoseg.training.data import IGNORE, LabeledImage, MaskClasses, Pair, names_for_ids
from geoseg.training.evaluate import confusion_matrix, evaluate_images, iou_from_confusion
from geoseg.training.gsd import with_gsd
from geoseg.training.setup import _announce, _initial_state, _open_metrics, _Run, _setup
from geoseg.training.split import split_blocks, split_groups

if TYPE_CHECKING:
    import torch

__all__ = ["EpochResult", "TrainConfig", "TrainResult", "checkpoint_paths",
           "confusion_matrix", "evaluate_images", "fit", "iou_from_confusion",
           "split_blocks", "split_groups", "train"]


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


def fit(train_images: Sequence[LabeledImage], val_images: Sequence[LabeledImage],
        table: MaskClasses, output: str | os.PathLike[str], **kwargs: Any) -> TrainResult:
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
         table: MaskClasses, output: str | os.PathLike[str], *,
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
    table : MaskClasses
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

    Raises
    ------
    KeyboardInterrupt
        Ctrl-C or SIGTERM: re-raised with a message saying how to resume. The
        checkpoint and the metrics CSV then hold every finished epoch.
    """
    out = Path(output)
    check_output(out, overwrite=resume or overwrite)
    progress = progress or NullProgress()
    if config.instances is not None:  # interior / boundary / contact classes
        from geoseg.training.instances import instance_images

        train_images, _ = instance_images(train_images, table, config.instances)
        val_images, table = instance_images(val_images, table, config.instances)
    with said_if_slow(progress.log, "setting up: the model"
                      + (f" from {Path(init).name}" if init else "")
                      + ", normalisation statistics and validation chips"):
        run = _setup(train_images, val_images, table, out, config=config, bands=bands,
                     weights=weights, init=init, provenance=provenance or {})
    state = _initial_state()
    if resume:
        state = _load_checkpoint(out, run.model, run.optimizer)
    _announce(run, progress, len(train_images), len(val_images), state)
    _open_metrics(run, resume=resume, done=int(state["epoch"]))
    try:
        history, stopped = _epochs(run, state, progress)
    except KeyboardInterrupt as exc:
        exc.args = (_interrupted(out, run.config, int(state["epoch"])),)
        raise
    if not history:
        raise InputError(f"nothing to do: the checkpoint of {out} is already at epoch "
                         f"{state['epoch']} of {run.config.epochs}")
    if not stopped.startswith("time limit"):  # a timed-out run may be resumed later
        for path in checkpoint_paths(out):
            path.unlink(missing_ok=True)
    return TrainResult(out, int(state["best_epoch"]), float(state["best_miou"]),
                       tuple(state["best_iou"]), tuple(history), run.metrics_csv, stopped)


def _interrupted(out: Path, config: TrainConfig, done: int) -> str:
    """Say what an interrupted run kept and how to resume it, in one line."""
    if done == 0:
        return (f"Interrupted during epoch 1 of {config.epochs}: no epoch finished, "
                f"nothing to resume ({out} not written).")
    return (f"Interrupted after epoch {done} of {config.epochs}: run the same command "
            f"with --resume to continue (checkpoint {checkpoint_paths(out)[0].name}, "
            f"metrics {out.name}.metrics.csv).")


def _epochs(run: _Run, state: dict[str, Any], progress: Progress
            ) -> tuple[list[EpochResult], str]:
    """Run the epochs left; return the history (resumed epochs too) and why it stopped."""
    cfg = run.config
    history = [EpochResult(**{**h, "iou": tuple(h["iou"])}) for h in state["history"]]
    t_start = time.monotonic() - float(state["elapsed_s"])
    progress.log(_fmt_row(["epoch", "step", "loss", "val_loss", "mIoU",
                           *[n[:10] for n in run.names]], run.widths))
    with _tensorboard(run.out) as tb:
        for epoch in range(int(state["epoch"]) + 1, cfg.epochs + 1):
            t_epoch = time.monotonic()
            losses, lr, timed_out = _train_epoch(run, epoch, state, t_start, progress)
            result = _validate(run, epoch, int(state["step"]), losses, lr,
                               time.monotonic() - t_epoch)
            history.append(result)
            with _deferred_interrupt():  # the CSV, bundle and checkpoint stay in step
                _record(run, result, progress, tb)
                state.update(epoch=epoch, elapsed_s=time.monotonic() - t_start,
                             history=[asdict(h) for h in history])
                _save_epoch(run, result, state)
            if timed_out:
                return history, f"time limit {cfg.max_minutes} min reached"
            if cfg.patience is not None and state["bad_epochs"] >= cfg.patience:
                what = "loss drop" if cfg.select == "loss" else "mIoU gain"
                return history, f"early stop: no val {what} in {cfg.patience} epochs"
    return history, "all epochs done"


def _train_epoch(run: _Run, epoch: int, state: dict[str, Any], t_start: float,
                 progress: Progress) -> tuple[list[float], float, bool]:
    """One epoch of optimiser steps: losses, the last learning rate, timed out."""
    import torch

    cfg = run.config
    encoder = getattr(run.model, "encoder", None)
    if encoder is not None:
        frozen = epoch <= cfg.freeze_backbone
        for p in encoder.parameters():
            p.requires_grad_(not frozen)
    run.dataset.set_epoch(epoch)
    torch.manual_seed(cfg.seed * 100_003 + epoch)
    loader: Any = torch.utils.data.DataLoader(
        run.dataset,  # type: ignore[arg-type]  # a map-style dataset (duck-typed)
        batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers, drop_last=True)
    total_steps = cfg.epochs * cfg.steps_per_epoch
    warmup = min(cfg.warmup_steps / max(total_steps, 1), 0.5)
    max_s = cfg.max_minutes * 60 if cfg.max_minutes else None
    run.model.train()
    losses: list[float] = []
    lr = cfg.lr
    progress.start(cfg.steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}")
    try:
        for xb, yb in loader:
            frac = state["step"] / max(total_steps, 1)
            if max_s:
                frac = max(frac, (time.monotonic() - t_start) / max_s)
            lr = cfg.lr * _lr_factor(frac, warmup)
            losses.append(_step(run, xb, yb, lr))
            state["step"] += 1
            progress.note(run_eta(time.monotonic() - t_start, state["step"], total_steps,
                                  max_s))
            progress.advance()
            if max_s and time.monotonic() - t_start >= max_s:
                return losses, lr, True
    finally:
        progress.close()
    return losses, lr, False


def run_eta(elapsed_s: float, step: int, total_steps: int, max_s: float | None) -> str:
    """Return the whole run's remaining time, ``run ETA 12m05s``, at its mean pace so far.

    The pace is wall time per step since the run began (resumed time included), so it
    counts the validation passes of the epochs done; ``--max-minutes`` caps it.
    """
    if step <= 0:
        return "run ETA ?"
    left = elapsed_s / step * max(total_steps - step, 0)
    if max_s is not None:
        left = min(left, max(max_s - elapsed_s, 0.0))
    minutes, seconds = divmod(round(left), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
    return f"run ETA {text}"


def _step(run: _Run, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> float:
    """One optimiser step on a batch; its loss."""
    import torch

    for group in run.optimizer.param_groups:
        group["lr"] = lr
    if not bool((yb != IGNORE).any()):  # no labelled pixel: the loss would be NaN
        return math.nan                   # (and would poison the weights); skip the step
    x, y = xb.to(run.device), yb.to(run.device)
    if run.config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(run.device, run.precision):
        logits = run.model(x)
    loss = run.loss_fn(logits, y)
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        run.optimizer.step()
    return float(loss.detach())


def _validate(run: _Run, epoch: int, steps: int, losses: Sequence[float], lr: float,
              seconds: float) -> EpochResult:
    """Score one epoch: validation loss and IoU (:mod:`geoseg.metrics`, as ``score``)."""
    cm, val_loss = evaluate_images(run.model, run.val_chips, len(run.names),
                                   loss_fn=run.loss_fn, device=run.device,
                                   precision=run.precision,
                                   channels_last=run.config.channels_last)
    iou, miou = iou_from_confusion(cm, run.include)
    finite = [v for v in losses if math.isfinite(v)]
    return EpochResult(epoch, steps, float(np.mean(finite)) if finite else math.nan,
                       val_loss, miou, tuple(float(v) for v in iou), lr, seconds)


def _record(run: _Run, r: EpochResult, progress: Progress, tb: Any) -> None:
    """One epoch's row: in the log, the metrics CSV and TensorBoard (when installed)."""
    progress.log(_fmt_row([str(r.epoch), str(r.steps), f"{r.train_loss:.4f}",
                           f"{r.val_loss:.4f}", f"{r.miou:.4f}",
                           *[f"{v:.3f}" for v in r.iou]], run.widths))
    with run.metrics_csv.open("a", newline="") as f:
        csv.writer(f).writerow([r.epoch, r.steps, f"{r.train_loss:.6f}", f"{r.val_loss:.6f}",
                                f"{r.miou:.6f}", *[f"{v:.6f}" for v in r.iou],
                                f"{r.lr:.3e}", f"{r.seconds:.1f}"])
    if tb is not None:
        tb.add_scalar("loss/train", r.train_loss, r.epoch)
        tb.add_scalar("loss/val", r.val_loss, r.epoch)
        tb.add_scalar("miou/val", r.miou, r.epoch)


def _save_epoch(run: _Run, r: EpochResult, state: dict[str, Any]) -> None:
    """Save the bundle when the epoch is the best so far, then the checkpoint.

    Best is the highest validation mIoU, or with ``select="loss"`` the lowest validation
    loss (steadier where the validation set holds few classes).
    """
    miou_key = -1.0 if math.isnan(r.miou) else r.miou
    if run.config.select == "loss":
        key = -r.val_loss if math.isfinite(r.val_loss) else -math.inf
    else:
        key = miou_key
    # checkpoints from before --select hold no best_key: their best is an mIoU
    best = state.get("best_key", state["best_miou"] if run.config.select == "miou" else -math.inf)
    if key > best:
        state.update(best_key=key, best_miou=miou_key, best_epoch=r.epoch,
                     best_iou=list(r.iou), bad_epochs=0)
        from geoseg.models.bundle import save_bundle

        save_bundle(run.out, run.model, run.spec.with_(provenance=_provenance(run, r, state)),
                    half=run.config.half, overwrite=True)
    else:
        state["bad_epochs"] += 1
    _save_checkpoint(run.out, run.model, run.optimizer, state)


def _provenance(run: _Run, r: EpochResult, state: dict[str, Any]) -> dict[str, Any]:
    """Return what the bundle records (data, split, metrics, config): names, no machine paths."""
    from geoseg import __version__
    from geoseg.training.provenance import portable

    names = run.names
    return portable({
        "geoseg_version": __version__,
        "data": {k: v for k, v in run.provenance.items() if k not in ("unit", "val_unit")},
        "epochs": r.epoch, "steps": int(state["step"]),
        "train_seconds": round(state["elapsed_s"], 1),
        "val_miou": round(r.miou, 6),
        "val_iou": {n: (None if math.isnan(v) else round(float(v), 6))
                    for n, v in zip(names, r.iou, strict=True)},
        "miou_classes": [names[k] for k in run.include],
        "class_weights": run.class_weights,
        "config": _config_json(run.config),
        **({} if run.config.instances is None else  # what the classes mean (vectorize)
           {"target": run.config.instances.provenance()}),
        "command": " ".join(sys.argv) if sys.argv else "",
        **run.init_info,
    })


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM until the block is done, then deliver it.

    The metrics row, the bundle and the checkpoint of an epoch are written together, so
    an interrupted run never resumes from a checkpoint that disagrees with its CSV.
    Signal handlers can only be swapped in the main thread; elsewhere this does nothing.
    """
    sigs = [signal.SIGINT, signal.SIGTERM]
    old = [signal.getsignal(s) for s in sigs]
    if threading.current_thread() is not threading.main_thread() or None in old:
        yield
        return
    pending: list[int] = []
    for s in sigs:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in zip(sigs, old, strict=True):
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])


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
    check_distinct([("-o", out)], [("--class-colors", class_colors), *(
        (what, f) for p in (*train_pairs, *val_pairs)
        for what, f in (("image", p.image), ("mask", p.mask)))])
    table = read_class_table(class_colors) if class_colors is not None else None
    if table is None and class_names is None:  # names and colours tile wrote beside chips
        from geoseg.training.chip_classes import folder_classes

        table = folder_classes(sorted({p.image.parent.parent
                                       for p in (*train_pairs, *val_pairs)}))
    ignore = config.ignore_index
    with said_if_slow((progress or NullProgress()).log,
                      f"reading {len(train_pairs)} training and {len(val_pairs)} validation "
                      "image/mask pairs"):
        train_images, table = load_pairs(train_pairs, table, ignore_index=ignore, bands=bands)
        if class_names is not None and class_colors is None:
            ids = table.ids
            if len(class_names) != len(ids) and max(ids) < len(class_names):
                ids = list(range(len(class_names)))  # names in id order: each one is a class
            table = MaskClasses.from_ids(ids, names_for_ids(ids, class_names))
        val_images, _ = load_pairs(val_pairs, table, ignore_index=ignore, bands=bands)
    prov = {"train": _describe(train_pairs, data), "val": _describe(val_pairs, val),
            "train_images": len(train_pairs), "val_images": len(val_pairs),
            "split": _split_rule(train_pairs, val_pairs, val, val_fraction, config.seed),
            "class_colors": str(class_colors) if class_colors else None}
    config, prov["gsd"] = with_gsd(config, [p.image for p in train_pairs])
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


def _split_rule(train_pairs: Sequence[Pair], val_pairs: Sequence[Pair], val: Any,
                fraction: float, seed: int) -> str:
    """Say how the validation images were chosen (printed, and kept in the bundle)."""
    if val is not None:
        return f"validation given: {_describe(val_pairs, val)}"
    folders = {p.image.parent.parent for p in (*train_pairs, *val_pairs)}
    if len(folders) > 1:
        held = len({p.image.parent.parent for p in val_pairs})
        return (f"{held} of {len(folders)} tile folders held out whole, --val-fraction "
                f"{fraction:g}, seed {seed}")
    return (f"{len(val_pairs)} of {len(train_pairs) + len(val_pairs)} images held out, "
            f"--val-fraction {fraction:g}, seed {seed}")
