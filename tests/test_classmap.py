"""geoseg.classmap.ClassMapInfo: the one class-map tag contract."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geoseg.classmap import ClassMapInfo, class_table
from geoseg.errors import GeosegWarning, InputError
from geoseg.io import open_scene
from geoseg.prediction.preview import render_preview
from geoseg.testing import make_geotiff

INFO = ClassMapInfo((0, 3, 7), ("water", "field", "road"),
                    ((0, 0, 255), (0, 128, 0), (90, 90, 90)))


def test_round_trip_through_a_raster(tmp_path):
    path = make_geotiff(tmp_path / "m.tif", np.zeros((8, 8), np.uint8), nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**INFO.to_tags())
    with rasterio.open(path) as src:
        assert ClassMapInfo.from_tags(src) == INFO
    assert ClassMapInfo.from_tags(open_scene(path)) == INFO
    assert INFO.to_tags()["CLASS_7"] == "road"
    assert ClassMapInfo.from_tags({}) is None
    # No class_ids: ids 0..n-1; no colours: none.
    assert ClassMapInfo.from_tags({"class_names": "a,b"}) == ClassMapInfo((0, 1), ("a", "b"))


@pytest.mark.parametrize("tags", [
    {"class_names": "a,b", "class_ids": "0,x"},
    {"class_names": "a,b", "class_ids": "0"},
    {"class_names": "a,b", "class_ids": "1,1"},
    {"class_names": "a,b", "class_ids": "0,255"},
    {"class_names": "a,,b"},
    {"class_names": "a,b", "class_colors": "1,2,3"},
    {"class_names": "a,b", "class_colors": "1,2;3,4,5"},
])
def test_malformed_tags_strict_or_not(tags):
    with pytest.raises(InputError, match="malformed class tags"):
        ClassMapInfo.from_tags(tags, strict=True)
    with pytest.warns(GeosegWarning, match="malformed class tags"):
        assert ClassMapInfo.from_tags(tags, strict=False) is None


def test_every_reader_agrees_on_malformed_tags(tmp_path):
    path = make_geotiff(tmp_path / "m.tif", np.zeros((8, 8), np.uint8), nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(class_names="a,b", class_ids="0,x")
        dst.write_colormap(1, {0: (1, 2, 3, 255), 1: (4, 5, 6, 255)})
    scene = make_geotiff(tmp_path / "s.tif", shape=(3, 8, 8))
    with pytest.raises(InputError, match="malformed class tags"):  # vectorize
        class_table(open_scene(path), None)
    from geoseg.scoring.pipeline import score

    with pytest.raises(InputError, match="malformed class tags"):
        score(path, path)
    with pytest.warns(GeosegWarning, match="malformed class tags"):  # a legend only
        render_preview(scene, path, tmp_path / "p.png")
