"""geoseg.scoring.mosaic: folders and globs of prediction chips scored as one map."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from geoseg.classmap import ClassMapInfo
from geoseg.errors import InputError
from geoseg.scoring.objects import score_objects
from geoseg.scoring.pipeline import score
from geoseg.testing import make_class_map, make_geotiff

RES, X0, Y0 = 10.0, 500000.0, 4000000.0
INFO = ClassMapInfo((0, 1, 2), ("background", "building", "water"))


def write_map(path, data, *, origin=(X0, Y0), info=INFO):
    make_geotiff(path, data, nodata=255, res=RES, origin=origin)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**info.to_tags())
    return path


def write_chips(folder, pred, size=40, skip=()):
    folder.mkdir()
    for r in range(0, pred.shape[0], size):
        for c in range(0, pred.shape[1], size):
            if (r, c) in skip:
                continue
            write_map(folder / f"chip_{r:03d}_{c:03d}.tif", pred[r:r + size, c:c + size],
                      origin=(X0 + c * RES, Y0 - r * RES))
    return folder


@pytest.fixture
def maps():
    truth = make_class_map((120, 80), n_classes=3, block=8, seed=3)
    rng = np.random.default_rng(0)
    pred = np.where(rng.random(truth.shape) < 0.2, (truth + 1) % 3, truth).astype(np.uint8)
    return truth, pred


def test_folder_and_glob_equal_the_whole_map(tmp_path, maps):
    truth, pred = maps
    labels = make_geotiff(tmp_path / "truth.tif", truth, nodata=None, res=RES)
    whole = score(write_map(tmp_path / "whole.tif", pred), labels)
    chips = write_chips(tmp_path / "chips", pred)
    by_folder = score(chips, labels, chunk_size=32)
    np.testing.assert_array_equal(by_folder.matrix, whole.matrix)
    assert by_folder.class_names == INFO.names
    assert by_folder.pred == f"6 chips in {chips}"
    by_glob = score(str(chips / "chip_0*_000.tif"), labels)  # the left column only
    assert by_glob.matrix.sum() == 120 * 40
    # A missing chip is no prediction there, not a wrong one.
    gap = score(write_chips(tmp_path / "gap", pred, skip={(40, 40)}), labels)
    assert gap.counts.nodata_pred == 40 * 40
    assert gap.matrix.sum() == whole.matrix.sum() - 40 * 40


def test_chips_must_agree(tmp_path, maps):
    truth, pred = maps
    labels = make_geotiff(tmp_path / "truth.tif", truth, nodata=None, res=RES)
    chips = write_chips(tmp_path / "chips", pred)
    write_map(chips / "chip_999.tif", pred[:40, :40],
              info=ClassMapInfo((0, 1), ("background", "building")))
    with pytest.raises(InputError, match="different classes"):
        score(chips, labels)
    with pytest.raises(InputError, match="matches no prediction chips"):
        score(str(tmp_path / "nothing*.tif"), labels)


def test_objects_truth_cut_to_the_chips(tmp_path):
    # Buildings on a 100x100 grid; chips cover the left half only.
    pred = np.zeros((100, 100), np.uint8)
    boxes = []
    for r in range(5, 100, 20):
        for c in range(5, 100, 20):
            pred[r:r + 10, c:c + 10] = 1
            boxes.append(shapely.box(X0 + c * RES, Y0 - (r + 10) * RES,
                                     X0 + (c + 10) * RES, Y0 - r * RES))
    boxes.append(shapely.box(X0 + 45 * RES, Y0 - 15 * RES, X0 + 55 * RES,
                             Y0 - 5 * RES))  # straddles the chips' edge at x=50
    truth = gpd.GeoDataFrame(geometry=boxes, crs="EPSG:32633")
    chips = write_chips(tmp_path / "chips", pred, size=50, skip={(0, 50), (50, 50)})
    s = score_objects(chips, truth)
    # Left half: 5 x 2 whole buildings and 5 cut at x=50 match their (equally cut)
    # predictions; the straddling duplicate is the one false negative, and the 10
    # buildings right of the chips are none.
    assert (s.tp, s.fp, s.fn) == (15, 0, 1)
    whole = score_objects(write_map(tmp_path / "whole.tif", pred), truth)
    assert (whole.tp, whole.fp, whole.fn) == (25, 0, 1)
