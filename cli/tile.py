"""``geoseg tile``."""

from __future__ import annotations

from pathlib import Path

import click
from geoseg.cli import options


@click.command()
@click.argument("scene", type=click.Path(path_type=str))
@click.option("--labels", required=True, type=click.Path(exists=True, path_type=str),
              help="Label raster on any grid (class ids, or RGB with --class-colors), "
                   "folder of label tiles, or vector file.")
@click.option("-o", "--output", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write images/ and masks/ chip pairs into.")
@options.tile_opt("--size", default=512, show_default=True,
                  help="Chip side, px, a multiple of 32 up to 4096 (predict's tile limits).")
@click.option("--stride", type=click.IntRange(1), help="Step between chips (default: size).")
@click.option("--label-field", help="Vector labels: attribute holding class ids or class "
                                    "names (default: every feature is class 1).")
@click.option("--class-names", help="Class names in id order, e.g. bg,building: the ids of "
                                    "the names in --label-field.")
@click.option("--class-colors", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="JSON/CSV mapping RGB label colours to class id and name.")
@options.bands_opt
@click.option("--background", type=click.IntRange(0, 254), default=0, show_default=True,
              help="Class id of unlabelled pixels for vector labels.")
@click.option("--keep-nodata", is_flag=True, help="Keep chips that are all nodata.")
@click.option("--skip-background", is_flag=True,
              help="Skip chips whose labels are all background.")
@options.xyz_pattern_opt
@options.overwrite_opt
@options.quiet_opt
def tile(scene: str, labels: str, output: Path, size: int, stride: int | None,
         label_field: str | None, class_names: str | None, class_colors: str | None,
         bands: tuple[int, ...] | None, background: int,
         keep_nodata: bool, skip_background: bool, xyz_pattern: str | None, overwrite: bool,
         quiet: bool) -> None:
    """Cut SCENE and its labels into chip pairs for training.

    SCENE is a raster, or a folder or quoted glob of image chips (XYZ-named or
    georeferenced, RGB and RGBA mixed: alpha is the mask), read as one mosaic.

    \b
    geoseg tile scene.tif --labels buildings.gpkg -o chips/ --size 512 --skip-background
    geoseg tile oam_chips/ --labels footprints.geojson --class-names background,building -o pairs/
    geoseg train chips/ -o model.safetensors
    """
    from geoseg.training.chips import tile_scene
    from geoseg.xyz import xyz_pattern as xyz_names

    names = None if class_names is None else \
        tuple(n.strip() for n in class_names.split(",") if n.strip())
    with xyz_names(xyz_pattern):
        pairs = tile_scene(scene, labels, output, size=size, stride=stride,
                           label_field=label_field, bands=bands, background=background,
                           class_names=names, class_colors=class_colors,
                           skip_nodata=not keep_nodata, skip_background=skip_background,
                           overwrite=overwrite)
    if not quiet:
        click.echo(f"wrote {len(pairs)} chip pairs to {output}/images and {output}/masks",
                   err=True)
