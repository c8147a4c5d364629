"""``predict``: scene -> tiles -> model -> blended, georeferenced class map.

The scene is never whole in memory: it is cut into chunks of ``chunk_tiles x chunk_tiles``
model tiles, and a small dask graph (:mod:`geoseg.prediction.graph`) runs each chunk's tiles once,
blends them with their neighbours' by overlap-add and yields the chunk's final uint8 block,
which is written into a temporary GeoTIFF and journaled (:mod:`geoseg.prediction.output`) so an
interrupted run can resume. The finished file is copied to a Cloud-Optimized GeoTIFF and
renamed onto the destination.

It runs on dask's local thread pool (the default: reading, blending and writing overlap the
model, which uses all cores), or on a ``dask.distributed`` cluster: pass ``client``, and each
worker builds the model once (a worker plugin) while this process writes the results.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg._atomic import (
    check_free_space,
    destination_locks,
    write_errors,
)
from geoseg.classmap import ClassMapInfo
from geoseg.errors import DiskFullError, GeosegWarning, InputError
from geoseg.io import NODATA_CLASS, Scene, open_scene, select_bands
from geoseg.models import DEFAULT_MODEL
from geoseg.prediction.checks import (
    RASTER_EXTENSIONS,
    _check_values,
    _nodata_counts,
    _tile_and_checks,
    check_destinations,
)
from geoseg.prediction.config import InferenceConfig
from geoseg.prediction.graph import (
    ChunkJob,
    ModelRef,
    RunState,
    build_blocks,
    register_predictor,
)
from geoseg.prediction.output import PartialOutput
from geoseg.prediction.tiling import plan_tiles
from geoseg.progress import NullProgress, Progress

if TYPE_CHECKING:
    from geoseg.models.bundle import Bundle

__all__ = ["RASTER_EXTENSIONS", "InferenceConfig", "PredictResult", "predict"]


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` produced and how fast."""

    output: Path
    probabilities: Path | None
    height: int
    width: int
    n_tiles: int
    seconds: float
    path: str
    model: str
    tile: int = 0
    chunks_total: int = 0
    chunks_computed: int = 0
    filled_px: int = 0
    nodata_px: int = 0
    working_gsd: float | None = None
    tta: str = "none"
    model_reason: str = ""

    @property
    def mpx_per_s(self) -> float:
        """Megapixels of scene per second, end to end."""
        return self.height * self.width / 1e6 / max(self.seconds, 1e-9)

    @property
    def tile_mpx_per_s(self) -> float:
        """Megapixels of model input (tiles, overlaps included) per second, end to end."""
        return self.n_tiles * self.tile**2 / 1e6 / max(self.seconds, 1e-9)

    def summary(self) -> str:
        """One line: output, pixels, seconds, Mpx/s, and the compute path used."""
        resumed = "" if self.chunks_computed == self.chunks_total else \
            f", resumed: {self.chunks_computed}/{self.chunks_total} chunks computed"
        nodata = "" if not (self.filled_px or self.nodata_px) else \
            (f", {self.filled_px} px with nodata bands filled, {self.nodata_px} px nodata")
        gsd = "" if self.working_gsd is None else f", resampled to {self.working_gsd:.3g} m"
        gsd += "" if self.tta == "none" else f", tta {self.tta}"
        why = f" ({self.model_reason})" if self.model_reason else ""
        return (f"wrote {self.output} ({self.width}x{self.height} px, {self.n_tiles} tiles"
                f"{gsd}{resumed}{nodata}) in {self.seconds:.1f} s, {self.mpx_per_s:.2f} Mpx/s "
                f"[{self.model}{why}; {self.path}]")


def _execute_local(blocks: dict[tuple[int, int], Any], partial: PartialOutput, grid: Any,
                   num_workers: int) -> None:
    from dask.base import compute
    from dask.delayed import delayed

    write = delayed(partial.write, pure=False)
    writes = [write(a, b, grid.rows[a].core, grid.cols[b].core, block,
                    dask_key_name=f"geoseg-write-{id(partial):x}-{a}-{b}")
              for (a, b), block in blocks.items()]
    compute(*writes, scheduler="threads", num_workers=num_workers)


def _execute_distributed(client: Any, blocks: dict[tuple[int, int], Any],
                         partial: PartialOutput, grid: Any, progress: Progress) -> None:
    from distributed import as_completed

    keys = list(blocks)
    futures = client.compute([blocks[k] for k in keys])
    where = {f.key: k for f, k in zip(futures, keys, strict=True)}
    try:
        for future, block in as_completed(futures, with_results=True):
            a, b = where[future.key]
            partial.write(a, b, grid.rows[a].core, grid.cols[b].core, block)
            progress.advance(grid.chunk_tile_count(grid.rows[a], grid.cols[b]))
            future.release()
    except BaseException:
        client.cancel(futures)
        raise


def _start_model(ref: ModelRef, bundle: Bundle, client: Any, devices: Sequence[str],
                 callers: int = 1, status: Callable[[str], None] | None = None
                 ) -> tuple[str, str, str]:
    """Build the model where it runs; return ``(path description, precision, engine)``."""
    if client is None:
        from functools import partial

        from geoseg.prediction.engines import calibration_tiles
        from geoseg.prediction.inference import Predictor

        config = ref.config
        calibration = None if config.calibration is None else partial(
            calibration_tiles, config.calibration, ref.bands, bundle.spec, config.tile_px)
        predictor = Predictor(bundle, config, n_tiles=ref.n_tiles, calibration=calibration,
                              callers=callers, status=status)
        register_predictor(ref, predictor)
        return predictor.info.describe(), predictor.precision, predictor.engine
    from geoseg.prediction.distributed import ModelPlugin
    from geoseg.prediction.graph import describe_predictor

    client.register_plugin(ModelPlugin(ref, devices), name=f"geoseg-model-{ref.key}")
    resolved = sorted(set(client.run(describe_predictor, ref).values()))
    devs = ",".join(sorted({r[0] for r in resolved}))
    precision = ",".join(sorted({r[1] for r in resolved}))
    engine = ",".join(sorted({r[2] for r in resolved}))
    workers = len(client.scheduler_info()["workers"])
    return (f"dask.distributed, {workers} workers, {devs} {precision} {engine} "
            f"batch={ref.config.batch_size} tile={ref.config.tile_px}"), precision, engine


def auto_model(src: Scene) -> tuple[str, str]:
    """Return the default model for a scene and why: dynamicworld for Sentinel-2, else deeplab.

    A Sentinel-2 product, or a scene whose band names are Sentinel-2's (``B02``..,
    ``B8A``), gets ``dynamicworld`` when this install ships it; anything else gets
    :data:`geoseg.models.DEFAULT_MODEL`.
    """
    from geoseg.bands import SENTINEL2
    from geoseg.models import DEFAULT_MODELS

    if src.family == SENTINEL2 and "dynamicworld" in DEFAULT_MODELS:
        what = "a Sentinel-2 product" if src.source else "Sentinel-2 band names"
        return "dynamicworld", f"default for {what}"
    if src.family == SENTINEL2:
        return DEFAULT_MODEL, "default; no Sentinel-2 model in this install"
    return DEFAULT_MODEL, "default for RGB scenes" if src.count in (3, 4) else "default"


def predict(scene: str | os.PathLike[str], output: str | os.PathLike[str], *,
            model: str | os.PathLike[str] | Bundle | None = None,
            config: InferenceConfig | None = None,
            bands: Sequence[int | str] | None = None,
            tile_size: int | None = None, overlap: int | None = None,
            batch_size: int | None = None, chunk_tiles: int | None = None,
            device: str | None = None, precision: str | None = None, engine: str | None = None,
            blend: str | None = None, calibration: str | os.PathLike[str] | None = None,
            probabilities: str | os.PathLike[str] | None = None,
            preview: str | os.PathLike[str] | None = None,
            vectorize: str | os.PathLike[str] | None = None, overwrite: bool = False,
            resume: bool = False, num_workers: int = 2, client: Any = None,
            devices: Sequence[str] = (), scale: float | str | None = None,
            resample: str | float | None = None, tta: str | None = None,
            mask: str | None = None, progress: Progress | None = None) -> PredictResult:
    """Predict a georeferenced class map for ``scene`` and write it to ``output``.

    Parameters
    ----------
    scene : path
        Input raster (any GDAL path, ``/vsicurl/`` URLs included; sidecar ``.aux.xml``
        georeferencing honoured), or a product: a Sentinel-2 ``.SAFE`` folder or zip, a
        STAC item, a Landsat Collection 2 folder, a folder of band files or
        ``a.tif,b.tif`` (:mod:`geoseg.sources`), read as one scene in model units.
    output : path
        Class map to write: a Cloud-Optimized GeoTIFF, uint8 class ids, nodata 255,
        colour table, class names and provenance tags; same CRS, transform and size.
    model : str, path or Bundle, optional
        A default model name (``geoseg models``), a bundle file, or a loaded bundle.
        None: :func:`auto_model` (``dynamicworld`` for Sentinel-2, else ``deeplab``).
    config : InferenceConfig, optional
        Tile, overlap, batch size, chunk tiles, device, precision, engine, blend and int8
        calibration source in one object (default: ``InferenceConfig()``, the model's tile
        and overlap). The keyword arguments below of the same meaning override its fields
        when given (not None).
    bands : sequence of int or str, optional
        Input bands to feed the model, in model order: 1-based numbers or band names
        (``B04``, ``red``; :mod:`geoseg.bands`). Default: the model's bands by name when
        the scene's bands are named, else all bands in file order.
    tile_size, overlap : int, optional
        Tile side and overlap in pixels (default: the model's; an overlap not given
        follows the tile size, see :meth:`InferenceConfig.resolve`).
    batch_size : int, optional
        Tiles per forward pass (default 4).
    chunk_tiles : int, optional
        Tiles per dask chunk side: memory per chunk grows with its square (default 4).
    device, precision, engine : str, optional
        ``auto|cpu|cuda|cuda:N|mps``; ``auto|fp32|bf16|fp16|int8``;
        ``auto|eager|compile|openvino|onnxruntime`` (see
        :func:`geoseg.prediction.inference.resolve_engine`).
    blend : str, optional
        Blend window, ``cosine`` (default) or ``flat``.
    calibration : path, optional
        int8 only: a raster or directory of rasters for calibration tiles (default: the
        scene itself).
    probabilities : path, optional
        Also write per-class probabilities, uint8, ``p = value / 254`` (255 = nodata).
    preview : path, optional
        Also write a PNG preview: the scene, the coloured class map and a legend.
    vectorize : path, optional
        Also polygonize the class map (all classes; see :func:`geoseg.vector.pipeline.vectorize`)
        into this vector file (format from the extension).
    overwrite : bool
        Replace existing outputs.
    resume : bool
        Continue an interrupted run of the same settings from its journal beside the
        output, computing only the chunks not yet written; keep the journal on failure.
    num_workers : int
        Threads of the local dask scheduler (reading and blending overlap the model).
    client : distributed.Client, optional
        Run the chunks on this dask.distributed cluster instead of local threads.
    devices : sequence of str
        With ``client``: one device per worker (``cuda:0``, ``cuda:1``, ...).
    scale : float or "percentile", optional
        Rescale the scene's values before the model: a factor, or ``"percentile"``
        (each band's 1st..99th percentiles onto the trained ones). Without it, a scene
        whose values are far from the model's training range gets a one-line warning
        (:mod:`geoseg.models.value_range`).
    resample : "auto", "off" or float, optional
        Working ground sample distance (default ``auto``: the model's, when the scene's
        differs from it by more than 1.5x; see :mod:`geoseg.prediction.resample`). The
        class map is always on the scene's grid.
    tta : "none" or "flips", optional
        Test-time augmentation (:mod:`geoseg.prediction.augment`; default ``none``).
    mask : "clouds", optional
        Products only: their own cloud and shadow flags become nodata
        (:mod:`geoseg.sources`).
    progress : Progress, optional
        Where to report progress (tiles done).

    Returns
    -------
    PredictResult
    """
    from geoseg.models import resolve_spec
    from geoseg.models.bundle import Bundle
    from geoseg.prediction.limits import estimate_output_bytes

    t0 = time.perf_counter()
    config = (config or InferenceConfig()).with_(
        tile=tile_size, overlap=overlap, batch_size=batch_size, chunk_tiles=chunk_tiles,
        device=device, precision=precision, engine=engine, blend=blend,
        calibration=None if calibration is None else os.fspath(calibration),
        resample=resample, tta=tta)
    from geoseg.models import resolve_model_path

    bundle_file = model.path if isinstance(model, Bundle) else \
        None if model is None else resolve_model_path(model)
    paths = check_destinations(scene, output, probabilities, preview, vectorize,
                               overwrite=overwrite,
                               inputs=[("--model", bundle_file),
                                       ("--calibration", config.calibration)])
    from geoseg.bands import model_family

    reason, src = "", None
    if model is None:
        src = open_scene(scene, mask=mask)
        model, reason = auto_model(src)
    spec = model.spec if isinstance(model, Bundle) else resolve_spec(model)  # no torch yet
    family = model_family(spec.bands, spec.provenance)
    if src is None or src.source:  # a product: on the grid of the finest band it reads
        src = open_scene(scene, want=spec.bands, wanted_family=family, mask=mask)
    chosen = select_bands(src, bands, spec.n_bands, spec.bands, model_family=family)
    from geoseg.sources import level_warning

    level_note = level_warning(src, spec, model if isinstance(model, str) else None)
    if level_note:
        warnings.warn(level_note, GeosegWarning, stacklevel=2)
    config = config.resolve(spec)
    from geoseg.prediction.resample import auto_note, working_gsd, working_shape

    explicit = isinstance(config.resample, float)  # --resample METRES, not auto
    work = working_gsd(config.resample, src, spec)
    note = auto_note(config.resample, src, spec)
    if note is not None and progress is not None:
        progress.log(note)
    config = config.with_(resample="off" if work is None else work)
    tile, ov = _tile_and_checks(spec, src.shape if work is None else working_shape(src, work),
                                config.tile_px, config.overlap_px,
                                config.batch_size, config.chunk_tiles, len(chosen))
    config = config.with_(tile=tile, overlap=ov)
    if work is not None:  # the GSD honoured, the model input and memory within limits
        from geoseg.prediction.resample import check_scaled

        check_scaled(src, config, spec.n_classes, len(chosen), explicit=explicit)
    if config.precision == "int8" and config.calibration is None:
        config = config.with_(calibration=src.path)  # calibrate on the scene itself
    check_free_space(paths[0], estimate_output_bytes(src.shape, spec.n_classes,
                                                     paths[1] is not None))
    with destination_locks(*paths):
        return _predict_locked(
            src, paths, model, chosen=chosen, config=config, overwrite=overwrite,
            resume=resume, num_workers=num_workers, client=client, devices=devices,
            scale=scale, progress=progress or NullProgress(), t0=t0, reason=reason)


def _predict_locked(src: Any, paths: tuple[Path, Path | None, Path | None, Path | None],
                    model: Any, *, chosen: tuple[int, ...], config: InferenceConfig,
                    overwrite: bool, resume: bool, num_workers: int, client: Any,
                    devices: Sequence[str], scale: float | str | None, progress: Progress,
                    t0: float, reason: str = "") -> PredictResult:
    """:func:`predict` once its destinations are checked and locked."""
    from geoseg import __version__
    from geoseg.io import class_colormap
    from geoseg.models import resolve_model
    from geoseg.models.bundle import Bundle
    from geoseg.vector.instances import instance_channels, instance_tags

    out_path, prob_path, preview_path, vector_path = paths
    # Spec and sha256 only: the torch network is built when an engine needs it (an ONNX
    # engine with a cached export never does).
    bundle = model if isinstance(model, Bundle) else resolve_model(model, network=False)
    bundle = _check_values(bundle, src, chosen, scale, client, progress)
    spec = bundle.spec
    tile, ov, blend = config.tile_px, config.overlap_px, config.blend
    from geoseg.prediction.resample import scaled_tiles

    scaled = scaled_tiles(src, config)  # None unless resampling: then tiles of scene px
    grid = (plan_tiles(src.shape, tile=tile, overlap=ov, chunk_tiles=config.chunk_tiles)
            if scaled is None else
            plan_tiles(src.shape, tile=scaled.tile, overlap=scaled.overlap,
                       chunk_tiles=scaled.chunk_tiles, multiple=1))
    if client is not None and bundle.path is None:
        raise InputError("a distributed run needs the model as a bundle file (workers load "
                         "it themselves); save it with geoseg.models.bundle.save_bundle")
    ref = ModelRef(source=str(bundle.path or ""), name=bundle.name, sha256=bundle.sha256,
                   config=config, n_tiles=grid.n_tiles, bands=tuple(chosen))
    path_info, used_precision, used_engine = _start_model(ref, bundle, client, devices,
                                                          callers=num_workers,
                                                          status=progress.log)
    class_ids = [c.id for c in spec.classes]
    fingerprint = {
        # a product's VRT lives in a per-process folder named by its content
        "scene": src.path if not src.source else f"{src.source}#{Path(src.path).parent.name}",
        "shape": list(src.shape), "transform": list(src.transform)[:6],
        "model_sha256": bundle.sha256, "tile": tile, "overlap": ov,
        "chunk_tiles": config.chunk_tiles, "blend": blend, "bands": list(chosen),
        "precision": used_precision, "engine": used_engine,
        "probabilities": prob_path is not None, "geoseg": __version__,
        **({} if config.tta == "none" else {"tta": config.tta}),
        **({} if scaled is None else {"working_gsd": scaled.gsd}),
    }
    with write_errors(out_path):
        partial = PartialOutput(out_path, prob_path, src, len(class_ids), fingerprint,
                                resume=resume)
    run_key = f"{bundle.sha256[:12]}-{uuid.uuid4().hex[:12]}"
    state = RunState(progress) if client is None else None
    template = ChunkJob(run_key, ref, src.path, tuple(chosen), src.has_mask,
                        grid.rows[0], grid.cols[0], grid.origins_y, grid.origins_x,
                        str(partial.tails_dir), state=state, scaled=scaled)
    done = frozenset(partial.done)
    blocks = build_blocks(grid, template, class_ids, probabilities=prob_path is not None,
                          done=done, groups=instance_channels(spec))
    remaining = sum(grid.chunk_tile_count(grid.rows[a], grid.cols[b]) for a, b in blocks)
    tags = {
        "geoseg_version": __version__, "model": bundle.name, "model_sha256": bundle.sha256,
        "architecture": spec.architecture, "backbone": spec.backbone,
        "tile_size": str(tile), "overlap": str(ov), "blend": blend,
        "precision": used_precision, "engine": used_engine,
        "bands": ",".join(str(b) for b in chosen),
        "nodata_class": str(NODATA_CLASS),
        # the same on the map and its probabilities (vectorize checks): a digest of the
        # run's scene and settings, so a resumed or distributed run writes the same bytes
        "run_id": hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode())
        .hexdigest()[:24],
        **({} if config.tta == "none" else {"tta": config.tta}),
        **({} if scaled is None else {"working_gsd_m": f"{scaled.gsd:.6g}"}),
        **ClassMapInfo(tuple(class_ids), tuple(spec.class_names()),
                       tuple(c.color for c in spec.classes)).to_tags(),
        **instance_tags(spec),  # a --target instances model: vectorize splits buildings
    }
    progress.log(f"model={bundle.name} size={src.width}x{src.height} bands={len(chosen)} "
                 f"crs={src.crs.to_string() if src.crs else 'none'} tiles={grid.n_tiles}"
                 + (f" resuming: {len(done)} chunks done" if done else "")
                 + ("" if scaled is None else f" resampled to {scaled.gsd:.3g} m")
                 + ("" if config.tta == "none" else f" tta={config.tta}")
                 + f" [{path_info}]")
    finished = journaled = False
    try:
        progress.start(remaining, desc=Path(src.path).name[:24])
        import rasterio

        with rasterio.Env(GDAL_CACHEMAX=256), write_errors(out_path):
            if client is None:
                _execute_local(blocks, partial, grid, num_workers)
            else:
                _execute_distributed(client, blocks, partial, grid, progress)
            # Pixels where some bands were filled (predicted) and where all were (nodata
            # 255), as stage 1 counted them: no second pass over the scene.
            filled, nodata = _nodata_counts(partial, grid, src, chosen)
            journaled = True  # every chunk is on disk: only the final COG copy is left
            partial.finalize(colormap=class_colormap([c.color for c in spec.classes]),
                             tags=tags, class_names=spec.class_names(), overwrite=overwrite)
        finished = True
        if preview_path is not None:
            from geoseg.prediction.preview import render_preview

            render_preview(src.path, out_path, preview_path, bands=_preview_bands(src, chosen),
                           overwrite=overwrite)
        if vector_path is not None:
            from geoseg.vector.pipeline import vectorize_to_file

            progress.log(f"vectorizing {out_path.name} -> {vector_path.name}")
            vectorize_to_file(out_path, vector_path, overwrite=overwrite, all_classes=True)
        progress.finish([str(p) for p in (out_path, prob_path, preview_path, vector_path)
                         if p is not None])
    except BaseException as exc:
        if state is not None:
            state.cancel()  # stop the other chunk tasks at their next batch
        # A full disk discards even a resumable run while chunks are computed (its
        # temporaries keep the disk full); once every chunk is journaled only the COG
        # copy failed (its temporary is removed): the journal stays for --resume.
        full = isinstance(exc, DiskFullError)
        if not finished and (not resume or (full and not journaled)):
            partial.discard()
        if full and resume and journaled and not finished:
            raise DiskFullError(f"{exc}; every chunk is kept beside it: free some space and "
                                "rerun with --resume to write the map") from None
        raise
    finally:
        progress.close()
    seconds = time.perf_counter() - t0
    return PredictResult(output=out_path, probabilities=prob_path, height=src.height,
                         width=src.width, n_tiles=grid.n_tiles, seconds=seconds,
                         path=path_info, model=bundle.name, tile=tile,
                         chunks_total=len(grid.rows) * len(grid.cols),
                         chunks_computed=len(blocks), filled_px=filled, nodata_px=nodata,
                         working_gsd=None if scaled is None else scaled.gsd, tta=config.tta,
                         model_reason=reason)


def _preview_bands(src: Scene, chosen: Sequence[int]) -> Sequence[int]:
    """Red, green and blue by name when the scene names them, else the first 3 read."""
    from geoseg.bands import match_bands
    from geoseg.errors import BandMismatchError

    if src.named:
        try:
            return match_bands(["red", "green", "blue"], src.band_names,
                               scene_family=src.family)
        except BandMismatchError:
            pass
    return chosen[:3]

