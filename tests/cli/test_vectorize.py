"""``geoseg vectorize`` through the CLI: outputs, options, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.testing import make_class_map, make_geotiff


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def class_map(tmp_path: Path) -> Path:
    m = make_class_map((128, 128), n_classes=3, block=16, seed=1)
    m[:10, :10] = 255
    path = make_geotiff(tmp_path / "map.tif", m, dtype="uint8", nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(class_names="building,road,water", class_ids="0,1,2")
    return path


def _one_line_error(result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_vectorize_writes_gpkg(runner, class_map, tmp_path):
    out = tmp_path / "b.gpkg"
    r = runner.invoke(
        cli,
        [
            "vectorize",
            str(class_map),
            "-o",
            str(out),
            "--classes",
            "building,road",
            "--simplify",
            "10",
            "--min-area",
            "200",
            "--chunk-size",
            "64",
            "--workers",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output
    assert "polygons" in r.output
    gdf = gpd.read_file(out)
    assert set(gdf.class_name) == {"building", "road"}
    assert (gdf.area_m2 >= 200).all()
    assert pyogrio.read_info(out)["crs"] == "EPSG:32633"


def test_vectorize_ids_quiet_and_dst_crs(runner, class_map, tmp_path):
    out = tmp_path / "w.geojson"
    r = runner.invoke(
        cli,
        [
            "vectorize",
            str(class_map),
            "-o",
            str(out),
            "--classes",
            "2",
            "--dst-crs",
            "EPSG:4326",
            "--quiet",
            "--workers",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert r.output == ""
    gdf = gpd.read_file(out)
    assert set(gdf.class_name) == {"water"}
    assert gdf.crs == "EPSG:4326"


def test_vectorize_json_progress(runner, class_map, tmp_path):
    out = tmp_path / "all.fgb"
    r = runner.invoke(
        cli,
        [
            "vectorize",
            str(class_map),
            "-o",
            str(out),
            "--all",
            "--progress",
            "json",
            "--chunk-size",
            "64",
            "--workers",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.output.strip().splitlines()]
    assert events[-1] == {"event": "done", "outputs": [str(out)]}
    assert any(e.get("fraction") == 1.0 for e in events)


def test_class_names_option(runner, tmp_path):
    m = np.zeros((32, 32), np.uint8)
    m[4:12, 4:12] = 1
    path = make_geotiff(tmp_path / "mask.tif", m, dtype="uint8", nodata=255)
    out = tmp_path / "o.gpkg"
    r = runner.invoke(
        cli,
        [
            "vectorize",
            str(path),
            "-o",
            str(out),
            "--class-names",
            "background,building",
            "--regularize",
            "--workers",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    gdf = gpd.read_file(out)
    assert list(gdf.class_name) == ["building"]
    assert gdf.area_m2.iloc[0] == pytest.approx(64 * 100.0)


def test_unknown_class(runner, class_map, tmp_path):
    r = runner.invoke(
        cli,
        [
            "vectorize",
            str(class_map),
            "-o",
            str(tmp_path / "o.gpkg"),
            "--classes",
            "roof",
        ],
    )
    line = _one_line_error(r)
    assert "'roof'" in line
    assert "building (0), road (1), water (2)" in line


def test_not_a_raster(runner, tmp_path):
    bad = tmp_path / "notes.tif"
    bad.write_text("not a raster")
    r = runner.invoke(cli, ["vectorize", str(bad), "-o", str(tmp_path / "o.gpkg")])
    assert "not a raster" in _one_line_error(r)


def test_float_class_map(runner, tmp_path):
    path = make_geotiff(
        tmp_path / "f.tif", np.zeros((1, 8, 8), np.float32), dtype="float32"
    )
    r = runner.invoke(cli, ["vectorize", str(path), "-o", str(tmp_path / "o.gpkg")])
    assert "float32" in _one_line_error(r)


def test_existing_output_untouched(runner, class_map, tmp_path):
    out = tmp_path / "o.gpkg"
    out.write_bytes(b"precious")
    r = runner.invoke(cli, ["vectorize", str(class_map), "-o", str(out)])
    assert "--overwrite" in _one_line_error(r)
    assert out.read_bytes() == b"precious"


def test_unwritable_output(runner, class_map, tmp_path):
    r = runner.invoke(
        cli, ["vectorize", str(class_map), "-o", str(tmp_path / "missing" / "o.gpkg")]
    )
    assert "does not exist" in _one_line_error(r)
    r = runner.invoke(cli, ["vectorize", str(class_map), "-o", str(tmp_path / "o.txt")])
    assert "vector format" in _one_line_error(r)


def test_centerlines_flag(runner, tmp_path):
    m = np.zeros((100, 100), np.uint8)
    m[45:52, 5:95] = 1
    path = make_geotiff(tmp_path / "r.tif", m, dtype="uint8", nodata=255)
    out = tmp_path / "r.shp"
    r = runner.invoke(
        cli,
        [
            "vectorize",
            str(path),
            "-o",
            str(out),
            "--class-names",
            "background,road",
            "--centerlines",
            "--workers",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "centre lines" in r.output
    lines = gpd.read_file(tmp_path / "r_centerlines.shp")
    assert set(lines.geom_type) == {"LineString"}
    assert len(lines) == 1
    assert lines.length.iloc[0] > 800
