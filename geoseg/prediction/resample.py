"""Run the model at its own ground sample distance, write the map on the scene's grid.

A model trained on 1 m imagery sees a 0.13 m scene's roofs as fields: ``predict --resample``
(:attr:`InferenceConfig.resample`) runs it at a *working* GSD instead, or one given in metres.
``auto`` (the default) resamples only a scene whose GSD lies outside what the model has seen:
the GSDs of its training crops (:func:`seen_range`: its GSD over its training zoom range)
widened by :data:`AUTO_RATIO` (:func:`accepted_range`), and then to the nearest accepted
GSD, the smallest change that brings the scene into that range.

How, without ever holding the scene: the tile grid stays on the scene's pixels, with tiles of
``T = round(t * f)`` scene pixels for a model tile of ``t`` pixels (``f`` = working GSD /
scene GSD), so chunks, overlap-add across chunks, resume and the output writer are those of
a native run. Each tile is read by a windowed read with ``out_shape = (t, t)`` (GDAL's
``average`` resampling when downsampling, which skips nodata values, ``bilinear`` when
upsampling), runs through the model, and its class scores (and blend weights) are resized
bilinearly back to the tile's ``T x T`` scene pixels before they are blended with the
neighbouring tiles; the argmax is taken on the scene grid, so class edges are as smooth as the
scores, never blocks of working pixels. Nodata is read at the scene's resolution: a pixel is
nodata in the output exactly where it is without resampling. Memory per chunk is that of
``T``-pixel tiles; the chunk side in tiles shrinks as ``f`` grows (:func:`scaled_tiles`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import InputError
from geoseg.io import ground_sample_distance

if TYPE_CHECKING:
    from geoseg.io import Scene
    from geoseg.models.spec import ModelSpec
    from geoseg.prediction.config import InferenceConfig
    from geoseg.prediction.graph import ChunkJob
    from geoseg.prediction.inference import Predictor

__all__ = ["AUTO_MAX_UPSAMPLE", "AUTO_RATIO", "FEW_TILES", "GSD_TOLERANCE", "ScaledTiles",
           "accepted_range", "accumulate", "auto_gsd", "auto_note", "check_scaled",
           "resize_scores", "scaled_tiles", "scene_gsd", "seen_range", "working_gsd"]

#: ``auto`` leaves native a scene within this factor of the GSDs the model saw (a
#: network's tolerance beyond its training zoom; the factor ``auto`` used around the
#: model's GSD before bundles recorded their zoom range, and still uses for those that do
#: not).
AUTO_RATIO = 1.5
#: Relative slack on the range's ends (zoom ranges are written rounded: 1.33 for 4/3).
_EDGE = 0.01
#: ``auto`` upsamples a coarse scene at most this much (each scene pixel becomes up to
#: 4x4 model pixels); beyond it the tile count explodes for no real detail, so it stays
#: native (a number passed to ``--resample`` still forces it).
AUTO_MAX_UPSAMPLE = 4.0
#: ``auto`` notes a scene that resampling shrinks to less than this many model tiles
#: (a chip of a few hundred pixels at 0.1 m is a fraction of one tile at 1 m).
FEW_TILES = 4
#: Most tiles per chunk side of an upsampled (coarse) scene, whose tiles are small.
MAX_CHUNK_TILES = 64


def scene_gsd(scene: Scene) -> float | None:
    """Ground sample distance of ``scene`` in metres, or None when unknown.

    The rule is :func:`geoseg.io.ground_sample_distance` (the one training records):
    projected CRS: pixel size converted to metres; geographic CRS: measured on the
    ellipsoid at the scene's centre; no CRS: unknown.
    """
    return ground_sample_distance(scene.crs, scene.transform, scene.width, scene.height)


def working_gsd(setting: str | float, scene: Scene, spec: ModelSpec) -> float | None:
    """Resolve ``auto|off|METRES`` for ``scene``: the working GSD in metres, or None (off).

    ``auto``: :func:`auto_gsd`; a number always resamples (even to the scene's own GSD).
    """
    if setting == "off":
        return None
    if setting != "auto":
        if scene_gsd(scene) is None:
            raise InputError(f"--resample {setting} needs the scene's ground sample distance, "
                             f"but {scene.path} has no CRS; use --resample off")
        return float(setting)
    return auto_gsd(scene, spec)


def seen_range(spec: ModelSpec) -> tuple[float, float] | None:
    """Return the GSDs (metres) the model saw in training, or None if its GSD is unknown.

    :meth:`ModelSpec.seen_gsd` (its GSD over its training zoom range); a bundle without a
    recorded zoom range saw its own GSD.
    """
    model = spec.gsd_m
    if model is None or not (math.isfinite(model) and model > 0):
        return None
    return spec.seen_gsd() or (float(model), float(model))


def accepted_range(spec: ModelSpec) -> tuple[float, float] | None:
    """Return the scene GSDs ``auto`` leaves native (None if the model's GSD is unknown).

    :func:`seen_range` widened by :data:`AUTO_RATIO` at both ends.
    """
    seen = seen_range(spec)
    return None if seen is None else (seen[0] / AUTO_RATIO, seen[1] * AUTO_RATIO)


def auto_gsd(scene: Scene, spec: ModelSpec) -> float | None:
    """``auto``'s working GSD for ``scene``: None (native) or the nearest accepted GSD.

    Native when either GSD is unknown, when the scene's GSD lies in :func:`accepted_range`
    (1 % slack at its ends), or when the scene is more than :data:`AUTO_MAX_UPSAMPLE`
    times coarser than its coarsest end.
    """
    here, ok = scene_gsd(scene), accepted_range(spec)
    if here is None or ok is None:
        return None
    lo, hi = ok
    if lo * (1 - _EDGE) <= here <= hi * (1 + _EDGE):
        return None
    if here / hi > AUTO_MAX_UPSAMPLE:
        return None
    return float(lo if here < lo else hi)


def auto_note(setting: str | float, scene: Scene, spec: ModelSpec) -> str | None:
    """One line about what ``auto`` did to an unusual scene (None when nothing to say).

    A much coarser scene left native, or a scene that resampling shrinks to fewer than
    :data:`FEW_TILES` model tiles.
    """
    here, ok, seen = scene_gsd(scene), accepted_range(spec), seen_range(spec)
    if setting != "auto" or here is None or ok is None or seen is None:
        return None
    if here / ok[1] > AUTO_MAX_UPSAMPLE:
        return (f"scene GSD {here:.3g} m is {here / ok[1]:.0f}x the coarsest auto accepts "
                f"for this model ({ok[1]:.3g} m): run natively (auto upsamples at most "
                f"{AUTO_MAX_UPSAMPLE:g}x; --resample {ok[1]:.3g} forces it)")
    work = auto_gsd(scene, spec)
    if work is None or work < here:
        return None
    h, w = working_shape(scene, work)
    t = spec.tile_size
    if h * w >= FEW_TILES * t * t:
        return None
    return (f"--resample auto: {scene.path} at {here:.3g} m is finer than the model saw "
            f"({seen[0]:.3g}-{seen[1]:.3g} m); at {work:.3g} m it is only {w}x{h} px, less "
            f"than {FEW_TILES} tiles of {t} px, so the model sees little context (predict "
            "a folder of chips as one mosaic, -o map.tif, or use --resample off)")


def working_shape(scene: Scene, gsd: float) -> tuple[int, int]:
    """Size of ``scene`` in working pixels of ``gsd`` metres."""
    f = gsd / _known_gsd(scene)
    return max(1, round(scene.height / f)), max(1, round(scene.width / f))


def _known_gsd(scene: Scene) -> float:
    here = scene_gsd(scene)
    if here is None:
        raise InputError(f"{scene.path} has no ground sample distance to resample from")
    return here


@dataclass(frozen=True, slots=True)
class ScaledTiles:
    """Tiles of a resampled run, as a chunk job carries them.

    ``tile`` and ``overlap`` are in scene pixels; each tile is read into ``model_tile``
    working pixels. ``gsd`` is the working GSD actually used (``scene GSD * tile /
    model_tile``), ``chunk_tiles`` the chunk side in tiles.
    """

    tile: int
    overlap: int
    model_tile: int
    gsd: float
    chunk_tiles: int


def scaled_tiles(scene: Scene, config: InferenceConfig) -> ScaledTiles | None:
    """Scene-pixel tiles for a resolved config whose ``resample`` is a working GSD."""
    if not isinstance(config.resample, float):
        return None
    here = _known_gsd(scene)
    f = config.resample / here
    t, ov = config.tile_px, config.overlap_px
    tile = max(2, round(t * f))
    overlap = min(round(ov * f), tile // 2)
    chunk = max(1, min(MAX_CHUNK_TILES, round(config.chunk_tiles / f)))
    return ScaledTiles(tile, overlap, t, here * tile / t, chunk)


#: An asked working GSD is honoured when tiles of whole scene pixels give it within this share.
GSD_TOLERANCE = 0.05


def check_scaled(scene: Scene, config: InferenceConfig, n_classes: int, n_bands: int, *,
                 explicit: bool) -> None:
    """Refuse, before the model loads, a resampled run that cannot honour its GSD or explodes.

    Tiles are whole scene pixels (:func:`scaled_tiles`): an ``explicit`` GSD (``--resample
    METRES``) they cannot give within :data:`GSD_TOLERANCE` is an error naming the nearest
    one they can, never a silent substitute. The run's model input goes through
    :func:`~geoseg.prediction.limits.check_work` and its memory (a chunk's sums are on the
    scene's grid) through :func:`~geoseg.prediction.limits.check_memory`, the estimate and
    refusal of a huge ``--tile-size``.
    """
    from geoseg.prediction.limits import MAX_WORK_PER_PIXEL, check_memory, check_work
    from geoseg.prediction.tiling import plan_tiles

    scaled = scaled_tiles(scene, config)
    if scaled is None:
        return
    asked, here, t = float(config.resample), _known_gsd(scene), scaled.model_tile
    what = f"--resample {asked:g} on a {here:.3g} m scene"
    def tiles(side: int) -> int:  # tiles of ``side`` scene px over the scene
        overlap = min(round(config.overlap_px * side / t), side // 2)
        return plan_tiles(scene.shape, tile=side, overlap=overlap, chunk_tiles=1,
                          multiple=1).n_tiles

    pixels = max(scene.height * scene.width, 1)
    n_tiles = tiles(scaled.tile)
    if n_tiles * t * t > MAX_WORK_PER_PIXEL * pixels:  # name the finest GSD within limits
        side = scaled.tile
        while tiles(side) * t * t > MAX_WORK_PER_PIXEL * pixels and side < max(scene.shape):
            side += max(1, side // 8)
        check_work(n_tiles, t, pixels, f"{what}; use --resample {here * side / t:.3g} or "
                                       "coarser")
    if explicit and abs(scaled.gsd - asked) > GSD_TOLERANCE * asked:
        cover = t * asked / here  # scene px a model tile would cover
        near = sorted({here * max(2, math.floor(cover)) / t,
                       here * max(2, math.ceil(cover)) / t})
        raise InputError(
            f"{what}: a {t} px model tile would cover {cover:.3g} scene px, and tiles are "
            f"whole scene pixels: the nearest GSDs it can run at are "
            f"{' or '.join(f'{g:.3g}' for g in near)} m (a larger --tile-size comes closer)")
    side = min(scaled.chunk_tiles * scaled.tile + scaled.overlap, max(scene.shape))
    check_memory(scaled.model_tile, config.batch_size, n_classes, n_bands,
                 scaled.chunk_tiles, chunk_side=side, what=f"{what}: ")


def resize_scores(scores: npt.NDArray[np.float32], size: tuple[int, int]
                  ) -> npt.NDArray[np.float32]:
    """Resize ``(C, h, w)`` scores to ``(C, *size)``, bilinear (pixel centres aligned).

    Downsampling is anti-aliased (every source pixel contributes). torch's kernel is used
    because it is the fast, tested bilinear resize already installed.
    """
    import torch
    import torch.nn.functional as F

    if scores.shape[1:] == size:
        return scores
    x = torch.from_numpy(np.ascontiguousarray(scores, np.float32))[None]
    down = size[0] < scores.shape[1] or size[1] < scores.shape[2]
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)
    out: npt.NDArray[np.float32] = y[0].numpy()
    return out


@lru_cache(maxsize=8)
def _weights(window: bytes, t: int, size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Resize the model tile's blend window to a scene tile (cached: the same for all)."""
    w = np.frombuffer(window, np.float32).reshape(1, t, t).copy()
    out: npt.NDArray[np.float32] = resize_scores(w, size)[0]
    return out


def read_scaled(path: str, bands: Sequence[int], rows: tuple[int, int], cols: tuple[int, int],
                size: tuple[int, int], *, with_mask: bool
                ) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]:
    """Read a scene window into ``size`` working pixels, and each value's validity.

    ``average`` when downsampling (GDAL leaves nodata values out of the mean), else
    ``bilinear``. A working value is valid where some scene pixel under it is.
    """
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.windows import Window

    from geoseg.io import _dataset, read_error

    h, w = rows[1] - rows[0], cols[1] - cols[0]
    how = Resampling.average if size[0] < h else Resampling.bilinear
    win = Window(cols[0], rows[0], w, h)
    shape = (len(bands), *size)
    try:
        src = _dataset(path)
        data = src.read(list(bands), window=win, out_shape=shape, resampling=how)
        if not with_mask:
            return data, None
        valid = src.read_masks(list(bands), window=win, out_shape=shape,
                               resampling=Resampling.average if how == Resampling.average
                               else Resampling.nearest) > 0
    except RasterioIOError as exc:
        raise read_error(path, win, exc) from None
    if data.dtype.kind in "fc":
        valid &= np.isfinite(data)
    return data, valid


def _scaled(job: ChunkJob) -> ScaledTiles:
    if job.scaled is None:
        raise RuntimeError("a native chunk job reached the resampled stage 1")
    return job.scaled


def _model_tile(job: ChunkJob, predictor: Predictor, rows: tuple[int, int],
                cols: tuple[int, int]) -> tuple[npt.NDArray[np.float32], tuple[int, int]]:
    """One tile's model input ``(B, t, t)`` (nodata and padding filled) and its used size."""
    from geoseg.io import fill_nodata

    scaled, t = _scaled(job), predictor.tile
    h, w = rows[1] - rows[0], cols[1] - cols[0]
    # A scene smaller than one tile: read what there is into its share of the model tile.
    size = (min(t, max(1, round(h * t / scaled.tile))), min(t, max(1, round(w * t / scaled.tile))))
    data, valid = read_scaled(job.path, job.bands, rows, cols, size, with_mask=job.with_mask)
    mean = np.asarray(predictor.spec.mean, np.float32)
    filled, _ = fill_nodata(data, valid, predictor.spec.mean)
    if size == (t, t):
        return filled, size
    x = np.empty((len(job.bands), t, t), np.float32)
    x[...] = mean[:, None, None]
    x[:, :size[0], :size[1]] = filled
    return x, size


def accumulate(job: ChunkJob, predictor: Predictor,
               forward: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
               ) -> tuple[npt.NDArray[np.float32], int, npt.NDArray[np.bool_] | None]:
    """Blend-weighted scores ``(C + 1, fh, fw)`` of a scaled chunk on the scene grid.

    Also returns its tile count and the per-band validity of its footprint (for the
    nodata counts). Stage 1 of a resampled run (see the module docstring); ``forward``
    maps model tiles ``(n, B, t, t)`` to weighted probabilities ``(n, C, t, t)``.
    """
    from geoseg.io import read_window
    from geoseg.prediction.graph import RunCancelled

    scaled = _scaled(job)
    tile, t, c = scaled.tile, predictor.tile, predictor.n_classes
    (fy0, fy1), (fx0, fx1) = job.row.footprint, job.col.footprint
    fh, fw = fy1 - fy0, fx1 - fx0
    valid: npt.NDArray[np.bool_] | None = None
    band_valid: npt.NDArray[np.bool_] | None = None
    if job.with_mask:  # nodata at the scene's own resolution, the rule of a native run
        _, band_valid = read_window(job.path, job.bands, (fy0, fy1), (fx0, fx1), with_mask=True)
        valid = None if band_valid is None else np.asarray(band_valid.any(axis=0))
    acc = np.zeros((c + 1, fh, fw), np.float32)
    offsets = [(oy - fy0, ox - fx0)
               for oy in job.origins_y[job.row.tiles.start:job.row.tiles.stop]
               for ox in job.origins_x[job.col.tiles.start:job.col.tiles.stop]]
    window = np.ascontiguousarray(predictor.window_np, np.float32).tobytes()
    for start in range(0, len(offsets), predictor.batch_size):
        if job.state is not None and job.state.cancelled.is_set():
            raise RunCancelled(job.run_key)
        group = offsets[start:start + predictor.batch_size]
        regions = [((fy0 + y, fy0 + min(y + tile, fh)), (fx0 + x, fx0 + min(x + tile, fw)))
                   for y, x in group]
        inputs = [_model_tile(job, predictor, r, co) for r, co in regions]
        probs = forward(np.stack([x for x, _ in inputs]))
        for (y, x), ((r0, r1), (c0, c1)), p, (_, used) in zip(group, regions, probs, inputs,
                                                              strict=True):
            th, tw = r1 - r0, c1 - c0
            scores = resize_scores(p[:, :used[0], :used[1]], (th, tw))
            weight = (_weights(window, t, (th, tw)) if used == (t, t) else
                      resize_scores(predictor.window_np[None, :used[0], :used[1]], (th, tw))[0])
            if valid is not None:
                v = valid[y:y + th, x:x + tw]
                scores = scores * v
                weight = weight * v
            acc[:c, y:y + th, x:x + tw] += scores
            acc[c, y:y + th, x:x + tw] += weight
    return acc, job.n_tiles, band_valid
