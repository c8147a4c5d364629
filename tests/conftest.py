"""Shared fixtures: generated scenes, a tiny model trained here in seconds, real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from geoseg.testing import make_class_map, make_geotiff, make_scene

#: Real data for the tests: $GEOSEG_DATA, else ../shared/data beside the checkout.
SHARED_DATA = Path(os.environ.get("GEOSEG_DATA")
                   or Path(__file__).resolve().parents[2] / "shared" / "data")

N_CLASSES = 3
TINY_ARCH = {"encoder_depth": 3, "decoder_channels": (32, 16, 8)}


def shared(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"public test data not available: {path.resolve()} "
                    "(docs/data.md; set GEOSEG_DATA)")
    return path


@pytest.fixture(autouse=True)
def _offline_torch_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                       ) -> None:
    """Nothing may download, nothing is cached outside the session's temporary folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch_home"))
    # ONNX exports and int8 models go to a session cache, never the user's ~/.cache
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path_factory.getbasetemp() / "geoseg_cache"))


def tiny_spec(n_bands: int = 3, *, tile: int = 128, overlap: int = 32, mean: float = 128.0,
              std: float = 64.0):
    from geoseg.models.spec import ClassInfo, ModelSpec

    colors = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180)]
    return ModelSpec(
        architecture="unet", backbone="resnet18",
        bands=tuple(f"b{i + 1}" for i in range(n_bands)),
        mean=(mean,) * n_bands, std=(std,) * n_bands,
        classes=tuple(ClassInfo(i, f"class{i}", colors[i]) for i in range(N_CLASSES)),
        tile_size=tile, overlap=overlap, gsd_m=10.0, arch_params=dict(TINY_ARCH),
        provenance={"trained_by": "tests/conftest.py"})


def train_tiny(spec, *, steps: int = 80, seed: int = 0):
    """Train a tiny U-Net for ``steps`` steps on a synthetic learnable scene (seconds)."""
    import torch

    from geoseg.models.architectures import build_model

    torch.manual_seed(seed)
    cmap = make_class_map((512, 512), n_classes=N_CLASSES, block=24, seed=seed)
    img = make_scene(cmap, bands=spec.n_bands, seed=seed).astype(np.float32)
    x_all = torch.from_numpy((img - np.array(spec.mean, np.float32)[:, None, None])
                             / np.array(spec.std, np.float32)[:, None, None])
    y_all = torch.from_numpy(cmap.astype(np.int64))
    model = build_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        ys = rng.integers(0, 512 - 96, 8)
        xs = rng.integers(0, 512 - 96, 8)
        xb = torch.stack([x_all[:, y:y + 96, x:x + 96] for y, x in zip(ys, xs, strict=True)])
        yb = torch.stack([y_all[y:y + 96, x:x + 96] for y, x in zip(ys, xs, strict=True)])
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-band, 3-class bundle that has learned the synthetic scenes."""
    from geoseg.models.bundle import save_bundle

    spec = tiny_spec()
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_bundle(path, train_tiny(spec), spec)
    return path


@pytest.fixture(scope="session")
def tiny_bundle6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-band (multispectral) bundle, untrained weights are enough for I/O tests."""
    import torch

    from geoseg.models.architectures import build_model
    from geoseg.models.bundle import save_bundle

    torch.manual_seed(1)
    spec = tiny_spec(6)
    path = tmp_path_factory.mktemp("models6") / "tiny6.safetensors"
    save_bundle(path, build_model(spec).eval(), spec)
    return path


@pytest.fixture
def scene_path(tmp_path: Path) -> Path:
    """A 3-band uint8 scene with a learnable pattern, odd size, nodata 0 in one corner."""
    cmap = make_class_map((301, 517), n_classes=N_CLASSES, block=24, seed=3)
    img = make_scene(cmap, seed=3)
    img[img == 0] = 1
    img[:, :40, :60] = 0
    return make_geotiff(tmp_path / "scene.tif", img, nodata=0)


def read(path: os.PathLike[str] | str, band: int = 1) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(band)


@pytest.fixture
def one_torch_thread():  # type: ignore[no-untyped-def]
    """Tiny models run fastest on one thread (and do not fight other processes)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests (real models, training cards) get an hour unless they set their own."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(3600))
