"""predict --resample: GSD detection, the auto rule, the scene grid, quality, smooth edges."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.errors import InputError
from geoseg.io import NODATA_CLASS, open_scene
from geoseg.prediction.config import InferenceConfig
from geoseg.prediction.pipeline import predict
from geoseg.prediction.resample import resize_scores, scene_gsd, working_gsd
from geoseg.testing import assert_same_georef, make_class_map, make_geotiff, make_scene

from ..conftest import N_CLASSES, read, tiny_spec

MODEL_GSD = 10.0  # tiny_spec's gsd_m


def _scene(tmp_path: Path, name: str, res: float, crs: str | None = "EPSG:32633",
           shape: tuple[int, int] = (64, 64)) -> Path:
    return make_geotiff(tmp_path / name, shape=(3, *shape), res=res, crs=crs, nodata=None)


def test_scene_gsd_projected_geographic_and_unknown(tmp_path: Path) -> None:
    assert scene_gsd(open_scene(_scene(tmp_path, "utm.tif", 2.5))) == pytest.approx(2.5)
    # US survey feet are converted to metres
    feet = make_geotiff(tmp_path / "ft.tif", shape=(3, 32, 32), res=10.0, crs="EPSG:2263",
                        origin=(1e6, 2e5), nodata=None)
    assert scene_gsd(open_scene(feet)) == pytest.approx(3.048, rel=1e-5)
    # degrees: measured on the ellipsoid at the centre (1e-5 deg ~ 1.11 m at the equator)
    geo = make_geotiff(tmp_path / "geo.tif", shape=(3, 32, 32), res=1e-5, crs="EPSG:4326",
                       origin=(85.5, 0.0), nodata=None)
    assert scene_gsd(open_scene(geo)) == pytest.approx(1.11, abs=0.01)
    nocrs = _scene(tmp_path, "plain.tif", 1.0, crs=None)
    assert scene_gsd(open_scene(nocrs)) is None


@pytest.mark.parametrize(("res", "expected"), [
    (10.0, None), (6.8, None), (14.9, None),   # no zoom range recorded: within 1.5x native
    (6.5, MODEL_GSD / 1.5), (15.3, MODEL_GSD * 1.5), (2.5, MODEL_GSD / 1.5),
    (60.0, MODEL_GSD * 1.5),
    (61.0, None)])                             # > 4x the coarsest accepted: stays native
def test_auto_without_a_zoom_range_uses_one_and_a_half(tmp_path: Path, res: float,
                                                       expected: float | None) -> None:
    scene = open_scene(_scene(tmp_path, "s.tif", res))
    assert working_gsd("auto", scene, tiny_spec()) == pytest.approx(expected)
    assert working_gsd("off", scene, tiny_spec()) is None
    assert working_gsd(3.0, scene, tiny_spec()) == 3.0


@pytest.mark.parametrize(("zoom", "res", "expected"), [
    # zoom 0.5-2 at 10 m: saw 5-20 m, accepts 3.33-30 m (1.5x beyond what it saw)
    ((0.5, 2.0), 5.0, None), ((0.5, 2.0), 20.0, None), ((0.5, 2.0), 3.4, None),
    ((0.5, 2.0), 29.0, None), ((0.5, 2.0), 3.2, 10 / 3), ((0.5, 2.0), 1.3, 10 / 3),
    ((0.5, 2.0), 31.0, 30.0),
    # zoom 0.75-1.33: saw 7.52-13.3 m, accepts 5.01-20 m; 1 % slack at the ends (4/3)
    ((0.75, 1.33), 5.0, None), ((0.75, 1.33), 4.9, 10 / 1.33 / 1.5),
    ((0.75, 1.33), 21.0, 20.0), ((0.75, 1.33), 14.0, None),
    ((1.0, 1.0), 10.0, None), ((1.0, 1.0), 6.5, 10 / 1.5)])
def test_auto_resamples_only_outside_what_the_model_has_seen(
        tmp_path: Path, zoom: tuple[float, float], res: float, expected: float | None) -> None:
    """The trained zoom range sets what ``auto`` leaves native, and where it resamples to."""
    from dataclasses import replace

    from geoseg.prediction.resample import accepted_range

    spec = replace(tiny_spec(), scale_range=zoom)
    assert spec.seen_gsd() == pytest.approx((MODEL_GSD / zoom[1], MODEL_GSD / zoom[0]))
    assert accepted_range(spec) == pytest.approx((MODEL_GSD / zoom[1] / 1.5,
                                                  MODEL_GSD / zoom[0] * 1.5))
    scene = open_scene(_scene(tmp_path, "s.tif", res))
    assert working_gsd("auto", scene, spec) == pytest.approx(expected)


def test_auto_notes_a_scene_it_shrinks_below_a_few_tiles(tmp_path: Path) -> None:
    from dataclasses import replace

    from geoseg.prediction.resample import auto_note

    spec = replace(tiny_spec(), scale_range=(0.5, 2.0))  # tile 128, accepts 3.33-30 m
    small = open_scene(_scene(tmp_path, "small.tif", 1.0, shape=(512, 512)))  # -> 154 px
    note = auto_note("auto", small, spec)
    assert note is not None and "less than 4 tiles of 128 px" in note and "154x154" in note
    assert "\n" not in note
    assert auto_note("off", small, spec) is None
    big = open_scene(_scene(tmp_path, "big.tif", 2.0, shape=(1400, 1400)))  # -> 840 px
    assert auto_note("auto", big, spec) is None
    native = open_scene(_scene(tmp_path, "native.tif", 10.0))
    assert auto_note("auto", native, spec) is None
    coarse = open_scene(_scene(tmp_path, "coarse.tif", 200.0))
    assert "run natively" in (auto_note("auto", coarse, spec) or "")


def test_auto_is_off_when_a_gsd_is_unknown(tmp_path: Path) -> None:
    from dataclasses import replace

    scene = open_scene(_scene(tmp_path, "s.tif", 2.5))
    assert working_gsd("auto", scene, replace(tiny_spec(), gsd_m=math.nan)) is None
    plain = open_scene(_scene(tmp_path, "p.tif", 1.0, crs=None))
    assert working_gsd("auto", plain, tiny_spec()) is None
    with pytest.raises(InputError, match="no CRS"):
        working_gsd(2.0, plain, tiny_spec())


@pytest.mark.parametrize("bad", ["fast", "-2", "0", "inf"])
def test_bad_resample_value_is_an_input_error(bad: str) -> None:
    with pytest.raises(InputError, match="resample"):
        InferenceConfig(resample=bad)


def _native_and_fine(tmp_path: Path, *, factor: int = 4, nodata: bool = False
                     ) -> tuple[Path, Path]:
    """The same pattern at the model's GSD and ``factor`` x finer (pixels repeated)."""
    cmap = make_class_map((160, 192), n_classes=N_CLASSES, block=24, seed=7)
    img = make_scene(cmap, seed=7)
    fine = np.repeat(np.repeat(img, factor, axis=1), factor, axis=2)
    nd = None
    if nodata:
        img[img == 0] = 1
        fine[fine == 0] = 1
        fine[:, :150, :90] = 0  # a nodata corner not aligned with working pixels
        fine[:, 500:, 600:603] = 0  # and a thin nodata line
        nd = 0
    native = make_geotiff(tmp_path / "native.tif", img, res=MODEL_GSD, nodata=nd)
    finer = make_geotiff(tmp_path / "fine.tif", fine, res=MODEL_GSD / factor, nodata=nd)
    return native, finer


def test_finer_scene_gives_the_native_map_on_its_own_grid(tiny_bundle: Path,
                                                          tmp_path: Path) -> None:
    native, fine = _native_and_fine(tmp_path)
    predict(native, tmp_path / "n.tif", model=tiny_bundle, engine="eager")
    res = predict(fine, tmp_path / "f.tif", model=tiny_bundle, engine="eager",
                  resample=MODEL_GSD)  # (auto would stop at the finest it accepts, 6.67 m)
    assert res.working_gsd == pytest.approx(MODEL_GSD)
    assert "resampled to 10 m" in res.summary()
    assert_same_georef(fine, tmp_path / "f.tif")           # (b) the scene's own grid
    with rasterio.open(tmp_path / "f.tif") as f:
        assert f.tags()["working_gsd_m"] == "10"
    a = read(tmp_path / "n.tif")
    b = read(tmp_path / "f.tif")
    same = (np.repeat(np.repeat(a, 4, axis=0), 4, axis=1) == b).mean()
    assert same >= 0.98, f"4x finer scene vs native: {same:.4f} agree"   # (c)


def test_nodata_is_exactly_that_of_a_native_run(tiny_bundle: Path, tmp_path: Path) -> None:
    _, fine = _native_and_fine(tmp_path, nodata=True)
    on = read(predict(fine, tmp_path / "r.tif", model=tiny_bundle, engine="eager").output)
    off = read(predict(fine, tmp_path / "o.tif", model=tiny_bundle, engine="eager",
                       resample="off").output)
    np.testing.assert_array_equal(on == NODATA_CLASS, off == NODATA_CLASS)
    assert (on == NODATA_CLASS).sum() == 150 * 90 + 3 * (640 - 500)


def _pointwise(self, tiles):  # a fake "model": class by band 1
    z = (tiles[:, :1].astype(np.float32) - 128.0) / 16.0
    logits = np.concatenate([z, -z, np.full_like(z, -5.0)], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True) * self.window_np).astype(np.float32)


def test_scores_are_upsampled_before_the_argmax(tiny_bundle: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A diagonal boundary stays a diagonal line, no staircase of 8-pixel working pixels."""
    from geoseg.prediction.inference import Predictor

    monkeypatch.setattr(Predictor, "forward_tiles", _pointwise)
    n = 400
    yy, xx = np.mgrid[0:n, 0:n]
    band = np.clip(128 + (xx - yy) * 0.5, 1, 255).astype(np.uint8)
    scene = make_geotiff(tmp_path / "diag.tif", np.stack([band] * 3), res=MODEL_GSD / 8,
                         nodata=None)
    out = read(predict(scene, tmp_path / "d.tif", model=tiny_bundle, engine="eager").output)
    assert set(np.unique(out)) == {0, 1}
    # first column of class 0 in each row: the diagonal x = y, within a pixel, on every row
    edge = np.argmax(out == 0, axis=1)
    rows = np.arange(20, n - 20)
    assert np.abs(edge[rows] - rows).max() <= 1
    # a staircase (nearest upsampling of working pixels) keeps the edge still for 8 rows
    # and then jumps 8 px; here it moves on most rows and never stays for 3
    steps = np.diff(edge[rows])
    assert (steps != 0).mean() > 0.75 and steps.max() <= 2
    assert not np.any((steps[:-1] == 0) & (steps[1:] == 0))


def test_resize_scores_is_bilinear_with_aligned_centres() -> None:
    ramp = np.arange(4, dtype=np.float32)[None, None, :].repeat(4, axis=1)  # (1, 4, 4)
    up = resize_scores(ramp, (8, 8))[0, 0]
    np.testing.assert_allclose(up, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])


def test_off_and_untriggered_auto_are_the_native_path(tiny_bundle: Path, scene_path: Path,
                                                      tmp_path: Path) -> None:
    """(e) --resample off runs exactly today's code: same pixels, tags, no working GSD."""
    a = predict(scene_path, tmp_path / "off.tif", model=tiny_bundle, engine="eager",
                resample="off")
    b = predict(scene_path, tmp_path / "auto.tif", model=tiny_bundle, engine="eager")
    assert a.working_gsd is None and b.working_gsd is None
    assert "resampled" not in a.summary()
    with rasterio.open(a.output) as fa, rasterio.open(b.output) as fb:
        np.testing.assert_array_equal(fa.read(), fb.read())
        ta, tb = ({k: v for k, v in f.tags().items() if k != "run_id"} for f in (fa, fb))
        assert ta == tb  # (each run has its own run_id)
        assert "working_gsd_m" not in fa.tags()
    assert a.n_tiles == b.n_tiles


def test_cli_resample(tiny_bundle: Path, tmp_path: Path) -> None:
    from geoseg.cli.main import cli

    _, fine = _native_and_fine(tmp_path, factor=2)
    runner = CliRunner()
    r = runner.invoke(cli, ["predict", str(fine), "-m", str(tiny_bundle), "-o",
                            str(tmp_path / "m.tif"), "--resample", "20", "--engine", "eager",
                            "--progress", "none"])
    assert r.exit_code == 0, r.output
    assert "resampled to 20 m" in r.output
    assert read(tmp_path / "m.tif").shape == (320, 384)
    bad = runner.invoke(cli, ["predict", str(fine), "-m", str(tiny_bundle), "-o",
                              str(tmp_path / "x.tif"), "--resample", "fine"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert "expected auto, off or metres" in bad.output


def test_rewrite_spec_keeps_the_weights_bit_for_bit(tiny_bundle: Path, tmp_path: Path) -> None:
    import shutil
    from dataclasses import replace

    from safetensors.numpy import load_file

    from geoseg.errors import BundleError
    from geoseg.models.bundle import read_spec, rewrite_spec

    path = Path(shutil.copy(tiny_bundle, tmp_path / "b.safetensors"))
    before = load_file(str(path))
    spec = read_spec(path)
    rewrite_spec(path, replace(spec, scale_range=(0.5, 2.0), gsd_m=2.0))
    after = load_file(str(path))
    assert before.keys() == after.keys()
    assert all(before[k].dtype == after[k].dtype and (before[k] == after[k]).all()
               for k in before)
    assert read_spec(path).seen_gsd() == (1.0, 4.0)
    with pytest.raises(BundleError, match="another model"):
        rewrite_spec(path, replace(spec, bands=("x", "y", "z")))


@pytest.mark.parametrize(("name", "zoom"), [("deeplab", (0.5, 2.0)), ("unet", (0.75, 1.33))])
def test_shipped_bundles_record_gsd_estimate_and_zoom(name: str,
                                                      zoom: tuple[float, float]) -> None:
    from geoseg.models import default_model_path
    from geoseg.models.bundle import read_spec

    spec = read_spec(default_model_path(name))
    assert spec.scale_range == zoom and spec.gsd_m == 1.0
    assert "carriageway" in spec.provenance["gsd_estimate"]["how"]
    # the Dubai held-out tiles georeferenced at 0.5 m: inside deeplab's zoom, not unet's,
    # both accepted (native); Banepa's 0.13 m chips are resampled for both
    from geoseg.prediction.resample import accepted_range

    assert (spec.seen_gsd()[0] <= 0.5) == (name == "deeplab")  # type: ignore[index]
    lo, hi = accepted_range(spec)  # type: ignore[misc]
    assert lo * 0.99 <= 0.5 <= hi and lo > 0.132
