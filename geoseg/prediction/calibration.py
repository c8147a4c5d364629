"""Calibration tiles for int8 quantisation, drawn evenly from the scene or a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import InputError

__all__ = ["CALIBRATION_TILES", "calibration_tiles"]

#: Calibration tiles drawn for int8 quantisation.
CALIBRATION_TILES = 32
_RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".jpg", ".jpeg", ".png")


def calibration_tiles(source: str, bands: tuple[int, ...], spec: Any, tile: int,
                      n: int = CALIBRATION_TILES) -> npt.NDArray[np.float32]:
    """``n`` raw tiles ``(n, B, tile, tile)`` spread evenly over ``source``.

    ``source`` is a raster (the scene) or a directory of rasters; ``bands`` are 1-based
    (empty: the first ``spec.n_bands``). Nodata pixels become the band mean, as in
    prediction.
    """
    from geoseg.io import fill_nodata, open_scene, read_window

    p = Path(source)
    files = [str(f) for f in sorted(p.iterdir()) if f.suffix.lower() in _RASTER_SUFFIXES] \
        if p.is_dir() else [source]
    if not files:
        raise InputError(f"no raster (*.tif, *.vrt, *.jpg, ...) in calibration directory "
                         f"{source}")
    chosen = tuple(bands) or tuple(range(1, spec.n_bands + 1))
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    out: list[npt.NDArray[np.float32]] = []
    per_file = max(1, -(-n // len(files)))
    for path in files:
        scene = open_scene(path)
        if scene.count < max(chosen):
            raise InputError(f"calibration raster {path} has {scene.count} bands; the model "
                             f"reads bands {','.join(map(str, chosen))}")
        for y, x in _spread(scene.height, scene.width, tile, per_file):
            data, valid = read_window(scene.path, chosen, (y, y + tile), (x, x + tile),
                                      with_mask=True)
            t = np.broadcast_to(mean, (len(chosen), tile, tile)).copy()
            h, w = data.shape[1:]
            t[:, :h, :w] = fill_nodata(data, valid, spec.mean)[0]  # as predict fills
            out.append(t)
    return np.stack(out[:n]).astype(np.float32)


def _spread(height: int, width: int, tile: int, n: int) -> list[tuple[int, int]]:
    """Up to ``n`` tile origins on an even grid over a ``height x width`` raster."""
    side = max(1, int(np.ceil(np.sqrt(n))))
    ys = np.linspace(0, max(0, height - tile), side).astype(int)
    xs = np.linspace(0, max(0, width - tile), side).astype(int)
    return [(int(y), int(x)) for y in ys for x in xs][:n]
