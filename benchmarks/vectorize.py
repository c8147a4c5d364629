"""Benchmark: geoseg's chunked ``vectorize`` vs whole-map ``rasterio.features.shapes``.

Writes a realistic blocky class map (irregular region edges) at each size, generated
strip by strip so the large map is never whole in this process, then runs each approach
in its own subprocess and reports wall time and peak memory (``ru_maxrss``: the process
itself, and the largest worker process for geoseg). It also checks that both approaches
give the same number of polygons and the same total area.

    .venv/bin/python benchmarks/vectorize.py                 # 4096 and 16384 px
    .venv/bin/python benchmarks/vectorize.py --sizes 2048 --keep /tmp/maps
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_map(
    path: Path,
    size: int,
    *,
    n_classes: int = 6,
    block: int = 256,
    seed: int = 0,
    strip: int = 1024,
) -> None:
    """Blocky classes with wavy edges, written in strips of ``strip`` rows."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, n_classes, size=(size // block + 3, size // block + 3))
    # random walks (a step every 8 px) shift the grid lines: irregular region edges
    steps = size // 8 + 2
    jx = np.repeat(np.cumsum(rng.normal(0, 2.0, steps)), 8)[: size + 1].astype(np.int64)
    jy = np.repeat(np.cumsum(rng.normal(0, 2.0, steps)), 8)[: size + 1].astype(np.int64)
    jx, jy = jx % block, jy % block
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint8",
        "nodata": 255,
        "crs": "EPSG:32633",
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "transform": Affine(1.0, 0, 500000.0, 0, -1.0, 4000000.0),
    }
    xs = np.arange(size)
    with rasterio.open(path, "w", **profile) as dst:  # strip by strip
        for r0 in range(0, size, strip):
            ys = np.arange(r0, min(r0 + strip, size))
            row = (ys[:, None] + jy[xs][None, :]) // block
            col = (xs[None, :] + jx[ys][:, None]) // block
            data = coarse[row, col].astype(np.uint8)
            data[:, : size // 64] = 255  # a nodata margin
            dst.write(data[None], window=Window(0, r0, size, len(ys)))
        dst.update_tags(
            class_names=",".join(f"c{i}" for i in range(n_classes)),
            class_ids=",".join(str(i) for i in range(n_classes)),
        )


def run_whole(path: str) -> dict[str, float]:
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes

    with rasterio.open(path) as src:
        arr, transform, crs = src.read(1), src.transform, src.crs
    feats = (
        {"type": "Feature", "geometry": g, "properties": {"class_id": int(v)}}
        for g, v in shapes(arr, mask=arr != 255, transform=transform)
    )
    gdf = gpd.GeoDataFrame.from_features(feats, crs=crs)
    gdf["area_m2"] = gdf.area
    return _stats(gdf)


def _stats(gdf: object) -> dict[str, float]:
    import shapely

    geoms = gdf.geometry.values  # type: ignore[attr-defined]
    return {
        "features": len(geoms),
        "area": float(gdf.area_m2.sum()),  # type: ignore[attr-defined]
        "vertices": float(shapely.get_num_coordinates(geoms).sum()),
    }


def run_geoseg(path: str, chunk: int, workers: int) -> dict[str, float]:
    from geoseg.vector.pipeline import vectorize

    gdf = vectorize(path, all_classes=True, chunk_size=chunk, workers=workers or None)
    return _stats(gdf)


def child(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    import geopandas  # noqa: F401  (imports are a fixed cost; timed apart)
    import rasterio.features  # noqa: F401

    if args.run == "geoseg":
        import dask.multiprocessing  # noqa: F401
        import scipy.sparse.csgraph  # noqa: F401

        import geoseg.vector.pipeline  # noqa: F401
    t1 = time.perf_counter()
    start = resource.getrusage(resource.RUSAGE_SELF)
    if args.run == "whole":
        out = run_whole(args.path)
    else:
        out = run_geoseg(args.path, args.chunk, args.workers)
    out["seconds"] = time.perf_counter() - t1
    out["import_s"] = t1 - t0
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cpu_s"] = (
        me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - start.ru_utime - start.ru_stime
    )
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["child_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(out))


def measure(run: str, path: Path, chunk: int, workers: int, repeat: int) -> dict[str, float]:
    """Best time and largest peak memory over ``repeat`` fresh subprocesses."""
    runs = [_measure_once(run, path, chunk, workers) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["seconds"])
    for key in ("rss_mb", "child_rss_mb"):
        best[key] = max(r[key] for r in runs)
    return best


def _measure_once(run: str, path: Path, chunk: int, workers: int) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--run",
        run,
        "--path",
        str(path),
        "--chunk",
        str(chunk),
        "--workers",
        str(workers),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=2, help="Runs per approach (best).")
    ap.add_argument("--keep", type=Path, help="Folder for the maps (default: a temp dir).")
    ap.add_argument("--run", choices=["whole", "geoseg"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print(
            f"{'size':>7} {'approach':<30} {'features':>9} {'vertices':>10} "
            f"{'seconds':>8} {'cpu s':>6} {'import s':>8} {'peak MB':>8} "
            f"{'worker MB':>9}"
        )
        for size in args.sizes:
            path = folder / f"classmap_{size}.tif"
            if not path.exists():
                write_map(path, size)
            whole = measure("whole", path, args.chunk, 0, args.repeat)
            rows = [("whole-map shapes+geopandas", whole)]
            for w, name in ((0, "default workers"), (1, "1 process"), (2, "2 processes")):
                r = measure("geoseg", path, args.chunk, w, args.repeat)
                rows.append((f"geoseg {args.chunk}px, {name}", r))
            ours = rows[1][1]
            for name, r in rows:
                worker = f"{r['child_rss_mb']:9.0f}" if r["child_rss_mb"] else f"{'-':>9}"
                print(
                    f"{size:>7} {name:<30} {r['features']:>9.0f} "
                    f"{r['vertices']:>10.0f} "
                    f"{r['seconds']:>8.2f} {r['cpu_s']:>6.2f} {r['import_s']:>8.2f} "
                    f"{r['rss_mb']:>8.0f} "
                    f"{worker}"
                )
            same = (
                whole["features"] == ours["features"]
                and abs(whole["area"] - ours["area"]) <= 1e-9 * whole["area"]
            )
            print(
                f"{'':>7} same features and area: {same}; default speed-up "
                f"{whole['seconds'] / ours['seconds']:.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
