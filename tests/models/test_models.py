"""Model registry, bundles (self-describing, no pickle), offline weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from geoseg.errors import BundleError, UnknownNameError, WeightsNotFoundError
from geoseg.models import ARCHITECTURES, resolve_model
from geoseg.models.architectures import build_model, check_backbone
from geoseg.models.bundle import load_bundle, read_spec, save_bundle
from geoseg.models.registry import Registry
from geoseg.models.spec import FORMAT_VERSION, ModelSpec
from geoseg.models.weights import load_backbone_weights

from ..conftest import tiny_spec


def test_architectures_cover_smp() -> None:
    import segmentation_models_pytorch as smp

    assert set(smp.MODEL_ARCHITECTURES_MAPPING) <= set(ARCHITECTURES.names())
    assert ARCHITECTURES.canonical("deeplab") == "deeplabv3plus"
    assert ARCHITECTURES.canonical("DeepLabV3+") == "deeplabv3plus"


def test_unknown_architecture_suggests() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown architecture 'unte'; did you mean "
                                               r"'unet'\? available: unet, "):
        ARCHITECTURES.get("unte")


def test_unknown_backbone_suggests() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        check_backbone("resnet81")
    assert check_backbone("tu-resnet10t") == "tu-resnet10t"


@pytest.mark.parametrize(("arch", "backbone", "params"), [
    ("unet", "resnet18", {"encoder_depth": 3, "decoder_channels": (16, 8, 8)}),
    ("deeplab", "mobilenet_v2", {}),
    ("fpn", "resnet18", {}),
    ("segformer", "mit_b0", {}),
    ("unet", "tu-resnet10t", {"encoder_depth": 3, "decoder_channels": (16, 8, 8)}),
])
def test_build_any_band_count(arch: str, backbone: str, params: dict) -> None:
    spec = tiny_spec(5).with_(architecture=arch, backbone=backbone, arch_params=params)
    model = build_model(spec).eval()
    with torch.inference_mode():
        out = model(torch.zeros(1, 5, 64, 64))
    assert out.shape == (1, 3, 64, 64)


def test_registry_plugins_and_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    reg: Registry[object] = Registry("architecture", "geoseg.test_architectures")
    reg.register("unet")(object())
    eps = [EntryPoint("hrnet", "json:dumps", "geoseg.test_architectures"),
           EntryPoint("broken", "no_such_module:build", "geoseg.test_architectures")]
    monkeypatch.setattr("geoseg.models.registry.entry_points", lambda group: eps)
    with pytest.warns(UserWarning, match="'broken'.*failed to load"):
        names = reg.names()
    assert names == ["unet", "hrnet"]
    assert reg.get("hrnet") is json.dumps
    with pytest.raises(Exception, match="already registered"):
        reg.register("unet")(object())


def test_bundle_round_trip(tmp_path: Path) -> None:
    spec = tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec).eval()
    path = save_bundle(tmp_path / "m.safetensors", model, spec)
    bundle = load_bundle(path)
    assert bundle.spec == spec
    assert len(bundle.sha256) == 64
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(bundle.model(x), model(x))
    assert read_spec(path).to_dict() == spec.to_dict()


def test_half_bundle_is_smaller_and_close(tmp_path: Path) -> None:
    spec = tiny_spec()
    model = build_model(spec).eval()
    full = save_bundle(tmp_path / "f.safetensors", model, spec)
    half = save_bundle(tmp_path / "h.safetensors", model, spec, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_bundle(half).model
    assert next(loaded.parameters()).dtype == torch.float32


def test_bundle_has_no_pickle(tmp_path: Path) -> None:
    spec = tiny_spec()
    path = save_bundle(tmp_path / "m.safetensors", build_model(spec), spec)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + header_len])
    spec_json = json.loads(header["__metadata__"]["geoseg.spec"])
    assert spec_json["format_version"] == FORMAT_VERSION
    assert spec_json["classes"][0] == {"id": 0, "name": "class0", "color": [230, 25, 75]}
    assert b"\x80\x04" not in path.read_bytes()[:8 + header_len]  # no pickle protocol marker


def test_rejects_unknown_format_version(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    d = tiny_spec().to_dict()
    d["format_version"] = FORMAT_VERSION + 1
    path = tmp_path / "future.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"geoseg.spec": json.dumps(d)})
    with pytest.raises(BundleError, match="format version 2 is not supported"):
        load_bundle(path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\x10\x00\x00\x00\x00\x00\x00\x00{"])
def test_corrupt_bundle(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(BundleError, match="not a geoseg model bundle"):
        load_bundle(path)


def test_bare_safetensors_is_not_a_bundle(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(BundleError, match="without a geoseg spec"):
        load_bundle(path)


def test_weights_that_do_not_fit_the_spec(tmp_path: Path) -> None:
    spec = tiny_spec()
    path = save_bundle(tmp_path / "m.safetensors", build_model(spec), spec)
    other = spec.with_(classes=spec.classes[:2])
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(tmp_path / "x.safetensors"),
              metadata={"geoseg.spec": other.to_json()})
    with pytest.raises(BundleError, match="weights do not match its spec"):
        load_bundle(tmp_path / "x.safetensors")


def test_spec_validation() -> None:
    with pytest.raises(BundleError, match="mean/std"):
        tiny_spec().with_(mean=(1.0,))
    with pytest.raises(BundleError, match="multiple of 32"):
        tiny_spec().with_(tile_size=100)
    with pytest.raises(BundleError, match="malformed"):
        ModelSpec.from_dict({"format_version": FORMAT_VERSION})


def test_resolve_model_names(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'unet'"):
        resolve_model("unte")
    with pytest.raises(UnknownNameError, match="is an architecture, not a trained model"):
        resolve_model("fpn")
    with pytest.raises(BundleError, match="not found"):
        resolve_model(tmp_path / "missing.safetensors")


def test_pretrained_weights_never_download(tmp_path: Path) -> None:
    spec = tiny_spec(13).with_(backbone="resnet50", arch_params={})
    model = build_model(spec)
    with pytest.raises(WeightsNotFoundError, match=r"expected .*torch_home.*resnet50_sentinel2_all"
                                                   r"_moco.*\.pth.*never downloads"):
        load_backbone_weights(model, "ResNet50_Weights.SENTINEL2_ALL_MOCO")
    with pytest.raises(WeightsNotFoundError, match="file not found"):
        load_backbone_weights(model, tmp_path / "nope.pth")


def test_pretrained_weights_from_torchgeo_cache(tmp_path: Path) -> None:
    """A torchgeo-style checkpoint in torch's cache loads into an smp encoder, offline."""
    import timm
    from torchgeo.models import get_weight

    url = get_weight("ResNet18_Weights.SENTINEL2_RGB_MOCO").url
    ckpt = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    reference = timm.create_model("resnet18", in_chans=3, num_classes=0)
    torch.save(reference.state_dict(), ckpt)
    spec = tiny_spec().with_(arch_params={})
    model = build_model(spec)
    report = load_backbone_weights(model, "ResNet18_Weights.SENTINEL2_RGB_MOCO")
    assert report.loaded >= 60
    torch.testing.assert_close(model.encoder.conv1.weight, reference.conv1.weight)
