"""Imported ONNX models run as bundles; bundles export back to ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.errors import BundleError, InputError
from geoseg.models.bundle import load_bundle, read_spec
from geoseg.models.onnx_bundle import export_onnx, import_onnx
from geoseg.prediction.pipeline import predict
from geoseg.testing import make_class_map, make_geotiff, make_scene

from ..conftest import N_CLASSES

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _export(bundle: Path, path: Path, *, batch: int | None) -> Path:
    """A published-style ONNX file from the tiny torch network (logits, no normalisation)."""
    import torch

    model = load_bundle(bundle).model
    assert model is not None
    x = torch.zeros(1 if batch is None else batch, 3, 128, 128)
    dynamic = None if batch is not None else {"x": {0: torch.export.Dim("n", min=1, max=64)}}
    program = torch.onnx.export(model.eval(), (x,), dynamo=True, input_names=["x"],
                                dynamic_shapes=dynamic, verbose=False)
    assert program is not None
    program.save(path, external_data=False)
    return path


def _import_args(spec, onnx_path: Path, out: Path) -> list[str]:
    return ["bundle", "import", str(onnx_path), "-o", str(out),
            "--bands", ",".join(spec.bands), "--mean", ",".join(map(str, spec.mean)),
            "--std", ",".join(map(str, spec.std)), "--classes", ",".join(spec.class_names()),
            "--class-colors", ",".join("#{:02x}{:02x}{:02x}".format(*c.color)
                                       for c in spec.classes)]


@pytest.mark.parametrize("batch", [None, 1], ids=["dynamic-batch", "static-batch-1"])
def test_imported_onnx_predicts_like_the_torch_bundle(tiny_bundle: Path, tmp_path: Path,
                                                      batch: int | None) -> None:
    spec = read_spec(tiny_bundle)
    onnx_path = _export(tiny_bundle, tmp_path / "published.onnx", batch=batch)
    imported = tmp_path / "imported.safetensors"
    result = CliRunner().invoke(cli, _import_args(spec, onnx_path, imported))
    assert result.exit_code == 0, result.output
    got = read_spec(imported)
    assert got.architecture == "onnx" and got.tile_size == 128
    assert got.class_names() == spec.class_names() and got.classes == spec.classes
    inspect = CliRunner().invoke(cli, ["bundle", "inspect", str(imported)])
    assert inspect.exit_code == 0 and "architecture: onnx" in inspect.output

    cmap = make_class_map((230, 310), n_classes=N_CLASSES, block=24, seed=8)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=8), nodata=None)
    predict(scene, tmp_path / "torch.tif", model=tiny_bundle, engine="eager", precision="fp32")
    r = predict(scene, tmp_path / "onnx.tif", model=imported, overlap=32, batch_size=4)
    assert r.path.split()[2] in ("openvino", "onnxruntime")
    with rasterio.open(tmp_path / "torch.tif") as a, rasterio.open(tmp_path / "onnx.tif") as b:
        assert (a.read(1) == b.read(1)).mean() >= 0.99
    with pytest.raises(InputError, match="holds an ONNX model"):
        predict(scene, tmp_path / "eager.tif", model=imported, engine="eager")
    back = tmp_path / "back.onnx"
    result = CliRunner().invoke(cli, ["bundle", "export", str(imported), "-o", str(back)])
    assert result.exit_code == 0, result.output
    assert back.read_bytes() == onnx_path.read_bytes()


def test_imported_onnx_of_fixed_size_predicts_a_scene_smaller_than_its_tile(
        tiny_bundle: Path, tmp_path: Path) -> None:
    """A fixed 128 px ONNX model on a 70 x 90 scene: one padded tile, not a smaller tile."""
    spec = read_spec(tiny_bundle)
    imported = tmp_path / "imported.safetensors"
    onnx_path = _export(tiny_bundle, tmp_path / "published.onnx", batch=1)
    result = CliRunner().invoke(cli, _import_args(spec, onnx_path, imported))
    assert result.exit_code == 0, result.output
    cmap = make_class_map((70, 90), n_classes=N_CLASSES, block=16, seed=3)
    scene = make_geotiff(tmp_path / "small.tif", make_scene(cmap, seed=3), nodata=None)
    predict(scene, tmp_path / "torch.tif", model=tiny_bundle, engine="eager", precision="fp32",
            tile_size=128)
    predict(scene, tmp_path / "onnx.tif", model=imported, engine="onnxruntime",
            precision="fp32")
    with rasterio.open(tmp_path / "torch.tif") as a, rasterio.open(tmp_path / "onnx.tif") as b:
        assert b.shape == (70, 90)
        assert (a.read(1) == b.read(1)).mean() >= 0.99


def test_export_of_a_torch_bundle_runs_in_onnxruntime(tiny_bundle: Path, tmp_path: Path) -> None:
    import torch

    out = export_onnx(tiny_bundle, tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(size=(3, 3, 128, 128)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    model = load_bundle(tiny_bundle).model
    assert model is not None
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)
    with pytest.raises(Exception, match="exists"):
        export_onnx(tiny_bundle, out)


def test_import_checks_the_model_against_the_spec(tiny_bundle: Path, tmp_path: Path) -> None:
    onnx_path = _export(tiny_bundle, tmp_path / "p.onnx", batch=None)
    common = {"bands": ("r", "g", "b"), "mean": (0.0,) * 3, "std": (1.0,) * 3}
    with pytest.raises(BundleError, match="reads 3 bands; --bands names 4"):
        import_onnx(onnx_path, tmp_path / "a.safetensors", bands=("r", "g", "b", "n"),
                    mean=(0.0,) * 4, std=(1.0,) * 4, classes=("a", "b", "c"))
    with pytest.raises(BundleError, match="takes 128 px tiles"):
        import_onnx(onnx_path, tmp_path / "a.safetensors", **common, classes=("a", "b", "c"),
                    tile_size=256)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    result = CliRunner().invoke(cli, ["bundle", "import", str(tmp_path / "junk.onnx"), "-o",
                                      str(tmp_path / "j.safetensors"), "--bands", "r,g,b",
                                      "--mean", "0,0,0", "--std", "1,1,1", "--classes", "a,b"])
    assert result.exit_code != 0 and "not a valid ONNX model" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "a.safetensors").exists() and not (tmp_path / "j.safetensors").exists()
