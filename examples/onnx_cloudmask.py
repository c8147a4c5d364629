"""Run a published ONNX model with geoseg: ukis-csmask's Sentinel-2 cloud/shadow U-Net.

Model: ``model_6b_l2a.onnx`` from the PyPI wheel ``ukis-csmask`` 1.0.0 (DLR, Apache-2.0), a
U-Net/EfficientNet-B4 that segments clear / cloud / cloud shadow in six reflectance bands.
Fetch and unpack it (nothing is downloaded at run time):

    pip download ukis-csmask==1.0.0 --no-deps -d /tmp/csm
    unzip -o /tmp/csm/ukis_csmask-1.0.0-py3-none-any.whl 'ukis_csmask/*' -d /tmp/csm
    python examples/onnx_cloudmask.py /tmp/csm /tmp/ip/ghost/data/indian_pines OUTDIR

The spec passed to ``geoseg bundle import`` is the package's own, read from its files:
- band order and normalisation: ``ukis_csmask/model_6b_l2a.json`` (``data.dataset_statistics``:
  ``img[0]`` mean, ``img[1]`` std, ``band_names``; ``data.target_size`` 256), applied as
  ``(img - mean) / std`` in ``ukis_csmask/mask.py`` lines 102-103, 116-123 and 131-134, on
  "reflectance values [0, 1]" (mask.py line 39);
- classes: 0 = background (clear), 1 = clouds, 2 = cloud shadows (mask.py line 159), the
  argmax of the logits (line 183).

NO REAL SENTINEL-2/LANDSAT SCENE WITH THESE SIX BANDS SHIPS IN A PACKAGE WE FOUND, so this is a
check that the imported bundle runs and agrees with the model run directly, not a cloud-mask
evaluation: the input is the real AVIRIS Indian Pines cube (see examples/multispectral.py for
where it comes from), its bands nearest to Sentinel-2's B2, B3, B4, B8, B11, B12 divided by
10000 (AVIRIS values, not calibrated reflectance; a cloud-free scene). It compares geoseg's
class map with (a) onnxruntime run directly on the same padded tile and (b) the package's own
inference (``ukis_csmask.CSmask``), as % of pixels with the same class.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
from multispectral import aviris_index  # examples/ is on sys.path when run as a script

MODEL = "model_6b_l2a"
# Sentinel-2 centre wavelengths (nm) of the model's bands, in its order.
S2_NM = {"blue": 492, "green": 560, "red": 665, "nir": 833, "swir16": 1614, "swir22": 2202}
def six_bands(folder: Path) -> npt.NDArray[np.float32]:
    """(6, rows, cols) pseudo-reflectance in the model's band order."""
    from scipy.io import loadmat

    cube = loadmat(folder / "Indian_pines_corrected.mat")["indian_pines_corrected"]
    idx = [aviris_index(nm) for nm in S2_NM.values()]
    return np.moveaxis(cube[:, :, idx], -1, 0).astype(np.float32) / 10000.0


def geoseg(*args: str | Path) -> str:
    exe = shutil.which("geoseg")
    cmd = [exe] if exe else [sys.executable, "-m", "geoseg.cli.main"]
    print("$ geoseg", " ".join(str(a) for a in args), flush=True)
    run = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, check=False)
    if run.returncode:
        sys.exit(f"geoseg {args[0]} failed: {run.stderr.strip().splitlines()[-1:]}")
    return run.stdout + run.stderr


def write(path: Path, image: npt.NDArray[np.float32]) -> None:
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=image.shape[2], height=image.shape[1],
                       count=image.shape[0], dtype="float32", crs="EPSG:32616",
                       transform=from_origin(500000.0, 4480000.0, 20.0, 20.0)) as dst:
        dst.write(image)
        dst.descriptions = tuple(S2_NM)


def onnx_direct(model: Path, image: npt.NDArray[np.float32], mean: list[float],
                std: list[float], tile: int) -> npt.NDArray[np.uint8]:
    """onnxruntime on one zero-padded tile of the normalised image."""
    import onnxruntime as ort

    x = (image - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None,
                                                                                         None]
    h, w = image.shape[1:]
    pad = np.zeros((1, 6, tile, tile), np.float32)  # 0 = the band mean after normalising
    pad[0, :, :h, :w] = x
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: pad})[0]
    return np.asarray(logits[0, :, :h, :w].argmax(axis=0), np.uint8)


def package_own(csm_root: Path, image: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    sys.path.insert(0, str(csm_root))
    from ukis_csmask.mask import CSmask

    img = np.ascontiguousarray(np.moveaxis(image, 0, -1))
    out = CSmask(img, band_order=list(S2_NM), product_level="l2a", intra_op_num_threads=2)
    return np.asarray(out.csm[:, :, 0], np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csmask", type=Path, help="folder holding ukis_csmask/ (unpacked wheel)")
    ap.add_argument("scene_data", type=Path, help="folder with Indian_pines_corrected.mat")
    ap.add_argument("out", type=Path, nargs="?", default=Path("geoseg-onnx-cloudmask"))
    a = ap.parse_args()
    model = a.csmask / "ukis_csmask" / f"{MODEL}.onnx"
    if not model.is_file() or not (a.scene_data / "Indian_pines_corrected.mat").is_file():
        sys.exit(f"missing {model} or the Indian Pines cube in {a.scene_data}: "
                 "see this script's docstring for the pip download commands")
    meta = json.loads(model.with_suffix(".json").read_text())["data"]
    stats = meta["dataset_statistics"]
    mean, std, bands = stats["img"][0], stats["img"][1], stats["band_names"]
    assert list(S2_NM) == bands, bands  # the scene is written in the model's band order
    tile = meta["target_size"][0]
    a.out.mkdir(parents=True, exist_ok=True)
    bundle, scene = a.out / "csmask_6b_l2a.safetensors", a.out / "aviris_s2bands.tif"
    geoseg("bundle", "import", model, "-o", bundle, "--bands", ",".join(bands),
           "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)),
           "--classes", "clear,cloud,shadow", "--tile-size", str(tile),
           "--class-colors", "#3c8c3c,#ffffff,#505050", "--overwrite")
    print(geoseg("bundle", "inspect", bundle))
    image = six_bands(a.scene_data)
    write(scene, image)
    import rasterio

    maps = {}
    for engine in ("onnxruntime", "auto"):
        path = a.out / f"cloudmask_{engine}.tif"
        print(geoseg("predict", scene, "-m", bundle, "-o", path, "--engine", engine,
                     "--overwrite"))
        with rasterio.open(path) as src:
            maps[engine] = src.read(1)
    direct = onnx_direct(model, image, mean, std, tile)
    own = package_own(a.csmask, image)
    print(f"\n{image.shape[2]}x{image.shape[1]} px; share of pixels per class "
          "(clear, cloud, shadow) and agreement:")
    print("| geoseg run | classes | = onnxruntime direct | = ukis-csmask CSmask |\n"
          "|---|---|---|---|")
    for engine, m in maps.items():
        share = ", ".join(f"{np.mean(m == k):.3f}" for k in range(3))
        print(f"| predict --engine {engine} | {share} | {np.mean(m == direct):.2%} "
              f"| {np.mean(m == own):.2%} |")
    own_share = ", ".join(f"{np.mean(own == k):.3f}" for k in range(3))
    print(f"| (ukis-csmask CSmask itself) | {own_share} | {np.mean(own == direct):.2%} | |")


if __name__ == "__main__":
    main()
