"""Issue 21: the newer commands held to predict's standard, through the CLI.

Each case: exit code, one ``Error:`` line (no traceback), inputs and unrelated files
byte-identical, no temporaries left behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from geoseg.cli.main import cli

from geoseg.testing import make_class_map, make_geotiff, make_scene

from ..conftest import tiny_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMPORT = ["--bands", "red,green,blue", "--mean", "0,0,0", "--std", "1,1,1",
          "--classes", "red,blue"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-band, 2-class ONNX segmentation network (a 1x1 convolution), 64 px tiles."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(2, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "seg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 64, 64])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3-band bundle, untrained (these tests never look at its predictions)."""
    import torch

    from geoseg.models.architectures import build_model
    from geoseg.models.bundle import save_bundle

    torch.manual_seed(0)
    spec = tiny_spec()
    return save_bundle(tmp_path_factory.mktemp("b") / "b.safetensors",
                       build_model(spec).eval(), spec)


@pytest.fixture
def work(tmp_path: Path, onnx_model: Path, untrained: Path) -> Path:
    """A scratch folder holding a copy of the ONNX model and of a bundle, and a bystander."""
    shutil.copy(onnx_model, tmp_path / "m.onnx")
    shutil.copy(untrained, tmp_path / "b.safetensors")
    (tmp_path / "unrelated.txt").write_text("not to be touched")
    return tmp_path


# -- 1. no command writes over its own input ---------------------------------------------------

def test_bundle_import_refuses_its_own_input(work: Path) -> None:
    before = snapshot(work)
    for out in ("m.onnx", "./sub/../m.onnx"):
        (work / "sub").mkdir(exist_ok=True)
        r = run("bundle", "import", work / "m.onnx", "-o", f"{work}/{out}", "--overwrite",
                *IMPORT)
        assert "is the same file as the input MODEL" in one_line_error(r)
    (work / "link.safetensors").symlink_to(work / "m.onnx")
    r = run("bundle", "import", work / "m.onnx", "-o", work / "link.safetensors",
            "--overwrite", *IMPORT)
    assert "is the same file as the input MODEL" in one_line_error(r)
    (work / "link.safetensors").unlink()
    (work / "sub").rmdir()
    assert snapshot(work) == before


def test_bundle_export_refuses_its_own_input(work: Path) -> None:
    before = snapshot(work)
    r = run("bundle", "export", work / "b.safetensors", "-o", work / "b.safetensors",
            "--overwrite")
    assert "is the same file as the input bundle" in one_line_error(r)
    import os

    os.link(work / "b.safetensors", work / "hard.onnx")  # a hard link is the same file
    r = run("bundle", "export", work / "b.safetensors", "-o", work / "hard.onnx",
            "--overwrite")
    assert "is the same file as the input bundle" in one_line_error(r)
    (work / "hard.onnx").unlink()
    assert snapshot(work) == before


def test_predict_refuses_to_overwrite_its_calibration_raster(work: Path) -> None:
    cmap = make_class_map((64, 64), n_classes=3, block=8, seed=1)
    scene = make_geotiff(work / "s.tif", make_scene(cmap), nodata=None)
    cal = make_geotiff(work / "cal.tif", make_scene(cmap, seed=2), nodata=None)
    before = snapshot(work)
    r = run("predict", scene, "-m", work / "b.safetensors", "-o", cal, "--overwrite",
            "--precision", "int8", "--calibration", cal, "--device", "cpu", "-q")
    assert "is the same file as the input --calibration" in one_line_error(r)
    assert snapshot(work) == before


def test_train_refuses_to_overwrite_a_training_mask(tmp_path: Path) -> None:
    for k in range(2):
        cmap = make_class_map((64, 64), n_classes=2, block=10, seed=k)
        for sub, arr in (("images", make_scene(cmap)), ("masks", cmap)):
            (tmp_path / "d" / sub).mkdir(parents=True, exist_ok=True)
            make_geotiff(tmp_path / "d" / sub / f"p{k}.tif", arr, nodata=None)
    before = snapshot(tmp_path)
    r = run("train", tmp_path / "d", "-o", tmp_path / "d" / "masks" / "p1.tif", "--overwrite",
            "--epochs", "1", "--device", "cpu")
    assert "is the same file as the input mask" in one_line_error(r)
    assert snapshot(tmp_path) == before


def test_train_on_a_scene_refuses_to_overwrite_its_labels(tmp_path: Path) -> None:
    cmap = make_class_map((64, 64), n_classes=2, block=10, seed=0)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap), nodata=None)
    labels = make_geotiff(tmp_path / "l.tif", cmap, nodata=None)
    before = snapshot(tmp_path)
    r = run("train", scene, "--labels", labels, "-o", labels, "--overwrite", "--epochs", "1",
            "--device", "cpu")
    assert "is the same file as the input --labels" in one_line_error(r)
    assert snapshot(tmp_path) == before


# -- 3. predict's tile limits for every command that takes a tile side --------------------------

@pytest.mark.parametrize("tile", ["33", "100000", "0"])
def test_every_tile_size_has_predicts_limits(work: Path, tile: str) -> None:
    cmap = make_class_map((64, 64), n_classes=2, block=10, seed=0)
    scene = make_geotiff(work / "s.tif", make_scene(cmap), nodata=None)
    labels = make_geotiff(work / "l.tif", cmap, nodata=None)
    before = snapshot(work)
    commands = {
        "--tile-size": [
            ["bundle", "export", "deeplab", "-o", work / "d.onnx", "--tile-size", tile],
            ["bundle", "export", work / "b.safetensors", "-o", work / "d.onnx",
             "--tile-size", tile],
            ["bundle", "import", work / "m.onnx", "-o", work / "i.safetensors", *IMPORT,
             "--tile-size", tile],
            ["train", work, "-o", work / "t.safetensors", "--tile-size", tile],
            ["predict", scene, "-m", work / "b.safetensors", "-o", work / "p.tif",
             "--tile-size", tile]],
        "--size": [["tile", scene, "--labels", labels, "-o", work / "chips", "--size", tile]],
    }
    for flag, runs in commands.items():
        for args in runs:
            line = one_line_error(run(*args))
            assert f"{flag} {tile} must be a multiple of 32 between 32 and 4096" in line, args
    assert snapshot(work) == before


def test_library_export_refuses_a_bad_tile_before_loading(tmp_path: Path,
                                                         untrained: Path) -> None:
    from geoseg.errors import InputError
    from geoseg.models.onnx_bundle import export_onnx

    with pytest.raises(InputError, match="multiple of 32"):
        export_onnx(untrained, tmp_path / "x.onnx", tile_size=33)
    assert list(tmp_path.iterdir()) == []


# -- 8. the default overlap follows the tile size ------------------------------------------------

def test_train_default_overlap_follows_the_tile(tmp_path: Path) -> None:
    from geoseg.models.bundle import read_spec

    for k in range(4):
        cmap = make_class_map((64, 64), n_classes=2, block=10, seed=k)
        for sub, arr in (("images", make_scene(cmap, seed=0)), ("masks", cmap)):
            (tmp_path / "d" / f"t{k % 2}" / sub).mkdir(parents=True, exist_ok=True)
            make_geotiff(tmp_path / "d" / f"t{k % 2}" / sub / f"p{k}.tif", arr, nodata=None)
    out = tmp_path / "m.safetensors"
    r = run("train", tmp_path / "d", "-o", out, "--tile-size", "64", "--crop-size", "32",
            "--arch-param", "encoder_depth=3", "--arch-param", "decoder_channels=[16,8,4]",
            "--batch-size", "2", "--steps-per-epoch", "1", "--epochs", "1", "--device", "cpu",
            "--precision", "fp32", "-q")
    assert r.exit_code == 0, r.output
    spec = read_spec(out)
    assert (spec.tile_size, spec.overlap) == (64, 8)
    help_text = run("train", "--help").output
    assert "tile/8" in " ".join(help_text.split())


def test_predict_default_overlap_follows_the_tile(tmp_path: Path) -> None:
    """A model with 128 px tiles and 64 px overlap, run with 64 px tiles: overlap 32."""
    import torch

    from geoseg.models.architectures import build_model
    from geoseg.models.bundle import read_spec, save_bundle

    torch.manual_seed(0)
    spec = tiny_spec(tile=128, overlap=64)
    bundle = save_bundle(tmp_path / "wide.safetensors", build_model(spec).eval(), spec)
    cmap = make_class_map((96, 160), n_classes=3, block=8, seed=1)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap), nodata=None)
    out = tmp_path / "o.tif"
    r = run("predict", scene, "-m", bundle, "-o", out,
            "--tile-size", "64", "--device", "cpu", "--engine", "eager", "-q")
    assert r.exit_code == 0, r.output
    import rasterio

    with rasterio.open(out) as ds:
        assert (ds.tags()["tile_size"], ds.tags()["overlap"]) == ("64", "32")
    assert read_spec(tmp_path / "wide.safetensors").overlap == 64
    help_text = " ".join(run("predict", "--help").output.split())
    assert "scaled with --tile-size" in help_text


# -- 6. non-finite normalisation, constant bands, ambiguous label maps ---------------------------

@pytest.mark.parametrize(("option", "value", "words"), [
    ("--std", "nan,nan,nan", "std must be finite positive numbers"),
    ("--std", "1,0,1", "std must be finite positive numbers"),
    ("--mean", "inf,0,0", "mean must be finite numbers"),
    ("--mean", "0,-inf,0", "mean must be finite numbers")])
def test_bundle_import_refuses_non_finite_normalisation(work: Path, option: str, value: str,
                                                       words: str) -> None:
    args = list(IMPORT)
    args[args.index(option) + 1] = value
    before = snapshot(work)
    r = run("bundle", "import", work / "m.onnx", "-o", work / "i.safetensors", *args)
    assert words in one_line_error(r)
    assert snapshot(work) == before


def test_a_bundle_with_nan_std_is_refused_when_read(work: Path) -> None:
    import json

    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from geoseg.errors import BundleError
    from geoseg.models.spec import ModelSpec

    with safe_open(str(work / "b.safetensors"), framework="numpy") as f:
        meta = dict(f.metadata())
    key = next(k for k, v in meta.items() if v.lstrip().startswith("{"))
    spec = json.loads(meta[key])
    spec["std"] = [float("nan")] * len(spec["std"])
    meta[key] = json.dumps(spec)
    save_file(load_file(str(work / "b.safetensors")), str(work / "nan.safetensors"),
              metadata=meta)
    with pytest.raises(BundleError, match="std must be finite"):
        ModelSpec.from_json(meta[key])
    r = run("bundle", "inspect", work / "nan.safetensors")
    assert "std must be finite positive numbers" in one_line_error(r)


def test_percentile_scaling_leaves_a_constant_band_alone(work: Path) -> None:
    """Grey 100 everywhere: stretching 100..100 onto the trained range moved it to 2."""
    from ..conftest import read

    scene = make_geotiff(work / "const.tif", np.full((3, 64, 96), 100, np.uint8), nodata=None)
    args = ["predict", scene, "-m", work / "b.safetensors", "--device", "cpu", "--engine",
            "eager", "--precision", "fp32", "-q"]
    plain = run(*args, "-o", work / "plain.tif")
    assert plain.exit_code == 0, plain.output
    scaled = run(*args, "-o", work / "scaled.tif", "--scale", "percentile")
    assert scaled.exit_code == 0, scaled.output
    warned = [line for line in scaled.output.splitlines() if line.startswith("Warning:")]
    assert len(warned) == 3, scaled.output
    for k, line in enumerate(warned, start=1):
        assert f"band {k} (b{k})" in line and "no spread" in line and "unscaled" in line
    assert np.array_equal(read(work / "scaled.tif"), read(work / "plain.tif"))


def test_percentile_scaling_still_stretches_bands_with_spread(work: Path) -> None:
    from geoseg.io import open_scene
    from geoseg.models.value_range import scaled_spec

    data = np.full((3, 64, 96), 100, np.uint8)
    data[1] = np.arange(96, dtype=np.uint8)[None, :] * 2  # band 2 spreads 0..190
    scene = open_scene(make_geotiff(work / "mixed.tif", data, nodata=None))
    spec = tiny_spec()
    from geoseg.errors import GeosegWarning

    with pytest.warns(GeosegWarning, match="no spread") as caught:
        out = scaled_spec(spec, scene, (1, 2, 3), "percentile")
    assert ["band 1 (b1)" in str(w.message) for w in caught] == [True, False]
    assert "band 3 (b3)" in str(caught[1].message)  # band 2 has a spread: no warning
    assert out.mean[0] == spec.mean[0] and out.std[2] == spec.std[2]
    assert out.std[1] != spec.std[1]


@pytest.fixture
def scored(tmp_path: Path) -> tuple[Path, Path]:
    from geoseg.classmap import ClassMapInfo

    cmap = make_class_map((64, 64), n_classes=2, block=8, seed=4)
    tags = ClassMapInfo((0, 1), ("land", "building"), ((0, 128, 0), (200, 0, 0))).to_tags()
    pred = make_geotiff(tmp_path / "pred.tif", cmap, nodata=255)
    import rasterio

    with rasterio.open(pred, "r+") as ds:
        ds.update_tags(**tags)
    labels = make_geotiff(tmp_path / "labels.tif", cmap, nodata=255)
    return pred, labels


@pytest.mark.parametrize(("label_map", "words"), [
    ("x=building", "'x' is not a label value"),
    ("0=building,0=land", "gives label value 0 twice"),
    ("1=land,1.0=building", "gives label value 1.0 twice")])
def test_score_label_map_that_cannot_mean_one_thing_is_refused(
        tmp_path: Path, scored: tuple[Path, Path], label_map: str, words: str) -> None:
    pred, labels = scored
    before = snapshot(tmp_path)
    r = run("score", pred, "--labels", labels, "--label-map", label_map, "-o",
            tmp_path / "r.json")
    assert words in one_line_error(r)
    assert snapshot(tmp_path) == before
    ok = run("score", pred, "--labels", labels, "--label-map", "0=land,1=building")
    assert ok.exit_code == 0, ok.output


def test_score_vector_label_map_name_must_be_a_field_value(tmp_path: Path,
                                                          scored: tuple[Path, Path]) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    pred, _ = scored
    x0, y0 = 500000.0, 4000000.0
    gpd.GeoDataFrame({"kind": ["house", "house"]},
                     geometry=[box(x0, y0 - 200, x0 + 200, y0),
                               box(x0 + 300, y0 - 500, x0 + 500, y0 - 300)],
                     crs="EPSG:32633").to_file(tmp_path / "l.geojson")
    args = ["score", pred, "--labels", tmp_path / "l.geojson", "--label-field", "kind"]
    r = run(*args, "--label-map", "hous=building")
    assert "no feature of" in one_line_error(r) and "'hous'" in r.output
    ok = run(*args, "--label-map", "house=building")
    assert ok.exit_code == 0, ok.output


# -- 4. a disk that fills during the final COG copy ----------------------------------------------

FULL_AT_COPY = """
import resource, signal, sys
import geoseg.prediction.output as output
from geoseg.cli.main import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
LIMIT, copy = int(sys.argv[1]), output.cog_copy
def filling(src, dst, **kw):  # every chunk is journaled: the volume fills now
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
    copy(src, dst, **kw)
output.cog_copy = filling
sys.argv = ["geoseg", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("resume", [True, False])
def test_full_disk_during_the_final_copy(work: Path, resume: bool) -> None:
    import subprocess
    import sys

    from ..conftest import read

    cmap = make_class_map((96, 160), n_classes=3, block=8, seed=1)
    scene = make_geotiff(work / "s.tif", make_scene(cmap), nodata=None)
    out = work / "out.tif"
    args = ["predict", str(scene), "-m", str(work / "b.safetensors"), "-o", str(out),
            "--device", "cpu", "--engine", "eager", "--precision", "fp32", "-q",
            *(["--resume"] if resume else [])]
    before = snapshot(work)
    proc = subprocess.run([sys.executable, "-c", FULL_AT_COPY, "2000", *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # (libtiff may print its own lines first)
    assert last.startswith(f"Error: no space left on the device while writing {out}"), last
    left = sorted(set(snapshot(work)) - set(before))
    if not resume:  # nothing to resume: every temporary is removed
        assert left == [] and snapshot(work) == before
        return
    assert "rerun with --resume" in last
    assert [n for n in left if not n.startswith(".out.tif.")] == [], left  # only the journal
    assert ".out.tif.partial.json" in left and not any("partial.tif." in n for n in left)
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert sorted(set(snapshot(work)) - set(before)) == ["out.tif"]
    fresh = run(*args[:5], work / "fresh.tif", *args[6:])
    assert fresh.exit_code == 0, fresh.output
    assert np.array_equal(read(out), read(work / "fresh.tif"))


# -- 7. the engine cache: corrupt entries rebuilt, no lock files left ----------------------------

@pytest.fixture
def imported(work: Path) -> Path:
    """The ONNX model as a bundle: its head graph is composed without torch (fast)."""
    r = run("bundle", "import", work / "m.onnx", "-o", work / "i.safetensors", "--bands",
            "red,green,blue", "--mean", "128,128,128", "--std", "64,64,64", "--classes",
            "red,blue")  # the normalisation of the generated scenes: no range warning
    assert r.exit_code == 0, r.output
    return work / "i.safetensors"


def test_corrupt_cached_engine_file_is_rebuilt(work: Path, imported: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ..conftest import read

    cache = work / "cache"
    monkeypatch.setenv("GEOSEG_CACHE", str(cache))
    scene = make_geotiff(work / "s.tif", make_scene(make_class_map((64, 96), n_classes=2,
                                                                   block=8)), nodata=None)
    args = ["predict", scene, "-m", imported, "--engine", "onnxruntime", "--device", "cpu",
            "-q"]
    first = run(*args, "-o", work / "a.tif")
    assert first.exit_code == 0, first.output
    (head,) = (cache / "onnx").glob("*.onnx")
    good = head.read_bytes()
    head.write_bytes(good[:len(good) // 2])  # a truncated entry (a disk error, a kill)
    second = run(*args, "-o", work / "b.tif")
    assert second.exit_code == 0, second.output
    warned = [line for line in second.output.splitlines() if "cached engine" in line]
    assert len(warned) == 1 and warned[0].startswith("Warning: ")
    assert str(head) in warned[0] and "is corrupt" in warned[0] and "rebuilding it" in warned[0]
    assert head.read_bytes() == good  # rebuilt, atomically (no temporary left)
    assert np.array_equal(read(work / "a.tif"), read(work / "b.tif"))
    third = run(*args, "-o", work / "c.tif")
    assert third.exit_code == 0 and "cached engine" not in third.output, third.output
    assert sorted(p.name for p in cache.rglob("*") if p.is_file() and p.parent.name == "onnx"
                  ) == [head.name]  # no lock files, no temporaries


def test_a_failed_engine_build_leaves_no_lock_file(work: Path, imported: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cache = work / "cache"
    monkeypatch.setenv("GEOSEG_CACHE", str(cache))
    scene = make_geotiff(work / "s.tif", make_scene(make_class_map((64, 96), n_classes=2,
                                                                   block=8)), nodata=None)
    before = snapshot(work)
    # the imported model takes 64 px tiles: composing its head for 128 px tiles fails
    r = run("predict", scene, "-m", imported, "--engine", "onnxruntime", "--device", "cpu",
            "--tile-size", "128", "-o", work / "o.tif", "-q")
    assert "64 px tiles" in one_line_error(r)
    assert snapshot(work) == before  # nothing in the cache either: no 0-byte .lock file


def test_waiting_lock_serialises_and_removes_its_file(tmp_path: Path) -> None:
    import threading
    import time

    from geoseg._atomic import waiting_lock

    lock = tmp_path / ".entry.lock"
    inside: list[int] = []
    overlaps: list[int] = []

    def worker(k: int) -> None:
        with waiting_lock(lock):
            inside.append(k)
            if len(inside) > 1:
                overlaps.append(k)
            time.sleep(0.02)
            inside.remove(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert overlaps == [] and not lock.exists()


# -- 5. resampling: the same work/memory refusal as a huge tile, no silent GSD -------------------

def test_resample_that_explodes_the_work_is_refused_before_the_model(work: Path) -> None:
    """A ~300 m scene at 0.05 m ran 16384 tiles at 1.17 m, silently; now one line, at once."""
    cmap = make_class_map((128, 128), n_classes=3, block=8, seed=2)
    scene = make_geotiff(work / "small.tif", make_scene(cmap), res=300.0, nodata=None)
    before = snapshot(work)
    args = ["predict", scene, "-m", work / "b.safetensors", "--device", "cpu", "--engine",
            "eager", "-q", "-o", work / "o.tif"]
    for gsd in ("0.05", "9.4"):
        line = one_line_error(run(*args, "--resample", gsd))
        assert f"--resample {gsd} on a " in line and "model px per scene px" in line
    assert snapshot(work) == before
    finest = line.rsplit("use --resample ", 1)[1].split()[0]  # the GSD the message offers
    ok = run(*args, "--resample", finest)
    assert ok.exit_code == 0, ok.output


def test_resample_gsd_that_cannot_be_honoured_is_an_error(work: Path) -> None:
    """128 px model tiles at 0.5 m cover 6.4 px of a 10 m scene: 6 or 7 px, not 0.5 m."""
    cmap = make_class_map((64, 96), n_classes=3, block=8, seed=2)
    scene = make_geotiff(work / "s10.tif", make_scene(cmap), res=10.0, nodata=None)
    before = snapshot(work)
    args = ["predict", scene, "-m", work / "b.safetensors", "--device", "cpu", "--engine",
            "eager", "-o", work / "o.tif"]
    line = one_line_error(run(*args, "-q", "--resample", "0.5"))
    assert "the nearest GSDs it can run at are 0.469 or 0.547 m" in line
    assert snapshot(work) == before
    ok = run(*args, "--resample", "0.547")
    assert ok.exit_code == 0, ok.output
    assert "resampled to 0.547 m" in ok.output
