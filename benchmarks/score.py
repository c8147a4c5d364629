"""Benchmark: streaming confusion matrix (geoseg.scoring.pipeline.score) vs whole-array bincount.

Writes a prediction / label pair of SIZE x SIZE uint8 tiled GeoTIFFs (uncompressed,
512 px tiles) strip by strip, never holding them whole, then scores the pair twice, each
in its own subprocess so that its peak RSS is its own:

- ``stream``: ``geoseg.scoring.pipeline.score`` (dask, chunk by chunk, threads);
- ``numpy``: read both rasters whole, then one ``np.bincount`` over every valid pixel.

Both include reading the rasters; the numpy line also gives its compute-only rate. The
two confusion matrices are checked to be identical.

    .venv/bin/python benchmarks/score.py                 # 16384 x 16384
    .venv/bin/python benchmarks/score.py --size 4096 --size 16384 --keep /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

N_CLASSES = 6
NAMES = ",".join(f"class{i}" for i in range(N_CLASSES))


def write_pair(folder: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    """Write pred.tif and truth.tif strip by strip (512 rows at a time)."""
    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1,
               "dtype": "uint8", "crs": "EPSG:32633", "tiled": True, "blockxsize": 512,
               "blockysize": 512, "transform": Affine(1.0, 0, 500000.0, 0, -1.0, 4e6)}
    pred_path, truth_path = folder / f"pred_{size}.tif", folder / f"truth_{size}.tif"
    strip = 512
    with rasterio.open(pred_path, "w", nodata=255, **profile) as p, \
            rasterio.open(truth_path, "w", nodata=None, **profile) as t:
        p.update_tags(class_names=NAMES, class_ids=",".join(map(str, range(N_CLASSES))))
        for r0 in range(0, size, strip):
            h = min(strip, size - r0)
            coarse = rng.integers(0, N_CLASSES, size=(h // 32 + 1, size // 32 + 1))
            truth = np.kron(coarse, np.ones((32, 32), np.uint8))[:h, :size]
            truth = truth.astype(np.uint8)
            pred = truth.copy()
            flip = rng.random((h, size)) < 0.2
            pred[flip] = rng.integers(0, N_CLASSES, int(flip.sum()))
            pred[rng.random((h, size)) < 0.01] = 255
            win = rasterio.windows.Window(0, r0, size, h)
            t.write(truth, 1, window=win)
            p.write(pred, 1, window=win)
    return pred_path, truth_path


def run_stream(pred: str, truth: str, chunk: int) -> dict[str, object]:
    from geoseg.scoring.pipeline import score

    t0 = time.perf_counter()
    report = score(pred, truth, chunk_size=chunk)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "matrix": report.matrix.tolist(),
            "nodata_pred": report.counts.nodata_pred}


def run_numpy(pred: str, truth: str) -> dict[str, object]:
    t0 = time.perf_counter()
    with rasterio.open(pred) as p, rasterio.open(truth) as t:
        pa, ta = p.read(1), t.read(1)
    t1 = time.perf_counter()
    keep = pa != 255
    idx = ta[keep].astype(np.intp) * N_CLASSES + pa[keep]
    cm = np.bincount(idx, minlength=N_CLASSES * N_CLASSES).reshape(N_CLASSES, N_CLASSES)
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "compute_seconds": t2 - t1, "matrix": cm.tolist(),
            "nodata_pred": int((~keep).sum())}


def child(mode: str, pred: str, truth: str, chunk: int) -> None:
    out = run_stream(pred, truth, chunk) if mode == "stream" else run_numpy(pred, truth)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def measure(mode: str, pred: Path, truth: Path, chunk: int) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", mode, str(pred), str(truth), str(chunk)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append",
                        help="Side in pixels (repeatable; default 16384).")
    parser.add_argument("--chunk", type=int, default=2048, help="Chunk side, px.")
    parser.add_argument("--keep", type=Path, help="Folder to write the rasters in.")
    args = parser.parse_args()
    sizes = args.size or [16384]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="geoseg-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"cpus {os.cpu_count()}; chunk {args.chunk}; rasters in {folder}")
    for size in sizes:
        t0 = time.perf_counter()
        pred, truth = write_pair(folder, size)
        print(f"{size}x{size}: wrote pair in {time.perf_counter() - t0:.1f} s")
        mpx = size * size / 1e6
        results = {}
        for mode in ("stream", "numpy"):
            r = measure(mode, pred, truth, args.chunk)
            results[mode] = r
            extra = ""
            if "compute_seconds" in r:
                cs = float(r["compute_seconds"])  # type: ignore[arg-type]
                extra = f"; compute only {mpx / cs:7.1f} Mpx/s"
            sec = float(r["seconds"])  # type: ignore[arg-type]
            print(f"  {mode:6s} {mpx / sec:7.1f} Mpx/s ({sec:6.2f} s, read included), "
                  f"peak RSS {float(r['peak_rss_mb']):7.0f} MB{extra}")  # type: ignore[arg-type]
        same = results["stream"]["matrix"] == results["numpy"]["matrix"]
        print(f"  identical confusion matrices: {same}")
        if not same:
            sys.exit(1)
        if not args.keep:
            pred.unlink()
            truth.unlink()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
