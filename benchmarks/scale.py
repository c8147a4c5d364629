"""Benchmark scale-out: peak memory vs scene size, and threads vs worker processes.

1. Peak RSS of ``geoseg predict`` (a fresh process each, tiny model) on synthetic scenes of
   increasing size, generated strip by strip (never whole in memory). Target: flat, the
   largest at most 1.2x the smallest.
2. Throughput of the default threaded run vs ``--workers 2`` (a local dask.distributed
   cluster of two processes) on the same scene, and whether the outputs are identical.

Usage::

    python benchmarks/scale.py                               # 4096, 16384, 32768
    python benchmarks/scale.py --sizes 2048 8192 --workdir /tmp/scale

Peak RSS of the distributed run is the client's; each worker's is reported separately.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from predict import make_scene  # noqa: E402  (benchmarks/predict.py, same folder)


def make_tiny_bundle(path: Path) -> Path:
    import torch

    from geoseg.models.architectures import build_model
    from geoseg.models.bundle import save_bundle
    from geoseg.models.spec import ClassInfo, ModelSpec

    spec = ModelSpec(architecture="unet", backbone="resnet18", bands=("r", "g", "b"),
                     mean=(128.0,) * 3, std=(64.0,) * 3,
                     classes=tuple(ClassInfo(i, f"c{i}", (60 * i, 200 - 60 * i, 90))
                                   for i in range(4)),
                     tile_size=512, overlap=32,
                     arch_params={"encoder_depth": 3, "decoder_channels": (16, 8, 8)})
    torch.manual_seed(0)
    save_bundle(path, build_model(spec).eval(), spec)
    return path


def run_predict(scene: Path, out: Path, bundle: Path, extra: list[str]) -> dict[str, float]:
    """Run the CLI in a fresh process; return wall seconds and peak RSS (MB)."""
    code = (
        "import resource, sys, time\n"
        "from geoseg.cli.main import cli\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    cli(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n"
        "    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "    print(f'@@ {time.perf_counter() - t} {me} {kids}', file=sys.stderr)\n"
    )
    cmd = [sys.executable, "-c", code, "predict", str(scene), "-o", str(out), "-m", str(bundle),
           "--overwrite", "--progress", "none", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = [x for x in res.stderr.splitlines() if x.startswith("@@")]
    if res.returncode or not line:
        raise SystemExit(f"predict failed: {res.stderr[-2000:]}")
    _, secs, me, kids = line[-1].split()
    return {"seconds": float(secs), "rss_mb": float(me), "workers_rss_mb": float(kids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768])
    ap.add_argument("--throughput-size", type=int, default=4096)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="geoseg-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = make_tiny_bundle(work / "tiny.safetensors")
    print(f"machine: {os.cpu_count()} CPUs; tiny U-Net (resnet18 depth 3), 512 px tiles")
    rss = {}
    for size in args.sizes:
        scene = work / f"scene_{size}.tif"
        if not scene.exists():
            t0 = time.perf_counter()
            make_scene(scene, size)
            print(f"  generated {size}^2 in {time.perf_counter() - t0:.0f} s")
        r = run_predict(scene, work / f"map_{size}.tif", bundle, [])
        rss[size] = r["rss_mb"]
        print(f"predict {size:>5}^2: {size * size / 1e6 / r['seconds']:.2f} Mpx/s, "
              f"{r['seconds']:.0f} s, peak RSS {r['rss_mb']:.0f} MB")
        (work / f"map_{size}.tif").unlink()
    lo, hi = min(args.sizes), max(args.sizes)
    print(f"peak RSS {hi}^2 / {lo}^2 = {rss[hi] / rss[lo]:.2f} (target <= 1.2)")

    size = args.throughput_size
    scene = work / f"scene_{size}.tif"
    if not scene.exists():
        make_scene(scene, size)
    threads = run_predict(scene, work / "threads.tif", bundle, [])
    dist = run_predict(scene, work / "workers.tif", bundle, ["--workers", "2"])
    same = (work / "threads.tif").read_bytes() == (work / "workers.tif").read_bytes()
    mpx = size * size / 1e6
    print(json.dumps({"size": size,
                      "threads_mpx_s": round(mpx / threads["seconds"], 2),
                      "workers2_mpx_s": round(mpx / dist["seconds"], 2),
                      "workers2_client_rss_mb": round(dist["rss_mb"]),
                      "workers2_max_worker_rss_mb": round(dist["workers_rss_mb"]),
                      "identical_output": same}))


if __name__ == "__main__":
    main()
