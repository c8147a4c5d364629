"""``geoseg vectorize``."""

from __future__ import annotations

from pathlib import Path

import click
from geoseg.cli import options


def _names(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    if value is None:
        return None
    out = tuple(v.strip() for v in value.split(",") if v.strip())
    if not out:
        raise click.BadParameter(
            f"expected comma-separated names like building,road, got {value!r}"
        )
    return out


@click.command()
@click.argument("class_map", metavar="CLASSMAP", type=click.Path(path_type=str))
@options.output_opt(
    help="Vector file to write: .gpkg, .geojson, .fgb, .parquet or .shp."
)
@click.option(
    "--classes",
    callback=_names,
    metavar="building,road",
    help="Classes to vectorize, by name or id (default: all but 'background').",
)
@click.option(
    "--all",
    "all_classes",
    is_flag=True,
    help="Vectorize every class, background included.",
)
@click.option(
    "--class-names",
    callback=_names,
    metavar="a,b,c",
    help="Names for class ids 0,1,2,... (default: the map's tags).",
)
@click.option(
    "--simplify",
    type=click.FloatRange(0),
    default=0.0,
    metavar="METRES",
    help="Simplification tolerance; a land-cover map stays gap-free.",
)
@click.option(
    "--min-area",
    type=click.FloatRange(0),
    default=0.0,
    metavar="M2",
    help="Drop polygons smaller than this.",
)
@click.option(
    "--fill-holes",
    type=click.FloatRange(0),
    default=0.0,
    metavar="M2",
    help="Fill holes smaller than this.",
)
@click.option(
    "--connectivity",
    type=click.Choice(["4", "8"]),
    default="4",
    show_default=True,
    help="8: pixels touching at a corner join.",
)
@click.option("--regularize", is_flag=True, help="Square building outlines.")
@click.option(
    "--centerlines",
    is_flag=True,
    help="Also write road centre lines (a second GeoPackage layer, or a "
    "<name>_centerlines file for other formats).",
)
@click.option(
    "--probabilities",
    type=click.Path(path_type=str),
    help="Probability raster from predict --probabilities: adds mean_confidence.",
)
@click.option(
    "--threshold",
    type=float,
    metavar="P",
    help="CLASSMAP is a probability/logit raster: class 1 where the band is >= P "
    "(after its scale), else background.",
)
@click.option(
    "--band",
    type=click.IntRange(1),
    metavar="N",
    help="1-based band of CLASSMAP to read (default 1), e.g. one class's probability.",
)
@click.option(
    "--split-instances/--no-split-instances",
    default=None,
    help="One polygon per building on the map of a model trained with --target "
    "instances (default: whenever the map has building_boundary/building_contact "
    "classes); --no-split-instances: one per connected building region.",
)
@click.option(
    "--seed-erosion",
    type=click.IntRange(0, 64),
    default=0,
    metavar="PX",
    help="Instances: erode the building interiors by PX pixels before splitting.",
)
@click.option(
    "--min-seed",
    type=click.IntRange(0),
    default=0,
    metavar="PX",
    help="Instances: interiors smaller than PX pixels are not buildings of their own.",
)
@click.option(
    "--dst-crs", metavar="EPSG:XXXX", help="Write in this CRS (default: the map's)."
)
@click.option(
    "--chunk-size",
    type=click.IntRange(64),
    default=2048,
    show_default=True,
    help="Chunk side in pixels (memory grows with its square).",
)
@click.option(
    "--workers", type=click.IntRange(1), help="Processes (default: CPU count)."
)
@options.overwrite_opt
@options.quiet_opt
@options.progress_opt
def vectorize(
    class_map: str,
    output: Path,
    classes: tuple[str, ...] | None,
    all_classes: bool,
    class_names: tuple[str, ...] | None,
    simplify: float,
    min_area: float,
    fill_holes: float,
    connectivity: str,
    regularize: bool,
    centerlines: bool,
    probabilities: str | None,
    threshold: float | None,
    band: int | None,
    split_instances: bool | None,
    seed_erosion: int,
    min_seed: int,
    dst_crs: str | None,
    chunk_size: int,
    workers: int | None,
    overwrite: bool,
    quiet: bool,
    progress_kind: str,
) -> None:
    """Polygons (and road centre lines) from the class map CLASSMAP.

    \b
    geoseg vectorize landcover.tif -o landcover.gpkg --simplify 2
    geoseg vectorize map.tif --classes building --regularize --min-area 10 -o b.gpkg
    geoseg vectorize map.tif --classes building --centerlines -o city.gpkg
    geoseg vectorize probs.tif --band 2 --threshold 0.5 -o buildings.gpkg
    geoseg vectorize map.tif --classes building --split-instances -o roofs.gpkg
    """
    from geoseg.progress import make_progress
    from geoseg.vector.pipeline import vectorize_to_file

    progress = make_progress(
        "none" if quiet and progress_kind == "bar" else progress_kind
    )
    result = vectorize_to_file(
        class_map,
        output,
        overwrite=overwrite,
        dst_crs=dst_crs,
        progress=progress,
        classes=classes,
        all_classes=all_classes,
        class_names=class_names,
        simplify=simplify,
        min_area=min_area,
        fill_holes=fill_holes,
        connectivity=int(connectivity),
        regularize=regularize,
        centerlines=centerlines,
        probabilities=probabilities,
        threshold=threshold,
        band=band,
        chunk_size=chunk_size,
        workers=workers,
        split_instances=split_instances,
        seed_erosion=seed_erosion,
        min_seed=min_seed,
    )
    if not quiet and progress_kind != "json":
        click.echo(result.summary(), err=True)
