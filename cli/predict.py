"""``geoseg predict``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from geoseg.cli import options


def _devices(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _resample(ctx: click.Context, param: click.Parameter, value: str) -> str | float:
    if value.strip().lower() in ("auto", "off"):
        return value.strip().lower()
    try:
        gsd = float(value)
    except ValueError:
        raise click.BadParameter(f"expected auto, off or metres, got {value!r}") from None
    if not 0 < gsd < float("inf"):
        raise click.BadParameter(f"must be a positive number of metres, got {value}")
    return gsd


def _scale(ctx: click.Context, param: click.Parameter, value: str | None
           ) -> float | str | None:
    if value is None or value.strip().lower() == "percentile":
        return None if value is None else "percentile"
    try:
        factor = float(value)
    except ValueError:
        raise click.BadParameter(f"expected a number or 'percentile', got {value!r}"
                                 ) from None
    if not factor > 0 or factor == float("inf"):
        raise click.BadParameter(f"must be a positive number, got {value}")
    return factor


@click.command()
@click.argument("scenes", nargs=-1, required=True, metavar="SCENE...")
@options.output_opt(help="Class map to write (Cloud-Optimized GeoTIFF, .tif); with several "
                         "scenes, a directory (<scene name>.tif each).", dir_okay=True)
@click.option("-m", "--model", metavar="NAME|BUNDLE",
              help="Default model name (geoseg models) or a bundle file. Default: "
                   "dynamicworld for Sentinel-2 products and scenes with Sentinel-2 band "
                   "names (when installed), else deeplab.")
@options.bands_opt
@click.option("--mask", type=click.Choice(["clouds"]),
              help="Products only: the product's cloud and shadow flags become nodata "
                   "(Sentinel-2 SCL or MSK_CLASSI, Landsat QA_PIXEL).")
@options.tile_size_opt
@click.option("--overlap", type=click.IntRange(0),
              help="Tile overlap, px (default: the model's, scaled with --tile-size: the "
                   "same share of the tile).")
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True)
@click.option("--chunk-tiles", type=click.IntRange(1), default=4, show_default=True,
              help="Tiles per chunk side (memory grows with its square).")
@options.device_opt
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16", "int8"]),
              default="auto", show_default=True,
              help="auto: bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32 "
                   "(never int8). int8: quantised with OpenVINO/ONNX Runtime, calibrated "
                   "on the scene or --calibration.")
@click.option("--engine", type=click.Choice(["auto", "eager", "compile", "openvino",
                                             "onnxruntime"]),
              default="auto", show_default=True,
              help="auto: on CPU OpenVINO, else ONNX Runtime, else torch (each if "
                   "installed; the ONNX export is cached); torch on GPUs.")
@click.option("--calibration", type=click.Path(exists=True, path_type=Path),
              help="int8: raster or directory of rasters for calibration tiles "
                   "(default: the scene).")
@click.option("--blend", type=click.Choice(["cosine", "flat"]), default="cosine",
              show_default=True, help="Weight window for overlapping tiles.")
@click.option("--probabilities", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write per-class probabilities (uint8, p = value/254).")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a PNG preview (scene, class map, legend).")
@click.option("--vectorize", "vectorize_to", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write polygons of every class (.gpkg, .geojson, .fgb, .parquet, "
                   ".shp); geoseg vectorize has the finer options.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from its journal beside the output.")
@click.option("--threads", "num_workers", type=click.IntRange(1), default=2, show_default=True,
              help="Local threads reading/blending alongside the model.")
@click.option("--workers", type=click.IntRange(1),
              help="Start a local dask.distributed cluster of N worker processes.")
@click.option("--scheduler", metavar="tcp://HOST:PORT",
              help="Run on an existing dask.distributed cluster.")
@click.option("--devices", callback=_devices, metavar="cuda:0,cuda:1",
              help="One local worker per device.")
@click.option("--scale", callback=_scale, metavar="FACTOR|percentile",
              help="Rescale the scene's values for the model: a factor (e.g. 0.0255 "
                   "for 16-bit scenes on an 8-bit model), or percentile (each band's "
                   "1st..99th percentiles onto the trained range).")
@click.option("--resample", callback=_resample, default="auto", show_default=True,
              metavar="auto|off|METRES",
              help="Run the model at a working ground sample distance: auto = only when "
                   "the scene's GSD is outside what the model saw in training (its GSD x "
                   "its training zoom range, widened 1.5x), to the nearest GSD inside; "
                   "METRES forces one. The map stays on the scene's grid.")
@click.option("--tta", type=click.Choice(["none", "flips"]), default="none",
              show_default=True,
              help="Test-time augmentation: flips averages the scores of each tile and "
                   "its 3 flips (4x the model time).")
@options.xyz_pattern_opt
@options.overwrite_opt
@options.quiet_opt
@options.progress_opt
def predict(scenes: tuple[str, ...], output: Path, model: str | None,
            bands: tuple[int, ...] | tuple[str, ...] | None, mask: str | None,
            tile_size: int | None, overlap: int | None,
            batch_size: int, chunk_tiles: int, device: str, precision: str, engine: str,
            calibration: Path | None, blend: str, probabilities: Path | None, preview: Path | None,
            vectorize_to: Path | None, resume: bool, num_workers: int, workers: int | None,
            scheduler: str | None, devices: tuple[str, ...], scale: float | str | None,
            resample: str | float, tta: str, xyz_pattern: str | None,
            overwrite: bool, quiet: bool, progress_kind: str) -> None:
    """Predict georeferenced class maps for SCENE(s).

    SCENE is a raster path, a GDAL URL (/vsicurl/..., s3://...), a glob, or @list.txt
    (one path per line), or a folder or quoted glob of image chips (XYZ-named or
    georeferenced, RGB and RGBA mixed, alpha as the mask): one map of their mosaic with
    -o FILE.tif, one map per chip with -o DIR. A SCENE may also be a product, read as one
    scene with named bands in reflectance x 10000: a Sentinel-2 L1C/L2A .SAFE folder or
    .zip, a STAC item (.json file or URL), a Landsat Collection 2 folder (MTL), a folder
    of single-band files, or single-band files joined by commas (a.tif,b.tif).

    \b
    geoseg predict scene.tif -o landcover.tif
    geoseg predict S2B_MSIL1C_20240601T101559_N0510_R065_T32TQM.SAFE -o lulc.tif
    geoseg predict item.json --mask clouds -o lulc.tif
    geoseg predict s2.tif --bands 4,3,2 --model my.safetensors -o map.tif
    geoseg predict s2.tif --bands B04,B03,B02 --model my.safetensors -o map.tif
    geoseg predict 'tiles/*.tif' -o maps/ --workers 2
    """
    from geoseg.prediction.batch import dask_client, expand_inputs
    from geoseg.prediction.config import InferenceConfig
    from geoseg.progress import make_progress

    progress = make_progress("none" if quiet and progress_kind == "bar" else progress_kind)
    from geoseg.mosaic import chip_files, chip_mosaic

    paths = expand_inputs(scenes)
    many = len(paths) > 1 or str(output).endswith(("/", "\\")) or output.is_dir()
    chips = chip_files(scenes[0]) if len(scenes) == 1 else None
    if chips is not None:  # a folder or glob of chips: a map of their mosaic, or one each
        many = many or not output.suffix  # -o DIR (click drops a trailing slash)
        paths = chips if many else paths
    config = InferenceConfig(tile=tile_size, overlap=overlap, batch_size=batch_size,
                             chunk_tiles=chunk_tiles, device=device, precision=precision,
                             engine=engine, blend=blend,
                             calibration=None if calibration is None else str(calibration),
                             resample=resample, tta=tta)
    from geoseg.xyz import xyz_pattern as xyz_names

    with xyz_names(xyz_pattern), \
            dask_client(scheduler=scheduler, workers=workers, devices=devices) as client:
        if not many:
            from contextlib import nullcontext

            from geoseg.prediction.pipeline import predict as run

            with chip_mosaic(chips) if chips is not None else nullcontext(paths[0]) as scene:
                result = run(scene, output, model=model, config=config, bands=bands,
                             probabilities=probabilities, preview=preview,
                             vectorize=vectorize_to, overwrite=overwrite, resume=resume,
                             num_workers=num_workers, client=client, devices=devices,
                             scale=scale, mask=mask, progress=progress)
            if not quiet and progress_kind != "json":
                click.echo(result.summary(), err=True)
            return
        if probabilities or preview or vectorize_to:
            raise click.UsageError("--probabilities, --preview and --vectorize take one "
                                   "scene; run geoseg vectorize on the maps afterwards")
        from geoseg.prediction.batch import predict_many

        batch = predict_many(paths, output, model=model, config=config, bands=bands, mask=mask,
                             overwrite=overwrite, resume=resume, num_workers=num_workers,
                             client=client, devices=devices, scale=scale, progress=progress)
    if not quiet and progress_kind != "json":
        click.echo(batch.table(), err=True)
    if batch.failed:
        sys.exit(1)
