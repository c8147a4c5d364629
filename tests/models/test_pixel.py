"""The per-pixel network (``--model pixel``) and the multispectral training defaults."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.errors import BundleError
from geoseg.models.architectures import NO_BACKBONE, build_model
from geoseg.models.bundle import load_bundle, read_spec
from geoseg.testing import make_class_map, make_geotiff, make_scene
from geoseg.training.augment import Augment

from ..conftest import N_CLASSES, tiny_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pixel(n_bands: int = 6, **params: object):
    return tiny_spec(n_bands).with_(architecture="pixel", backbone=NO_BACKBONE,
                                    arch_params=dict(params))


@pytest.mark.parametrize(("context", "reach"), [(1, 0), (3, 1)])
def test_sees_only_its_pixel_or_its_context(context: int, reach: int) -> None:
    model = build_model(_pixel(context=context, hidden=16)).eval()
    x = torch.randn(1, 6, 40, 56)
    y = x.clone()
    y[:, :, 20, 30] += 5.0  # change one pixel's spectrum
    with torch.inference_mode():
        a, b = model(x), model(y)
    assert a.shape == (1, N_CLASSES, 40, 56)
    changed = (a - b).abs().amax(dim=1)[0] > 1e-6
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert changed[20, 30]
    assert int((rows - 20).abs().max()) == reach and int((cols - 30).abs().max()) == reach


@pytest.mark.parametrize("bad", [{"context": 2}, {"hidden": 0}, {"layers": 0},
                                 {"depth": 3}])
def test_bad_parameters_are_refused(bad: dict) -> None:
    with pytest.raises(BundleError, match="pixel"):
        build_model(_pixel(**bad))


def test_has_no_backbone() -> None:
    with pytest.raises(BundleError, match="no encoder"):
        build_model(_pixel().with_(backbone="resnet18"))


def test_camera_jitter_only_on_camera_like_imagery() -> None:
    aug = Augment(scale=(0.75, 1.33), brightness=0.2, contrast=0.2, camera_only=True)
    rgb = aug.for_imagery(np.uint8, 3)
    assert (rgb.brightness, rgb.contrast, rgb.camera_only) == (0.2, 0.2, False)
    for dtype, bands in ((np.uint16, 3), (np.float32, 4), (np.uint8, 6)):
        other = aug.for_imagery(dtype, bands)
        assert (other.brightness, other.contrast) == (0.0, 0.0), (dtype, bands)
        assert other.scale == aug.scale and other.flips
    explicit = Augment(brightness=0.1, contrast=0.1)
    assert explicit.for_imagery(np.uint16, 6) is explicit
    assert "brightness" not in aug.for_imagery(np.uint16, 6).describe()


def _multispectral_scene(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """Six-band 16-bit 'reflectance' whose classes differ by a few % of the signal."""
    cmap = make_class_map((192, 192), n_classes=3, block=12, seed=4)
    img = make_scene(cmap, bands=6, noise=4.0, seed=4).astype(np.float64)
    img = (8000 + 4 * img).astype(np.uint16)  # mean ~8600, class spread ~500
    scene = make_geotiff(tmp_path / "scene.tif", img, dtype="uint16", nodata=None)
    labels = make_geotiff(tmp_path / "labels.tif", cmap, nodata=None)
    return scene, labels, cmap


def test_cli_trains_a_pixel_model_on_16_bit_multispectral(tmp_path: Path) -> None:
    scene, labels, cmap = _multispectral_scene(tmp_path)
    out = tmp_path / "pixel.safetensors"
    runner = CliRunner()
    r = runner.invoke(cli, ["train", str(scene), "--labels", str(labels), "-o", str(out),
                            "--model", "pixel", "--arch-param", "hidden=16",
                            "--crop-size", "32", "--tile-size", "32", "--overlap", "8",
                            "--batch-size", "8", "--steps-per-epoch", "20", "--epochs", "3",
                            "--lr", "1e-2", "--select", "loss", "--device", "cpu",
                            "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    # no brightness/contrast jitter on 16-bit data, said at start-up and recorded
    assert "augment: flips, rot90, scale 0.75-1.33" in r.output
    assert "brightness" not in r.output.split("augment:")[1].splitlines()[0]
    spec = read_spec(out)
    assert spec.architecture == "pixel" and spec.backbone == NO_BACKBONE
    assert spec.provenance["config"]["augment"]["brightness"] == 0.0
    # the kept epoch is the one with the lowest validation loss
    with Path(f"{out}.metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    best = min(rows, key=lambda row: float(row["val_loss"]))
    assert spec.provenance["epochs"] == int(best["epoch"])
    # and it predicts the scene through the same predict users run
    bundle = load_bundle(out)
    assert bundle.spec == spec
    m = runner.invoke(cli, ["predict", str(scene), "-m", str(out), "-o",
                            str(tmp_path / "map.tif"), "-q"])
    assert m.exit_code == 0, m.output
    import rasterio

    with rasterio.open(tmp_path / "map.tif") as src:
        accuracy = float(np.mean(src.read(1) == cmap))
    assert accuracy > 0.8, f"pixel model learned too little: accuracy {accuracy:.2f}"


def test_cli_refuses_a_backbone_for_pixel(tmp_path: Path) -> None:
    scene, labels, _ = _multispectral_scene(tmp_path)
    r = CliRunner().invoke(cli, ["train", str(scene), "--labels", str(labels), "-o",
                                 str(tmp_path / "m.safetensors"), "--model", "pixel",
                                 "--backbone", "resnet18"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip().splitlines() == [
        "Error: --model pixel has no encoder: leave out --backbone"]
