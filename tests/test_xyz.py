"""geoseg.xyz: XYZ chips without georeferencing are placed by their names."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from geoseg.cli.main import cli

import geoseg.xyz
from geoseg.classmap import ClassMapInfo
from geoseg.errors import InputError
from geoseg.io import open_scene
from geoseg.scoring.pipeline import score
from geoseg.testing import make_class_map
from geoseg.xyz import tile_transform, xyz_pattern

from .conftest import SHARED_DATA

Z, X, Y = 19, 386690, 220241


def write_png(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="PNG", width=data.shape[1], height=data.shape[0],
                       count=1, dtype="uint8") as dst:
        dst.write(data, 1)
    return path


def test_tile_transform_matches_web_mercator():
    t = tile_transform(Z, X, Y, 256, 256)
    lon = (X / 2 ** Z) * 360 - 180  # the tile's west edge, from the XYZ formula
    assert t.c == pytest.approx(lon * 20037508.342789244 / 180)
    lat = np.degrees(np.arctan(np.sinh(np.pi * (1 - 2 * Y / 2 ** Z))))
    y_merc = 6378137.0 * np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))
    assert t.f == pytest.approx(y_merc, abs=1e-6)
    assert t.a == pytest.approx(2 * 20037508.342789244 / 2 ** Z / 256)
    with pytest.raises(InputError, match="does not exist"):
        tile_transform(2, 4, 0, 256, 256)
    assert doctest.testmod(geoseg.xyz).failed == 0


@pytest.mark.parametrize("name", [f"{Z}/{X}/{Y}.png", f"OAM-{X}-{Y}-{Z}.png"])
def test_open_scene_places_xyz_chips(tmp_path, name):
    path = write_png(tmp_path / name, np.zeros((256, 256), np.uint8))
    scene = open_scene(path)
    assert scene.crs == "EPSG:3857"
    assert scene.transform == tile_transform(Z, X, Y, 256, 256)
    plain = write_png(tmp_path / "plain.png", np.zeros((8, 8), np.uint8))
    with pytest.warns(UserWarning, match="no georeferencing"):
        assert open_scene(plain).crs is None


def test_pattern_override(tmp_path):
    path = write_png(tmp_path / f"tile_{Z}_{X}_{Y}.png", np.zeros((64, 64), np.uint8))
    with xyz_pattern(r"tile_(?P<z>\d+)_(?P<x>\d+)_(?P<y>\d+)"):
        assert open_scene(path).transform == tile_transform(Z, X, Y, 64, 64)
    with pytest.warns(UserWarning, match="no georeferencing"):
        assert open_scene(path).crs is None  # only inside the block
    with pytest.raises(InputError, match="named groups"), xyz_pattern(r"(?P<x>\d+)"):
        pass
    with pytest.raises(InputError, match="not a regular expression"), xyz_pattern("("):
        pass


def test_sidecar_georeferencing_wins():
    chip = SHARED_DATA / "banepa" / "oam" / f"OAM-{X}-{Y}-{Z}.tif"
    if not chip.exists():
        pytest.skip(f"real data not found: {chip}")
    assert open_scene(chip).crs == "EPSG:4326"  # its .aux.xml, not its name


def test_score_xyz_chips_against_labels(tmp_path):
    # Four z/x/y.png prediction chips (no georeferencing) vs a 3857 label raster.
    truth = make_class_map((128, 128), n_classes=3, block=8, seed=5)
    pred = truth.copy()
    pred[:10, :10] = (pred[:10, :10] + 1) % 3
    for dy in (0, 1):
        for dx in (0, 1):
            write_png(tmp_path / "chips" / str(Z) / str(X + dx) / f"{Y + dy}.png",
                      pred[dy * 64:(dy + 1) * 64, dx * 64:(dx + 1) * 64])
    t = tile_transform(Z, X, Y, 64, 64)
    with rasterio.open(tmp_path / "truth.tif", "w", driver="GTiff", width=128,
                       height=128, count=1, dtype="uint8", crs="EPSG:3857",
                       transform=t) as dst:
        dst.write(truth, 1)
        dst.update_tags(**ClassMapInfo((0, 1, 2), ("a", "b", "c")).to_tags())
    report = score(tmp_path / "chips", tmp_path / "truth.tif")
    assert report.matrix.sum() == 128 * 128
    assert report.counts.matrix.trace() == 128 * 128 - 100
    # The CLI takes --xyz-pattern for other names.
    for p in (tmp_path / "chips").rglob("*.png"):
        z, x = p.parent.parent.name, p.parent.name
        p.rename(tmp_path / "chips" / f"t{z}_{x}_{p.stem}.png")
    r = CliRunner().invoke(cli, ["score", str(tmp_path / "chips"), "--labels",
                                 str(tmp_path / "truth.tif"), "-q", "-o",
                                 str(tmp_path / "r.json"), "--xyz-pattern",
                                 r"t(?P<z>\d+)_(?P<x>\d+)_(?P<y>\d+)\.png$"])
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["pixels"]["scored"] == 128 * 128
