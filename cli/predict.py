"""``geoseg predict``."""

from __future__ import annotations

from pathlib import Path

import click
from geoseg.cli import options


@click.command()
@click.argument("scene", type=click.Path(path_type=str))
@options.output_opt(help="Class map to write (Cloud-Optimized GeoTIFF).")
@options.model_opt
@options.bands_opt
@click.option("--tile-size", type=click.IntRange(32), help="Tile side, px (default: model's).")
@click.option("--overlap", type=click.IntRange(0), help="Tile overlap, px (default: model's).")
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True)
@click.option("--chunk-tiles", type=click.IntRange(1), default=4, show_default=True,
              help="Tiles per chunk side (memory grows with its square).")
@options.device_opt
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              default="auto", show_default=True,
              help="auto: bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32.")
@click.option("--engine", type=click.Choice(["auto", "eager", "compile"]), default="auto",
              show_default=True, help="torch.compile the model (auto: large scenes only).")
@click.option("--blend", type=click.Choice(["cosine", "flat"]), default="cosine",
              show_default=True, help="Weight window for overlapping tiles.")
@click.option("--probabilities", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write per-class probabilities (uint8, p = value/254).")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a PNG preview (scene, class map, legend).")
@click.option("--vectorize", "vectorize_to", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write polygons of every class (.gpkg, .geojson, .fgb, .parquet, "
                   ".shp); geoseg vectorize has the finer options.")
@click.option("--workers", "num_workers", type=click.IntRange(1), default=2,
              show_default=True, help="Threads reading/blending alongside the model.")
@options.overwrite_opt
@options.quiet_opt
@options.progress_opt
def predict(scene: str, output: Path, model: str, bands: tuple[int, ...] | None,
            tile_size: int | None, overlap: int | None, batch_size: int, chunk_tiles: int,
            device: str, precision: str, engine: str, blend: str,
            probabilities: Path | None, preview: Path | None, vectorize_to: Path | None,
            num_workers: int,
            overwrite: bool, quiet: bool, progress_kind: str) -> None:
    """Predict a georeferenced class map for SCENE.

    \b
    geoseg predict scene.tif -o landcover.tif
    geoseg predict s2.tif --bands 4,3,2 --model my.safetensors -o map.tif
    """
    from geoseg.pipeline import predict as run
    from geoseg.progress import make_progress

    progress = make_progress("none" if quiet and progress_kind == "bar" else progress_kind)
    result = run(scene, output, model=model, bands=bands, tile_size=tile_size,
                 overlap=overlap, batch_size=batch_size, chunk_tiles=chunk_tiles,
                 device=device, precision=precision, engine=engine, blend=blend,
                 probabilities=probabilities, preview=preview, vectorize=vectorize_to,
                 overwrite=overwrite, num_workers=num_workers, progress=progress)
    if not quiet and progress_kind != "json":
        click.echo(result.summary(), err=True)
