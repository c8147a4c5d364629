"""Score geoseg's default models on the held-out Dubai tiles 7-8 (the model-card figures).

Every held-out image is predicted with ``geoseg.prediction.pipeline.predict`` (the code behind
``geoseg predict``), compared with its mask, and the pixel counts are pooled. The figures
are printed as JSON and, with ``--record``, stored in the bundle's provenance under
``heldout`` (the weights are rewritten unchanged), where the test of the shipped models
reads them back.

``--paths`` runs each model several ways (``ENGINE:PRECISION``, the first is the reference):
each later path's held-out mIoU change and the share of pixels whose class equals the
reference's are printed too. int8 calibrates on ``--calibration`` (a directory of training
images; default: images of tiles 1-6, never the held-out tiles).

usage: python examples/evaluate_dubai.py [--data DIR] [--record] deeplab unet
       python examples/evaluate_dubai.py deeplab unet --paths openvino:fp32 openvino:int8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from geoseg.models import default_model_path
from geoseg.models.bundle import load_bundle, save_bundle
from geoseg.training.data import find_pairs, read_class_table
from geoseg.training.evaluate import evaluate_bundle

HERE = Path(__file__).resolve().parent


def training_calibration(data: Path, into: Path, per_tile: int = 6) -> str:
    """A directory of links to ``per_tile`` training images of each of tiles 1-6."""
    for t in range(1, 7):
        for image in sorted((data / f"tile_{t}" / "images").glob("*.jpg"))[:per_tile]:
            (into / f"t{t}_{image.name}").symlink_to(image.resolve())
    return str(into)


def agreement(a: Path, b: Path, n: int) -> float:
    """Share of pixels with the same class in the class maps ``pred{k}.tif`` of a and b."""
    import rasterio

    same = total = 0
    for k in range(n):
        with rasterio.open(a / f"pred{k}.tif") as x, rasterio.open(b / f"pred{k}.tif") as y:
            ca, cb = x.read(1), y.read(1)
        same += int(np.count_nonzero(ca == cb))
        total += ca.size
    return same / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="default model names or bundle files")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("GEOSEG_DATA", "data")) / "dubai")
    parser.add_argument("--paths", nargs="+", default=["eager:auto"],
                        help="ENGINE:PRECISION to run, the first is the reference")
    parser.add_argument("--calibration", help="int8: directory of calibration images")
    parser.add_argument("--record", action="store_true", help="store the figures in the bundle")
    args = parser.parse_args()
    table = read_class_table(HERE / "dubai_classes.json")
    pairs = find_pairs(args.data / "tile_7") + find_pairs(args.data / "tile_8")
    with tempfile.TemporaryDirectory(prefix="geoseg-eval-") as tmp:
        work = Path(tmp)
        calibration = args.calibration
        if calibration is None and any(p.endswith(":int8") for p in args.paths):
            (work / "calibration").mkdir()
            calibration = training_calibration(args.data, work / "calibration")
        for name in args.models:
            path = default_model_path(name) if not name.endswith(".safetensors") else Path(name)
            bundle = load_bundle(path)
            reference: tuple[Path, float] | None = None
            for k, how in enumerate(args.paths):
                engine, precision = how.split(":")
                keep = work / f"{path.stem}-{k}"
                keep.mkdir()
                start = time.monotonic()
                result = evaluate_bundle(bundle, pairs, table, exclude=("unlabeled",),
                                         engine=engine, precision=precision,
                                         calibration=calibration, keep=keep)
                figures = {**result.to_dict(), "data": "dubai tiles 7-8 (held out)",
                           "engine": engine, "precision": precision,
                           "seconds": round(time.monotonic() - start, 1)}
                if reference is None:
                    reference = (keep, result.miou)
                else:
                    figures["miou_change"] = round(result.miou - reference[1], 4)
                    figures["class_map_agreement"] = round(
                        agreement(reference[0], keep, len(pairs)), 4)
                print(json.dumps({"model": name, **figures}, indent=1), flush=True)
                if args.record and k == 0:
                    spec = bundle.spec.with_(provenance={**bundle.spec.provenance,
                                                         "heldout": figures})
                    save_bundle(path, bundle.model, spec, half=True, overwrite=True)


if __name__ == "__main__":
    main()
