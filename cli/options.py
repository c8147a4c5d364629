"""Options shared by several commands (one object each, reused)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geoseg.models import DEFAULT_MODEL


def _bands(ctx: click.Context, param: click.Parameter, value: str | None
           ) -> tuple[int, ...] | tuple[str, ...] | None:
    """``4,3,2`` -> 1-based numbers; ``B04,B03,B02`` or ``red,green,blue`` -> names."""
    if value is None:
        return None
    items = [v for v in value.replace(" ", "").split(",") if v]
    if not items:
        raise click.BadParameter("no band given")
    if all(v.isdigit() for v in items):
        return tuple(int(v) for v in items)
    if any(v.lstrip("-").isdigit() for v in items):
        raise click.BadParameter(f"give band numbers (4,3,2) or band names (B04,B03,B02), "
                                 f"not both: {value!r}")
    return tuple(items)


def output_opt(**kw: Any) -> Any:
    """``-o/--output PATH`` (required); ``dir_okay=True`` where a folder is accepted."""
    return click.option("-o", "--output", required=True,
                        type=click.Path(dir_okay=kw.get("dir_okay", False), path_type=Path),
                        help=kw.get("help", "Output file."))


def _tile(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Check a tile side: a multiple of 32 up to the cap, checked before anything loads.

    The ``InputError`` becomes geoseg's one-line error (not click's usage block).
    """
    from geoseg.prediction.limits import validate_tile

    flag = param.opts[0] if param.opts else "--tile-size"
    return None if value is None else validate_tile(value, what=flag)


def tile_opt(*decls: str, help: str, **kw: Any) -> Any:
    """Return a tile-side option (``--tile-size`` unless named) with predict's limits.

    Every command that takes a tile side uses it, so ``--tile-size 33`` or ``100000``
    is refused the same way everywhere (:func:`geoseg.prediction.limits.validate_tile`).
    """
    return click.option(*(decls or ("--tile-size",)), type=int, callback=_tile, metavar="PX",
                        help=help, **kw)


tile_size_opt = tile_opt(help="Tile side, px, a multiple of 32 up to 4096 (default: model's).")


overwrite_opt = click.option("--overwrite", is_flag=True,
                             help="Replace the output if it exists.")
quiet_opt = click.option("-q", "--quiet", is_flag=True,
                         help="No progress bar and no summary line.")
progress_opt = click.option(
    "--progress", "progress_kind", type=click.Choice(["bar", "json", "none"]),
    default="bar", show_default=True,
    help="Progress on stderr: a bar, JSON lines (for programs), or nothing.")
bands_opt = click.option("--bands", callback=_bands, metavar="4,3,2|B04,B03,B02",
                         help="Input bands in model order: 1-based numbers, or names "
                              "(B04, red: Sentinel-2/Landsat/STAC names match each other). "
                              "Default: the model's bands by name when the scene's bands "
                              "are named, else all.")
model_opt = click.option("-m", "--model", default=DEFAULT_MODEL, show_default=True,
                         metavar="NAME|BUNDLE",
                         help="Default model name (geoseg models) or a bundle file.")
xyz_pattern_opt = click.option(
    "--xyz-pattern", metavar="REGEX",
    help="Name pattern of XYZ chips without georeferencing, with groups (?P<z>..), "
         "(?P<x>..), (?P<y>..) (default: z/x/y.png and NAME-X-Y-Z.tif); such chips "
         "are placed in EPSG:3857 by their names.")
device_opt = click.option("--device", default="auto", show_default=True,
                          metavar="auto|cpu|cuda|cuda:N|mps", help="Where the model runs.")
