"""Benchmark ``--resample`` on real data: Banepa buildings (0.13 m) and Dubai held-out land cover.

Each model predicts ``banepa/mosaic.tif`` (3072x4096, ~0.13 m) with each ``--resample``
setting through ``geoseg.prediction.pipeline.predict`` (the code behind ``geoseg predict``).
Its ``building`` pixels are scored against the OSM footprints rasterized on the same grid
(``mosaic_buildings_mask.tif``) and, because the Dubai masks the shipped models learned from
draw a dense residential block as one building polygon (streets apart, the gaps between
houses are building), also against "blocks": the footprints closed over gaps narrower than
``G`` metres (dilate by G/2, erode by G/2; Euclidean distance transforms). The gap widths are
a fixed sweep, not tuned: the table shows how the ranking of the settings depends on which
labelling convention one scores against.

``--dataset dubai`` scores the held-out Dubai tiles 7-8 (18 images, the model card's data)
instead: each JPEG is given a georeferencing at ``--dubai-gsd`` metres (default 0.5, a
plain VRT in a temporary folder; the images have none) so ``--resample`` has a scene GSD to
work from, and the macro mIoU over the five real classes (*unlabeled* excluded) is pooled
over all images as ``examples/evaluate_dubai.py`` pools it.

Usage::

    python benchmarks/resample.py                       # deeplab and unet, off vs auto
    python benchmarks/resample.py --models deeplab --resample off auto 0.5 --gaps 2 4 8
    python benchmarks/resample.py --dataset dubai --resample off auto 0.75 1
    python benchmarks/resample.py --dataset banepa-chips --resample off auto
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage

from geoseg.io import open_scene
from geoseg.metrics import (
    confusion_counts,
    iou_per_class,
    precision_per_class,
    recall_per_class,
)
from geoseg.prediction.config import InferenceConfig
from geoseg.prediction.pipeline import predict
from geoseg.prediction.resample import scene_gsd

HERE = Path(__file__).resolve().parent


def blocks(footprints: np.ndarray, gap_px: float) -> np.ndarray:
    """Close ``footprints`` (bool) over gaps narrower than ``gap_px`` pixels."""
    if gap_px <= 0:
        return footprints
    radius = gap_px / 2
    dilated = ndimage.distance_transform_edt(~footprints) <= radius
    return ndimage.distance_transform_edt(dilated) > radius


def building_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """IoU, precision and recall of ``pred`` (bool) against ``truth`` (bool).

    The same confusion-matrix code as ``geoseg score`` (:mod:`geoseg.metrics`).
    """
    cm = confusion_counts(truth.view(np.uint8), pred.view(np.uint8), [0, 1]).matrix
    return {"iou": float(iou_per_class(cm)[1]), "precision": float(precision_per_class(cm)[1]),
            "recall": float(recall_per_class(cm)[1])}


def georeferenced(image: Path, into: Path, gsd: float) -> Path:
    """A VRT of ``image`` (every band) at ``gsd`` metres in UTM 40N (Dubai), north up."""
    with rasterio.open(image) as src:
        w, h, n = src.width, src.height, src.count
        dtype = {"uint8": "Byte", "uint16": "UInt16"}[src.dtypes[0]]
    bands = "".join(
        f'<VRTRasterBand dataType="{dtype}" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{image.resolve()}</SourceFilename>'
        f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>" for b in range(1, n + 1))
    out = into / f"{image.parent.parent.name}_{image.stem}.vrt"
    out.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>EPSG:32640</SRS>'
                   f"<GeoTransform>500000, {gsd}, 0, 2780000, 0, {-gsd}</GeoTransform>"
                   f"{bands}</VRTDataset>")
    return out


def dubai(args: argparse.Namespace) -> None:
    """Macro mIoU on Dubai tiles 7-8, georeferenced at ``args.dubai_gsd``, per setting."""
    from geoseg.training.data import IGNORE, find_pairs, read_class_table, read_pair
    from geoseg.training.evaluate import iou_from_confusion

    table = read_class_table(HERE.parent / "examples" / "dubai_classes.json")
    names = [c.name for c in table.classes]
    include = [k for k, n in enumerate(names) if n != "unlabeled"]
    pairs = find_pairs(args.data / "tile_7") + find_pairs(args.data / "tile_8")
    rows = []
    with tempfile.TemporaryDirectory(prefix="geoseg-resample-") as tmp:
        work = Path(tmp)
        scenes = [georeferenced(p.image, work, args.dubai_gsd) for p in pairs]
        truths = [read_pair(p, table)[0].mask for p in pairs]
        for model in args.models:
            for setting in args.resample:
                resample: str | float = setting if setting in ("off", "auto") else float(setting)
                total = np.zeros((len(names), len(names)), np.int64)
                start = time.perf_counter()
                working = set()
                for scene, truth in zip(scenes, truths, strict=True):
                    out = work / f"{model}_{setting}_{scene.stem}.tif"
                    predict(scene, out, model=model, resample=resample, overwrite=True)
                    with rasterio.open(out) as src:
                        pred = src.read(1)
                        working.add(src.tags().get("working_gsd_m", "native"))
                    out.unlink()
                    total += confusion_counts(truth, pred, range(len(names)),
                                              ignore_index=IGNORE, pred_nodata=IGNORE).matrix
                iou, miou = iou_from_confusion(total, include)
                row = {"model": model, "resample": setting, "working_gsd_m": sorted(working),
                       "miou": round(miou, 4), "seconds": round(time.perf_counter() - start, 1),
                       **{names[k]: round(float(iou[k]), 3) for k in include}}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\nDubai tiles 7-8 georeferenced at {args.dubai_gsd:g} m, macro mIoU "
          "(unlabeled excluded)\n")
    print("| model | --resample | working GSD (m) | mIoU |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['resample']} | {', '.join(r['working_gsd_m'])} "
              f"| {r['miou']:.3f} |")


def banepa_chips(args: argparse.Namespace) -> None:
    """Building IoU of the 48 Banepa chips predicted one by one (as published), per setting.

    Each 512-px chip is its own scene (``geoseg predict 'oam/*.tif' -o DIR``), so ``auto``
    shrinks each one to a few hundred pixels; the maps are scored together against the OSM
    footprints, read as ``train`` reads them (``--class-names background,building``).
    """
    from geoseg.prediction.batch import predict_many
    from geoseg.scoring.pipeline import score

    chips = sorted(str(p) for p in (args.data / "oam").glob("*.tif"))
    print(f"{len(chips)} chips")
    rows = []
    with tempfile.TemporaryDirectory(prefix="geoseg-resample-") as tmp:
        for model in args.models:
            for setting in args.resample:
                out = Path(tmp) / f"{model}_{setting}"
                resample: str | float = setting if setting in ("off", "auto") else float(setting)
                start = time.perf_counter()
                predict_many(chips, out, model=model,
                             config=InferenceConfig(resample=resample), overwrite=True)
                seconds = time.perf_counter() - start
                with rasterio.open(sorted(out.glob("*.tif"))[0]) as src:
                    working = src.tags().get("working_gsd_m", "native")
                report = score(out, args.data / "osm_buildings.geojson",
                               class_names=["background", "building"])
                k = list(report.class_names).index("building")
                row = {"model": model, "resample": setting, "working_gsd_m": working,
                       "iou": round(float(report.iou[k]), 3),
                       "precision": round(float(report.precision[k]), 3),
                       "recall": round(float(report.recall[k]), 3),
                       "seconds": round(seconds, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| model | --resample | working GSD (m) | building IoU | precision | recall |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['resample']} | {r['working_gsd_m']} | {r['iou']:.3f} "
              f"| {r['precision']:.3f} | {r['recall']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["banepa", "banepa-chips", "dubai"],
                        default="banepa")
    parser.add_argument("--data", type=Path,
                        help="the dataset's folder (default: $GEOSEG_DATA/DATASET or data/DATASET)")
    parser.add_argument("--models", nargs="+", default=["deeplab", "unet"])
    parser.add_argument("--resample", nargs="+", default=["off", "auto"])
    parser.add_argument("--gaps", type=float, nargs="+", default=[0, 2, 4, 8],
                        help="gap widths in metres closed to make blocks (0 = footprints)")
    parser.add_argument("--dubai-gsd", type=float, default=0.5,
                        help="the GSD (m) the Dubai images are georeferenced at")
    args = parser.parse_args()
    if args.data is None:
        args.data = Path(os.environ.get("GEOSEG_DATA", "data")) / args.dataset.split("-")[0]
    if args.dataset == "dubai":
        dubai(args)
        return
    if args.dataset == "banepa-chips":
        banepa_chips(args)
        return
    scene = args.data / "mosaic.tif"
    grid = open_scene(scene)
    with rasterio.open(args.data / "mosaic_buildings_mask.tif") as src:
        if (src.crs, src.transform, src.shape) != (grid.crs, grid.transform, grid.shape):
            raise SystemExit("the building mask is not on the scene's grid")
        footprints = src.read(1) > 0
    px = scene_gsd(grid)  # the rule --resample uses
    if px is None:
        raise SystemExit(f"{scene} has no CRS: its pixel size in metres is unknown")
    truths = {g: blocks(footprints, g / px) for g in args.gaps}
    shares = {g: round(float(t.mean()), 3) for g, t in truths.items()}
    print(f"pixel {px:.3f} m; building share of the labels by gap (m): {shares}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="geoseg-resample-") as tmp:
        for model in args.models:
            for setting in args.resample:
                out = Path(tmp) / f"{model}_{setting}.tif"
                resample: str | float = setting if setting in ("off", "auto") else float(setting)
                start = time.perf_counter()
                predict(scene, out, model=model, resample=resample, overwrite=True)
                seconds = time.perf_counter() - start
                with rasterio.open(out) as src:
                    names = src.tags()["class_names"].split(",")
                    building = src.read(1) == names.index("building")
                    working = src.tags().get("working_gsd_m", f"{px:.2f} (native)")
                for gap, truth in truths.items():
                    row = {"model": model, "resample": setting, "working_gsd_m": working,
                           "gap_m": gap, "seconds": round(seconds, 1)}
                    row.update({k: round(v, 3) for k, v in
                                building_scores(building, truth).items()})
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print("\n| model | --resample | gap closed (m) | building IoU | precision | recall |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['resample']} | {r['gap_m']:g} | {r['iou']:.3f} "
              f"| {r['precision']:.3f} | {r['recall']:.3f} |")


if __name__ == "__main__":
    main()
