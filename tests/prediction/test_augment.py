"""predict --tta flips: the mean over flips, per batch, any engine; CLI flag and summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.prediction.augment import forward_tta
from geoseg.prediction.pipeline import predict

from ..conftest import read

T = 8


class _Stub:
    """A predictor whose "model" is any function of a tile batch (for forward_tta)."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0

    def forward_tiles(self, tiles):
        self.calls += 1
        return self.fn(tiles)


def _pointwise(tiles):  # flip-invariant: each pixel on its own
    z = tiles[:, :1].astype(np.float32)
    return np.concatenate([z, 1 - z], axis=1)


def _positional(tiles):  # sees where it is: not flip-invariant
    xx = np.arange(T, dtype=np.float32)[None, None, None, :]
    return np.concatenate([tiles[:, :1] * xx, tiles[:, 1:2]], axis=1).astype(np.float32)


def test_flips_equal_none_for_a_flip_invariant_model() -> None:
    tiles = np.random.default_rng(0).random((3, 2, T, T), dtype=np.float32)
    stub = _Stub(_pointwise)
    np.testing.assert_allclose(forward_tta(stub, tiles, tta="flips"), _pointwise(tiles),
                               rtol=1e-6)
    assert stub.calls == 4
    none = _Stub(_pointwise)
    forward_tta(none, tiles)
    assert none.calls == 1


def test_flips_average_the_flipped_back_scores() -> None:
    tiles = np.random.default_rng(1).random((2, 2, T, T), dtype=np.float32)
    got = forward_tta(_Stub(_positional), tiles, tta="flips")
    want = np.mean([np.flip(_positional(np.flip(tiles, ax)), ax) if ax else _positional(tiles)
                    for ax in ((), (3,), (2,), (2, 3))], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(got, _positional(tiles))


def test_tta_changes_the_map_only_where_the_model_is_unsure(tiny_bundle: Path,
                                                            scene_path: Path,
                                                            tmp_path: Path) -> None:
    plain = predict(scene_path, tmp_path / "n.tif", model=tiny_bundle, engine="eager",
                    probabilities=tmp_path / "p.tif")
    flips = predict(scene_path, tmp_path / "f.tif", model=tiny_bundle, engine="eager",
                    tta="flips")
    assert flips.tta == "flips" and "tta flips" in flips.summary()
    with rasterio.open(flips.output) as f:
        assert f.tags()["tta"] == "flips"
    a, b = read(plain.output), read(flips.output)
    changed = a != b
    assert 0 < changed.mean() < 0.05
    with rasterio.open(tmp_path / "p.tif") as p:
        top = p.read().max(axis=0) / 254  # the untransformed model's confidence
    # where tta changed the class, the model alone was unsure (top class near 0.5) ...
    assert np.median(top[changed]) < 0.7 and np.quantile(top[changed], 0.95) < 0.9
    # ... while most of the map is confident
    assert np.median(top[~changed & (a != 255)]) > 0.9


def test_tta_is_a_no_op_for_a_flip_invariant_model(tiny_bundle: Path, scene_path: Path,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from geoseg.prediction.inference import Predictor

    def pointwise(self, tiles):
        z = (tiles[:, :1].astype(np.float32) - 128.0) / 16.0
        e = np.exp(np.concatenate([z, -z, np.zeros_like(z)], axis=1))
        return (e / e.sum(axis=1, keepdims=True) * self.window_np).astype(np.float32)

    monkeypatch.setattr(Predictor, "forward_tiles", pointwise)
    a = read(predict(scene_path, tmp_path / "n.tif", model=tiny_bundle, engine="eager").output)
    b = read(predict(scene_path, tmp_path / "f.tif", model=tiny_bundle, engine="eager",
                     tta="flips").output)
    np.testing.assert_array_equal(a, b)


def test_cli_tta_flag_and_summary(tiny_bundle: Path, scene_path: Path, tmp_path: Path) -> None:
    from geoseg.cli.main import cli

    r = CliRunner().invoke(cli, ["predict", str(scene_path), "-m", str(tiny_bundle), "-o",
                                 str(tmp_path / "m.tif"), "--tta", "flips", "--engine",
                                 "eager", "--progress", "none"])
    assert r.exit_code == 0, r.output
    assert "tta flips" in r.output
    bad = CliRunner().invoke(cli, ["predict", str(scene_path), "-m", str(tiny_bundle), "-o",
                                   str(tmp_path / "x.tif"), "--tta", "rotations"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
