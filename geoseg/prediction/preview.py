"""PNG previews a person can look at: the scene, its class map and a legend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.enums import Resampling

from geoseg._atomic import atomic_path
from geoseg.classmap import ClassMapInfo
from geoseg.io import NODATA_CLASS

__all__ = ["render_preview"]


def _stretch(rgb: npt.NDArray[Any], valid: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """2-98 % percentile stretch per band to uint8 (like QGIS's default)."""
    out = np.zeros(rgb.shape, np.uint8)
    for b in range(rgb.shape[0]):
        band = rgb[b].astype(np.float64)
        vals = band[valid] if valid.any() else band.ravel()
        lo, hi = np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0)
        scaled = np.clip((band - lo) / max(hi - lo, 1e-9), 0, 1)
        out[b] = (scaled * 255).astype(np.uint8)
    out[:, ~valid] = 0
    return out


def render_preview(scene: str | os.PathLike[str], class_map: str | os.PathLike[str],
                   output: str | os.PathLike[str], *, bands: Sequence[int] | None = None,
                   max_size: int = 1024, overwrite: bool = False) -> Path:
    """Write a PNG: the scene (left), the colour class map (right) and a legend (below).

    Both are read decimated to at most ``max_size`` pixels on the long side, so this is
    cheap for any scene size. Class names and colours come from the class map's tags and
    colour table (as written by :func:`geoseg.predict`).
    """
    from PIL import Image, ImageDraw, ImageFont

    with rasterio.open(class_map) as cm:
        scale = min(1.0, max_size / max(cm.width, cm.height))
        h, w = max(1, round(cm.height * scale)), max(1, round(cm.width * scale))
        classes = cm.read(1, out_shape=(h, w), resampling=Resampling.nearest)
        cmap = cm.colormap(1)
        info = ClassMapInfo.from_tags(cm, strict=False)  # a legend is cosmetic
    names = list(info.names) if info else []
    ids = list(info.ids) if info else []
    with rasterio.open(scene) as src:
        idx = list(bands) if bands else list(range(1, min(src.count, 3) + 1))
        img = src.read(idx, out_shape=(len(idx), h, w), resampling=Resampling.bilinear)
        valid = src.dataset_mask(out_shape=(h, w), resampling=Resampling.nearest) > 0
    if img.shape[0] < 3:
        img = np.repeat(img[:1], 3, axis=0)
    rgb = _stretch(img[:3], valid)

    lut = np.zeros((256, 3), np.uint8)
    for k, color in cmap.items():
        lut[k] = color[:3]
    lut[NODATA_CLASS] = (255, 255, 255)
    colored = lut[classes]

    pad, swatch, row_h = 8, 14, 20
    font = ImageFont.load_default()
    labels = [f"{cid}  {name}" for cid, name in zip(ids, names, strict=False)]
    # Up to three legend columns, as many as the longest label allows: a small scene
    # (a 100 px Sentinel-2 chip) gets fewer columns, or a canvas wide enough for one.
    item_w = swatch + 6 + max((int(font.getlength(t)) for t in labels), default=0) + pad
    width = 2 * w + 3 * pad
    ncols = max(1, min(3, (width - pad) // item_w))
    col_w = max(item_w, (width - pad) // ncols)
    width = max(width, pad + ncols * col_w)
    legend_rows = max(1, -(-len(labels) // ncols))
    canvas = Image.new("RGB", (width, h + 2 * pad + legend_rows * row_h + pad), "white")
    canvas.paste(Image.fromarray(np.moveaxis(rgb, 0, -1)), (pad, pad))
    canvas.paste(Image.fromarray(colored), (w + 2 * pad, pad))
    draw = ImageDraw.Draw(canvas)
    for i, (cid, label) in enumerate(zip(ids, labels, strict=False)):
        x = pad + (i % ncols) * col_w
        y = h + 2 * pad + (i // ncols) * row_h
        draw.rectangle([x, y, x + swatch, y + swatch], fill=tuple(int(v) for v in lut[cid]),
                       outline="black")
        draw.text((x + swatch + 6, y), label, fill="black", font=font)
    with atomic_path(output, overwrite=overwrite) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(output)
