"""The classic architectures: FCN-8s/16s/32s (skip fusion) and SegNet (index unpooling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.models.architectures import build_model
from geoseg.models.bundle import load_bundle, save_bundle
from geoseg.models.weights import load_backbone_weights
from geoseg.testing import make_class_map, make_geotiff, make_scene

from ..conftest import N_CLASSES, read, tiny_spec, train_tiny

CLASSIC = [
    ("fcn", "resnet18", {"head_channels": 64}),
    ("fcn16s", "mobilenet_v2", {"head_channels": 64}),
    ("fcn32s", "resnet18", {"head_channels": 64}),
    ("segnet", "vgg11_bn", {"width": 0.25}),
]


@pytest.mark.parametrize(("arch", "backbone", "params"), CLASSIC)
def test_any_size_and_band_count(arch: str, backbone: str, params: dict) -> None:
    spec = tiny_spec(5).with_(architecture=arch, backbone=backbone, arch_params=params)
    model = build_model(spec).eval()
    with torch.inference_mode():
        for shape in ((64, 64), (96, 160)):
            assert model(torch.zeros(2, 5, *shape)).shape == (2, N_CLASSES, *shape)


@pytest.mark.parametrize(("arch", "backbone", "params"), [CLASSIC[0], CLASSIC[3]])
def test_trains_predicts_and_round_trips(arch: str, backbone: str, params: dict,
                                         tmp_path: Path) -> None:
    from geoseg.prediction.pipeline import predict

    spec = tiny_spec().with_(architecture=arch, backbone=backbone, arch_params=params)
    model = train_tiny(spec, steps=120)
    path = save_bundle(tmp_path / f"{arch}.safetensors", model, spec)
    bundle = load_bundle(path)
    assert bundle.spec == spec
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(bundle.model(x), model(x))
    # a scene it has not seen, through the same predict users run
    cmap = make_class_map((256, 320), n_classes=N_CLASSES, block=24, seed=11)
    scene = make_geotiff(tmp_path / "scene.tif", make_scene(cmap, seed=11))
    predict(scene, tmp_path / "map.tif", model=path)
    accuracy = float(np.mean(read(tmp_path / "map.tif") == cmap))
    assert accuracy > 0.6, f"{arch} learned too little: pixel accuracy {accuracy:.2f}"


def test_fcn_skips_start_as_fcn32s() -> None:
    """Skip scores are zero-initialised: an untrained FCN-8s is its FCN-32s path."""
    spec = tiny_spec().with_(architecture="fcn", backbone="resnet18",
                             arch_params={"head_channels": 32})
    model = build_model(spec).eval()
    assert torch.count_nonzero(model.score8.weight) == 0
    assert torch.count_nonzero(model.score16.weight) == 0
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        deep = model.head(model.encoder(x)[5])
        base = torch.nn.functional.interpolate(model.up2b(model.up2a(deep)), size=(64, 64),
                                               mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x), base)


def test_segnet_unpools_with_indices() -> None:
    spec = tiny_spec().with_(architecture="segnet", backbone="vgg11_bn",
                             arch_params={"width": 0.125})
    model = build_model(spec).eval()
    pools = [m for m in model.encoder.features if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 5 and all(p.return_indices for p in pools)
    assert isinstance(model.unpool, torch.nn.MaxUnpool2d)


def test_segnet_loads_torchvision_vgg_weights(tmp_path: Path) -> None:
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vgg = torchvision.models.vgg11_bn(weights=None)
    weights = tmp_path / "vgg11_bn.safetensors"
    save_file({k: v.contiguous() for k, v in vgg.state_dict().items()}, str(weights))
    spec = tiny_spec().with_(architecture="segnet", backbone="vgg11_bn", arch_params={})
    model = build_model(spec)
    report = load_backbone_weights(model, weights)
    assert report.loaded == len(vgg.features.state_dict())
    torch.testing.assert_close(model.encoder.features[0].weight, vgg.features[0].weight)


def test_segnet_refuses_other_backbones() -> None:
    from geoseg.errors import BundleError

    spec = tiny_spec().with_(architecture="segnet", backbone="resnet18", arch_params={})
    with pytest.raises(BundleError, match="VGG-BN backbone"):
        build_model(spec)


def test_models_lists_classic_architectures() -> None:
    out = CliRunner().invoke(cli, ["models"]).output
    for name in ("fcn", "fcn16s", "fcn32s", "segnet"):
        assert f"  {name}" in out
