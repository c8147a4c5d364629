"""Dynamic World on real Sentinel-2 L1C: agreement with land-use labels, bf16/int8 vs fp32.

The data: eo-learn's Slovenian example patch (101 x 100 px at 10 m, one square kilometre,
mostly forest), three cloud-free Sentinel-2 L1C dates of 2015 as 13-band uint16 GeoTIFFs,
and Slovenian land-use labels rasterized on the same grid (dated 2017-12 to 2018-02: two
years younger than the imagery). Every map comes from ``geoseg predict`` itself (the
shipped ``dynamicworld`` bundle, the nine bands picked by index from the 13-band file).

Prints, per date:
- the share of pixels whose class agrees between OpenVINO fp32 and eager fp32, bf16 and
  int8 (OpenVINO; int8 calibrated on the scene itself);
- Dynamic World's agreement with the labels: the share of labelled pixels whose Dynamic
  World class maps to the label (crops -> cultivated, trees -> forest, grass -> grassland,
  shrub_and_scrub -> shrubland, built -> artificial; water, flooded vegetation, bare and
  snow map to no label and count as disagreement), overall and per label class.

With ``--png`` it also draws the scene, Dynamic World's map and the labels for one date.

Usage::

    python benchmarks/dynamicworld_slovenia.py --data DIR [--png docs/dynamicworld_slovenia.png]

where DIR holds ``S2_L1C_2015-*.tif`` and ``LULC.tif``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

GEOSEG = Path(sys.executable).with_name("geoseg")
#: Dynamic World's B2, B3, B4, B5, B6, B7, B8, B11, B12 in the 13-band files (B01..B12, B8A, B10)
BANDS = "2,3,4,5,6,7,8,12,13"
LABELS = {1: "cultivated", 2: "forest", 3: "grassland", 4: "shrubland", 8: "artificial"}
#: Dynamic World class id -> label id (classes absent here map to none)
DW_TO_LABEL = {4: 1, 1: 2, 2: 3, 5: 4, 6: 8}
RUNS = (("eager", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))


def predict(scene: Path, out: Path, engine: str, precision: str) -> np.ndarray:
    """Run ``geoseg predict`` and return the class map."""
    cmd = [str(GEOSEG), "predict", str(scene), "-o", str(out), "--model", "dynamicworld",
           "--bands", BANDS, "--engine", engine, "--precision", precision, "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {run.stderr.strip()}")
    with rasterio.open(out) as src:
        return src.read(1)


def label_agreement(classes: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, float]]:
    """Overall and per-label share of labelled pixels whose mapped class is the label."""
    mapped = np.zeros_like(labels)
    for dw, lab in DW_TO_LABEL.items():
        mapped[classes == dw] = lab
    valid = labels > 0
    overall = float((mapped[valid] == labels[valid]).mean())
    per = {name: float((mapped[labels == k] == k).mean())
           for k, name in LABELS.items() if (labels == k).any()}
    return overall, per


def draw(path: Path, scene: Path, classes: np.ndarray, labels: np.ndarray) -> None:
    """Scene (B4, B3, B2), Dynamic World's map and the labels in Dynamic World colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from geoseg.models import resolve_spec

    spec = resolve_spec("dynamicworld")
    colors = [tuple(v / 255 for v in c.color) for c in spec.classes]
    with rasterio.open(scene) as src:
        rgb = src.read([4, 3, 2]).astype(np.float32).transpose(1, 2, 0)
    rgb = np.clip(rgb / 2500, 0, 1)
    label_as_dw = np.full(labels.shape, np.nan)
    for dw, lab in DW_TO_LABEL.items():
        label_as_dw[labels == lab] = dw
    cmap = ListedColormap(colors)
    cmap.set_bad((1, 1, 1))
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.9), dpi=80)
    titles = (f"Sentinel-2 L1C {scene.stem[-10:]}", "Dynamic World (geoseg)",
              "land-use labels (2017-18)")
    for ax, img, title in zip(axes, (rgb, classes.astype(float), label_as_dw), titles,
                              strict=True):
        if img.ndim == 3:
            ax.imshow(img, interpolation="nearest")
        else:
            ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=-0.5, vmax=8.5,
                      interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    present = sorted(set(np.unique(classes).tolist()) | set(DW_TO_LABEL))
    fig.legend(handles=[Patch(color=colors[k], label=spec.classes[k].name) for k in present],
               loc="lower center", ncol=len(present), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.1, wspace=0.03)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True,
                    help="folder with S2_L1C_2015-*.tif and LULC.tif")
    ap.add_argument("--png", type=Path, help="also draw the first date's map here")
    args = ap.parse_args()
    scenes = sorted(args.data.glob("S2_L1C_*.tif"))
    if not scenes or not (args.data / "LULC.tif").is_file():
        sys.exit(f"{args.data}: no S2_L1C_*.tif or LULC.tif")
    with rasterio.open(args.data / "LULC.tif") as src:
        labels = src.read(1)
    counts = ", ".join(f"{n} {int((labels == k).sum())}" for k, n in LABELS.items())
    print(f"labels: {int((labels > 0).sum())} px ({counts})")
    header = ("date", "ov32=eager", "bf16=fp32", "int8=fp32", "labels",
              *LABELS.values())
    print(" ".join(f"{h:>11}" for h in header))
    pooled: list[tuple[np.ndarray, np.ndarray]] = []
    with tempfile.TemporaryDirectory(prefix="dw-slovenia-") as tmp:
        for scene in scenes:
            maps = {f"{e}-{p}": predict(scene, Path(tmp) / f"{scene.stem}-{e}-{p}.tif", e, p)
                    for e, p in RUNS}
            fp32 = maps["openvino-fp32"]
            same = [float((maps[k] == fp32).mean())
                    for k in ("eager-fp32", "openvino-bf16", "openvino-int8")]
            overall, per = label_agreement(maps["eager-fp32"], labels)
            pooled.append((maps["eager-fp32"], labels))
            row = [scene.stem[-10:], *(f"{v:.2%}" for v in same), f"{overall:.1%}",
                   *(f"{per[n]:.1%}" if n in per else "-" for n in LABELS.values())]
            print(" ".join(f"{c:>11}" for c in row))
            share = np.bincount(maps["eager-fp32"].ravel(), minlength=9) / fp32.size
            print(f"{'':>11} classes: " + ", ".join(
                f"{k}={v:.1%}" for k, v in enumerate(share) if v > 0))
            if args.png and scene == scenes[0]:
                draw(args.png, scene, maps["eager-fp32"], labels)
    overall, per = label_agreement(np.concatenate([c for c, _ in pooled]),
                                   np.concatenate([lab for _, lab in pooled]))
    print(f"all dates: labels {overall:.1%}; " + ", ".join(
        f"{n} {v:.1%}" for n, v in per.items()))
    if args.png:
        print(f"wrote {args.png} ({args.png.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
