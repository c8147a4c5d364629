"""vectorize: probability rasters (--threshold/--band), centre-line layers and
min-area, GeoJSON names, and valid simplified polygons on lon/lat maps (#14)."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from geoseg.classmap import ClassMapInfo
from geoseg.errors import InputError
from geoseg.testing import make_geotiff
from geoseg.vector.pipeline import vectorize, vectorize_to_file


def _prob_raster(tmp_path, dtype="float32"):
    p = np.zeros((2, 60, 60), np.float32)
    p[1, 10:30, 10:30] = 0.9  # a building
    p[1, 40:50, 40:55] = 0.6
    p[1, 5:8, 50:58] = 0.3  # below 0.5
    p[0] = 1 - p[1]
    p[:, 0, 0] = np.nan
    path = make_geotiff(tmp_path / "probs.tif", p.astype(dtype), nodata=None)
    with rasterio.open(path, "r+") as dst:
        dst.set_band_description(1, "p_background")
        dst.set_band_description(2, "p_building")
    return path


def test_threshold_turns_a_probability_raster_into_classes(tmp_path):
    path = _prob_raster(tmp_path)
    with pytest.raises(InputError, match="pass --threshold"):
        vectorize(path, workers=1)
    gdf = vectorize(path, threshold=0.5, band=2, workers=1)
    assert sorted(gdf.area_m2.round()) == [150 * 100.0, 400 * 100.0]
    assert set(gdf.class_name) == {"building"}  # named after the band
    low = vectorize(path, threshold=0.2, band=2, workers=1)
    assert len(low) == 3
    with pytest.raises(InputError, match="--band 3 does not exist"):
        vectorize(path, threshold=0.5, band=3, workers=1)


def test_threshold_on_geoseg_probabilities_uses_their_scale(tmp_path):
    p = np.zeros((60, 60), np.uint8)
    p[10:20, 10:20] = 200  # p = 200/254 = 0.79
    p[30:40, 30:40] = 100  # p = 0.39
    path = make_geotiff(tmp_path / "p.tif", p, nodata=255)
    with rasterio.open(path, "r+") as dst:  # as geoseg predict --probabilities writes
        dst.update_tags(scale=str(1 / 254), offset="0",
                        **ClassMapInfo((0,), ("building",)).to_tags())
    gdf = vectorize(path, threshold=0.5, workers=1)
    assert len(gdf) == 1 and gdf.class_name.iloc[0] == "building"
    assert gdf.area_m2.iloc[0] == pytest.approx(100 * 100.0)


def _road_map(tmp_path):
    m = np.zeros((200, 200), np.uint8)
    m[95:104, 10:190] = 1  # a long road
    m[150:156, 150:170] = 1  # a small road stub, 120 px = 12,000 m2
    m[20:40, 20:40] = 2  # a building
    path = make_geotiff(tmp_path / "roads.tif", m, nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**ClassMapInfo((0, 1, 2), ("background", "road",
                                                   "building")).to_tags())
    return path


def test_centerlines_respect_min_area_and_layer_names(tmp_path):
    path = _road_map(tmp_path)
    every = vectorize(path, classes=["building"], centerlines=True, workers=1)
    assert (every.feature == "centerline").sum() == 2
    big = vectorize(path, classes=["building"], centerlines=True, min_area=20000,
                    workers=1)
    lines = big[big.feature == "centerline"]
    assert len(lines) == 1 and lines.length_m.iloc[0] > 1000  # only the long road
    # No polygon left (the building is smaller than min-area): the lines still go to
    # <layer>_centerlines, next to an empty polygon layer.
    out = tmp_path / "city.gpkg"
    vectorize_to_file(path, out, classes=["building"], centerlines=True,
                      min_area=50000, workers=1)
    layers = dict(pyogrio.list_layers(out))
    assert set(layers) == {"city", "city_centerlines"}
    assert len(gpd.read_file(out, layer="city")) == 0
    assert len(gpd.read_file(out, layer="city_centerlines")) == 1


def test_geojson_name_is_the_outputs(tmp_path):
    path = _road_map(tmp_path)
    out = tmp_path / "buildings.geojson"
    vectorize_to_file(path, out, classes=["building"], workers=1)
    assert json.loads(out.read_text())["name"] == "buildings"


def _speckled_lonlat_map(tmp_path, seed):
    # Speckle over blocks: many small regions whose holes touch their shells; the case
    # where simplifying in UTM and projecting back gave self-intersecting rings.
    rng = np.random.default_rng(seed)
    cm = (rng.random((300, 300)) * 3).astype(np.uint8)
    blocks = np.kron(rng.integers(0, 3, (75, 75)), np.ones((4, 4))).astype(np.uint8)
    mask = rng.random(cm.shape) < 0.6
    cm[mask] = blocks[mask]
    path = make_geotiff(tmp_path / f"geo{seed}.tif", cm, nodata=255, crs="EPSG:4326",
                        res=1.3e-6, origin=(85.5, 27.6))
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**ClassMapInfo((0, 1, 2), ("a", "b", "c")).to_tags())
    return path


@pytest.mark.parametrize("classes", [["a", "b", "c"], ["b"]])
def test_simplify_on_a_lonlat_map_is_valid_and_gap_free(tmp_path, classes):
    path = _speckled_lonlat_map(tmp_path, 0)
    gdf = vectorize(path, classes=classes, simplify=1.0, workers=1)
    geoms = gdf.geometry.values
    assert len(geoms) > 1000
    assert shapely.is_valid(geoms).all()
    union = shapely.union_all(geoms)  # raised a TopologyException before
    if len(classes) == 3:  # a coverage: no overlap, and no gap inside the map
        assert union.area == pytest.approx(shapely.area(geoms).sum(), rel=1e-9)
        assert shapely.coverage_is_valid(geoms)
        full = 300 * 300 * 1.3e-6**2
        assert union.area == pytest.approx(full, rel=1e-3)
    assert gdf.area_m2.sum() == pytest.approx(
        gpd.GeoSeries(geoms, crs=4326).to_crs(gdf.estimate_utm_crs()).area.sum(),
        rel=1e-3)
