"""Benchmark test-time augmentation: held-out Dubai mIoU and time, ``--tta none`` vs ``flips``.

Each chosen held-out image (tile 7 by default) is predicted by ``geoseg.prediction.pipeline.
predict`` (the code behind ``geoseg predict``) with each TTA setting, scored against its mask
over the 5 real classes (``unlabeled`` excluded, as in ``examples/evaluate_dubai.py``), and
timed end to end, wall clock and process CPU seconds (the CPU time is the steadier figure
on a shared machine). One untimed run first builds and caches the engine, so neither
setting pays for the ONNX export.

Usage::

    python benchmarks/tta.py                                  # deeplab, 3 images of tile 7
    python benchmarks/tta.py --model unet --images 1 2 3 4 5 6 7 8 9
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from geoseg.metrics import confusion_counts
from geoseg.prediction.pipeline import predict
from geoseg.training.data import IGNORE, Pair, read_class_table, read_pair
from geoseg.training.evaluate import iou_from_confusion

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplab")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("GEOSEG_DATA", "data")) / "dubai" / "tile_7")
    parser.add_argument("--images", type=int, nargs="+", default=[1, 5, 9])
    parser.add_argument("--engine", default="auto")
    args = parser.parse_args()
    table = read_class_table(HERE.parent / "examples" / "dubai_classes.json")
    names = [c.name for c in table.classes]
    include = [k for k, n in enumerate(names) if n != "unlabeled"]
    pairs = [Pair(args.data / "images" / f"image_part_{i:03d}.jpg",
                  args.data / "masks" / f"image_part_{i:03d}.png") for i in args.images]
    report = {}
    with tempfile.TemporaryDirectory(prefix="geoseg-tta-") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # JPEG tiles have no georeferencing
            predict(pairs[0].image, Path(tmp) / "warm.tif", model=args.model,
                    engine=args.engine)
        for tta in ("none", "flips"):
            total = np.zeros((len(names), len(names)), np.int64)
            seconds = cpu = 0.0
            for k, pair in enumerate(pairs):
                labelled, _ = read_pair(pair, table)
                out = Path(tmp) / f"{tta}{k}.tif"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # JPEG tiles have no georeferencing
                    t0, c0 = time.perf_counter(), time.process_time()
                    predict(pair.image, out, model=args.model, engine=args.engine, tta=tta,
                            overwrite=True)
                    seconds += time.perf_counter() - t0
                    cpu += time.process_time() - c0
                import rasterio

                with rasterio.open(out) as ds:
                    pred = ds.read(1)
                total += confusion_counts(labelled.mask, pred, range(len(names)),
                                          ignore_index=IGNORE, pred_nodata=IGNORE).matrix
            iou, miou = iou_from_confusion(total, include)
            report[tta] = {"miou": round(miou, 4), "seconds": round(seconds, 1),
                           "cpu_seconds": round(cpu, 1),
                           "iou": {names[k]: round(float(iou[k]), 4) for k in include}}
            print(json.dumps({"tta": tta, **report[tta]}), flush=True)
    gain = report["flips"]["miou"] - report["none"]["miou"]
    cost = report["flips"]["seconds"] / max(report["none"]["seconds"], 1e-9)
    cpu_cost = report["flips"]["cpu_seconds"] / max(report["none"]["cpu_seconds"], 1e-9)
    print(json.dumps({"model": args.model, "images": [str(p.image.name) for p in pairs],
                      "miou_gain": round(gain, 4), "time_ratio": round(cost, 2),
                      "cpu_time_ratio": round(cpu_cost, 2)}))


if __name__ == "__main__":
    main()
