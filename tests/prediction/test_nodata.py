"""Nodata is never data in predict: per-band nodata, NaN and +-inf are filled, not read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.io import NODATA_CLASS, band_validity, fill_nodata
from geoseg.models.bundle import read_spec
from geoseg.prediction.pipeline import predict
from geoseg.testing import make_class_map, make_geotiff, make_scene

from ..conftest import N_CLASSES, read

ND = -99999.0


def _scene(shape: tuple[int, int] = (200, 240)) -> np.ndarray:
    cmap = make_class_map(shape, n_classes=N_CLASSES, block=24, seed=3)
    return make_scene(cmap, seed=3).astype(np.float32)


def test_per_band_nodata_is_filled_and_only_all_band_nodata_is_nodata(
        tiny_bundle: Path, tmp_path: Path) -> None:
    """A -99999 ring on one band is filled with that band's mean; a corner where every
    band is -99999 is nodata in the output; the summary counts both."""
    img = _scene()
    mean = read_spec(tiny_bundle).mean
    ring = np.zeros(img.shape[1:], bool)
    ring[:12], ring[-12:], ring[:, :12], ring[:, -12:] = True, True, True, True
    corner = np.zeros_like(ring)
    corner[:40, :40] = True
    raw = img.copy()
    raw[2][ring] = ND
    raw[:, corner] = ND
    scene = make_geotiff(tmp_path / "ring.tif", raw, nodata=ND)
    result = predict(scene, tmp_path / "ring_pred.tif", model=tiny_bundle)

    filled = img.copy()  # what the model must see: band 3's ring at band 3's mean
    filled[2][ring] = mean[2]
    filled[:, corner] = np.asarray(mean, np.float32)[:, None]
    ref = make_geotiff(tmp_path / "filled.tif", filled, nodata=None)
    predict(ref, tmp_path / "filled_pred.tif", model=tiny_bundle)

    out, expected = read(tmp_path / "ring_pred.tif"), read(tmp_path / "filled_pred.tif")
    assert (out == NODATA_CLASS).sum() == corner.sum()
    assert (out[corner] == NODATA_CLASS).all()
    assert (out[ring & ~corner] != NODATA_CLASS).all()
    # Away from the all-nodata corner (whose tiles weigh it 0), the prediction is exactly
    # that of the filled scene: -99999 never reached the model.
    far = np.ones_like(ring)
    far[:80, :80] = False
    np.testing.assert_array_equal(out[far], expected[far])
    assert result.filled_px == int((ring & ~corner).sum())
    assert result.nodata_px == int(corner.sum())
    assert f"{result.filled_px} px with nodata bands filled" in result.summary()


def test_single_inf_in_a_float_scene_does_not_spread(tiny_bundle: Path,
                                                     tmp_path: Path) -> None:
    """One +inf (no nodata value set) is nodata for its band, not a whole tile of NaN."""
    img = _scene((160, 160))
    mean = read_spec(tiny_bundle).mean
    raw = img.copy()
    raw[0, 70, 90] = np.inf
    raw[1, 10, 10] = np.nan
    scene = make_geotiff(tmp_path / "inf.tif", raw, nodata=None)
    result = predict(scene, tmp_path / "inf_pred.tif", model=tiny_bundle)
    filled = img.copy()
    filled[0, 70, 90] = mean[0]
    filled[1, 10, 10] = mean[1]
    ref = make_geotiff(tmp_path / "ref.tif", filled, nodata=None)
    predict(ref, tmp_path / "ref_pred.tif", model=tiny_bundle)
    out = read(tmp_path / "inf_pred.tif")
    np.testing.assert_array_equal(out, read(tmp_path / "ref_pred.tif"))
    assert (out != NODATA_CLASS).all()
    assert len(np.unique(out)) > 1  # not one class everywhere (the equality above is the check)
    assert result.filled_px == 2 and result.nodata_px == 0


def test_band_validity_and_fill(tmp_path: Path) -> None:
    data = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    data[0, 0, 0] = ND  # band 1 only
    data[:, 1, 1] = ND  # every band
    data[1, 2, 2] = -np.inf
    path = make_geotiff(tmp_path / "v.tif", data, nodata=ND)
    with rasterio.open(path) as src:
        valid = band_validity(src, (1, 2), src.read())
    assert valid is not None
    assert not valid[0, 0, 0] and valid[1, 0, 0]
    assert not valid[:, 1, 1].any()
    assert valid[0, 2, 2] and not valid[1, 2, 2]
    assert valid.sum() == data.size - 4
    x, pixel = fill_nodata(data, valid, (-1.0, -2.0))
    assert x[0, 0, 0] == -1 and x[1, 2, 2] == -2 and (x[:, 1, 1] == [-1, -2]).all()
    assert pixel is not None and pixel.sum() == 19 and not pixel[1, 1]
    assert np.isfinite(x).all() and x.min() >= -2
    clean = make_geotiff(tmp_path / "c.tif", np.ones((1, 4, 4), np.uint8), nodata=None)
    with rasterio.open(clean) as src:
        assert band_validity(src, (1,), src.read()) is None


def test_per_band_nodata_values_differ(tmp_path: Path) -> None:
    """A VRT whose bands have different nodata values: each band's own value is nodata."""
    from geoseg.io import open_scene

    data = np.full((2, 4, 4), 5, np.int16)
    data[0, 0, 0] = -1  # band 1's nodata
    data[1, 0, 1] = -9  # band 2's nodata
    data[0, 0, 1] = -9  # not nodata in band 1
    src = make_geotiff(tmp_path / "raw.tif", data, nodata=None)
    bands = "".join(
        f'<VRTRasterBand dataType="Int16" band="{b}"><NoDataValue>{nd}</NoDataValue>'
        f"<SimpleSource><SourceFilename>{src}</SourceFilename><SourceBand>{b}</SourceBand>"
        "</SimpleSource></VRTRasterBand>" for b, nd in ((1, -1), (2, -9)))
    vrt = tmp_path / "bands.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="4" rasterYSize="4">{bands}</VRTDataset>')
    assert open_scene(vrt).nodatavals == (-1.0, -9.0)
    with rasterio.open(vrt) as ds:
        valid = band_validity(ds, (1, 2), ds.read())
    assert valid is not None
    assert not valid[0, 0, 0] and valid[1, 0, 0]
    assert valid[0, 0, 1] and not valid[1, 0, 1]
    assert valid.sum() == 30


def test_nodata_counted_in_the_read_stage_without_a_second_pass(
        tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk cores partition the scene: the counts stage 1 saves add up to a full pass's,
    and predict never reads the scene again to count."""
    from geoseg.io import count_nodata
    from geoseg.prediction import checks

    img = _scene((300, 330))
    rng = np.random.default_rng(0)
    some = rng.random(img.shape[1:]) < 0.05
    every = rng.random(img.shape[1:]) < 0.03
    raw = img.copy()
    raw[1][some] = ND
    raw[:, every] = ND
    scene = make_geotiff(tmp_path / "holes.tif", raw, nodata=ND)
    expected = count_nodata(str(scene), (1, 2, 3))
    assert expected[0] > 0 and expected[1] > 0

    def no_second_pass(*args: object, **kwargs: object) -> tuple[int, int]:
        raise AssertionError("predict must not read the scene again to count nodata")

    monkeypatch.setattr(checks, "count_nodata", no_second_pass)  # _nodata_counts' fallback
    for chunk_tiles in (1, 4):  # many chunks with tails, and one chunk
        r = predict(scene, tmp_path / f"holes_{chunk_tiles}.tif", model=tiny_bundle,
                    tile_size=64, overlap=16, chunk_tiles=chunk_tiles)
        assert (r.filled_px, r.nodata_px) == expected
