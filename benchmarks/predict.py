"""Benchmark ``geoseg predict`` end to end against eager fp32, the model alone and torchgeo.

Reports, in one run, with one model (default: the shipped ``deeplab``) and per scene size:

1. model-only Mpx/s of tiles of the engine ``--engine auto`` picks (the predictor on
   in-memory tiles of the scene, same batch);
2. end to end (``geoseg.predict`` in a fresh process: read, infer, blend, write a COG) with
   the defaults, and with ``--engine eager --precision fp32``: Mpx/s of scene, the defaults'
   ratio to eager fp32 and to (1), the share of pixels whose class equals eager fp32's, and
   peak RSS;
3. the usual torchgeo inference loop (RasterDataset + GridGeoSampler + DataLoader, the
   bundle's torch network in fp32, softmax summed into a whole-scene accumulator) on the
   same scene, and the defaults' ratio to it;
4. start-up: a one-tile predict in a fresh process, defaults with a cold and with a cached
   ONNX export, and eager fp32.

The paths run in turns (``--rounds``, medians), so a busy machine slows them alike: compare
ratios within one run. ``--rss-only`` runs only the defaults at each size and prints how peak
RSS grows (it should stay flat: the scene is never whole in memory).

Usage::

    python benchmarks/predict.py --sizes 2048                 # one size, everything
    python benchmarks/predict.py --sizes 8192 --rounds 2
    python benchmarks/predict.py --sizes 4096 8192 16384 --rss-only

Scenes are made from a real Dubai image (``--image``; mirrored to the size, written window by
window) when it is there, else from synthetic blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
IMAGE = (Path(os.environ.get("GEOSEG_DATA", "data")) / "dubai" / "tile_8" / "images"
         / "image_part_001.jpg")


def _texture(image: Path | None, rng: np.random.Generator) -> np.ndarray:
    """``(3, h, w)`` uint8 pixels to mirror over a scene: a real image, or blocks."""
    if image is not None and image.is_file():
        import rasterio

        with rasterio.open(image) as src:
            return np.asarray(src.read([1, 2, 3]), np.uint8)
    palette = rng.integers(20, 235, size=(6, 3))
    coarse = rng.integers(0, 6, size=(17, 17))
    classes = np.kron(coarse, np.ones((64, 64), np.int64))
    img = palette[classes].transpose(2, 0, 1) + rng.integers(-8, 8, (3, *classes.shape))
    return np.clip(img, 1, 255).astype(np.uint8)


def make_scene(path: Path, size: int, image: Path | None = None, seed: int = 0) -> Path:
    """A 3-band uint8 GeoTIFF of ``size``², the texture mirrored over it, in 1024-row strips."""
    import rasterio
    from affine import Affine

    if path.is_file():
        return path
    tex = _texture(image, np.random.default_rng(seed))
    th, tw = tex.shape[1:]
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               # 1 m: the shipped models' GSD, so `--resample auto` runs them natively (a
               # finer scene would be resampled, i.e. fewer tiles than the torchgeo loop runs)
               "crs": "EPSG:32640", "transform": Affine(1.0, 0, 300000, 0, -1.0, 2800000),
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
               "BIGTIFF": "IF_SAFER"}
    cols = np.arange(size) % (2 * tw)
    cols = np.where(cols < tw, cols, 2 * tw - 1 - cols)  # mirror: no seams
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, size, 1024):
            rows = np.arange(y, min(y + 1024, size)) % (2 * th)
            rows = np.where(rows < th, rows, 2 * th - 1 - rows)
            strip = tex[:, rows][:, :, cols]
            dst.write(strip, window=rasterio.windows.Window(0, y, size, len(rows)))
    return path


CHILD = """
import json, resource, sys, time, warnings
t_start = time.perf_counter()
warnings.simplefilter("ignore")
from geoseg.prediction.pipeline import predict
scene, out, model, bs, prec, eng = sys.argv[1:7]
r = predict(scene, out, model=model, batch_size=int(bs), precision=prec, engine=eng,
            overwrite=True)
print(json.dumps({"seconds": r.seconds, "process_s": time.perf_counter() - t_start,
                  "mpx_s": r.mpx_per_s, "path": r.path, "tile_mpx_s": r.tile_mpx_per_s,
                  "n_tiles": r.n_tiles,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(code: str, *args: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=False)
    wall = time.perf_counter() - t0
    if res.returncode:
        lines = res.stderr.strip().splitlines() or [f"exit status {res.returncode}"]
        return {"error": lines[-1]}
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def end_to_end(scene: Path, out: Path, args: argparse.Namespace, engine: str,
               precision: str) -> dict[str, Any]:
    return _child(CHILD, str(scene), str(out), args.model, str(args.batch_size), precision,
                  engine)


TORCHGEO = """
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
t_start = time.perf_counter()
import numpy as np, rasterio, torch
from torch.utils.data import DataLoader
from torchgeo.datasets import RasterDataset, stack_samples
from torchgeo.samplers import GridGeoSampler
from geoseg.models import resolve_model
scene, model_name, bs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
b = resolve_model(model_name); model = b.model.eval()
tile, stride = b.spec.tile_size, b.spec.tile_size - b.spec.overlap
mean = torch.tensor(b.spec.mean).view(1, -1, 1, 1); std = torch.tensor(b.spec.std).view(1, -1, 1, 1)
class Scene(RasterDataset):
    filename_glob = scene.rsplit("/", 1)[-1]
    is_image = True
t0 = time.perf_counter()
ds = Scene(paths=scene.rsplit("/", 1)[0])
res = ds.res[0] if isinstance(ds.res, tuple) else ds.res
sampler = GridGeoSampler(ds, size=tile, stride=stride)
loader = DataLoader(ds, sampler=sampler, batch_size=bs, collate_fn=stack_samples, num_workers=0)
with rasterio.open(scene) as src:
    H, W, T, profile = src.height, src.width, src.transform, src.profile
C = b.spec.n_classes
acc = np.zeros((C, H, W), np.float32)  # the whole-scene accumulator torchgeo users write

def origin(bounds):
    # torchgeo <= 0.6: BoundingBox; 0.7+: (x slice, y slice, t slice) or a tensor row
    if hasattr(bounds, "minx"):
        return bounds.minx, bounds.maxy
    if isinstance(bounds, (tuple, list)) and hasattr(bounds[0], "start"):
        return bounds[0].start, bounds[1].stop
    v = [float(x) for x in bounds]
    return v[0], v[3]

with torch.inference_mode():
    for batch in loader:
        x = (batch["image"].float() - mean) / std
        p = model(x).softmax(1).numpy()
        for k, bounds in enumerate(batch["bounds"] if "bounds" in batch else batch["bbox"]):
            minx, maxy = origin(bounds)
            col, row = ~T * (minx, maxy)
            # clamp: the sampler's last tiles may start a rounding step outside the scene,
            # and a negative start would slice from the end (the old broadcast error)
            r, c = max(0, int(round(row))), max(0, int(round(col)))
            h, w = min(p.shape[2], H - r), min(p.shape[3], W - c)
            if h > 0 and w > 0:
                acc[:, r:r + h, c:c + w] += p[k, :, :h, :w]
best = acc[0].copy(); classes = np.zeros((H, W), np.uint8)
for k in range(1, C):  # argmax without an int64 scene-sized temporary
    better = acc[k] > best; classes[better] = k; np.maximum(best, acc[k], out=best)
del acc, best
classes = np.asarray([c.id for c in b.spec.classes], np.uint8)[classes]
profile.update(count=1, dtype="uint8", compress="deflate", nodata=None)
with rasterio.open(out, "w", **profile) as dst:
    dst.write(classes, 1)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "process_s": time.perf_counter() - t_start,
                  "mpx_s": H * W / 1e6 / dt,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def torchgeo_loop(scene: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    return _child(TORCHGEO, str(scene), args.model, str(args.batch_size), str(out))


def model_only(scene: Path, args: argparse.Namespace, n_tiles: int = 16) -> dict[str, Any]:
    """Mpx/s of tiles of the predictor ``--engine auto`` builds, on tiles of the scene."""
    from geoseg.models import resolve_model
    from geoseg.prediction.config import InferenceConfig
    from geoseg.prediction.engines import calibration_tiles
    from geoseg.prediction.inference import Predictor

    bundle = resolve_model(args.model)
    tile = bundle.spec.tile_size
    tiles = calibration_tiles(str(scene), (), bundle.spec, tile, n=n_tiles)
    pred = Predictor(bundle, InferenceConfig(batch_size=args.batch_size),
                     n_tiles=n_tiles)
    pred.forward_tiles(tiles[: args.batch_size])  # warm-up
    t0 = time.perf_counter()
    pred.forward_tiles(tiles)
    dt = time.perf_counter() - t0
    return {"mpx_s": len(tiles) * tile * tile / 1e6 / dt, "path": pred.info.describe()}


def agreement(a: Path, b: Path) -> float:
    """Share of pixels with the same class in two class maps (read in row strips)."""
    import rasterio
    from rasterio.windows import Window

    same = total = 0
    with rasterio.open(a) as x, rasterio.open(b) as y:
        for r in range(0, x.height, 1024):
            win = Window(0, r, x.width, min(1024, x.height - r))
            ca, cb = x.read(1, window=win), y.read(1, window=win)
            same += int(np.count_nonzero(ca == cb))
            total += ca.size
    return same / max(total, 1)


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def startup(work: Path, args: argparse.Namespace) -> None:
    """One-tile predicts in fresh processes: cold and cached export, and eager fp32."""
    scene = make_scene(work / "scene_512.tif", 512, args.image)
    env_cache = os.environ.get("GEOSEG_CACHE")
    cache = work / "startup_cache"
    shutil.rmtree(cache, ignore_errors=True)  # a cold cache (a reused --workdir keeps it)
    os.environ["GEOSEG_CACHE"] = str(cache)  # then warm
    try:
        cold = end_to_end(scene, work / "s_cold.tif", args, "auto", "auto")
        warm = [end_to_end(scene, work / "s_warm.tif", args, "auto", "auto")
                for _ in range(args.rounds)]
        eager = [end_to_end(scene, work / "s_eager.tif", args, "eager", "fp32")
                 for _ in range(args.rounds)]
    finally:
        if env_cache is None:
            del os.environ["GEOSEG_CACHE"]
        else:
            os.environ["GEOSEG_CACHE"] = env_cache
    if any("error" in r for r in [cold, *warm, *eager]):
        print(f"start-up: failed: {[r.get('error') for r in [cold, *warm, *eager]]}")
        return
    w, e = _median(warm, "wall_s"), _median(eager, "wall_s")
    print(f"start-up (one-tile predict, whole process): defaults {cold['wall_s']:.1f} s with a "
          f"cold export cache, {w:.1f} s cached; eager fp32 {e:.1f} s; cached - eager = "
          f"{w - e:+.1f} s [{warm[0]['path']}]")


def compare(size: int, work: Path, args: argparse.Namespace) -> None:
    """Every path at one size, in turns."""
    scene = make_scene(work / f"scene_{size}.tif", size, args.image)
    mo = model_only(scene, args)
    print(f"model only {size}²: {mo['mpx_s']:.2f} Mpx/s of tiles [{mo['path']}]", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"default": [], "eager": [], "torchgeo": []}
    for _ in range(args.rounds):
        runs["default"].append(end_to_end(scene, work / f"default_{size}.tif", args,
                                          "auto", "auto"))
        runs["eager"].append(end_to_end(scene, work / f"eager_{size}.tif", args,
                                        "eager", "fp32"))
        if not args.skip_torchgeo:
            runs["torchgeo"].append(torchgeo_loop(scene, work / f"torchgeo_{size}.tif", args))
    for name, rs in runs.items():
        errors = [r["error"] for r in rs if "error" in r]
        if errors:
            print(f"  {name}: failed: {errors[0]}")
            runs[name] = []
    d, e, t = runs["default"], runs["eager"], runs["torchgeo"]
    for name, rs in (("geoseg predict (defaults)", d), ("--engine eager --precision fp32", e),
                     ("torchgeo loop, fp32", t)):
        if rs:
            print(f"  {name:<32}: {_median(rs, 'mpx_s'):.3f} Mpx/s of scene, "
                  f"{_median(rs, 'seconds'):.1f} s (process {_median(rs, 'wall_s'):.1f} s), "
                  f"peak RSS {max(r['peak_rss_mb'] for r in rs):.0f} MB"
                  + (f" [{rs[0]['path']}]" if "path" in rs[0] else ""))
    if d:
        print(f"  defaults vs model only: {_median(d, 'tile_mpx_s') / mo['mpx_s']:.2f}x "
              f"(Mpx/s of tiles end to end / model only)")
    if d and e:
        print(f"  defaults vs eager fp32: {_median(d, 'mpx_s') / _median(e, 'mpx_s'):.2f}x; "
              f"class map = eager fp32: "
              f"{agreement(work / f'default_{size}.tif', work / f'eager_{size}.tif'):.2%}")
    if d and t:
        print(f"  defaults vs torchgeo: {_median(d, 'mpx_s') / _median(t, 'mpx_s'):.2f}x; "
              f"torchgeo class map = eager fp32: "
              + (f"{agreement(work / f'torchgeo_{size}.tif', work / f'eager_{size}.tif'):.2%}"
                 if e else "n/a"))


def rss_only(work: Path, args: argparse.Namespace) -> None:
    """Peak RSS of the defaults at each size (flat: the scene is never whole in memory)."""
    first = None
    for size in args.sizes:
        scene = make_scene(work / f"scene_{size}.tif", size, args.image)
        r = end_to_end(scene, work / f"default_{size}.tif", args, "auto", "auto")
        if "error" in r:
            print(f"predict {size}²: failed: {r['error']}")
            continue
        first = first or r["peak_rss_mb"]
        print(f"predict {size}²: {r['mpx_s']:.3f} Mpx/s, peak RSS {r['peak_rss_mb']:.0f} MB "
              f"({r['peak_rss_mb'] / first:.2f}x the first size) [{r['path']}]", flush=True)


def _machine() -> str:
    flags = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        have = set(next(ln for ln in cpuinfo.splitlines() if ln.startswith("flags")).split())
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni",
                                     "amx_tile") if f in have)
        model = next(ln for ln in cpuinfo.splitlines() if ln.startswith("model name"))
        name = model.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        name = platform.processor()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{name}, {os.cpu_count()} CPUs ({flags}), load {load:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="deeplab", help="default model name or bundle file")
    ap.add_argument("--sizes", type=int, nargs="+", default=[8192])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1, help="turns of every path (medians)")
    ap.add_argument("--image", type=Path, default=IMAGE, help="texture of the scenes")
    ap.add_argument("--rss-only", action="store_true", help="only the defaults' peak RSS")
    ap.add_argument("--skip-torchgeo", action="store_true")
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="keep scenes here (reused)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="geoseg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {_machine()}; model {args.model}, batch {args.batch_size}, "
          f"{args.rounds} round(s)", flush=True)
    if args.rss_only:
        rss_only(work, args)
        return
    if not args.skip_startup:
        startup(work, args)
    for size in args.sizes:
        compare(size, work, args)


if __name__ == "__main__":
    main()
