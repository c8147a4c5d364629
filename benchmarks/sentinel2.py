"""A full Sentinel-2 L1C tile (10980 x 10980 px) end to end: defaults vs eager fp32.

Builds, once per size, a Sentinel-2 L1C ``.SAFE`` the way users download it: the 13 bands as
single-band lossless JPEG 2000 files at their native 10, 20 and 60 m (``B02 B03 B04 B08`` at
N x N, ``B05 B06 B07 B8A B11 B12`` at N/2, ``B01 B09 B10`` at N/6), processing baseline 04.00
(``DN = reflectance x 10000 + 1000``, ``RADIO_ADD_OFFSET -1000``), with the product's
``MTD_MSIL1C.xml``. The pixels are real: the eo-learn Slovenian L1C chip (13 bands, 101 x 100
px at 10 m, 2015-07-11) mirrored and tiled to N x N at 10 m; the 20 and 60 m bands are its
2 x 2 and 6 x 6 block means. ``--format tif`` writes deflated GeoTIFF band files instead
(same structure).

Then ``geoseg predict PRODUCT -o map.tif`` runs in a fresh process per run under
``/usr/bin/time -v`` (wall time, peak RSS), with no ``--model`` (Dynamic World is picked for a
Sentinel-2 product) and each option set of ``--runs``: ``defaults`` (``--engine auto
--precision auto``) and ``eager-fp32`` (``--engine eager --precision fp32``). A run whose
time, extrapolated from the same option set on the largest smaller size, exceeds
``--budget`` seconds is skipped and its estimate printed. Before the table, one run of each
option set on a small product (``--warm-size``) warms geoseg's engine cache (export, compile,
precision timing: once per model, tile and CPU); its time is printed as ``first run``.

Usage (the 2-core development VM is shared: run heavy work under the lock)::

    flock /tmp/geoseg-heavy.lock nice -n 5 python benchmarks/sentinel2.py \\
        --sizes 2748,10980 --work /tmp/geoseg-s2-bench
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

DATA = Path(os.environ.get("GEOSEG_DATA") or Path(__file__).resolve().parents[2] / "shared"
            / "data")
CHIP = DATA / "sentinel2" / "slovenia_eolearn" / "S2_L1C_2015-07-11.tif"
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
      "B12"]
RES = {"B01": 60, "B09": 60, "B10": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20,
       "B11": 20, "B12": 20, "B02": 10, "B03": 10, "B04": 10, "B08": 10}
RUNS = {"defaults": [], "eager-fp32": ["--engine", "eager", "--precision", "fp32"]}
NAME = "S2A_MSIL1C_20150711T100006_N0400_R122_T33TVM_20150711T100006"
GRANULE = "GRANULE/L1C_T33TVM_A000418_20150711T100006/IMG_DATA"


def mosaic(chip: np.ndarray, size: int) -> np.ndarray:
    """``chip`` mirrored (so there are no seams) and tiled to ``size`` x ``size``."""
    block = np.concatenate([chip, chip[:, ::-1]], axis=1)
    block = np.concatenate([block, block[::-1]], axis=0)
    reps = (-(-size // block.shape[0]), -(-size // block.shape[1]))
    return np.tile(block, reps)[:size, :size]


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """``k`` x ``k`` block means of a uint16 band, in strips (bounded memory), rounded."""
    h, w = a.shape[0] // k, a.shape[1] // k
    out = np.empty((h, w), np.uint16)
    step = max(1, 4096 // k)
    for r in range(0, h, step):
        part = a[r * k:(r + step) * k, :w * k].astype(np.float32)
        n = part.shape[0] // k
        out[r:r + n] = np.rint(part.reshape(n, k, w, k).mean(axis=(1, 3)))
    return out


def build(size: int, root: Path, fmt: str) -> Path:
    """The L1C ``.SAFE`` of ``size`` x ``size`` px at 10 m (cached under ``root``)."""
    import rasterio
    from rasterio.transform import from_origin

    if size % 6:
        sys.exit(f"--sizes: {size} is not a multiple of 6 (the 60 m bands need whole pixels)")
    safe = root / f"{size}-{fmt}" / f"{NAME}.SAFE"
    mtd = safe / "MTD_MSIL1C.xml"
    if mtd.is_file():
        return safe
    with rasterio.open(CHIP) as src:
        chip = src.read()
        crs, (x0, y0) = src.crs, (src.transform.c, src.transform.f)
    (safe / GRANULE).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files = []
    for i, band in enumerate(S2):
        res = RES[band]
        data = mosaic(chip[i], size) + np.uint16(1000)  # baseline 04.00: DN = value + 1000
        if res > 10:
            data = block_mean(data, res // 10)
        rel = f"{GRANULE}/T33TVM_20150711T100006_{band}"
        profile = {"width": data.shape[1], "height": data.shape[0], "count": 1,
                   "dtype": "uint16", "crs": crs, "transform": from_origin(x0, y0, res, res),
                   "nodata": 0}
        if fmt == "jp2":
            opts = {"driver": "JP2OpenJPEG", "QUALITY": 100, "REVERSIBLE": "YES",
                    "BLOCKXSIZE": 1024, "BLOCKYSIZE": 1024, "RESOLUTIONS": 6}
        else:
            opts = {"driver": "GTiff", "tiled": True, "blockxsize": 512, "blockysize": 512,
                    "compress": "deflate"}
        tmp = safe / f"{rel}.part.{fmt}"
        with rasterio.open(tmp, "w", **profile, **opts) as dst:
            dst.write(data, 1)
        tmp.replace(safe / f"{rel}.{fmt}")
        files.append(rel)
        del data
    offs = "".join(f'<RADIO_ADD_OFFSET band_id="{i}">-1000</RADIO_ADD_OFFSET>'
                   for i in range(13))
    spectral = "".join(f'<Spectral_Information bandId="{i}" '
                       f'physicalBand="B{b[1:].lstrip("0")}"/>' for i, b in enumerate(S2))
    listed = "".join(f"<IMAGE_FILE>{f}</IMAGE_FILE>" for f in files)
    mtd.with_suffix(".part").write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
<n1:General_Info><Product_Info><PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL>
<PRODUCT_TYPE>S2MSI1C</PRODUCT_TYPE><PROCESSING_BASELINE>04.00</PROCESSING_BASELINE>
<Product_Organisation><Granule_List><Granule>{listed}</Granule></Granule_List>
</Product_Organisation></Product_Info><Product_Image_Characteristics>
<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
<Radiometric_Offset_List>{offs}</Radiometric_Offset_List>
<Spectral_Information_List>{spectral}</Spectral_Information_List>
</Product_Image_Characteristics></n1:General_Info></n1:Level-1C_User_Product>""")
    mtd.with_suffix(".part").replace(mtd)
    mb = sum(f.stat().st_size for f in safe.rglob("*")) / 2**20
    print(f"built {safe} ({fmt}, {mb:.0f} MB) in {time.perf_counter() - t0:.0f} s",
          flush=True)
    return safe


def run(safe: Path, out: Path, extra: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and the summary line of one ``geoseg predict`` process."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "geoseg.cli.main", "predict",
           str(safe), "-o", str(out), "--overwrite", "--progress", "none", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    lines = [x for x in (proc.stdout + proc.stderr).splitlines()
             if x.strip() and not x.startswith("\t") and "Command being timed" not in x]
    return wall, (int(rss.group(1)) / 1024 if rss else float("nan")), " | ".join(lines[-3:])


def cpu() -> str:
    """The CPU's model name, core count and the vector/matrix flags that decide precision."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    found = re.search(r"flags\s*:\s*(.*)", info)
    flags = set(found.group(1).split()) if found else set()
    want = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
    have = [f for f in want if f in flags] or ["none of " + "/".join(want)]
    return (f"{model.group(1) if model else 'unknown CPU'}, {os.cpu_count()} logical CPUs, "
            f"flags: {' '.join(have)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2748,10980",
                    help="product sides in 10 m px, multiples of 6 (a real tile: 10980)")
    ap.add_argument("--warm-size", type=int, default=552, help="0: no warm-up run")
    ap.add_argument("--runs", default="defaults,eager-fp32", help=",".join(RUNS))
    ap.add_argument("--format", choices=["jp2", "tif"], default="jp2")
    ap.add_argument("--budget", type=float, default=600.0,
                    help="skip a run whose extrapolated wall time exceeds this (s)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-s2-bench"))
    args = ap.parse_args()
    if not CHIP.is_file():
        sys.exit(f"needs the real Slovenian L1C chip (not found: {CHIP}; set GEOSEG_DATA)")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    runs = args.runs.split(",")
    if unknown := [r for r in runs if r not in RUNS]:
        sys.exit(f"--runs: unknown {unknown}; known: {', '.join(RUNS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu()}", flush=True)
    safes = {s: build(s, args.work, args.format) for s in sizes}
    if args.warm_size:  # warm the engine cache: the table then shows steady-state runs
        warm = build(args.warm_size, args.work, args.format)
        for name in runs:
            wall, rss, summary = run(warm, args.work / "warm.tif", RUNS[name])
            print(f"first run {name} {args.warm_size}²: {wall:.1f} s, {rss:.0f} MB: "
                  f"{summary}", flush=True)
    rows: list[str] = []
    done: dict[str, list[tuple[int, float]]] = {}
    for size in sizes:
        mpx = size * size / 1e6
        for name in runs:
            prev = done.get(name, [])
            if prev:  # linear in pixels, from the largest size run so far
                s0, w0 = prev[-1]
                est = w0 * size * size / (s0 * s0)
                if est > args.budget:
                    rows.append(f"| {size}² | {mpx:.1f} | {name} | not run: ~{est:.0f} s "
                                f"extrapolated from {s0}² | | | |")
                    print(rows[-1], flush=True)
                    continue
            wall, rss, summary = run(safes[size], args.work / f"map_{size}_{name}.tif",
                                     RUNS[name])
            done.setdefault(name, []).append((size, wall))
            rows.append(f"| {size}² | {mpx:.1f} | {name} | {wall:.1f} | {mpx / wall:.3f} | "
                        f"{rss:.0f} | {summary} |")
            print(rows[-1], flush=True)
    print("\n| product | Mpx | run | wall (s) | Mpx/s | peak RSS (MB) | summary |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for size in sizes:
        walls = {n: w for n, v in done.items() for s, w in v if s == size}
        if "defaults" in walls and "eager-fp32" in walls:
            print(f"{size}²: defaults {walls['eager-fp32'] / walls['defaults']:.2f}x "
                  "faster than eager fp32")


if __name__ == "__main__":
    main()
