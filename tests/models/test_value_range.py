"""geoseg.models.value_range: the trained value range, the predict warning, --scale."""

from __future__ import annotations

import re

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.errors import BundleError, GeosegWarning, InputError
from geoseg.io import open_scene
from geoseg.models.spec import ModelSpec
from geoseg.models.value_range import image_range, range_warning, scaled_spec
from geoseg.prediction.pipeline import predict
from geoseg.testing import make_class_map, make_geotiff, make_scene

from ..conftest import N_CLASSES, tiny_spec


@pytest.fixture
def scene_u8(tmp_path):
    cmap = make_class_map((96, 128), n_classes=N_CLASSES, block=24, seed=4)
    return make_geotiff(tmp_path / "u8.tif", make_scene(cmap, seed=4), nodata=None)


def _rescaled(tmp_path, src, factor, dtype):
    with rasterio.open(src) as s:
        data = s.read().astype(np.float64) * factor
    return make_geotiff(tmp_path / f"{dtype}.tif", data.astype(dtype), nodata=None)


def test_spec_records_range_and_round_trips():
    spec = tiny_spec().with_(input_dtype="uint8", input_range=((1, 250),) * 3)
    back = ModelSpec.from_json(spec.to_json())
    assert back == spec and back.input_range == ((1.0, 250.0),) * 3
    old = spec.to_dict()
    del old["input_dtype"], old["input_range"]
    assert ModelSpec.from_dict(old).input_range is None  # bundles that predate it
    with pytest.raises(BundleError, match="input_range has 1 entries for 3 bands"):
        tiny_spec().with_(input_range=((0, 1),))


def test_image_range_skips_invalid_and_non_finite():
    img = np.arange(200, dtype=np.float32).reshape(2, 10, 10)
    img[0, 0, 0] = np.inf
    valid = np.ones((10, 10), bool)
    valid[9] = False
    (lo0, hi0), (lo1, hi1) = image_range([img], [valid])
    assert 0 < lo0 < 2 and 87 < hi0 < 90
    assert 100 < lo1 < 102 and 187 < hi1 < 190


def test_warning_when_far_from_the_trained_range(tmp_path, scene_u8):
    spec = tiny_spec().with_(input_dtype="uint8", input_range=((30.0, 220.0),) * 3)
    assert range_warning(open_scene(scene_u8), (1, 2, 3), spec) is None
    u16 = open_scene(_rescaled(tmp_path, scene_u8, 40, "uint16"))
    message = range_warning(u16, (1, 2, 3), spec)
    assert message is not None and "\n" not in message
    assert "trained on uint8 values 30..220" in message
    assert re.search(r"--scale 0\.0[23]", message)  # about 1/40
    refl = open_scene(_rescaled(tmp_path, scene_u8, 1 / 255, "float32"))
    assert re.search(r"--scale [23]\d\d ", range_warning(refl, (1, 2, 3), spec))
    # Bundles without a recorded range: mean +- 2.33 std (here 128 +- 149).
    assert range_warning(u16, (1, 2, 3), tiny_spec()) is not None
    assert range_warning(open_scene(scene_u8), (1, 2, 3), tiny_spec()) is None


def test_scale_folds_into_the_normalisation(tmp_path, scene_u8):
    spec = tiny_spec().with_(input_range=((30.0, 220.0),) * 3)
    u16 = open_scene(_rescaled(tmp_path, scene_u8, 40, "uint16"))
    scaled = scaled_spec(spec, u16, (1, 2, 3), 1 / 40)
    assert scaled.mean == pytest.approx((128 * 40,) * 3)
    assert scaled.std == pytest.approx((64 * 40,) * 3)
    # percentile: the scene's 1st..99th percentiles land on the trained 30..220
    pct = scaled_spec(spec, u16, (1, 2, 3), "percentile")
    assert all(m > 1000 for m in pct.mean)
    with pytest.raises(InputError, match="positive number or 'percentile'"):
        scaled_spec(spec, u16, (1, 2, 3), "median")
    with pytest.raises(InputError, match="positive"):
        scaled_spec(spec, u16, (1, 2, 3), -1.0)


def test_predict_warns_and_scale_recovers_the_8bit_result(tmp_path, tiny_bundle,
                                                          scene_u8):
    kw = {"model": tiny_bundle, "device": "cpu", "engine": "eager", "precision": "fp32"}
    ref = predict(scene_u8, tmp_path / "ref.tif", **kw).output
    u16 = _rescaled(tmp_path, scene_u8, 40, "uint16")
    with pytest.warns(GeosegWarning, match="--scale"):
        predict(u16, tmp_path / "raw.tif", **kw)
    fixed = predict(u16, tmp_path / "fixed.tif", scale=1 / 40, **kw).output
    pct = predict(u16, tmp_path / "pct.tif", scale="percentile", **kw).output
    with rasterio.open(ref) as a, rasterio.open(tmp_path / "raw.tif") as b, \
            rasterio.open(fixed) as c, rasterio.open(pct) as d:
        r, raw, f, p = a.read(1), b.read(1), c.read(1), d.read(1)
    assert (f == r).mean() > 0.999  # the same input up to rounding
    assert (p == r).mean() > 0.9
    assert (raw == r).mean() < (p == r).mean()
    res = CliRunner().invoke(cli, ["predict", str(u16), "-m", str(tiny_bundle), "-o",
                                   str(tmp_path / "cli.tif"), "--scale", "0.025", "-q",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    bad = CliRunner().invoke(cli, ["predict", str(u16), "-m", str(tiny_bundle), "-o",
                                   str(tmp_path / "x.tif"), "--scale", "abc"])
    assert bad.exit_code != 0 and "number or 'percentile'" in bad.output
