"""Peak memory and speed of predicting a Sentinel-2 product, by product size.

A Sentinel-2 L2A ``.SAFE`` (baseline 04.00 offsets, the nine bands Dynamic World reads at
their native 10 and 20 m) is built at each size from the real BigEarthNet patch
``S2A_MSIL2A_20170613T101031_87_48`` (120 x 120 px at 10 m) tiled to N x N, its band files
as deflated GeoTIFFs (writing JPEG 2000 at full size takes longer than the run), and
``geoseg predict`` runs on it in a fresh process under ``/usr/bin/time -v``: peak RSS and
wall time. The product is read through its VRT window by window, so the peak should not
grow with N. ``--model`` is any bundle with Dynamic World's band names (default: a small
per-pixel model made here, untrained: memory and I/O, not accuracy).

Usage::

    python benchmarks/products.py --sizes 1024,4096,8192 --work /tmp/products
    python benchmarks/products.py --sizes 10980 --work /tmp/products   # a full tile
    python benchmarks/products.py --sizes 10980 --model dynamicworld --work /tmp/products
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

DATA = Path(os.environ.get("GEOSEG_DATA", "data"))
PATCH = DATA / "sentinel2" / "bigearthnet" / "S2A_MSIL2A_20170613T101031_87_48"
DW = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
RES = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B05": 20, "B06": 20, "B07": 20,
       "B11": 20, "B12": 20}


def build(size: int, root: Path) -> Path:
    """An L2A .SAFE of ``size`` x ``size`` px at 10 m, the patch tiled (DN + 1000)."""
    safe = root / f"S2A_MSIL2A_20170613T101031_N0400_R022_T33TWM_{size}.SAFE"
    if (safe / "MTD_MSIL2A.xml").is_file():
        return safe
    granule = "GRANULE/L2A_T33TWM_A010285_20170613T101031/IMG_DATA"
    files = []
    for band in DW:
        res = RES[band]
        n = size * 10 // res
        with rasterio.open(next(PATCH.glob(f"*_{band}.tif"))) as src:
            tile = src.read(1)
            transform, crs = src.transform, src.crs
        reps = -(-n // tile.shape[0])
        data = np.tile(tile, (reps, reps))[:n, :n]
        data = np.where(data > 0, data + 1000, 0).astype(np.uint16)
        rel = f"{granule}/R{res}m/T33TWM_20170613T101031_{band}_{res}m"
        path = safe / f"{rel}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        profile = {"driver": "GTiff", "width": n, "height": n, "count": 1, "dtype": "uint16",
                   "crs": crs, "transform": transform, "tiled": True, "blockxsize": 512,
                   "blockysize": 512, "compress": "deflate"}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
        files.append(rel)
    offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
    names = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    spectral = "".join(f'<Spectral_Information bandId="{i}" physicalBand="{b}"/>'
                       for i, b in enumerate(names))
    listed = "".join(f"<IMAGE_FILE>{f}</IMAGE_FILE>" for f in files)
    (safe / "MTD_MSIL2A.xml").write_text(
        "<n1:Level-2A_User_Product xmlns:n1='psd-14'><n1:General_Info><Product_Info>"
        "<PROCESSING_BASELINE>04.00</PROCESSING_BASELINE><Product_Organisation><Granule_List>"
        f"<Granule>{listed}</Granule></Granule_List></Product_Organisation></Product_Info>"
        "<Product_Image_Characteristics><QUANTIFICATION_VALUES_LIST>"
        "<BOA_QUANTIFICATION_VALUE>10000</BOA_QUANTIFICATION_VALUE>"
        f"</QUANTIFICATION_VALUES_LIST><BOA_ADD_OFFSET_VALUES_LIST>{offsets}"
        "</BOA_ADD_OFFSET_VALUES_LIST><Spectral_Information_List>"
        f"{spectral}</Spectral_Information_List></Product_Image_Characteristics>"
        "</n1:General_Info></n1:Level-2A_User_Product>")
    return safe


def pixel_model(path: Path) -> Path:
    """A small untrained per-pixel model with Dynamic World's band names."""
    import torch

    from geoseg.models.architectures import build_model
    from geoseg.models.bundle import save_bundle
    from geoseg.models.spec import ClassInfo, ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(architecture="pixel", backbone="none",
                     bands=("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12"),
                     mean=(1500.0,) * 9, std=(1000.0,) * 9,
                     classes=tuple(ClassInfo(i, f"c{i}", (60 * i, 100, 200 - 60 * i))
                                   for i in range(4)),
                     tile_size=512, overlap=32, gsd_m=10.0, arch_params={"hidden": 16})
    save_bundle(path, build_model(spec).eval(), spec)
    return path


def run(safe: Path, model: str, out: Path, extra: list[str]) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of one ``geoseg predict`` process."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "geoseg.cli.main", "predict",
           str(safe), "-m", model, "-o", str(out), "--overwrite", "--progress", "none",
           *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return (int(rss.group(1)) / 1024 if rss else float("nan")), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2048,8192")
    ap.add_argument("--model", help="bundle or default model name (default: a pixel model)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-products"))
    ap.add_argument("extra", nargs="*", help="more predict options, after --")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or str(pixel_model(args.work / "pixel9.safetensors"))
    print("| size (px) | Mpx | peak RSS (MB) | wall (s) | Mpx/s |")
    print("|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        safe = build(size, args.work)
        rss, wall = run(safe, model, args.work / f"map_{size}.tif", args.extra)
        mpx = size * size / 1e6
        print(f"| {size}² | {mpx:.1f} | {rss:.0f} | {wall:.1f} | {mpx / wall:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
