"""Does ``--precision bf16`` change the class map? Measured on real held-out data.

Predicts held-out Dubai images (tiles 7-8, never trained on) with a default model in fp32
and in bf16 autocast, then reports the share of pixels whose class agrees and the macro
mIoU of each against the labels (the five real classes). geoseg's ``--precision auto``
picks bf16 on CPUs with native bf16 only when this agreement holds (>= 99.5 %, mIoU within
0.005); on CPUs without native bf16 it is emulated and slow, but still measurable.

Usage::

    python benchmarks/precision.py [--model deeplab] [--images 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio

from geoseg.prediction.pipeline import predict
from geoseg.training.data import IGNORE, find_pairs, read_class_table, read_pair
from geoseg.training.loop import iou_from_confusion

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="deeplab")
    ap.add_argument("--images", type=int, default=4, help="held-out images to use")
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("GEOSEG_DATA", "data")) / "dubai")
    args = ap.parse_args()
    table = read_class_table(REPO / "examples" / "dubai_classes.json")
    pairs = (find_pairs(args.data / "tile_7") + find_pairs(args.data / "tile_8"))
    pairs = pairs[:: max(1, len(pairs) // args.images)][: args.images]
    names = [c.name for c in table.classes]
    include = [k for k, n in enumerate(names) if n != "unlabeled"]
    n = len(names)
    cms = {p: np.zeros((n, n), np.int64) for p in ("fp32", "bf16")}
    agree = total = 0
    seconds = dict.fromkeys(cms, 0.0)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, pair in enumerate(pairs):
            truth = read_pair(pair, table)[0].mask
            maps = {}
            for prec in cms:
                out = Path(tmp) / f"{k}_{prec}.tif"
                t0 = time.perf_counter()
                predict(pair.image, out, model=args.model, precision=prec, engine="eager",
                        overwrite=True)
                seconds[prec] += time.perf_counter() - t0
                with rasterio.open(out) as src:
                    maps[prec] = src.read(1)
                valid = (truth != IGNORE) & (maps[prec] != 255)
                cms[prec] += np.bincount(truth[valid].astype(np.int64) * n + maps[prec][valid],
                                         minlength=n * n).reshape(n, n)
            agree += int((maps["fp32"] == maps["bf16"]).sum())
            total += maps["fp32"].size
            print(f"  {Path(pair.image).parent.parent.name}/{Path(pair.image).name}: "
                  f"agreement {(maps['fp32'] == maps['bf16']).mean():.4%}", flush=True)
    m32 = iou_from_confusion(cms["fp32"], include)[1]
    m16 = iou_from_confusion(cms["bf16"], include)[1]
    print(f"{args.model}, {len(pairs)} held-out images, {total / 1e6:.1f} Mpx")
    print(f"class agreement bf16 vs fp32: {agree / total:.4%} (target >= 99.5 %)")
    print(f"mIoU fp32 {m32:.4f}, bf16 {m16:.4f}, difference {abs(m32 - m16):.4f} "
          "(target <= 0.005)")
    print(f"time fp32 {seconds['fp32']:.0f} s, bf16 {seconds['bf16']:.0f} s")


if __name__ == "__main__":
    main()
