"""predict(): tiled = untiled, georeferencing, nodata, sizes, bands, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.errors import BandMismatchError, GeosegError
from geoseg.io import NODATA_CLASS
from geoseg.prediction.pipeline import predict
from geoseg.testing import assert_same_georef, make_class_map, make_geotiff, make_scene

from ..conftest import N_CLASSES, read, shared


def test_tiled_matches_whole_scene_forward(tiny_bundle: Path, tmp_path: Path) -> None:
    """Tiled + blended prediction of a ~3000x2000 scene equals one whole-scene pass."""
    import torch

    from geoseg.models.bundle import load_bundle

    cmap = make_class_map((2000, 3000), n_classes=N_CLASSES, block=24, seed=11)
    img = make_scene(cmap, seed=11)
    scene = make_geotiff(tmp_path / "big.tif", img, nodata=None)
    out = tmp_path / "tiled.tif"
    predict(scene, out, model=tiny_bundle, batch_size=8, chunk_tiles=6)
    tiled = read(out)

    bundle = load_bundle(tiny_bundle)
    spec = bundle.spec
    x = (img.astype(np.float32) - np.array(spec.mean, np.float32)[:, None, None]) \
        / np.array(spec.std, np.float32)[:, None, None]
    with torch.inference_mode():
        whole = bundle.model(torch.from_numpy(x)[None]).max(1).indices[0].numpy()
    agree = (tiled == whole).mean()
    assert agree >= 0.995, f"tiled vs whole agreement {agree:.4f}"
    # ... and the model has learned the scene, so the comparison means something.
    assert (whole == cmap).mean() > 0.9


def test_chunking_does_not_change_the_result(tiny_bundle: Path, tmp_path: Path) -> None:
    cmap = make_class_map((700, 900), n_classes=N_CLASSES, block=24, seed=5)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=5), nodata=None)
    results = []
    for k in (1, 2, 5):
        out = tmp_path / f"c{k}.tif"
        predict(scene, out, model=tiny_bundle, chunk_tiles=k)
        results.append(read(out))
    assert (results[0] == results[1]).mean() > 0.9999
    assert (results[0] == results[2]).mean() > 0.9999


def test_georeferencing_tags_and_cog(tiny_bundle: Path, scene_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "map.tif"
    res = predict(scene_path, out, model=tiny_bundle)
    assert res.output == out.absolute()
    assert_same_georef(scene_path, out)
    with rasterio.open(out) as dst:
        assert dst.dtypes[0] == "uint8"
        assert dst.nodata == NODATA_CLASS
        assert dst.profile["tiled"] and dst.profile["compress"] == "deflate"
        tags = dst.tags()
        assert tags["class_names"] == "class0,class1,class2"
        assert tags["CLASS_1"] == "class1"
        assert len(tags["model_sha256"]) == 64
        assert tags["tile_size"] == "128" and tags["overlap"] == "32"
        assert tags["blend"] == "cosine"
        cmap = dst.colormap(1)
        assert cmap[0][:3] == (230, 25, 75) and cmap[NODATA_CLASS][3] == 0
        assert dst.descriptions[0] == "class"
        assert rasterio.open(out).driver == "GTiff"
    # A COG: the driver metadata says so, and it has internal overviews once large enough.
    with rasterio.open(out) as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_nodata_stays_nodata(tiny_bundle: Path, scene_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "map.tif"
    predict(scene_path, out, model=tiny_bundle)
    classes = read(out)
    with rasterio.open(scene_path) as src:
        invalid = src.dataset_mask() == 0
    assert invalid.sum() == 40 * 60
    assert (classes[invalid] == NODATA_CLASS).all()
    assert (classes[~invalid] < N_CLASSES).all()


def test_real_landsat_nodata_border(tiny_bundle: Path, tmp_path: Path) -> None:
    src_path = shared("landsat", "RGB.byte.tif")
    out = tmp_path / "landsat.tif"
    predict(src_path, out, model=tiny_bundle)
    assert_same_georef(src_path, out)
    with rasterio.open(src_path) as src:
        invalid = src.dataset_mask() == 0
    classes = read(out)
    assert invalid.any()
    np.testing.assert_array_equal(classes == NODATA_CLASS, invalid)


def test_sidecar_georeferencing_is_honoured(tiny_bundle: Path, tmp_path: Path) -> None:
    chip = shared("banepa", "oam", "OAM-386693-220243-19.tif")
    assert Path(str(chip) + ".aux.xml").exists()
    out = tmp_path / "chip.tif"
    predict(chip, out, model=tiny_bundle)
    with rasterio.open(out) as dst:
        assert dst.crs is not None and dst.crs.to_epsg() == 4326
        assert not (out.with_name(out.name + ".aux.xml")).exists()  # embedded, not a sidecar
    assert_same_georef(chip, out)


@pytest.mark.parametrize("shape", [(70, 100), (129, 130), (301, 517)])
def test_odd_and_small_sizes(tiny_bundle: Path, tmp_path: Path, shape: tuple[int, int]) -> None:
    cmap = make_class_map(shape, n_classes=N_CLASSES, block=24, seed=2)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=2), nodata=None)
    out = tmp_path / "m.tif"
    predict(scene, out, model=tiny_bundle)
    classes = read(out)
    assert classes.shape == shape
    assert (classes < N_CLASSES).all()
    assert (classes == cmap).mean() > 0.8


def test_multispectral_and_band_selection(tiny_bundle: Path, tiny_bundle6: Path,
                                          tmp_path: Path) -> None:
    cmap = make_class_map((200, 260), n_classes=N_CLASSES, block=24, seed=4)
    rgb = make_scene(cmap, seed=4)
    six = np.concatenate([rgb[::-1], rgb[:1], rgb[1:2], rgb[2:]])  # bands 3,2,1,1,2,3
    six_path = make_geotiff(tmp_path / "six.tif", six, nodata=None)
    rgb_path = make_geotiff(tmp_path / "rgb.tif", rgb, nodata=None)

    predict(six_path, tmp_path / "six_map.tif", model=tiny_bundle6)
    assert read(tmp_path / "six_map.tif").shape == (200, 260)

    predict(rgb_path, tmp_path / "a.tif", model=tiny_bundle)
    predict(six_path, tmp_path / "b.tif", model=tiny_bundle, bands=(3, 2, 1))
    np.testing.assert_array_equal(read(tmp_path / "a.tif"), read(tmp_path / "b.tif"))

    with pytest.raises(BandMismatchError, match="6 bands; the model expects 3"):
        predict(six_path, tmp_path / "c.tif", model=tiny_bundle)
    with pytest.raises(BandMismatchError, match="band 9 does not exist"):
        predict(six_path, tmp_path / "c.tif", model=tiny_bundle, bands=(9, 1, 2))
    assert not (tmp_path / "c.tif").exists()


def test_probabilities(tiny_bundle: Path, scene_path: Path, tmp_path: Path) -> None:
    out, prob = tmp_path / "m.tif", tmp_path / "p.tif"
    predict(scene_path, out, model=tiny_bundle, probabilities=prob)
    assert_same_georef(scene_path, prob)
    with rasterio.open(prob) as src:
        p = src.read()
        assert src.count == N_CLASSES
        assert "254" in src.tags()["probability_scale"]
        assert src.descriptions == ("p_class0", "p_class1", "p_class2")
    classes = read(out)
    valid = classes != NODATA_CLASS
    assert (p[:, ~valid] == 255).all()
    sums = p[:, valid].astype(int).sum(0)
    assert np.abs(sums - 254).max() <= N_CLASSES  # rounding only
    # The class map is the argmax of the probabilities (up to quantisation ties).
    assert (p[:, valid].argmax(0) == classes[valid]).mean() > 0.999


def test_bf16_agrees_with_fp32(tiny_bundle: Path, tmp_path: Path) -> None:
    cmap = make_class_map((256, 256), n_classes=N_CLASSES, block=24, seed=8)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=8), nodata=None)
    predict(scene, tmp_path / "f.tif", model=tiny_bundle, precision="fp32")
    predict(scene, tmp_path / "b.tif", model=tiny_bundle, precision="bf16")
    agree = (read(tmp_path / "f.tif") == read(tmp_path / "b.tif")).mean()
    assert agree >= 0.995
    with rasterio.open(tmp_path / "b.tif") as src:
        assert src.tags()["precision"] == "bf16"


def test_failure_leaves_destination_untouched(tiny_bundle: Path, scene_path: Path,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    from geoseg.prediction import output as _output

    out = tmp_path / "m.tif"
    out.write_bytes(b"precious")

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(_output, "cog_copy", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict(scene_path, out, model=tiny_bundle, overwrite=True)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "scene.tif"]


def test_progress_json_contract(tiny_bundle: Path, scene_path: Path, tmp_path: Path) -> None:
    import io

    from geoseg.progress import JsonProgress

    stream = io.StringIO()
    predict(scene_path, tmp_path / "m.tif", model=tiny_bundle, progress=JsonProgress(stream))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "log" and kinds[-1] == "done"
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert events[-1]["outputs"] == [str((tmp_path / "m.tif").absolute())]


def test_errors_are_geoseg_errors(tiny_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(GeosegError, match="input not found"):
        predict(tmp_path / "nope.tif", tmp_path / "o.tif", model=tiny_bundle)


@pytest.mark.slow
def test_compiled_engine_agrees_with_eager(tiny_bundle: Path, tmp_path: Path) -> None:
    """torch.compile (inductor, frozen weights) gives the eager class map (slow: compiles)."""
    cmap = make_class_map((300, 400), n_classes=N_CLASSES, block=24, seed=9)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=9), nodata=None)
    predict(scene, tmp_path / "e.tif", model=tiny_bundle, engine="eager")
    r = predict(scene, tmp_path / "c.tif", model=tiny_bundle, engine="compile")
    assert "compile" in r.path
    assert (read(tmp_path / "e.tif") == read(tmp_path / "c.tif")).mean() >= 0.995


def test_compile_failure_falls_back_to_eager(tiny_bundle: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    cmap = make_class_map((100, 100), n_classes=N_CLASSES, block=24, seed=9)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=9), nodata=None)
    with pytest.warns(UserWarning, match="torch.compile failed .*running eager"):
        r = predict(scene, tmp_path / "c.tif", model=tiny_bundle, engine="compile")
    assert "eager" in r.path
    with rasterio.open(tmp_path / "c.tif") as src:
        assert src.tags()["engine"] == "eager"
