"""``predict``: scene -> tiles -> model -> blended, georeferenced class map.

The scene is never whole in memory. It is cut into chunks of ``chunk_tiles x chunk_tiles``
model tiles; one dask task per chunk reads the chunk's footprint, runs its tiles through
the model in batches and accumulates blend-weighted probabilities. A second task per chunk
adds the overlapping tails its upper/left neighbours spilled into it (overlap-add, see
:mod:`geoseg.tiling`), takes the argmax and yields the final uint8 block, which
``dask.array.store`` writes straight into the output. Every tile runs exactly once, and the
result does not depend on the chunk size.

Why a hand-built overlap-add rather than ``dask.array.map_overlap``: ``map_overlap``
recomputes the halo of every chunk from its neighbours' *inputs*, so each halo tile would
run through the model twice; overlap-add shares the *outputs* instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg._atomic import check_output, partial_path
from geoseg.errors import OutputError
from geoseg.io import NODATA_CLASS, Scene, open_scene, read_window, select_bands
from geoseg.progress import NullProgress, Progress
from geoseg.stitching import combine_chunk, probabilities_u8
from geoseg.tiling import AxisChunk, TileGrid, plan_tiles

if TYPE_CHECKING:
    import dask.array as da

    from geoseg.inference import Predictor
    from geoseg.models.bundle import Bundle

__all__ = ["PredictResult", "predict", "predict_array"]

log = logging.getLogger(__name__)

# Predictors live here, once per process, keyed by run: dask tasks look them up by key, so
# the task graph carries a short string instead of a model.
_PREDICTORS: dict[str, Predictor] = {}
_PROGRESS: dict[str, Progress] = {}
# Runs being abandoned (error, Ctrl-C, SIGTERM): their chunk tasks stop at the next batch.
_CANCELLED: set[str] = set()


class _RunCancelled(Exception):
    """Raised inside a chunk task of a run that is being abandoned."""


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

    @property
    def tile_mpx_per_s(self) -> float:
        """Megapixels of model input (tiles, overlaps included) per second, end to end."""
        return self.n_tiles * self.tile**2 / 1e6 / max(self.seconds, 1e-9)

    @property
    def mpx_per_s(self) -> float:
        """Megapixels of scene per second, end to end."""
        return self.height * self.width / 1e6 / max(self.seconds, 1e-9)

    def summary(self) -> str:
        """One line: output, pixels, seconds, Mpx/s, and the compute path used."""
        return (f"wrote {self.output} ({self.width}x{self.height} px, {self.n_tiles} tiles) "
                f"in {self.seconds:.1f} s, {self.mpx_per_s:.2f} Mpx/s [{self.model}; "
                f"{self.path}]")


@dataclass(frozen=True, slots=True)
class _ChunkJob:
    run_key: str
    path: str
    bands: tuple[int, ...]
    with_mask: bool
    row: AxisChunk
    col: AxisChunk
    origins_y: tuple[int, ...]
    origins_x: tuple[int, ...]
    tile: int


def _stage1(job: _ChunkJob) -> tuple[npt.NDArray[np.float32], ...]:
    """Run one chunk's tiles; return its accumulator split into core and three tails."""
    predictor = _PREDICTORS[job.run_key]
    t = job.tile
    (fy0, fy1), (fx0, fx1) = job.row.footprint, job.col.footprint
    data, valid = read_window(job.path, job.bands, (fy0, fy1), (fx0, fx1),
                              with_mask=job.with_mask)
    fh, fw = fy1 - fy0, fx1 - fx0
    ph, pw = max(fh, t), max(fw, t)
    x = np.empty((data.shape[0], ph, pw), np.float32)
    x[:, :fh, :fw] = data
    mean = np.asarray(predictor.spec.mean, np.float32)[:, None]
    if ph > fh or pw > fw:  # scene smaller than a tile: pad, and give the pad no weight
        x[:, fh:, :] = mean[:, :, None]
        x[:, :, fw:] = mean[:, :, None]
        full = np.zeros((ph, pw), bool)
        full[:fh, :fw] = True if valid is None else valid
        valid = full
    if valid is not None and not valid.all():
        # Nodata pixels become the band mean (0 after normalisation) so they do not
        # disturb their valid neighbours, and get zero blend weight below.
        x[:, ~valid] = mean
    c = predictor.n_classes
    acc = np.zeros((c + 1, ph, pw), np.float32)
    offsets = [(oy - fy0, ox - fx0) for oy in job.origins_y[job.row.tiles.start:
                                                            job.row.tiles.stop]
               for ox in job.origins_x[job.col.tiles.start:job.col.tiles.stop]]
    window = predictor.window_np
    bs = predictor.batch_size
    for start in range(0, len(offsets), bs):
        if job.run_key in _CANCELLED:
            raise _RunCancelled(job.run_key)
        group = offsets[start:start + bs]
        batch = np.stack([x[:, y:y + t, xo:xo + t] for y, xo in group])
        probs = predictor.forward_tiles(batch)
        for (y, xo), p in zip(group, probs, strict=True):
            if valid is None:
                acc[:c, y:y + t, xo:xo + t] += p
                acc[c, y:y + t, xo:xo + t] += window
            else:
                v = valid[y:y + t, xo:xo + t]
                acc[:c, y:y + t, xo:xo + t] += p * v
                acc[c, y:y + t, xo:xo + t] += window * v
    acc = acc[:, :fh, :fw]
    progress = _PROGRESS.get(job.run_key)
    if progress is not None:
        progress.advance(len(offsets))
    ch, cw = job.row.core_size, job.col.core_size
    return (acc[:, :ch, :cw], np.ascontiguousarray(acc[:, ch:, :cw]),
            np.ascontiguousarray(acc[:, :ch, cw:]), np.ascontiguousarray(acc[:, ch:, cw:]))


def _stage2(core: npt.NDArray[np.float32], top: npt.NDArray[np.float32] | None,
            left: npt.NDArray[np.float32] | None, corner: npt.NDArray[np.float32] | None,
            class_ids: npt.NDArray[np.uint8], probabilities: bool) -> npt.NDArray[np.uint8]:
    """Add neighbours' tails, then argmax -> ``(1 [+ C], h, w)`` uint8 block."""
    acc = combine_chunk(core.copy(), top, left, corner)
    c = acc.shape[0] - 1
    best = acc[0].copy()
    idx = np.zeros(best.shape, np.uint8)
    for k in range(1, c):  # argmax over a short axis: C vectorised passes beat np.argmax
        better = acc[k] > best
        idx[better] = k
        np.maximum(best, acc[k], out=best)
    classes = class_ids[idx]
    classes[acc[c] <= 0] = NODATA_CLASS
    if not probabilities:
        return classes[None]
    return np.concatenate([classes[None], probabilities_u8(acc)])


def predict_array(scene: Scene, grid: TileGrid, bands: Sequence[int], run_key: str,
                  class_ids: Sequence[int], *, probabilities: bool = False) -> da.Array:
    """Lazy ``(1 [+ C], H, W)`` uint8 dask array: class ids, then optional probabilities.

    The predictor must be registered under ``run_key`` in every process that computes it.
    """
    import dask.array as da
    from dask.delayed import delayed

    ids = np.asarray(class_ids, np.uint8)
    n_out = 1 + (len(ids) if probabilities else 0)
    stage1: dict[tuple[int, int], Any] = {}
    blocks: list[list[Any]] = []
    s1 = delayed(_stage1, pure=True, nout=4)
    s2 = delayed(_stage2, pure=True)
    for row in grid.rows:
        out_row = []
        for col in grid.cols:
            job = _ChunkJob(run_key, scene.path, tuple(bands), scene.has_mask, row, col,
                            grid.origins_y, grid.origins_x, grid.tile)
            parts = stage1[row.index, col.index] = s1(
                job, dask_key_name=f"geoseg-tiles-{run_key}-{row.index}-{col.index}")
            up = stage1.get((row.index - 1, col.index))
            lf = stage1.get((row.index, col.index - 1))
            cr = stage1.get((row.index - 1, col.index - 1))
            block = s2(parts[0], None if up is None else up[1], None if lf is None else lf[2],
                       None if cr is None else cr[3], ids, probabilities,
                       dask_key_name=f"geoseg-blend-{run_key}-{row.index}-{col.index}")
            shape = (n_out, row.core_size, col.core_size)
            out_row.append(da.from_delayed(block, shape,  # type: ignore[no-untyped-call]
                                           dtype=np.uint8))
        blocks.append(out_row)
    result: da.Array = da.block([list(r) for r in blocks])  # type: ignore[no-untyped-call]
    return result


class _RasterTarget:
    """``dask.array.store`` target writing blocks of ``(k, h, w)`` into open datasets."""

    def __init__(self, datasets: Sequence[tuple[Any, slice]]) -> None:
        self._datasets = datasets

    def __setitem__(self, key: tuple[slice, slice, slice], value: npt.NDArray[Any]) -> None:
        from rasterio.windows import Window

        _, rows, cols = key
        win = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        for dataset, band_slice in self._datasets:
            part = value[band_slice]
            dataset.write(part, window=win)


def _gtiff_profile(scene: Scene, count: int) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": scene.width, "height": scene.height, "count": count,
        "dtype": "uint8", "nodata": NODATA_CLASS, "tiled": True, "blockxsize": 512,
        "blockysize": 512, "BIGTIFF": "IF_SAFER", "interleave": "band",
    }
    if scene.crs is not None:
        profile["crs"] = scene.crs
    profile["transform"] = scene.transform
    return profile


def _cog_copy(src: Path, dst: Path, *, categorical: bool) -> None:
    import rasterio.shutil

    rasterio.shutil.copy(
        str(src), str(dst), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE="512",
        OVERVIEW_RESAMPLING="MODE" if categorical else "AVERAGE", NUM_THREADS="ALL_CPUS",
        BIGTIFF="IF_SAFER")


def predict(scene: str | os.PathLike[str], output: str | os.PathLike[str], *,
            model: str | os.PathLike[str] | Bundle = "deeplab",
            bands: Sequence[int] | None = None, tile_size: int | None = None,
            overlap: int | None = None, batch_size: int = 4, chunk_tiles: int = 4,
            device: str = "auto", precision: str = "auto", engine: str = "auto",
            blend: str = "cosine", probabilities: str | os.PathLike[str] | None = None,
            preview: str | os.PathLike[str] | None = None,
            vectorize: str | os.PathLike[str] | None = None, overwrite: bool = False,
            num_workers: int = 2, progress: Progress | None = None) -> PredictResult:
    """Predict a georeferenced class map for ``scene`` and write it to ``output``.

    Parameters
    ----------
    scene : path
        Input raster (any GDAL format; sidecar ``.aux.xml`` georeferencing honoured).
    output : path
        Class map to write: a Cloud-Optimized GeoTIFF, uint8 class ids, nodata 255,
        colour table, class names and provenance tags; same CRS, transform and size.
    model : str, path or Bundle
        A default model name (``geoseg models``), a bundle file, or a loaded bundle.
    bands : sequence of int, optional
        1-based input bands to feed the model, in model order (default: all).
    tile_size, overlap : int, optional
        Tile side and overlap in pixels (default: the model's).
    batch_size : int
        Tiles per forward pass.
    chunk_tiles : int
        Tiles per dask chunk side: memory per chunk grows with its square.
    device, precision, engine : str
        ``auto|cpu|cuda|cuda:N|mps``; ``auto|fp32|bf16|fp16``; ``auto|eager|compile``.
    blend : str
        Blend window, ``cosine`` (default) or ``flat``.
    probabilities : path, optional
        Also write per-class probabilities, uint8, ``p = value / 254`` (255 = nodata).
    preview : path, optional
        Also write a PNG preview: the scene, the coloured class map and a legend.
    vectorize : path, optional
        Also polygonize the class map (all classes; see :func:`geoseg.vectorize.vectorize`)
        into this vector file (format from the extension).
    overwrite : bool
        Replace existing outputs.
    num_workers : int
        Threads of the local dask scheduler (reading and blending overlap the model).
    progress : Progress, optional
        Where to report progress (tiles done).

    Returns
    -------
    PredictResult
    """
    import dask
    import rasterio

    from geoseg import __version__
    from geoseg.inference import Predictor
    from geoseg.io import class_colormap
    from geoseg.models import resolve_model
    from geoseg.models.bundle import Bundle

    progress = progress or NullProgress()
    t0 = time.perf_counter()
    out_path = check_output(output, overwrite=overwrite)
    prob_path = None if probabilities is None else check_output(probabilities,
                                                                 overwrite=overwrite)
    preview_path = None if preview is None else check_output(preview, overwrite=overwrite)
    vector_path = None if vectorize is None else check_output(vectorize, overwrite=overwrite)
    if prob_path is not None and prob_path == out_path:
        raise OutputError("--probabilities must differ from the class-map output")
    src = open_scene(scene)
    if not str(scene).startswith("/vsi") and Path(src.path).absolute() in (out_path, prob_path):
        raise OutputError(f"output {out_path} would overwrite the input scene")
    bundle = model if isinstance(model, Bundle) else resolve_model(model)
    spec = bundle.spec
    chosen = select_bands(src, bands, spec.n_bands, spec.bands)
    tile = int(tile_size or spec.tile_size)
    ov = int(spec.overlap if overlap is None else overlap)
    grid = plan_tiles(src.shape, tile=tile, overlap=ov, chunk_tiles=chunk_tiles)
    predictor = Predictor(bundle, tile=tile, overlap=ov, batch_size=batch_size,
                          device=device, precision=precision, engine=engine, blend=blend,
                          n_tiles=grid.n_tiles)
    progress.log(f"model={bundle.name} size={src.width}x{src.height} bands={len(chosen)} "
                 f"crs={src.crs.to_string() if src.crs else 'none'} tiles={grid.n_tiles} "
                 f"[{predictor.info.describe()}]")
    run_key = f"{bundle.sha256[:12]}-{os.getpid()}-{id(predictor):x}"
    _PREDICTORS[run_key] = predictor
    _PROGRESS[run_key] = progress
    class_ids = [c.id for c in spec.classes]
    arr = predict_array(src, grid, chosen, run_key, class_ids,
                        probabilities=prob_path is not None)

    tmp_class = partial_path(out_path, "tmp")
    tmp_prob = None if prob_path is None else partial_path(prob_path, "tmp")
    final_class = partial_path(out_path)
    final_prob = None if prob_path is None else partial_path(prob_path)
    tags = {
        "geoseg_version": __version__, "model": bundle.name, "model_sha256": bundle.sha256,
        "architecture": spec.architecture, "backbone": spec.backbone,
        "tile_size": str(tile), "overlap": str(ov), "blend": blend,
        "precision": predictor.precision, "engine": predictor.engine,
        "bands": ",".join(str(b) for b in chosen),
        "class_names": ",".join(spec.class_names()),
        "class_ids": ",".join(str(i) for i in class_ids),
        "class_colors": ";".join("{},{},{}".format(*c.color) for c in spec.classes),
        "nodata_class": str(NODATA_CLASS),
    }
    tmps = [p for p in (tmp_class, tmp_prob, final_class, final_prob) if p is not None]
    try:
        progress.start(grid.n_tiles, desc="predict")
        with rasterio.Env(GDAL_CACHEMAX=256), \
                rasterio.open(tmp_class, "w", **_gtiff_profile(src, 1)) as dst_c:
            dst_p = None
            try:
                targets: list[tuple[Any, slice]] = [(dst_c, slice(0, 1))]
                if tmp_prob is not None:
                    dst_p = rasterio.open(tmp_prob, "w",
                                          **_gtiff_profile(src, len(class_ids)))
                    targets.append((dst_p, slice(1, None)))
                with dask.config.set(scheduler="threads", num_workers=num_workers):
                    da_store(arr, _RasterTarget(targets))
                dst_c.write_colormap(1, class_colormap([c.color for c in spec.classes]))
                dst_c.set_band_description(1, "class")
                dst_c.update_tags(**tags, **{f"CLASS_{i}": n for i, n in
                                            zip(class_ids, spec.class_names(), strict=True)})
                if dst_p is not None:
                    for k, name in enumerate(spec.class_names(), start=1):
                        dst_p.set_band_description(k, f"p_{name}")
                    dst_p.update_tags(**tags, scale=str(1 / 254), offset="0",
                                      probability_scale="p = value / 254; 255 = nodata")
            finally:
                if dst_p is not None:
                    dst_p.close()
        _cog_copy(tmp_class, final_class, categorical=True)
        if tmp_prob is not None and final_prob is not None and prob_path is not None:
            _cog_copy(tmp_prob, final_prob, categorical=False)
            os.replace(final_prob, prob_path)
        os.replace(final_class, out_path)
        if preview_path is not None:
            from geoseg.preview import render_preview

            render_preview(src.path, out_path, preview_path, bands=chosen[:3],
                           overwrite=overwrite)
        if vector_path is not None:
            from geoseg.vectorize import vectorize_to_file

            progress.log(f"vectorizing {out_path.name} -> {vector_path.name}")
            vectorize_to_file(out_path, vector_path, overwrite=overwrite, all_classes=True)
        progress.finish([str(p) for p in (out_path, prob_path, preview_path, vector_path)
                         if p is not None])
    except BaseException:
        _CANCELLED.add(run_key)  # stop the other chunk tasks at their next batch
        raise
    finally:
        progress.close()
        _PREDICTORS.pop(run_key, None)
        _PROGRESS.pop(run_key, None)
        for p in tmps:
            p.unlink(missing_ok=True)
            p.with_name(p.name + ".aux.xml").unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    return PredictResult(output=out_path, probabilities=prob_path, height=src.height,
                         width=src.width, n_tiles=grid.n_tiles, seconds=seconds,
                         path=predictor.info.describe(), model=bundle.name, tile=tile)


def da_store(arr: da.Array, target: _RasterTarget) -> None:
    """Compute ``arr`` block by block into ``target`` (one writer at a time)."""
    import threading

    import dask.array as da

    da.store(arr, target, lock=threading.Lock(), compute=True)  # type: ignore[arg-type]


