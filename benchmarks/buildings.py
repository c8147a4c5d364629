"""Separate buildings: object F1 with and without the instance target, Banepa, held out.

The Banepa mosaic (OpenAerialMap, 3072x4096 px, ~0.13 m, the 48 chips as a 6x8 grid, with
the OSM building footprints) is split by chip rows, spatially: rows 1-5 train (30 chips),
row 6 validates (6 chips; used only to choose the vectorize settings), rows 7-8 are the
held-out test part (12 chips), scored once per model with the settings chosen on row 6.

The same recipe is trained twice from the shipped ``deeplab`` (``--init deeplab``, 6 epochs
x 20 steps of batch 8, 256-px crops; each run keeps its best epoch by validation mIoU over
disjoint blocks of the training rows): once on the plain ``background,building`` classes,
once with ``--target instances`` (the building becomes interior / boundary / contact, one
footprint per OSM polygon). Each model predicts the validation and test rows at their
native 0.13 m (``--resample off``); its building pixels (for the instance model: the three
classes) are scored against the footprints rasterized on the grid (building IoU), and its
polygons from ``vectorize --classes building`` against the footprints, one-to-one at
IoU >= 0.5 (``geoseg score --objects``: object precision, recall, F1). On row 6 the sweep
picks, per model, the minimum polygon area and, for the instance model, the seed erosion
and minimum seed size, by object F1.

Usage::

    python benchmarks/buildings.py --work /tmp/buildings --train   # ~2 x 5-12 min, 2 cores
    python benchmarks/buildings.py --work /tmp/buildings --train --seeds 0 1  # two pairs
    python benchmarks/buildings.py --work /tmp/buildings           # score existing bundles
    python benchmarks/buildings.py --work /tmp/buildings --figure docs/buildings.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

DATA = Path(os.environ.get("GEOSEG_DATA", "data")) / "banepa"
PARTS = {"train": (0, 2560), "val": (2560, 3072), "test": (3072, 4096)}  # pixel rows
RECIPE = ["--class-names", "background,building", "--init", "deeplab", "--epochs", "6",
          "--steps-per-epoch", "20", "--batch-size", "8", "--crop-size", "256",
          "--threads", "2", "--progress", "none", "--overwrite"]
TARGETS = {"plain": [], "instances": ["--target", "instances", "--boundary-px", "3",
                                      "--contact-px", "4"]}
MIN_AREAS = (0.0, 1.0, 3.0, 6.0)  # m2
SEED_EROSION = (0, 2, 4)  # px
MIN_SEED = (0, 100, 400)  # px


def split(work: Path) -> None:
    """Write the train / val / test rows of the mosaic and its building mask (once)."""
    for name, (r0, r1) in PARTS.items():
        for src_name, dst_name in (("mosaic.tif", f"{name}.tif"),
                                   ("mosaic_buildings_mask.tif", f"{name}_mask.tif")):
            dst = work / dst_name
            if dst.exists():
                continue
            with rasterio.open(DATA / src_name) as src:
                win = Window(0, r0, src.width, r1 - r0)
                prof = {**src.profile, "height": r1 - r0, "transform": src.window_transform(win),
                        "compress": "deflate"}
                prof.pop("jpeg_quality", None)
                if src.count == 3:
                    prof["photometric"] = "RGB"
                with rasterio.open(dst, "w", **prof) as out:
                    out.write(src.read(window=win))


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def name(kind: str, seed: int) -> str:
    """File stem of a model: ``plain``, ``instances`` (seed 0), ``plain_s1`` ..."""
    return kind if seed == 0 else f"{kind}_s{seed}"


def train(work: Path, seed: int) -> None:
    for kind, extra in TARGETS.items():
        out = work / f"{name(kind, seed)}.safetensors"
        t0 = time.perf_counter()
        run(["geoseg", "train", str(work / "train.tif"), "--labels",
             str(DATA / "osm_buildings.geojson"), *RECIPE, *extra, "--seed", str(seed),
             "-o", str(out)])
        print(f"{kind}: trained in {time.perf_counter() - t0:.0f} s", flush=True)


def predicted(work: Path, model: str, part: str) -> Path:
    out = work / f"{model}_{part}.tif"
    if not out.exists():
        run(["geoseg", "predict", str(work / f"{part}.tif"), "-m",
             str(work / f"{model}.safetensors"), "--resample", "off", "-o", str(out), "-q"])
    return out


def chip_counts(pred: Path, mask: Path) -> np.ndarray:
    """Per 512-px chip: building pixels in both, in either (every class named building*)."""
    from geoseg.classmap import ClassMapInfo

    with rasterio.open(pred) as p, rasterio.open(mask) as m:
        info = ClassMapInfo.from_tags(p.tags())
        assert info is not None
        ids = [i for i, n in zip(info.ids, info.names, strict=True)
               if n.startswith("building")]
        pb = np.isin(p.read(1), ids)
        tb = m.read(1) > 0
    out = []
    for r in range(0, pb.shape[0], 512):
        for c in range(0, pb.shape[1], 512):
            a, b = pb[r:r + 512, c:c + 512], tb[r:r + 512, c:c + 512]
            out.append(((a & b).sum(), (a | b).sum()))
    return np.asarray(out, np.float64)


def building_iou(pred: Path, mask: Path) -> float:
    """IoU of the building pixels (every class named building*) against the footprints."""
    both, either = chip_counts(pred, mask).sum(axis=0)
    return float(both / max(either, 1))


def iou_difference(pred: Path, base: Path, mask: Path, n: int = 2000) -> tuple[float, ...]:
    """Building IoU of ``pred`` minus ``base``: 2.5/50/97.5 % of a paired chip bootstrap."""
    a, b = chip_counts(pred, mask), chip_counts(base, mask)
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(n):
        k = rng.integers(0, len(a), len(a))
        ta, tb = a[k].sum(axis=0), b[k].sum(axis=0)
        diffs.append(ta[0] / ta[1] - tb[0] / tb[1])
    return tuple(float(v) for v in np.percentile(diffs, [2.5, 50, 97.5]))


def truth_in(pred: Path) -> Any:
    """The OSM footprints cut to a prediction's extent (as score --objects cuts them)."""
    from geoseg.scoring.objects import _clip, _raster_footprint, load_polygons

    truth = load_polygons(DATA / "osm_buildings.geojson", what="labels")
    footprint = _raster_footprint(pred)
    assert footprint is not None
    return _clip(truth, *footprint)


def objects(pred: Path, truth: Any, **options: Any) -> tuple[Any, Any]:
    from geoseg.scoring.objects import score_objects
    from geoseg.vector.pipeline import vectorize

    gdf = vectorize(pred, classes=["building"], **options)
    return score_objects(gdf, truth), gdf


def settings(kind: str) -> list[dict[str, Any]]:
    if kind == "plain":
        return [{"min_area": a} for a in MIN_AREAS]
    return [{"min_area": a, "seed_erosion": e, "min_seed": s}
            for a, e, s in itertools.product(MIN_AREAS, SEED_EROSION, MIN_SEED)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/buildings"))
    ap.add_argument("--train", action="store_true", help="train both models first")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="training seeds: one model pair each, table per seed and mean")
    ap.add_argument("--figure", type=Path, help="write the picture (test part) here")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"Banepa data not found: {DATA} (set GEOSEG_DATA)")
    args.work.mkdir(parents=True, exist_ok=True)
    split(args.work)
    means: dict[str, list[tuple[float, float]]] = {}
    for seed in args.seeds:
        if args.train:
            train(args.work, seed)
        rows, polys = evaluate(args.work, seed)
        for label, iou, score, _, _ in rows:
            means.setdefault(label, []).append((iou, score.f1))
        if args.figure and seed == args.seeds[0]:
            figure(args.work, polys, args.figure)
    if len(args.seeds) > 1:
        print(f"\nmean over seeds {', '.join(map(str, args.seeds))}\n")
        print("| model | building IoU | object F1 |")
        print("|---|---|---|")
        for label, vals in means.items():
            iou, f1 = np.mean(vals, axis=0)
            print(f"| {label} | {iou:.3f} | {f1:.3f} |")


def evaluate(work: Path, seed: int) -> tuple[list[Any], dict[str, Any]]:
    """Tune on row 6, score rows 7-8 once; print the table of one seed's model pair."""
    rows, polys = [], {}
    for kind in TARGETS:
        model = name(kind, seed)
        val = predicted(work, model, "val")
        truth_val = truth_in(val)
        best = max(settings(kind), key=lambda o: objects(val, truth_val, **o)[0].f1)
        test = predicted(work, model, "test")
        truth = truth_in(test)
        iou = building_iou(test, work / "test_mask.tif")
        variants = [(kind, best)]
        if kind == "instances":  # the same map, buildings not split
            variants.append(("instances, not split",
                             {"min_area": best["min_area"], "split_instances": False}))
        for label, opts in variants:
            score, gdf = objects(test, truth, **opts)
            polys[label] = gdf
            rows.append((label, iou, score, len(gdf), opts))
    print(f"\nseed {seed}: Banepa held-out rows 7-8 (12 chips, "
          f"{rows[0][2].tp + rows[0][2].fn} OSM footprints); settings chosen on row 6\n")
    print("| model | building IoU | object precision | recall | F1 | polygons | vectorize |")
    print("|---|---|---|---|---|---|---|")
    for label, iou, s, n, opts in rows:
        print(f"| {label} | {iou:.3f} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | "
              f"{n} | {json.dumps(opts)} |")
    lo, mid, hi = iou_difference(work / f"{name('instances', seed)}_test.tif",
                                 work / f"{name('plain', seed)}_test.tif",
                                 work / "test_mask.tif")
    print(f"\nbuilding IoU, instances - plain: {rows[1][1] - rows[0][1]:+.3f} (paired "
          f"bootstrap over the 12 test chips: median {mid:+.3f}, 95 % {lo:+.3f} .. {hi:+.3f})")
    return rows, polys


def figure(work: Path, polys: dict[str, Any], out: Path) -> None:
    """Polygons of both models over one test chip area, beside the OSM footprints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shapely

    win = Window(1024, 0, 1024, 1024)  # chips 3-4 of test row 7 (and row 8)
    with rasterio.open(work / "test.tif") as src:
        img = src.read(window=win)[:, ::2, ::2].transpose(1, 2, 0)
        t = src.window_transform(win)
    x0, y0 = t.c, t.f
    x1, y1 = x0 + t.a * 1024, y0 + t.e * 1024
    panels = [("OSM footprints", truth_in(work / "plain_test.tif")),  # seed 0's extent
              ("plain building model", polys["plain"]),
              ("instance target, split", polys["instances"])]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3), dpi=72)
    box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    for ax, (title, gdf) in zip(axes, panels, strict=True):
        ax.imshow(img, extent=(x0, x1, y1, y0))
        geoms = gdf.geometry.to_crs("EPSG:4326").to_numpy()
        for g in geoms[shapely.intersects(geoms, box)]:
            for part in shapely.get_parts(g):
                xs, ys = part.exterior.xy
                ax.plot(xs, ys, color="yellow", lw=0.8)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    from PIL import Image  # a photo in PNG: a palette keeps it small

    with Image.open(out) as im:
        im.convert("RGB").quantize(colors=128).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
