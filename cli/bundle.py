"""``geoseg bundle``: look inside model bundles, import and export ONNX models."""

from __future__ import annotations

import json
from pathlib import Path

import click
from geoseg.cli import options


def _names(ctx: click.Context, param: click.Parameter, value: str | None
           ) -> tuple[str, ...] | None:
    if value is None:
        return None
    out = tuple(v.strip() for v in value.split(",") if v.strip())
    if not out:
        raise click.BadParameter("expected comma-separated names")
    return out


def _floats(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


def _colors(ctx: click.Context, param: click.Parameter, value: str | None
            ) -> tuple[tuple[int, int, int], ...]:
    if not value:
        return ()
    out = []
    for item in value.replace(";", ",").split(","):
        text = item.strip().lstrip("#")
        if len(text) != 6:
            raise click.BadParameter(f"expected colours like #1f77b4,#ff7f0e, got {item!r}")
        try:
            out.append((int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)))
        except ValueError:
            raise click.BadParameter(f"not a hex colour: {item!r}") from None
    return tuple(out)


@click.group()
def bundle() -> None:
    """Inspect model bundles (.safetensors); import and export ONNX models."""


@bundle.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the spec as JSON.")
def inspect(path: str, as_json: bool) -> None:
    """Print the spec of the bundle PATH, or of a default model by name (no tensors loaded)."""
    from geoseg.models import resolve_model_path
    from geoseg.models.bundle import read_spec, spec_summary

    spec = read_spec(resolve_model_path(path))
    click.echo(json.dumps(spec.to_dict(), indent=2) if as_json else spec_summary(spec))


@bundle.command("import")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@options.output_opt(help="Bundle to write (.safetensors).")
@click.option("--bands", required=True, callback=_names, metavar="blue,green,red",
              help="Input band names, in the model's channel order.")
@click.option("--mean", required=True, callback=_floats, metavar="M1,M2,...",
              help="Per-band mean the model subtracts (raw pixel units).")
@click.option("--std", required=True, callback=_floats, metavar="S1,S2,...",
              help="Per-band standard deviation the model divides by.")
@click.option("--classes", required=True, callback=_names, metavar="clear,cloud,...",
              help="Class names in output-channel order (ids 0, 1, ...).")
@options.tile_opt(help="Tile side, px, a multiple of 32 up to 4096 (default: the model's "
                       "input size, else 512).")
@click.option("--overlap", type=click.IntRange(0),
              help="Tile overlap, px (default: tile/8, the rule of geoseg train).")
@click.option("--class-colors", callback=_colors, metavar="#RRGGBB,...",
              help="One colour per class (default: a fixed palette).")
@options.overwrite_opt
def import_(model: Path, output: Path, bands: tuple[str, ...], mean: tuple[float, ...],
            std: tuple[float, ...], classes: tuple[str, ...], tile_size: int | None,
            overlap: int | None, class_colors: tuple[tuple[int, int, int], ...],
            overwrite: bool) -> None:
    """Wrap the ONNX segmentation MODEL (logits NCHW) into a geoseg bundle.

    \b
    geoseg bundle import cloudmask.onnx -o cloudmask.safetensors \\
        --bands blue,green,red,nir,swir16,swir22 --mean 0,0,0,0,0,0 \\
        --std 10000,10000,10000,10000,10000,10000 --classes clear,cloud,shadow
    """
    from geoseg.models.onnx_bundle import import_onnx

    path = import_onnx(model, output, bands=bands or (), mean=mean, std=std,
                       classes=classes or (), class_colors=class_colors, tile_size=tile_size,
                       overlap=overlap, overwrite=overwrite)
    click.echo(f"wrote {path} ({len(classes or ())} classes, {len(bands or ())} bands)",
               err=True)


@bundle.command("export")
@click.argument("path", type=click.Path(path_type=Path))
@options.output_opt(help="ONNX file to write.")
@options.tile_opt(help="Tile side the exported graph takes, a multiple of 32 up to 4096 "
                       "(default: the bundle's).")
@options.overwrite_opt
def export(path: Path, output: Path, tile_size: int | None, overwrite: bool) -> None:
    """Write the network of the bundle at PATH as ONNX (logits NCHW, dynamic batch).

    The normalisation stays in the spec (geoseg bundle inspect), as for a published model.
    """
    from geoseg.models.onnx_bundle import export_onnx
    from geoseg.progress import said_if_slow

    def say(message: str) -> None:
        click.echo(message, err=True)

    with said_if_slow(say, f"exporting {path.name} to ONNX (can take a minute)"):
        written = export_onnx(path, output, tile_size=tile_size, overwrite=overwrite)
    click.echo(f"wrote {written}", err=True)
