"""Helpers for tests and examples: small, real-looking rasters made from a seed.

Public (like ``shapely.testing``) so plugins and examples can reuse them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine

__all__ = ["assert_same_georef", "make_class_map", "make_geotiff", "make_scene"]


def make_class_map(shape: tuple[int, int] = (256, 256), *, n_classes: int = 4,
                   block: int = 16, seed: int = 0) -> npt.NDArray[np.uint8]:
    """Blocky class regions (not noise): random classes on a coarse grid, upsampled.

    The grid is shifted by a random offset so region edges do not align with tiles.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    coarse = rng.integers(0, n_classes, size=(h // block + 2, w // block + 2))
    fine = np.kron(coarse, np.ones((block, block), np.int64))
    oy, ox = rng.integers(0, block, size=2)
    return fine[oy:oy + h, ox:ox + w].astype(np.uint8)


def make_scene(class_map: npt.NDArray[np.uint8], *, bands: int = 3, noise: float = 8.0,
               seed: int = 0, dtype: str = "uint8", palette_seed: int = 0) -> npt.NDArray[Any]:
    """Image whose pixels depend on the class (a learnable scene): ``(bands, h, w)``.

    Each class has its own mean per band (fixed by ``palette_seed``, so scenes made with
    different ``seed`` look alike) plus a texture, with Gaussian noise drawn from ``seed``.
    """
    n_classes = max(int(class_map.max()) + 1, 8)
    means = np.random.default_rng(palette_seed).uniform(30, 220, size=(n_classes, bands))
    rng = np.random.default_rng(seed)
    img = means[class_map].transpose(2, 0, 1).astype(np.float64)
    yy = np.arange(class_map.shape[0])[:, None]
    img += 10 * np.sin((yy + 3 * class_map) / 3.0)[None] * (class_map % 2)[None]
    img += rng.normal(0, noise, size=img.shape)
    info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
    if info is not None:
        img = np.clip(img, info.min, info.max)
    return img.astype(dtype)


def make_geotiff(path: str | os.PathLike[str], data: npt.NDArray[Any] | None = None, *,
                 shape: tuple[int, int, int] = (3, 256, 256), crs: str | None = "EPSG:32633",
                 res: float = 10.0, origin: tuple[float, float] = (500000.0, 4000000.0),
                 dtype: str = "uint8", nodata: float | None = 0, seed: int = 0,
                 **profile: Any) -> Path:
    """Write a GeoTIFF (random data unless ``data`` is given) and return its path."""
    if data is None:
        rng = np.random.default_rng(seed)
        data = rng.integers(1, 200, size=shape).astype(dtype)
    if data.ndim == 2:
        data = data[None]
    count, h, w = data.shape
    meta: dict[str, Any] = {
        "driver": "GTiff", "width": w, "height": h, "count": count, "dtype": data.dtype.name,
        "transform": Affine(res, 0, origin[0], 0, -res, origin[1]), "nodata": nodata,
    }
    if crs is not None:
        meta["crs"] = crs
    meta.update(profile)
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(data)
    return Path(path)


def assert_same_georef(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
    """Assert two rasters have the same CRS, transform and size."""
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        assert ra.crs == rb.crs, f"CRS differs: {ra.crs} != {rb.crs}"
        assert ra.transform.almost_equals(rb.transform), \
            f"transform differs: {ra.transform} != {rb.transform}"
        assert (ra.width, ra.height) == (rb.width, rb.height), \
            f"size differs: {ra.width}x{ra.height} != {rb.width}x{rb.height}"
