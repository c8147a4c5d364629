"""XYZ chips and footprints in, as published: tile, train, predict, vectorize and score.

Generated chips: a 3x3 block of zoom-19 XYZ PNGs named ``OAM-X-Y-19.png``, RGB and RGBA
mixed (the RGBA chips have a transparent top strip), bright square roofs on darker ground,
and the roofs as GeoJSON footprints in EPSG:4326 whose only attribute is ``osm_id`` (null
for half of them), as OSM exports are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from geoseg.cli.main import cli
from rasterio.enums import ColorInterp

from geoseg.errors import InputError
from geoseg.mosaic import chip_files, chip_mosaic
from geoseg.xyz import tile_transform

Z, X0, Y0 = 19, 386690, 220241
CHIP = 64
STRIP = 10  # transparent rows at the top of each RGBA chip


def _chips(root: Path, *, n: int = 3) -> tuple[Path, Path]:
    """Write ``n x n`` XYZ chips and their footprints; return (chip folder, footprints)."""
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(0)
    folder = root / "chips"
    folder.mkdir()
    houses = []
    for i in range(n):
        for j in range(n):
            rgba = (i + j) % 2 == 1
            img = rng.normal(70, 8, (3, CHIP, CHIP)).clip(0, 255)
            t = tile_transform(Z, X0 + i, Y0 + j, CHIP, CHIP)
            for r0, c0 in ((14, 8), (14, 36), (40, 20)):
                img[:, r0:r0 + 14, c0:c0 + 16] = rng.normal(200, 8, (3, 14, 16)).clip(0, 255)
                x0, y0 = t * (c0, r0)
                x1, y1 = t * (c0 + 16, r0 + 14)
                houses.append(shapely.box(x0, y1, x1, y0))
            bands = [*img.astype(np.uint8)]
            if rgba:
                alpha = np.full((CHIP, CHIP), 255, np.uint8)
                alpha[:STRIP] = 0
                bands.append(alpha)
            with rasterio.open(folder / f"OAM-{X0 + i}-{Y0 + j}-{Z}.png", "w", driver="PNG",
                               width=CHIP, height=CHIP, count=len(bands),
                               dtype="uint8") as dst:
                dst.write(np.stack(bands))
    gdf = gpd.GeoDataFrame({"osm_id": [None if k % 2 else 1000 + k for k in range(len(houses))]},
                           geometry=houses, crs="EPSG:3857").to_crs("EPSG:4326")
    footprints = root / "footprints.geojson"
    gdf.to_file(footprints, driver="GeoJSON")
    return folder, footprints


def _per_class(report: Path, key: str) -> dict[str, float]:
    return {c["name"]: c[key] for c in json.loads(report.read_text())["classes"]}


@pytest.fixture
def chips(tmp_path: Path) -> tuple[Path, Path]:
    return _chips(tmp_path)


def test_chip_mosaic_places_chips_and_masks_alpha(chips: tuple[Path, Path]) -> None:
    folder, _ = chips
    paths = chip_files(folder)
    assert paths is not None and len(paths) == 9
    assert chip_files(str(folder / "*.png")) == paths
    with chip_mosaic(folder) as vrt, rasterio.open(vrt) as src:
        assert src.crs == "EPSG:3857" and src.count == 3 and src.shape == (3 * CHIP, 3 * CHIP)
        assert src.transform.almost_equals(tile_transform(Z, X0, Y0, CHIP, CHIP))
        mask = src.read_masks(1) > 0
        first = rasterio.open(paths[0]).read()  # chip (X0, Y0): RGB, top left
        np.testing.assert_array_equal(src.read()[:, :CHIP, :CHIP], first)
    # RGBA chips (odd i + j) are transparent in their top strip; RGB chips are all valid
    assert mask[:STRIP, CHIP:2 * CHIP].sum() == 0 and mask[:STRIP, :CHIP].all()
    assert (~mask).sum() == 4 * STRIP * CHIP


def test_chip_mosaic_refuses_mixed_zooms_and_bare_chips(chips: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    folder, _ = chips
    other = folder / f"OAM-{2 * X0}-{2 * Y0}-{Z + 1}.png"
    (folder / f"OAM-{X0}-{Y0}-{Z}.png").rename(other)
    with pytest.raises(InputError, match="pixel size"), chip_mosaic(folder):
        pass
    bare = tmp_path / "bare"
    bare.mkdir()
    for k in range(2):
        with rasterio.open(bare / f"chip{k}.png", "w", driver="PNG", width=8, height=8,
                           count=3, dtype="uint8") as dst:
            dst.write(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match="no georeferencing"), chip_mosaic(bare):
        pass
    assert chip_files(tmp_path / "missing.tif") is None


def test_tile_cuts_chip_folders_with_one_class_footprints(chips: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    folder, footprints = chips
    out = tmp_path / "pairs"
    r = CliRunner().invoke(cli, ["tile", str(folder), "--labels", str(footprints),
                                 "--class-names", "background,building", "--size", "64",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    masks = sorted((out / "masks").glob("*.tif"))
    assert len(masks) == 9
    values = np.concatenate([rasterio.open(m).read(1).ravel() for m in masks])
    assert set(np.unique(values)) == {0, 1, 255}  # background, building, transparent
    assert (values == 255).sum() == 4 * STRIP * CHIP
    assert (values == 1).sum() == 27 * 14 * 16


@pytest.mark.usefixtures("one_torch_thread")
def test_chips_to_polygons_without_helper_scripts(chips: tuple[Path, Path], tmp_path: Path,
                                                  tiny_bundle: Path) -> None:
    """The issue's "done when": train on chips + footprints, predict, vectorize, score."""
    folder, footprints = chips
    run = CliRunner().invoke
    model = tmp_path / "m.safetensors"
    r = run(cli, ["train", str(folder), "--labels", str(footprints),
                  "--class-names", "background,building", "--init", str(tiny_bundle),
                  "--crop-size", "32", "--tile-size", "64", "--overlap", "8",
                  "--batch-size", "4", "--steps-per-epoch", "30", "--epochs", "2",
                  "--lr", "3e-3", "--val-fraction", "0.25", "--device", "cpu",
                  "--precision", "fp32", "-q", "-o", str(model)])
    assert r.exit_code == 0, r.output
    from geoseg.models.bundle import read_spec

    spec = read_spec(model)
    assert spec.class_names() == ["background", "building"] and spec.n_bands == 3
    assert spec.scale_range is not None  # the zoom range predict's auto resample reads
    mapped = tmp_path / "map.tif"
    r = run(cli, ["predict", str(folder), "-m", str(model), "-o", str(mapped), "-q"])
    assert r.exit_code == 0, r.output
    with rasterio.open(mapped) as src:
        assert src.crs == "EPSG:3857" and src.shape == (3 * CHIP, 3 * CHIP)
        pred = src.read(1)
    assert (pred[:STRIP, CHIP:2 * CHIP] == 255).all()  # transparent: nodata
    polygons = tmp_path / "b.gpkg"
    r = run(cli, ["vectorize", str(mapped), "--classes", "building", "-o", str(polygons)])
    assert r.exit_code == 0, r.output
    r = run(cli, ["score", str(polygons), "--labels", str(footprints), "--objects",
                  "-o", str(tmp_path / "objects.json")])
    assert r.exit_code == 0, r.output
    objects = json.loads((tmp_path / "objects.json").read_text())
    assert objects["f1"] > 0.5, objects  # the roofs are found one by one
    # one map per chip into a folder that does not exist yet (with its parent)
    r = run(cli, ["predict", str(folder), "-m", str(model), "-o", str(tmp_path / "p" / "maps"),
                  "-q"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "p" / "maps").glob("*.tif"))) == 9
    # pixel score of the chips against one-class footprints, named as train names them
    r = run(cli, ["score", str(tmp_path / "p" / "maps"), "--labels", str(footprints),
                  "--class-names", "background,building", "-o", str(tmp_path / "px.json")])
    assert r.exit_code == 0, r.output
    iou = _per_class(tmp_path / "px.json", "iou")
    assert iou["building"] > 0.5 and iou["background"] > 0.5, iou


def test_score_one_class_vector_labels(tmp_path: Path, chips: tuple[Path, Path]) -> None:
    """No class field: --label-value names the class; a one-class score warns once."""
    _, footprints = chips
    import geopandas as gpd
    from rasterio.features import rasterize

    gdf = gpd.read_file(footprints).to_crs("EPSG:3857")
    t = tile_transform(Z, X0, Y0, CHIP, CHIP)
    truth = rasterize(gdf.geometry, out_shape=(3 * CHIP, 3 * CHIP), transform=t)
    pred = np.ones_like(truth)  # everything is building
    pred_path = tmp_path / "all_building.tif"
    with rasterio.open(pred_path, "w", driver="GTiff", width=3 * CHIP, height=3 * CHIP,
                       count=1, dtype="uint8", crs="EPSG:3857", transform=t,
                       nodata=255) as dst:
        dst.write(pred, 1)
        dst.update_tags(class_ids="0,1", class_names="background,building")
    run = CliRunner().invoke
    r = run(cli, ["score", str(pred_path), "--labels", str(footprints), "--label-value",
                  "building", "-o", str(tmp_path / "one.json")])
    assert r.exit_code == 0, r.output
    assert "no --label-fill" in r.output and r.output.count("Warning:") == 1
    assert _per_class(tmp_path / "one.json", "precision")["building"] == 1.0
    r = run(cli, ["score", str(pred_path), "--labels", str(footprints), "--class-names",
                  "background,building", "-o", str(tmp_path / "two.json")])
    assert r.exit_code == 0, r.output
    assert "no --label-fill" not in r.output
    assert _per_class(tmp_path / "two.json", "precision")["building"] \
        == pytest.approx(truth.mean(), abs=1e-9)
    r = run(cli, ["score", str(pred_path), "--labels", str(footprints)])
    assert r.exit_code == 1 and "--label-value" in r.output and "Traceback" not in r.output


@pytest.mark.usefixtures("one_torch_thread")
def test_train_init_on_rgba_scene_uses_alpha_as_mask(tmp_path: Path, tiny_bundle: Path,
                                                     chips: tuple[Path, Path]) -> None:
    """A 4-band RGBA scene trains from a 3-band model with no --bands (alpha = mask)."""
    folder, footprints = chips
    rgba = tmp_path / "rgba.tif"  # the chips' mosaic as one RGBA GeoTIFF
    with chip_mosaic(folder) as vrt, rasterio.open(vrt) as src:
        profile = {**src.profile, "driver": "GTiff", "count": 4, "photometric": "RGB",
                   "alpha": "YES"}
        profile.pop("nodata", None)
        with rasterio.open(rgba, "w", **profile) as dst:
            dst.write(np.concatenate([src.read(), src.read_masks(1)[None]]))
    with rasterio.open(rgba) as src:
        assert src.colorinterp[3] == ColorInterp.alpha
    from geoseg.training.chips import ChipWindow, _SceneReader

    reader = _SceneReader(rgba, None)
    try:
        assert reader.bands == [1, 2, 3]
        data, _, valid = reader.read(ChipWindow(0, CHIP, CHIP, CHIP))  # an RGBA chip's place
        assert data.shape[0] == 3 and not valid[:STRIP].any() and valid[STRIP:].all()
    finally:
        reader.close()
    r = CliRunner().invoke(cli, [
        "train", str(rgba), "--labels", str(footprints), "--class-names",
        "background,building", "--init", str(tiny_bundle), "--crop-size", "32",
        "--tile-size", "32", "--overlap", "8", "--batch-size", "2", "--steps-per-epoch", "2",
        "--epochs", "1", "--device", "cpu", "--precision", "fp32", "-q",
        "-o", str(tmp_path / "rgba.safetensors")])
    assert r.exit_code == 0, r.output


def test_xyz_chip_gsd_is_on_the_ground() -> None:
    """Web-mercator units shrink by cos(latitude): what resample and train record."""
    import math

    from rasterio.crs import CRS

    from geoseg.io import ground_sample_distance

    t = tile_transform(Z, X0, Y0, 256, 256)  # Banepa, 27.6 N
    lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (Y0 + 0.5) / 2 ** Z))))
    assert ground_sample_distance(CRS.from_epsg(3857), t, 256, 256) == pytest.approx(
        t.a * math.cos(math.radians(lat)), rel=1e-4)
    assert ground_sample_distance(CRS.from_epsg(3857), t, 256, 256) < 0.9 * t.a
