"""Benchmark ``geoseg predict``: end-to-end vs model-only throughput, peak memory, torchgeo.

Reports, in one run and with one model (U-Net/ResNet-18, 3 bands, 6 classes, 512 px tiles):

1. model-only Mpx/s: the predictor on in-memory tiles (same batch, precision and engine);
2. end-to-end Mpx/s of ``geoseg.predict`` on a synthetic scene (read, infer, blend, write COG)
   and its ratio to (1);
3. peak RSS of ``predict`` at two scene sizes, each in a fresh subprocess;
4. the same model through torchgeo's RasterDataset + GridGeoSampler + DataLoader with
   hand-written stitching (the usual torchgeo inference loop), fp32.

Usage::

    python benchmarks/predict.py                     # 4096^2 and 8192^2, eager
    python benchmarks/predict.py --engine compile    # include torch.compile
    python benchmarks/predict.py --sizes 2048 4096 --skip-torchgeo

The scenes are written window by window, never whole in memory. Numbers depend on the
machine: run it on a quiet one and compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_scene(path: Path, size: int, seed: int = 0) -> Path:
    """A blocky 3-band uint8 scene written in 1024-row strips."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": Affine(1.0, 0, 500000, 0, -1.0, 4000000),
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
               "nodata": 0, "BIGTIFF": "IF_SAFER"}
    palette = rng.integers(20, 235, size=(6, 3))
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, size, 1024):
            h = min(1024, size - y)
            coarse = rng.integers(0, 6, size=(h // 64 + 1, size // 64 + 1))
            classes = np.kron(coarse, np.ones((64, 64), np.int64))[:h, :size]
            img = palette[classes].transpose(2, 0, 1) + rng.integers(-8, 8, (3, h, size))
            dst.write(np.clip(img, 1, 255).astype(np.uint8),
                      window=rasterio.windows.Window(0, y, size, h))
    return path


def make_bundle(path: Path) -> Path:
    import torch

    from geoseg.models.architectures import build_model
    from geoseg.models.bundle import save_bundle
    from geoseg.models.spec import ClassInfo, ModelSpec

    spec = ModelSpec(architecture="unet", backbone="resnet18", bands=("red", "green", "blue"),
                     mean=(128.0,) * 3, std=(64.0,) * 3,
                     classes=tuple(ClassInfo(i, f"c{i}", (40 * i, 255 - 40 * i, 128))
                                   for i in range(6)),
                     tile_size=512, overlap=64)
    torch.manual_seed(0)
    save_bundle(path, build_model(spec).eval(), spec)
    return path


def model_only(bundle: Path, args: argparse.Namespace, n_tiles: int = 24) -> dict[str, float]:
    from geoseg.models.bundle import load_bundle
    from geoseg.prediction.config import InferenceConfig
    from geoseg.prediction.inference import Predictor

    t0 = time.perf_counter()
    config = InferenceConfig(tile=512, overlap=64, batch_size=args.batch_size,
                             precision=args.precision, engine=args.engine)
    pred = Predictor(load_bundle(bundle), config, calibration=lambda: np.random.default_rng(
        1).integers(0, 255, (16, 3, 512, 512)).astype(np.float32))
    setup = time.perf_counter() - t0
    tiles = np.random.default_rng(0).integers(0, 255, (n_tiles, 3, 512, 512), dtype=np.uint8)
    pred.forward_tiles(tiles[: args.batch_size])  # warm-up
    t0 = time.perf_counter()
    pred.forward_tiles(tiles)
    dt = time.perf_counter() - t0
    return {"mpx_s": n_tiles * 512 * 512 / 1e6 / dt, "setup_s": setup,
            "path": pred.info.describe()}  # type: ignore[dict-item]


CHILD = """
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
from geoseg.prediction.pipeline import predict
scene, out, bundle, bs, prec, eng = sys.argv[1:7]
r = predict(scene, out, model=bundle, batch_size=int(bs), precision=prec, engine=eng,
            overwrite=True)
print(json.dumps({"seconds": r.seconds, "mpx_s": r.mpx_per_s, "path": r.path,
                  "tile_mpx_s": r.tile_mpx_per_s, "n_tiles": r.n_tiles,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def end_to_end(scene: Path, bundle: Path, args: argparse.Namespace) -> dict[str, float]:
    out = scene.with_name(scene.stem + "_map.tif")
    cmd = [sys.executable, "-c", CHILD, str(scene), str(out), str(bundle),
           str(args.batch_size), args.precision, args.engine]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


TORCHGEO = """
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np, torch
from torch.utils.data import DataLoader
from torchgeo.datasets import RasterDataset, stack_samples
from torchgeo.samplers import GridGeoSampler
from geoseg.models.bundle import load_bundle
scene, bundle_path, bs = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = load_bundle(bundle_path); model = b.model.eval()
mean = torch.tensor(b.spec.mean).view(1, -1, 1, 1); std = torch.tensor(b.spec.std).view(1, -1, 1, 1)
class Scene(RasterDataset):
    filename_glob = scene.rsplit("/", 1)[-1]
    is_image = True
t0 = time.perf_counter()
ds = Scene(paths=scene.rsplit("/", 1)[0])
sampler = GridGeoSampler(ds, size=512, stride=448)
loader = DataLoader(ds, sampler=sampler, batch_size=bs, collate_fn=stack_samples, num_workers=0)
import rasterio
with rasterio.open(scene) as src:
    H, W, T = src.height, src.width, src.transform
acc = np.zeros((6, H, W), np.float32)  # the whole-scene accumulator torchgeo users write
with torch.inference_mode():
    for batch in loader:
        x = (batch["image"].float() - mean) / std
        p = model(x).softmax(1).numpy()
        for k, bounds in enumerate(batch["bounds"] if "bounds" in batch else batch["bbox"]):
            minx = bounds.minx if hasattr(bounds, "minx") else bounds[0].start
            maxy = bounds.maxy if hasattr(bounds, "maxy") else bounds[1].stop
            col, row = ~T * (minx, maxy)
            # clamp: the sampler's last tiles may start a rounding step outside the scene,
            # and a negative start would slice from the end (the old broadcast error)
            r, c = max(0, int(round(row))), max(0, int(round(col)))
            h, w = min(p.shape[2], H - r), min(p.shape[3], W - c)
            if h > 0 and w > 0:
                acc[:, r:r + h, c:c + w] += p[k, :, :h, :w]
classes = acc.argmax(0).astype(np.uint8)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "mpx_s": H * W / 1e6 / dt,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def torchgeo_loop(scene: Path, bundle: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, "-c", TORCHGEO, str(scene), str(bundle), str(args.batch_size)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        return {"error": res.stderr.strip().splitlines()[-1]}  # type: ignore[dict-item]
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[4096, 8192])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--engine", default="eager", choices=["eager", "compile", "auto"])
    ap.add_argument("--skip-torchgeo", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="geoseg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = make_bundle(work / "unet_r18.safetensors")
    print(f"machine: {os.cpu_count()} CPUs; torch threads: ", end="")
    import torch

    print(torch.get_num_threads())
    mo = model_only(bundle, args)
    print(f"model only      : {mo['mpx_s']:.2f} Mpx/s [{mo['path']}] (setup {mo['setup_s']:.1f} s)")
    results = {}
    for size in args.sizes:
        scene = make_scene(work / f"scene_{size}.tif", size)
        r = end_to_end(scene, bundle, args)
        results[size] = r
        print(f"predict {size:>5}^2: {r['mpx_s']:.2f} Mpx/s of scene end to end, "
              f"{r['tile_mpx_s']:.2f} Mpx/s of tiles ({r['tile_mpx_s'] / mo['mpx_s']:.2f}x "
              f"model only; {r['n_tiles']} tiles), {r['seconds']:.1f} s incl. start-up, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB [{r['path']}]")
    a, b = args.sizes
    print(f"peak RSS ratio {b}^2 / {a}^2: "
          f"{results[b]['peak_rss_mb'] / results[a]['peak_rss_mb']:.2f}")
    if not args.skip_torchgeo:
        scene = work / f"scene_{a}.tif"
        tg = torchgeo_loop(scene, bundle, args)
        if "error" in tg:
            print(f"torchgeo loop   : failed: {tg['error']}")
        else:
            print(f"torchgeo loop {a}^2: {tg['mpx_s']:.2f} Mpx/s fp32 eager, peak RSS "
                  f"{tg['peak_rss_mb']:.0f} MB; geoseg end to end is "
                  f"{results[a]['mpx_s'] / tg['mpx_s']:.2f}x faster")


if __name__ == "__main__":
    main()
