"""Products as input (Sentinel-2 .SAFE/zip, STAC items, band files) and bands by name.

The products are built in ``tmp_path`` from the real BigEarthNet L2A pixels of
``../shared/data/sentinel2/bigearthnet`` (one file per band at native 10/20/60 m), written
as lossless JPEG 2000 at their native resolution with processing baseline 04.00's
``BOA_ADD_OFFSET`` of -1000 (``DN = reflectance x 10000 + 1000``). Predicting a product
must equal predicting the stack built here independently with rasterio (bilinear reads of
the 20/60 m bands onto the 10 m grid, offset removed), byte for byte.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.enums import Resampling

from geoseg.bands import band_key, family_of, match_bands
from geoseg.errors import BandMismatchError, InputError

from .conftest import TINY_ARCH, read, shared

PATCH = ("sentinel2", "bigearthnet", "S2A_MSIL2A_20170613T101031_87_48")
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
      "B12"]
RES = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
       "B08": 10, "B8A": 20, "B09": 60, "B11": 20, "B12": 20}
#: Dynamic World's input bands, as its bundle names them.
DW = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12"]
SAFE_NAME = "S2A_MSIL2A_20170613T101031_N0400_R022_T33TWM_20170613T101031.SAFE"
GRANULE = "GRANULE/L2A_T33TWM_A010285_20170613T101031"


def _mtd(image_files: list[str], *, baseline: str = "04.00", offsets: bool = True) -> str:
    offs = "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
    spectral = "".join(f'<Spectral_Information bandId="{i}" physicalBand="B{b[1:].lstrip("0")}"/>'
                       for i, b in enumerate(S2))
    files = "".join(f"<IMAGE_FILE>{f}</IMAGE_FILE>" for f in image_files)
    offset_list = f"<BOA_ADD_OFFSET_VALUES_LIST>{offs}</BOA_ADD_OFFSET_VALUES_LIST>" \
        if offsets else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
<n1:General_Info><Product_Info><PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
<PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE><PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
<Product_Organisation><Granule_List><Granule granuleIdentifier="L2A_T33TWM" imageFormat="JPEG2000">
{files}</Granule></Granule_List></Product_Organisation></Product_Info>
<Product_Image_Characteristics><Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
<SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
</QUANTIFICATION_VALUES_LIST>{offset_list}
<Spectral_Information_List>{spectral}</Spectral_Information_List>
</Product_Image_Characteristics></n1:General_Info></n1:Level-2A_User_Product>"""


def _band_file(patch: Path, band: str) -> Path:
    return next(patch.glob(f"*_{band}.tif"))


def build_safe(patch: Path, root: Path, *, baseline: str = "04.00", offsets: bool = True,
               scl: np.ndarray | None = None, crs: dict[str, str] | None = None) -> Path:
    """A .SAFE folder of ``patch``'s bands: JP2 at native resolution, DN + 1000."""
    safe = root / SAFE_NAME
    files = []
    for band, res in RES.items():
        rel = f"{GRANULE}/IMG_DATA/R{res}m/T33TWM_20170613T101031_{band}_{res}m"
        path = safe / (rel + ".jp2")
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(_band_file(patch, band)) as src:
            dn = src.read(1).astype(np.uint16)
            profile = {"driver": "JP2OpenJPEG", "width": src.width, "height": src.height,
                       "count": 1, "dtype": "uint16", "transform": src.transform,
                       "crs": (crs or {}).get(band, src.crs)}
        with rasterio.open(path, "w", QUALITY=100, REVERSIBLE="YES", **profile) as dst:
            dst.write(np.where(dn > 0, dn + 1000, 0).astype(np.uint16), 1)
        files.append(rel)
    if scl is not None:
        rel = f"{GRANULE}/IMG_DATA/R20m/T33TWM_20170613T101031_SCL_20m"
        with rasterio.open(_band_file(patch, "B05")) as src:
            profile = {"driver": "JP2OpenJPEG", "width": 60, "height": 60, "count": 1,
                       "dtype": "uint8", "transform": src.transform, "crs": src.crs}
        with rasterio.open(safe / (rel + ".jp2"), "w", QUALITY=100, REVERSIBLE="YES",
                           **profile) as dst:
            dst.write(scl.astype(np.uint8), 1)
        files.append(rel)
    (safe / "MTD_MSIL2A.xml").write_text(_mtd(files, baseline=baseline, offsets=offsets))
    return safe


def zip_safe(safe: Path, dst: Path) -> Path:
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(safe.rglob("*")):
            if f.is_file():
                zf.write(f, f"{safe.name}/{f.relative_to(safe).as_posix()}")
    return dst


def stac_item(safe: Path, dst: Path, *, usable: bool = True) -> Path:
    """A STAC item whose assets are the SAFE's band files (reflectance scale/offset)."""
    assets = {}
    for jp2 in sorted(safe.rglob("*_B*_*m.jp2")):
        band = jp2.stem.split("_")[-2]
        assets[band] = {
            "href": str(jp2.relative_to(dst.parent)) if usable else str(jp2) + ".missing.txt",
            "type": "image/jp2" if usable else "text/plain", "roles": ["data"],
            "eo:bands": [{"name": band}],
            "raster:bands": [{"nodata": 0, "scale": 0.0001, "offset": -0.1}]}
    item = {"type": "Feature", "stac_version": "1.0.0", "id": SAFE_NAME[:-5],
            "properties": {"constellation": "sentinel-2", "s2:processing_baseline": "04.00",
                           "processing:level": "L2A"},
            "geometry": None, "links": [], "assets": assets}
    dst.write_text(json.dumps(item))
    return dst


def expected_stack(safe: Path, bands: list[str]) -> np.ndarray:
    """The model input, built independently: bilinear reads onto 10 m, minus 1000."""
    out = []
    for band in bands:
        jp2 = next(safe.rglob(f"*_{band}_{RES[band]}m.jp2"))
        with rasterio.open(jp2) as src:
            dn = src.read(1, out_shape=(120, 120), out_dtype="float32",
                          resampling=Resampling.bilinear)
        out.append(np.where(dn > 0, dn - 1000, np.nan).astype(np.float32))
    return np.stack(out)


def write_stack(data: np.ndarray, like: Path, dst: Path, names: list[str] | None = None) -> Path:
    with rasterio.open(_band_file(like, "B02")) as src:
        profile = {"driver": "GTiff", "width": 120, "height": 120, "count": len(data),
                   "dtype": "float32", "crs": src.crs, "transform": src.transform,
                   "nodata": float("nan")}
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        for i, name in enumerate(names or []):
            out.set_band_description(i + 1, name)
    return dst


@pytest.fixture(scope="module")
def patch() -> Path:
    return shared(*PATCH)


@pytest.fixture(scope="module")
def tiny9(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 9-band model with Dynamic World's band names (untrained: I/O tests)."""
    import torch

    from geoseg.models.architectures import build_model
    from geoseg.models.bundle import save_bundle
    from geoseg.models.spec import ClassInfo, ModelSpec

    torch.manual_seed(3)
    spec = ModelSpec(architecture="unet", backbone="resnet18", bands=tuple(DW),
                     mean=(1500.0,) * 9, std=(1000.0,) * 9,
                     classes=tuple(ClassInfo(i, f"c{i}", (40 * i, 90, 200 - 40 * i))
                                   for i in range(4)),
                     tile_size=64, overlap=16, gsd_m=10.0, arch_params=dict(TINY_ARCH),
                     input_kind="Sentinel-2 L1C top-of-atmosphere reflectance x 10000",
                     provenance={"trained_by": "tests/test_products.py"})
    path = tmp_path_factory.mktemp("tiny9") / "tiny9.safetensors"
    save_bundle(path, build_model(spec).eval(), spec)
    return path


@pytest.fixture(scope="module")
def safe(patch: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_safe(patch, tmp_path_factory.mktemp("safe"))


def _cli(args: list[str]) -> tuple[int, str]:
    from geoseg.cli.main import cli

    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.output


# ----------------------------------------------------------------------- bands by name

def test_band_table_and_sensor_rule() -> None:
    s2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    assert match_bands(DW, s2) == (2, 3, 4, 5, 6, 7, 8, 11, 12)
    assert match_bands(["red", "green", "blue"], s2) == (4, 3, 2)
    assert match_bands(["nir08"], s2) == (9,)  # B8A, not B08
    # B5 is red edge on Sentinel-2, near infrared on Landsat 8: the family decides
    assert band_key("B5", "sentinel2") == "rededge071" != band_key("B5", "landsat-oli")
    landsat = ["B1", "B2", "B3", "B4", "B5", "B6", "B7"]
    assert match_bands(["SR_B5", "SR_B4"], landsat, scene_family="landsat-oli") == (5, 4)
    assert match_bands(["nir"], landsat, scene_family="landsat-oli") == (5,)  # nir08 fallback
    assert family_of(DW) == "sentinel2" and family_of(["B4", "B3", "B2"]) is None
    with pytest.raises(BandMismatchError, match=r"lacks band B05: the model needs B02,B05; "
                                                r"s has B02,B03$"):
        match_bands(["B02", "B05"], ["B02", "B03"], scene="s")


def test_bands_option_takes_names(patch: Path, tmp_path: Path, tiny_bundle: Path) -> None:
    """--bands B04,B03,B02 on a described 12-band stack = --bands 4,3,2, byte for byte."""
    names = [b for b in S2 if b != "B10"]
    data = np.stack([read(_band_file(patch, b)) for b in names if RES[b] == 10] * 3
                    )[:12].astype(np.float32) / 20
    stack = write_stack(data, patch, tmp_path / "s.tif", names)
    code, out = _cli(["predict", str(stack), "-o", str(tmp_path / "n.tif"), "-m",
                      str(tiny_bundle), "--bands", "B04,B03,B02", "-q"])
    assert code == 0, out
    code, out = _cli(["predict", str(stack), "-o", str(tmp_path / "i.tif"), "-m",
                      str(tiny_bundle), "--bands", "4,3,2", "-q"])
    assert code == 0, out
    assert np.array_equal(read(tmp_path / "n.tif"), read(tmp_path / "i.tif"))
    code, out = _cli(["predict", str(stack), "-o", str(tmp_path / "x.tif"), "-m",
                      str(tiny_bundle), "--bands", "B04,red,B8A,B10", "-q"])
    assert code != 0 and out.strip().count("\n") == 0 and "lacks band B10" in out


# ---------------------------------------------------------------------------- products

def test_safe_equals_stack(safe: Path, patch: Path, tiny9: Path, tmp_path: Path) -> None:
    from geoseg.io import open_scene, read_window
    from geoseg.prediction.pipeline import predict

    scene = open_scene(safe, want=DW)
    assert scene.shape == (120, 120) and scene.level == "L2A" and scene.family == "sentinel2"
    assert scene.band_names == tuple(b for b in S2 if b != "B10")
    ref = expected_stack(safe, [f"B{int(b[1:]):02d}" for b in DW])
    idx = match_bands(DW, scene.band_names)
    data, _ = read_window(scene.path, idx, (0, 120), (0, 120), with_mask=False)
    assert np.array_equal(data, ref, equal_nan=True)  # exact, 20 m bands resampled
    original = np.stack([read(_band_file(patch, f"B{int(b[1:]):02d}"), 1) for b in DW[:3]])
    assert np.array_equal(data[:3], original.astype(np.float32))  # the offset is undone
    stack = write_stack(ref, patch, tmp_path / "stack.tif")
    with pytest.warns(UserWarning, match="is an L2A product but model .* trained on L1C"):
        a = predict(safe, tmp_path / "safe.tif", model=tiny9)
    b = predict(stack, tmp_path / "stack_map.tif", model=tiny9)
    assert (a.height, a.width) == (120, 120)
    assert np.array_equal(read(a.output), read(b.output))
    assert len(np.unique(read(a.output))) > 1  # a map, not a constant


@pytest.mark.parametrize("kind", ["zip", "stac", "folder", "list"])
def test_other_products_equal_safe(kind: str, safe: Path, tiny9: Path, tmp_path: Path) -> None:
    code, out = _cli(["predict", str(safe), "-o", str(tmp_path / "safe.tif"), "-m",
                      str(tiny9), "-q"])
    assert code == 0, out
    if kind == "zip":
        src = str(zip_safe(safe, tmp_path / "S2.zip"))
    elif kind == "stac":
        local = tmp_path / "p"
        shutil.copytree(safe, local / safe.name)
        src = str(stac_item(local / safe.name, local / "item.json"))
    else:  # reflectance-shifted files are given as they are: use the original patch
        patch = shared(*PATCH)
        files = [str(_band_file(patch, f"B{int(b[1:]):02d}")) for b in DW]
        if kind == "folder":
            folder = tmp_path / "bands"
            folder.mkdir()
            for f in files:
                shutil.copy(f, folder)
            src = str(folder)
        else:
            src = ",".join(files)
    code, out = _cli(["predict", src, "-o", str(tmp_path / "p.tif"), "-m", str(tiny9)])
    assert code == 0, out
    got, want = read(tmp_path / "p.tif"), read(tmp_path / "safe.tif")
    if kind in ("zip", "stac"):
        assert np.array_equal(got, want)
    else:  # uint16 band files have no offset and no nodata: same pixels, float32 reads
        assert (got == want).mean() > 0.999
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert ds.crs.to_epsg() == 32633 and ds.transform == Affine(10, 0, 404400, 0, -10,
                                                                     5342400)


def test_mask_clouds(patch: Path, tiny9: Path, tmp_path: Path) -> None:
    """SCL classes 3, 8, 9, 10 become nodata (a synthetic SCL over the real pixels)."""
    scl = np.full((60, 60), 4, np.uint8)  # vegetation
    scl[10:20, 10:30] = 9  # cloud, high probability
    scl[40:50, 0:10] = 3  # cloud shadow
    scl[0:5, 50:60] = 10  # cirrus
    safe = build_safe(patch, tmp_path, scl=scl)
    code, out = _cli(["predict", str(safe), "-o", str(tmp_path / "m.tif"), "-m", str(tiny9),
                      "--mask", "clouds"])
    assert code == 0, out
    got = read(tmp_path / "m.tif")
    cloud = np.kron(np.isin(scl, (3, 8, 9, 10)), np.ones((2, 2), bool))
    assert np.array_equal(got == 255, cloud)
    code, out = _cli(["predict", str(_band_file(patch, "B02")), "-o", str(tmp_path / "x.tif"),
                      "-m", str(tiny9), "--mask", "clouds"])
    assert code != 0 and "needs a product" in out


def test_auto_model(safe: Path, scene_path: Path) -> None:
    from geoseg.io import open_scene
    from geoseg.models import DEFAULT_MODELS
    from geoseg.prediction.pipeline import auto_model

    name, why = auto_model(open_scene(safe))
    if "dynamicworld" in DEFAULT_MODELS:
        assert (name, why) == ("dynamicworld", "default for a Sentinel-2 product")
    assert auto_model(open_scene(scene_path)) == ("deeplab", "default for RGB scenes")


def test_predict_safe_without_model(safe: Path, tmp_path: Path) -> None:
    from geoseg.models import DEFAULT_MODELS, default_model_path

    if "dynamicworld" not in DEFAULT_MODELS or not default_model_path("dynamicworld").is_file():
        pytest.skip("the dynamicworld default model is not installed")
    code, out = _cli(["predict", str(safe), "-o", str(tmp_path / "lulc.tif"),
                      "--engine", "eager"])
    assert code == 0, out
    assert "[dynamicworld (default for a Sentinel-2 product)" in out
    assert "is an L2A product but model dynamicworld was trained on L1C" in out
    with rasterio.open(tmp_path / "lulc.tif") as ds:
        assert ds.count == 1 and ds.crs.to_epsg() == 32633
        assert len(ds.tags()["class_names"].split(",")) == 9


# --------------------------------------------------------------------------- bad input

def _bad(case: str, patch: Path, tmp: Path) -> str:
    if case == "missing band file":
        safe = build_safe(patch, tmp)
        next(safe.rglob("*_B05_20m.jp2")).unlink()
        return str(safe)
    if case == "no usable assets":
        safe = build_safe(patch, tmp)
        return str(stac_item(safe, tmp / "item.json", usable=False))
    if case == "different CRSs":
        return str(build_safe(patch, tmp, crs={"B05": "EPSG:32634"}))
    if case == "no offset metadata":
        return str(build_safe(patch, tmp, offsets=False))
    if case == "zip not a product":
        with zipfile.ZipFile(tmp / "x.zip", "w") as zf:
            zf.writestr("readme.txt", "hello")
        return str(tmp / "x.zip")
    assert case == "band the model needs is missing"
    return ",".join(str(_band_file(patch, b)) for b in ("B02", "B03", "B04"))


@pytest.mark.parametrize(("case", "message"), [
    ("missing band file", "_B05_20m.jp2 listed in MTD_MSIL2A.xml is missing"),
    ("no usable assets", "has no usable band asset"),
    ("different CRSs", "bands are on different CRSs (B01: EPSG:32633, B05: EPSG:32634)"),
    ("no offset metadata", "L2A processing baseline 04.00 stores reflectance with an offset"),
    ("zip not a product", "is not a Sentinel-2 product zip"),
    ("band the model needs is missing", "lacks bands B5,B6,B7,B8,B11,B12: the model needs "
                                        "B2,B3,B4,B5,B6,B7,B8,B11,B12;"),
])
def test_bad_products(case: str, message: str, patch: Path, tiny9: Path, tmp_path: Path) -> None:
    src = _bad(case, patch, tmp_path)
    code, out = _cli(["predict", src, "-o", str(tmp_path / "o.tif"), "-m", str(tiny9)])
    assert code != 0
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], out
    assert "Traceback" not in out and not (tmp_path / "o.tif").exists()
    from geoseg.io import open_scene, select_bands

    def library() -> None:  # the library raises the same error
        select_bands(open_scene(src, want=DW), None, 9, DW)

    with pytest.raises(InputError):
        library()


# ---------------------------------------------------------------------------- Landsat

LANDSAT_ID = "LC08_L2SP_015033_20200101_20200115_02_T1"


def build_landsat(root: Path, *, qa_cloud: bool = False) -> tuple[Path, np.ndarray]:
    """A Landsat C2 L2 folder from rasterio's real Landsat 7 RGB crop (RGB.byte.tif).

    The 8-bit red/green/blue become SR_B4/SR_B3/SR_B2 in uint16 surface-reflectance DNs
    (``DN = (reflectance + 0.2) / 2.75e-05``, reflectance = value / 255 x 0.3); SR_B1,
    SR_B5..SR_B7 are made from them (synthetic). Returns the folder and the reflectance x
    10000 stack the product should read as (SR_B1..SR_B7).
    """
    rgb_path = shared("landsat", "RGB.byte.tif")
    with rasterio.open(rgb_path) as src:
        win = rasterio.windows.Window(200, 200, 256, 224)
        rgb = src.read(window=win).astype(np.float64)
        transform, crs = src.window_transform(win), src.crs
    valid = rgb.any(axis=0)
    r, g, b = rgb / 255 * 0.3
    refl = np.stack([0.9 * b, b, g, r, 0.5 * g + 1.2 * r, 0.8 * r + 0.1, 0.6 * r + 0.05])
    dn = np.where(valid, np.round((refl + 0.2) / 2.75e-05), 0).astype(np.uint16)
    folder = root / LANDSAT_ID
    folder.mkdir()
    profile = {"driver": "GTiff", "width": 256, "height": 224, "count": 1, "dtype": "uint16",
               "crs": crs, "transform": transform, "nodata": 0}
    mtl = ["GROUP = LANDSAT_METADATA_FILE", "  GROUP = PRODUCT_CONTENTS",
           f'    LANDSAT_PRODUCT_ID = "{LANDSAT_ID}"', '    PROCESSING_LEVEL = "L2SP"']
    for n in range(1, 8):
        name = f"{LANDSAT_ID}_SR_B{n}.TIF"
        with rasterio.open(folder / name, "w", **profile) as dst:
            dst.write(dn[n - 1], 1)
        mtl.append(f'    FILE_NAME_BAND_{n} = "{name}"')
    qa = np.where(valid, 21824, 1).astype(np.uint16)  # clear land / fill
    if qa_cloud:
        qa[50:100, 60:140] = 22280  # cloud, high confidence (bit 3)
    with rasterio.open(folder / f"{LANDSAT_ID}_QA_PIXEL.TIF", "w", **profile) as dst:
        dst.write(qa, 1)
    mtl += [f'    FILE_NAME_QUALITY_L1_PIXEL = "{LANDSAT_ID}_QA_PIXEL.TIF"',
            "  END_GROUP = PRODUCT_CONTENTS", "  GROUP = IMAGE_ATTRIBUTES",
            '    SPACECRAFT_ID = "LANDSAT_8"', "    SUN_ELEVATION = 25.0",
            "  END_GROUP = IMAGE_ATTRIBUTES",
            "  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"]
    mtl += [f"    REFLECTANCE_MULT_BAND_{n} = 2.75E-05\n    REFLECTANCE_ADD_BAND_{n} = -0.200000"
            for n in range(1, 8)]
    mtl += ["  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS",
            "END_GROUP = LANDSAT_METADATA_FILE", "END"]
    (folder / f"{LANDSAT_ID}_MTL.txt").write_text("\n".join(mtl) + "\n")
    expect = np.where(valid, dn.astype(np.float32) * np.float32(0.275) - np.float32(2000),
                      np.nan).astype(np.float32)
    return folder, expect


def test_landsat_folder_train_and_predict(tmp_path: Path) -> None:
    """geoseg train on a Landsat C2 L2 folder (names SR_B1..SR_B7), then predict it."""
    from geoseg.io import open_scene, read_window
    from geoseg.models.bundle import read_spec

    folder, expect = build_landsat(tmp_path)
    scene = open_scene(folder)
    assert scene.band_names == tuple(f"SR_B{n}" for n in range(1, 8))
    assert scene.family == "landsat-oli" and scene.level == "L2"
    data, _ = read_window(scene.path, range(1, 8), (0, 224), (0, 256), with_mask=False)
    assert np.allclose(data, expect, equal_nan=True, atol=0.01)  # reflectance x 10000
    red = np.nan_to_num(expect[3])
    labels = np.where(red > 1500, 2, np.where(red > 900, 1, 0)).astype(np.uint8)
    with rasterio.open(folder / f"{LANDSAT_ID}_SR_B4.TIF") as src:
        prof = {**src.profile, "dtype": "uint8", "nodata": None}
    with rasterio.open(tmp_path / "labels.tif", "w", **prof) as dst:
        dst.write(labels, 1)
    model = tmp_path / "landsat.safetensors"
    code, out = _cli(["train", str(folder), "--labels", str(tmp_path / "labels.tif"),
                      "-o", str(model), "--model", "pixel", "--arch-param", "hidden=16",
                      "--crop-size", "32", "--tile-size", "64", "--overlap", "8",
                      "--batch-size", "8", "--steps-per-epoch", "10", "--epochs", "2",
                      "--device", "cpu", "--precision", "fp32", "-q"])
    assert code == 0, out
    assert read_spec(model).bands == tuple(f"SR_B{n}" for n in range(1, 8))
    code, out = _cli(["predict", str(folder), "-m", str(model), "-o", str(tmp_path / "m.tif")])
    assert code == 0, out
    got = read(tmp_path / "m.tif")
    assert got.shape == (224, 256)
    assert np.array_equal(got == 255, np.isnan(expect[0]))  # fill is nodata, the rest mapped
    # the product's values read as the 7-band stack would: same map from the stack
    stack = tmp_path / "stack.tif"
    with rasterio.open(folder / f"{LANDSAT_ID}_SR_B1.TIF") as src:
        prof = {**src.profile, "count": 7, "dtype": "float32", "nodata": float("nan")}
    with rasterio.open(stack, "w", **prof) as dst:
        dst.write(data)
    code, out = _cli(["predict", str(stack), "-m", str(model), "-o", str(tmp_path / "s.tif"),
                      "-q"])
    assert code == 0, out
    assert np.array_equal(read(tmp_path / "s.tif"), got)


def test_landsat_mask_clouds(tmp_path: Path, tiny_bundle: Path) -> None:
    """QA_PIXEL cloud bits become nodata with --mask clouds."""
    folder, expect = build_landsat(tmp_path, qa_cloud=True)
    code, out = _cli(["predict", str(folder), "-m", str(tiny_bundle), "--bands",
                      "red,green,blue", "--mask", "clouds", "-o", str(tmp_path / "m.tif")])
    assert code == 0, out
    got = read(tmp_path / "m.tif")
    want = np.isnan(expect[0])
    want[50:100, 60:140] = True
    assert np.array_equal(got == 255, want)


# ----------------------------------------------------------------- Sentinel-2 L1C

def build_l1c(root: Path, *, classi: bool = True) -> tuple[Path, np.ndarray]:
    """An L1C .SAFE (baseline 04.00, RADIO_ADD_OFFSET -1000) of the real Slovenian L1C scene.

    All 13 bands as lossless JP2 on the scene's 10 m grid (``DN = value + 1000``), plus a
    synthetic ``MSK_CLASSI_B00`` (opaque clouds, cirrus, snow). Returns the folder and the
    original 13-band values.
    """
    tif = shared("sentinel2", "slovenia_eolearn", "S2_L1C_2015-07-11.tif")
    with rasterio.open(tif) as src:
        data = src.read()
        profile = {"driver": "JP2OpenJPEG", "width": src.width, "height": src.height,
                   "count": 1, "dtype": "uint16", "crs": src.crs, "transform": src.transform}
    safe = root / "S2A_MSIL1C_20150711T100006_N0400_R122_T33TVM_20150711T100006.SAFE"
    granule = "GRANULE/L1C_T33TVM_A000418_20150711T100006"
    (safe / granule / "IMG_DATA").mkdir(parents=True)
    (safe / granule / "QI_DATA").mkdir()
    files = []
    for i, band in enumerate(S2):
        rel = f"{granule}/IMG_DATA/T33TVM_20150711T100006_{band}"
        with rasterio.open(safe / (rel + ".jp2"), "w", QUALITY=100, REVERSIBLE="YES",
                           **profile) as dst:
            dst.write((data[i] + 1000).astype(np.uint16), 1)
        files.append(rel)
    if classi:
        flags = np.zeros((3, data.shape[1], data.shape[2]), np.uint8)
        flags[0, 10:30, 20:50] = 1  # opaque clouds
        flags[1, 60:70, 0:20] = 1  # cirrus
        flags[2, 80:90, 40:60] = 1  # snow: not a cloud
        with rasterio.open(safe / granule / "QI_DATA" / "MSK_CLASSI_B00.jp2", "w",
                           QUALITY=100, REVERSIBLE="YES", **{**profile, "count": 3,
                                                              "dtype": "uint8"}) as dst:
            dst.write(flags)
    offs = "".join(f'<RADIO_ADD_OFFSET band_id="{i}">-1000</RADIO_ADD_OFFSET>'
                   for i in range(13))
    spectral = "".join(f'<Spectral_Information bandId="{i}" physicalBand="B{b[1:].lstrip("0")}"/>'
                       for i, b in enumerate(S2))
    listed = "".join(f"<IMAGE_FILE>{f}</IMAGE_FILE>" for f in files)
    (safe / "MTD_MSIL1C.xml").write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
<n1:General_Info><Product_Info><PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL>
<PRODUCT_TYPE>S2MSI1C</PRODUCT_TYPE><PROCESSING_BASELINE>04.00</PROCESSING_BASELINE>
<Product_Organisation><Granule_List><Granule>{listed}</Granule></Granule_List>
</Product_Organisation></Product_Info><Product_Image_Characteristics>
<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
<Radiometric_Offset_List>{offs}</Radiometric_Offset_List>
<Spectral_Information_List>{spectral}</Spectral_Information_List>
</Product_Image_Characteristics></n1:General_Info></n1:Level-1C_User_Product>""")
    return safe, data


def test_l1c_safe_values_and_classi_mask(tmp_path: Path, tiny9: Path) -> None:
    """L1C baseline 04.00: RADIO_ADD_OFFSET undone; MSK_CLASSI clouds and cirrus masked."""
    import warnings

    from geoseg.io import open_scene, read_window
    from geoseg.prediction.pipeline import predict

    safe, data = build_l1c(tmp_path)
    scene = open_scene(safe, want=DW)
    assert scene.level == "L1C" and scene.band_names == tuple(S2)
    got, _ = read_window(scene.path, range(1, 14), (0, 101), (0, 100), with_mask=False)
    assert np.array_equal(got, data.astype(np.float32))  # DN - 1000 = the L1C values
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an L1C product into an L1C model: no warning
        predict(safe, tmp_path / "plain.tif", model=tiny9)
    r = predict(safe, tmp_path / "m.tif", model=tiny9, mask="clouds")
    flagged = np.zeros((101, 100), bool)
    flagged[10:30, 20:50] = flagged[60:70, 0:20] = True
    assert np.array_equal(read(r.output) == 255, flagged)  # snow stays data


def test_stac_item_common_name_keys_and_duplicate_assets(safe: Path, tmp_path: Path) -> None:
    """Earth Search style: assets keyed by common name, each band also as a ``-jp2`` asset."""
    from geoseg.bands import band_key as key
    from geoseg.io import open_scene
    from geoseg.sources import read_product

    common = {b: key(b, "sentinel2") for b in RES}
    assets = {}
    for jp2 in sorted(safe.rglob("*_B*_*m.jp2")):
        band = jp2.stem.split("_")[-2]
        entry = {"href": str(jp2), "type": "image/jp2", "roles": ["data"],
                 "eo:bands": [{"name": common[band], "common_name": common[band]}],
                 "raster:bands": [{"nodata": 0, "scale": 0.0001, "offset": -0.1}]}
        assets[common[band]] = entry
        assets[f"{common[band]}-jp2"] = {**entry, "eo:bands": [{"name": band}]}
    assets["visual"] = {"href": str(safe / "TCI.tif"), "type": "image/tiff",
                        "eo:bands": [{"name": "B04"}, {"name": "B03"}, {"name": "B02"}]}
    item = {"type": "Feature", "id": "S2A_33TWM_20170613_0_L2A", "assets": assets,
            "properties": {"platform": "sentinel-2a", "processing:level": "L2A"}}
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item))
    product = read_product(path)
    assert len(product.bands) == 12 and product.level == "L2A"
    scene = open_scene(path, want=DW)
    assert len(match_bands(DW, scene.band_names, scene_family=scene.family)) == 9
    assert {b.offset for b in product.bands} == {-1000.0}


def test_tile_reads_a_product(safe: Path, patch: Path, tmp_path: Path) -> None:
    """geoseg tile cuts a .SAFE like a GeoTIFF: chips of its bands in reflectance x 10000."""
    labels = tmp_path / "labels.tif"
    with rasterio.open(_band_file(patch, "B02")) as src:
        prof = {**src.profile, "dtype": "uint8", "nodata": None}
        blue = src.read(1)
    with rasterio.open(labels, "w", **prof) as dst:
        dst.write((blue > np.median(blue)).astype(np.uint8), 1)
    code, out = _cli(["tile", str(safe), "--labels", str(labels), "-o", str(tmp_path / "c"),
                      "--size", "64", "--bands", "B04,B03,B02"])
    assert code == 0, out
    chips = sorted((tmp_path / "c" / "images").glob("*.tif"))
    assert len(chips) == 4 and chips[0].name.startswith(SAFE_NAME[:-5])
    with rasterio.open(chips[0]) as ds:
        assert ds.count == 3 and ds.dtypes[0] == "float32"
        red = ds.read(1)
    want = read(_band_file(patch, "B04"))[:64, :64].astype(np.float32)
    assert np.array_equal(red, want)


def test_l1c_safe_dynamicworld_no_other_flag(tmp_path: Path) -> None:
    """The issue's bar: ``geoseg predict S2..MSIL1C...SAFE -o lulc.tif --model dynamicworld``."""
    from geoseg.models import DEFAULT_MODELS, default_model_path, resolve_spec

    if "dynamicworld" not in DEFAULT_MODELS or not default_model_path("dynamicworld").is_file():
        pytest.skip("the dynamicworld default model is not installed")
    safe, _ = build_l1c(tmp_path, classi=False)
    code, out = _cli(["predict", str(safe), "-o", str(tmp_path / "lulc.tif"), "--model",
                      "dynamicworld"])
    assert code == 0, out
    assert "trained on" not in out  # L1C into an L1C model: no level warning
    spec = resolve_spec("dynamicworld")
    with rasterio.open(tmp_path / "lulc.tif") as ds:
        assert ds.crs.to_epsg() == 32633 and (ds.width, ds.height) == (100, 101)
        cmap = ds.colormap(1)
        assert [cmap[c.id][:3] for c in spec.classes] == [c.color for c in spec.classes]
        assert set(np.unique(ds.read(1))) <= {c.id for c in spec.classes}


def test_bilinear_resampling_leaves_the_nodata_ring_out(tmp_path: Path) -> None:
    """A 20 m band's nodata (DN 0, undeclared in the file, as in S2 JP2s) is not blended in.

    Without the nodata-aware resampling, pixels next to the ring read as a mix of valid
    values and ``0 * 1 - 1000``, well below any valid value.
    """
    safe = tmp_path / "S2A_MSIL1C_20200101T000000_N0400_R001_T33TWM_20200101T000000.SAFE"
    img = safe / "GRANULE/L1C_T33TWM_A000001_20200101T000000/IMG_DATA"
    img.mkdir(parents=True)
    rng = np.random.default_rng(0)
    b04 = rng.integers(1500, 2500, (40, 40)).astype(np.uint16)
    b05 = rng.integers(3000, 4000, (20, 20)).astype(np.uint16)
    b04[:, :16], b05[:, :8] = 0, 0  # the tile's nodata edge: 160 m in both bands
    b05[8:12, 12:16] = 0  # and a nodata hole in the 20 m band only
    files = []
    for band, arr, res in (("B04", b04, 10), ("B05", b05, 20)):
        rel = f"{img.relative_to(safe)}/T33TWM_20200101T000000_{band}"
        with rasterio.open(safe / f"{rel}.tif", "w", driver="GTiff", width=arr.shape[1],
                           height=arr.shape[0], count=1, dtype="uint16", crs="EPSG:32633",
                           transform=Affine(res, 0, 500000, 0, -res, 5000000)) as dst:
            dst.write(arr, 1)  # no nodata declared in the file
        files.append(rel)
    listed = "".join(f"<IMAGE_FILE>{f}</IMAGE_FILE>" for f in files)
    offs = "".join(f'<RADIO_ADD_OFFSET band_id="{i}">-1000</RADIO_ADD_OFFSET>' for i in (3, 4))
    (safe / "MTD_MSIL1C.xml").write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
<n1:General_Info><Product_Info><PROCESSING_BASELINE>04.00</PROCESSING_BASELINE>
<Product_Organisation><Granule_List><Granule>{listed}</Granule></Granule_List>
</Product_Organisation></Product_Info><Product_Image_Characteristics>
<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
<Radiometric_Offset_List>{offs}</Radiometric_Offset_List>
<Spectral_Information_List><Spectral_Information bandId="3" physicalBand="B4"/>
<Spectral_Information bandId="4" physicalBand="B5"/></Spectral_Information_List>
</Product_Image_Characteristics></n1:General_Info></n1:Level-1C_User_Product>""")
    from geoseg.io import open_scene

    scene = open_scene(safe)
    assert scene.band_names == ("B04", "B05") and scene.shape == (40, 40)
    with rasterio.open(scene.path) as src:
        got = src.read()
    valid = b05[b05 > 0].astype(float) - 1000
    out = got[1][~np.isnan(got[1])]
    assert out.size > 0.4 * 40 * 40  # most of the valid area reads as values
    assert out.min() >= valid.min() and out.max() <= valid.max()
    # where every band is nodata, the scene is nodata (NaN in every band)
    assert np.isnan(got[:, :, :15]).all()
    assert (got[0][:, 16:] == b04[:, 16:] - 1000.0).all()
