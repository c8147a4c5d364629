"""Limits checked before a model is loaded: tile size, memory and disk space of a run.

Everything here works from a model's spec and a scene's header, so a run that cannot
succeed is refused in well under a second, before torch is imported.
"""

from __future__ import annotations

import os

from geoseg.errors import InputError
from geoseg.models.tiles import (
    MAX_TILE,
    OVERLAP_SHARE,
    TILE_MULTIPLE,
    default_overlap,
    validate_tile,
)

__all__ = ["MAX_TILE", "MAX_WORK_PER_PIXEL", "OVERLAP_SHARE", "TILE_MULTIPLE", "check_memory",
           "check_work", "default_overlap", "estimate_memory", "estimate_output_bytes",
           "fit_tile", "validate_tile"]

#: Most model input pixels a run may spend per scene pixel (resampling multiplies them:
#: 32x finer is 1024 model pixels for each scene pixel, overlaps not counted).
MAX_WORK_PER_PIXEL = 1024
#: Bytes of model activations per input pixel, measured on the default models (fp32,
#: CPU, eager; peak RSS of one batch over the input size), rounded up.
ACTIVATION_BYTES_PER_PIXEL = 1024


def fit_tile(tile: int, overlap: int, shape: tuple[int, int]) -> tuple[int, int]:
    """Cap a tile at the scene: never more than the scene's larger side, rounded up to 32.

    Small scenes are padded into one tile as before; a larger tile would only add padding
    and memory. When the tile is capped, so is the overlap (at half the tile).
    """
    side = max(int(shape[0]), int(shape[1]), 1)
    cap = max(-(-side // TILE_MULTIPLE) * TILE_MULTIPLE, TILE_MULTIPLE)
    if tile <= cap:
        return int(tile), int(overlap)
    return cap, min(int(overlap), cap // 2)


def estimate_memory(tile: int, batch_size: int, n_classes: int, n_bands: int,
                    chunk_tiles: int, chunk_side: int | None = None) -> int:
    """Rough peak bytes of one predict process: a batch through the model + a chunk's sums.

    Activations (``ACTIVATION_BYTES_PER_PIXEL`` per input pixel) and float32 inputs and
    class scores for ``batch_size`` tiles, plus a chunk's float32 score and weight sums
    (``chunk_side`` px a side: a resampled run sums on the scene's grid; default
    ``chunk_tiles * tile``).
    """
    batch_px = batch_size * tile * tile
    chunk_px = (chunk_tiles * tile if chunk_side is None else chunk_side) ** 2
    model = batch_px * (ACTIVATION_BYTES_PER_PIXEL + 4 * (n_bands + 2 * n_classes))
    return int(model + chunk_px * 4 * (n_classes + 1))


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), if known."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil is a dask.distributed dependency, but stay safe
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return None


def check_memory(tile: int, batch_size: int, n_classes: int, n_bands: int,
                 chunk_tiles: int, chunk_side: int | None = None, what: str = "") -> None:
    """Refuse a run whose estimated memory exceeds the memory available, with the estimate.

    ``chunk_side`` as for :func:`estimate_memory`; ``what`` starts the message.
    """
    need = estimate_memory(tile, batch_size, n_classes, n_bands, chunk_tiles, chunk_side)
    have = available_memory()
    if have is not None and need > have:
        raise InputError(
            f"{what}tile {tile} x batch {batch_size} x {n_classes} classes needs about "
            f"{need / 2**30:.1f} GiB of memory, {have / 2**30:.1f} GiB is available; "
            "lower --tile-size, --batch-size or --chunk-tiles")


def check_work(n_tiles: int, tile: int, scene_px: int, what: str) -> None:
    """Refuse a run whose model input explodes: more than :data:`MAX_WORK_PER_PIXEL`.

    ``n_tiles`` tiles of ``tile`` x ``tile`` model pixels for ``scene_px`` scene pixels; ``what``
    names the cause (``--resample 0.05``) and the remedy, at the end of the message.
    """
    work = n_tiles * tile * tile
    ratio = work / max(int(scene_px), 1)
    if ratio > MAX_WORK_PER_PIXEL:
        raise InputError(
            f"{n_tiles} tiles of {tile} px, {work / 1e9:.3g} Gpx of model input for a "
            f"{scene_px / 1e6:.3g} Mpx scene ({ratio:.0f} model px per scene px, at most "
            f"{MAX_WORK_PER_PIXEL}): {what}")


def estimate_output_bytes(shape: tuple[int, int], n_classes: int, probabilities: bool) -> int:
    """Disk bytes a run needs at its peak: the uncompressed temporaries plus the COG copies.

    One byte per pixel for the class map (plus ``n_classes`` with probabilities), held
    uncompressed while the run works and again (at most, before compression) in the final
    COG with its overviews (a third more).
    """
    bands = 1 + (n_classes if probabilities else 0)
    raw = int(shape[0]) * int(shape[1]) * bands
    return int(raw * (1 + 4 / 3))

