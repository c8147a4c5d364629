"""Cloud masks from a product's own flags (SCL, MSK_CLASSI_B00, QA_PIXEL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.sources.product import Product

if TYPE_CHECKING:
    from geoseg.sources.vrt import _Header


def _windows(height: int, width: int, block: int = 1024) -> Iterator[tuple[int, int, int, int]]:
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield r, c, min(block, height - r), min(block, width - c)


def _write_cloud_mask(product: Product, g: _Header, out: Path) -> None:
    """255 where no flag of the product marks cloud, shadow, cirrus or nodata; else 0."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window
    from rasterio.windows import transform as win_transform

    from geoseg._raster import open_raster

    profile = {"driver": "GTiff", "width": g.width, "height": g.height, "count": 1,
               "dtype": "uint8", "crs": g.crs, "transform": g.transform, "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    sources = [(m, open_raster(m.path)) for m in product.masks]
    try:
        with rasterio.open(out, "w", **profile) as dst:
            for r, c, h, w in _windows(g.height, g.width):
                win = Window(c, r, w, h)
                wt = win_transform(win, g.transform)
                ok = np.ones((h, w), bool)
                for layer, src in sources:
                    n = 3 if layer.kind == "s2classi" else 1
                    buf = np.zeros((n, h, w), src.dtypes[0])
                    for b in range(n):
                        reproject(rasterio.band(src, min(b + 1, src.count)), buf[b],
                                  dst_transform=wt, dst_crs=g.crs,
                                  resampling=Resampling.nearest, src_nodata=None,
                                  dst_nodata=None)
                    ok &= _clear(layer.kind, buf)
                dst.write((ok * 255).astype("uint8"), 1, window=win)
    finally:
        for _, src in sources:
            src.close()


def _clear(kind: str, buf: Any) -> Any:
    import numpy as np

    if kind == "scl":  # 0 no data, 3 cloud shadow, 8/9 cloud, 10 cirrus
        return ~np.isin(buf[0], (0, 3, 8, 9, 10))
    if kind == "s2classi":  # band 1 opaque clouds, band 2 cirrus
        return (buf[0] == 0) & (buf[1] == 0)
    # QA_PIXEL: bit 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow
    return (buf[0].astype(np.uint32) & 0b11111) == 0
