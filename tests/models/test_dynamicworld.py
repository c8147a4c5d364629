"""The ``dynamicworld`` default model: parity with Google's SavedModel, spec, engines.

``tests/data/dynamicworld_parity.npz`` holds three 64 x 64 crops of real Sentinel-2 L1C
pixels (the Slovenian scenes of eo-learn's example data, MIT; one per date, the nine
Dynamic World bands as raw uint16) and the logits the published TensorFlow SavedModel
(``model/forward``) gives for them, normalised as ``single_image_runner.ipynb`` does;
``examples/dynamicworld_convert.py`` wrote both. No TensorFlow is needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.errors import BundleError
from geoseg.models import DEFAULT_MODELS, resolve_model, resolve_spec
from geoseg.models.architectures import ENCODER_FREE, NO_BACKBONE, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "dynamicworld_parity.npz"
BANDS = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12"]
PALETTE = {"water": "#419bdf", "trees": "#397d49", "grass": "#88b053",
           "flooded_vegetation": "#7a87c6", "crops": "#e49635", "shrub_and_scrub": "#dfc35a",
           "built": "#c4281b", "bare": "#a59b8f", "snow_and_ice": "#b39fe1"}


def _hex(color: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in color)


def test_logits_match_the_savedmodel_on_real_sentinel2_pixels() -> None:
    with np.load(FIXTURE) as fx:
        inputs, expected = fx["inputs"], fx["logits"]
    assert inputs.dtype == np.uint16 and inputs.shape[1] == 9 and inputs.max() > 1000
    bundle = resolve_model("dynamicworld")
    assert bundle.model is not None
    with torch.inference_mode():
        got = bundle.model(torch.from_numpy(inputs.astype(np.float32))).numpy()
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= 1e-4
    # the logits are informative: the crops are not one class
    assert len(np.unique(expected.argmax(1))) >= 2


def test_spec_names_bands_classes_palette_input_and_licence() -> None:
    spec = resolve_spec("dynamicworld")
    assert spec.architecture == "dynamicworld" and spec.backbone == NO_BACKBONE
    assert list(spec.bands) == BANDS
    assert {c.name: _hex(c.color) for c in spec.classes} == PALETTE
    assert [c.name for c in spec.classes] == list(PALETTE)  # published channel order
    assert spec.mean == (0.0,) * 9 and spec.std == (1.0,) * 9  # normalisation is in the model
    assert spec.gsd_m == 10.0 and spec.input_dtype == "uint16"
    assert spec.input_kind is not None and "L1C" in spec.input_kind
    assert spec.input_range is not None
    assert all(0 <= lo < hi <= 10000 for lo, hi in spec.input_range)
    prov = spec.provenance
    assert prov["license"] == "Apache-2.0"
    assert "National Geographic" in prov["notice"] and "World Resources Institute" in prov["notice"]
    assert prov["source"] == "https://github.com/google/dynamicworld"
    assert len(prov["source_commit"]) == 40
    assert "dynamicworld" in DEFAULT_MODELS and "dynamicworld" in ENCODER_FREE


def test_fully_convolutional_for_geoseg_tiles() -> None:
    model = build_model(resolve_spec("dynamicworld")).eval()
    with torch.inference_mode():
        out = model(torch.full((2, 9, 96, 160), 1500.0))
    assert out.shape == (2, 9, 96, 160) and bool(torch.isfinite(out).all())


def test_negative_and_huge_values_stay_finite() -> None:
    model = build_model(resolve_spec("dynamicworld")).eval()
    x = torch.zeros(1, 9, 32, 32)
    x[..., :16, :] = -5000.0
    x[..., 16:, :] = 65535.0
    with torch.inference_mode():
        assert bool(torch.isfinite(model(x)).all())


@pytest.mark.parametrize(("change", "match"), [({"backbone": "resnet18"}, "no encoder"),
                                               ({"arch_params": {"width": 2}}, "no architecture"),
                                               ({"bands": ("B2", "B3", "B4"), "mean": (0,) * 3,
                                                 "std": (1,) * 3, "input_range": None},
                                                "9 bands")])
def test_bad_specs_are_refused(change: dict, match: str) -> None:
    spec = resolve_spec("dynamicworld").with_(**change)
    with pytest.raises(BundleError, match=match):
        build_model(spec)


def test_spec_without_input_kind_reads_as_before() -> None:
    from geoseg.models.spec import ModelSpec

    spec = resolve_spec("dynamicworld")
    d = json.loads(spec.to_json())
    del d["input_kind"]  # a bundle written before the field existed
    assert ModelSpec.from_dict(d).input_kind is None
    assert ModelSpec.from_json(spec.to_json()) == spec


# -------------------------------------------------------------- CLI, engines, QGIS ---------
WATER = (1100, 900, 600, 450, 350, 320, 280, 120, 90)
FOREST = (800, 650, 450, 850, 2100, 2600, 2800, 1400, 600)


@pytest.fixture(scope="module")
def s2_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 x 64 px, nine bands as L1C uint16: water on the left, forest on the right."""
    from geoseg.testing import make_geotiff

    rng = np.random.default_rng(0)
    data = np.empty((9, 64, 64), np.float64)
    data[:, :, :32] = np.array(WATER, np.float64)[:, None, None]
    data[:, :, 32:] = np.array(FOREST, np.float64)[:, None, None]
    data *= 1 + 0.03 * rng.standard_normal(data.shape)
    path = tmp_path_factory.mktemp("dw") / "s2.tif"
    return make_geotiff(path, data.round().astype(np.uint16), dtype="uint16", nodata=0,
                        res=10.0)


def _cli(*args: str) -> str:
    from click.testing import CliRunner
    from geoseg.cli.main import cli

    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("engine", ["eager", "onnxruntime", "openvino", "auto"])
def test_predict_writes_the_nine_class_map_with_the_palette(engine: str, s2_scene: Path,
                                                           tmp_path: Path) -> None:
    import rasterio

    if engine in ("onnxruntime", "openvino"):
        pytest.importorskip(engine)
    out = tmp_path / f"{engine}.tif"
    precision = "auto" if engine == "auto" else "fp32"  # auto: what a user gets
    _cli("predict", str(s2_scene), "-o", str(out), "--model", "dynamicworld", "--engine",
         engine, "--precision", precision, "--bands", "1,2,3,4,5,6,7,8,9")
    with rasterio.open(out) as dst, rasterio.open(s2_scene) as src:
        classes = dst.read(1)
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        cmap = dst.colormap(1)
        names = dst.tags()["class_names"].split(",")
    assert names == list(PALETTE)
    assert [_hex(cmap[i][:3]) for i in range(9)] == list(PALETTE.values())
    # the model, not a constant: water where the spectra are water's, trees where forest's
    assert (classes[:, :24] == 0).mean() > 0.9
    assert (classes[:, 40:] == 1).mean() > 0.9


def test_models_and_bundle_inspect_show_bands_classes_input_and_licence() -> None:
    text = _cli("models")
    line = next(x for x in text.splitlines() if x.strip().startswith("dynamicworld"))
    assert "Apache-2.0" in line and "Sentinel-2" in line
    assert "B2,B3,B4,B5,B6,B7,B8,B11,B12" in text and "snow_and_ice" in text
    assert "L1C top-of-atmosphere reflectance" in text
    listed = json.loads(_cli("models", "--json"))["models"]
    dw = next(m for m in listed if m["name"] == "dynamicworld")
    assert dw["available"] and dw["bands"] == BANDS and dw["license"] == "Apache-2.0"
    assert [c["name"] for c in dw["classes"]] == list(PALETTE)
    inspect = _cli("bundle", "inspect", "dynamicworld")
    assert "bands (9): B2, B3, B4, B5, B6, B7, B8, B11, B12" in inspect
    assert "input: Sentinel-2 L1C top-of-atmosphere reflectance x 10000 (0-10000)" in inspect
    assert "gsd: 10.0 m" in inspect and "Apache-2.0" in inspect
    assert "National Geographic" in inspect and "World Resources Institute" in inspect
    for name, color in PALETTE.items():
        assert f"{name:<20} {color}" in inspect


def test_qgis_plugin_lists_dynamicworld() -> None:
    import importlib.util
    import sys

    plugin = Path(__file__).resolve().parents[2] / "qgis_plugin" / "geoseg_qgis" / "runner.py"
    spec = importlib.util.spec_from_file_location("geoseg_qgis_runner_dw", plugin)
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    assert "dynamicworld" in runner.DEFAULT_MODELS  # the fallback when geoseg cannot answer
    exe = Path(sys.executable).with_name("geoseg")
    assert "dynamicworld" in runner.list_models(str(exe))  # geoseg models --json


def test_range_check_accepts_real_l1c_and_catches_reflectance_floats(tmp_path: Path) -> None:
    import rasterio

    from geoseg.io import open_scene
    from geoseg.models.value_range import range_warning
    from geoseg.testing import make_geotiff

    from ..conftest import shared

    path = shared("sentinel2", "slovenia_eolearn", "S2_L1C_2015-07-11.tif")
    spec = resolve_spec("dynamicworld")
    bands = (2, 3, 4, 5, 6, 7, 8, 12, 13)
    # one Slovenian forest square kilometre: narrow, but inside the global range
    assert range_warning(open_scene(path), bands, spec) is None
    with rasterio.open(path) as src:
        refl = src.read(list(bands)).astype(np.float32) / 10000
    floats = make_geotiff(tmp_path / "refl.tif", refl, dtype="float32", nodata=None)
    message = range_warning(open_scene(floats), tuple(range(1, 10)), spec)
    assert message is not None and "--scale" in message


def test_train_init_dynamicworld_fine_tunes_it(tmp_path: Path) -> None:
    """Nine-band uint16 tiles, two classes: the head is replaced, the rest starts trained."""
    from geoseg.models.bundle import load_bundle, read_spec
    from geoseg.testing import make_class_map, make_geotiff

    rng = np.random.default_rng(1)
    water, forest = np.array(WATER, float), np.array(FOREST, float)
    for sub in ("images", "masks"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for k in range(4):
        cmap = make_class_map((64, 64), n_classes=2, block=16, seed=k)
        img = np.where(cmap[None] == 0, water[:, None, None], forest[:, None, None])
        img *= 1 + 0.03 * rng.standard_normal(img.shape)
        make_geotiff(tmp_path / "d" / "images" / f"p{k}.tif", img.round().astype(np.uint16),
                     dtype="uint16", nodata=None)
        make_geotiff(tmp_path / "d" / "masks" / f"p{k}.tif", cmap.astype(np.uint8),
                     nodata=None)
    out = tmp_path / "ft.safetensors"
    _cli("train", str(tmp_path / "d"), "-o", str(out), "--init", "dynamicworld",
         "--class-names", "water,land", "--epochs", "1", "--steps-per-epoch", "2",
         "--batch-size", "2", "--crop-size", "32", "--tile-size", "64", "--overlap", "8",
         "--device", "cpu", "--precision", "fp32", "--quiet")
    spec = read_spec(out)
    assert (spec.architecture, spec.n_classes, spec.bands) == ("dynamicworld", 2, tuple(BANDS))
    assert spec.input_kind == resolve_spec("dynamicworld").input_kind
    assert spec.provenance["init"]["head_replaced"] is True
    tuned, base = load_bundle(out).model, resolve_model("dynamicworld").model
    assert tuned is not None and base is not None
    # the stem started from Dynamic World's weights and moved (trained), the head is new
    moved = (tuned.state_dict()["stem.0.weight"] - base.state_dict()["stem.0.weight"]).abs()
    assert 0 < float(moved.max()) < 0.1
    assert tuned.state_dict()["head.weight"].shape == (2, 144, 1, 1)


def test_converter_without_a_savedmodel_or_tensorflow_says_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "examples" / "dynamicworld_convert.py"
    fake = tmp_path / "model" / "forward"
    for target, tf_python in ((tmp_path / "absent", sys.executable), (fake, "/no/python")):
        fake.mkdir(parents=True, exist_ok=True)
        (fake / "saved_model.pb").write_bytes(b"")
        (tmp_path / "NOTICE").write_text("notice")
        run = subprocess.run([sys.executable, str(script), str(target), "--tf-python",
                              tf_python, "--commit", "0" * 40, "-o", str(tmp_path / "o.st")],
                             capture_output=True, text=True, check=False)
        assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert not (tmp_path / "o.st").exists()
