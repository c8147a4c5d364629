"""geoseg.scoring.objects: one-to-one polygon matching, the SpaceNet building metric."""

from __future__ import annotations

import doctest

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

import geoseg.metrics
import geoseg.scoring.objects
from geoseg.errors import InputError
from geoseg.scoring.objects import score_objects
from geoseg.testing import make_geotiff

from ..conftest import SHARED_DATA

SPACENET = SHARED_DATA / "spacenet"


@pytest.fixture(scope="module")
def spacenet():
    gt, pred = SPACENET / "gt.geojson", SPACENET / "pred.geojson"
    if not (gt.exists() and pred.exists()):
        pytest.skip(f"SpaceNet sample footprints not found in {SPACENET.resolve()}")
    return gt, pred


def test_spacenet_reference(spacenet):
    gt, pred = spacenet
    s = score_objects(pred, gt)
    assert (s.tp, s.fp, s.fn) == (8, 20, 20)
    assert s.f1 == 0.2857142857142857
    assert s.precision == s.recall == 0.2857142857142857
    assert len(s.matches) == 8
    assert all(iou >= 0.5 for _, _, iou in s.matches)
    assert s.pred_iou.shape == (28,)
    assert s.to_dict()["tp"] == 8


def test_spacenet_different_crs(spacenet):
    gt, pred = spacenet
    p = gpd.read_file(pred).to_crs("EPSG:4326")
    s = score_objects(p, gt)
    assert (s.tp, s.fp, s.fn) == (8, 20, 20)
    merc = score_objects(p, gpd.read_file(gt).to_crs("EPSG:3857"))
    assert (merc.tp, merc.fp, merc.fn) == (8, 20, 20)
    both = score_objects(p, gpd.read_file(gt).to_crs("EPSG:4326"))
    assert (both.tp, both.fp, both.fn) == (8, 20, 20)
    assert "32616" in both.crs  # areas measured in the UTM zone, not in degrees


def test_threshold_is_configurable(spacenet):
    gt, pred = spacenet
    loose = score_objects(pred, gt, iou_threshold=0.1)
    strict = score_objects(pred, gt, iou_threshold=0.9)
    assert loose.tp > 8 > strict.tp
    assert loose.tp + loose.fp == strict.tp + strict.fp == 28


def _gdf(geoms, crs="EPSG:32633", **cols):
    return gpd.GeoDataFrame(cols, geometry=geoms, crs=crs)


def test_one_to_one_and_best_pair_first():
    truth = _gdf([shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)])
    # One big prediction covering both truths; then an exact copy of the second truth.
    pred = _gdf([shapely.box(0, 0, 20, 10), shapely.box(10, 0, 20, 10)])
    s = score_objects(pred, truth, iou_threshold=0.4)
    # The exact copy (IoU 1) takes truth 1 first; the big one then matches truth 0.
    assert s.matches[0] == (1, 1, 1.0)
    assert (s.matches[1][0], s.matches[1][1]) == (0, 0)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    s5 = score_objects(pred, truth)  # at 0.5 the big one (IoU 0.5 with each) still fits
    assert s5.tp == 2
    s6 = score_objects(pred, truth, iou_threshold=0.51)
    assert (s6.tp, s6.fp, s6.fn) == (1, 1, 1)


def test_empty_inputs_are_nan_not_errors():
    truth = _gdf([shapely.box(0, 0, 10, 10)])
    none = _gdf([])
    s = score_objects(none, truth)
    assert (s.tp, s.fp, s.fn) == (0, 0, 1)
    assert np.isnan(s.precision)
    assert s.recall == 0.0
    assert s.f1 == 0.0


def test_class_map_is_vectorized(tmp_path):
    data = np.zeros((64, 64), np.uint8)
    data[4:20, 4:20] = 1
    data[30:50, 10:40] = 1
    data[40:60, 50:60] = 2
    path = make_geotiff(tmp_path / "map.tif", data, nodata=255, res=1.0,
                        origin=(500000.0, 4000000.0))
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(class_names="background,building,tree", class_ids="0,1,2")
    x0, y0 = 500000.0, 4000000.0
    truth = _gdf([shapely.box(x0 + 4, y0 - 20, x0 + 20, y0 - 4),
                  shapely.box(x0 + 10, y0 - 50, x0 + 40, y0 - 30),
                  shapely.box(x0 + 44, y0 - 20, x0 + 54, y0 - 10),
                  shapely.box(x0 + 100, y0 - 50, x0 + 110, y0 - 40)])  # off the map
    s = score_objects(path, truth, classes=["building"], workers=1)
    assert (s.tp, s.fp, s.fn) == (2, 0, 1)  # truth off the map is no false negative
    assert [round(m[2], 9) for m in s.matches] == [1.0, 1.0]


def test_errors(tmp_path):
    truth = _gdf([shapely.box(0, 0, 10, 10)])
    with pytest.raises(InputError, match="threshold"):
        score_objects(truth, truth, iou_threshold=0)
    with pytest.raises(InputError, match="have no CRS"):
        score_objects(_gdf([shapely.box(0, 0, 1, 1)], crs=None), truth)
    with pytest.raises(InputError, match="not found"):
        score_objects(tmp_path / "missing.geojson", truth)
    with pytest.raises(InputError, match="no field 'kind'"):
        score_objects(truth, truth, label_field="kind", classes=["building"])


def test_invalid_polygons_are_repaired():
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    truth = _gdf([shapely.box(0, 0, 10, 10)])
    s = score_objects(_gdf([bowtie]), truth)
    assert s.pred_iou[0] == pytest.approx(0.5)


@pytest.mark.parametrize("module", [geoseg.metrics, geoseg.scoring.objects])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
