"""Scoring: NaN and +-inf labels are nodata, never a class or an unknown value."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import InputError
from geoseg.io import open_raster
from geoseg.metrics import encode


def test_non_finite_labels_are_nodata() -> None:
    labels = np.array([0.0, 1.0, np.nan, np.inf, -np.inf, 7.0], np.float32)
    codes = encode(labels, [0, 1])
    # codes: 0, 1 classes; 2 ignored; 3 nodata; 4 unknown
    assert codes.tolist() == [0, 1, 3, 3, 3, 4]


def test_open_raster_is_one_line_input_error(tmp_path) -> None:
    bad = tmp_path / "notes.tif"
    bad.write_text("not a raster")
    with pytest.raises(InputError, match=r"labels .*notes.tif is not a raster GDAL can read"):
        open_raster(bad, what="labels ")
