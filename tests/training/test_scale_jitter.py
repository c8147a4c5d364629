"""Scale jitter of training crops: the range is the user's, shrinking averages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.models.bundle import read_spec
from geoseg.testing import make_class_map, make_geotiff, make_scene
from geoseg.training.augment import Augment, random_chip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shrinking_a_crop_averages_instead_of_aliasing() -> None:
    # stripes of period 3 (0, 0, 255): shrunk 3x, point sampling would hit one phase only
    # (all 0 or all 255); an area average gives the stripes' mean, 85, everywhere
    row = np.tile(np.array([0, 0, 255], np.uint8), 64)  # 192 px
    image = np.broadcast_to(row, (3, 192, 192)).copy()
    mask = np.zeros((192, 192), np.uint8)
    aug = Augment(flips=False, rot90=False, scale=(1 / 3, 1 / 3))
    chip, chip_mask = random_chip(image, mask, 64, np.random.default_rng(0), aug)
    assert chip.shape == (3, 64, 64) and chip_mask.shape == (64, 64)
    inner = chip[:, 2:-2, 2:-2]
    assert abs(float(inner.mean()) - 85.0) < 3.0
    assert float(inner.std()) < 12.0, "the shrunk crop aliased the stripes"


def test_enlarging_a_crop_keeps_labels_nearest() -> None:
    cmap = make_class_map((96, 96), n_classes=3, block=8, seed=1)
    image = make_scene(cmap, seed=1)
    aug = Augment(flips=False, rot90=False, scale=(2.0, 2.0))
    _, chip_mask = random_chip(image, cmap, 64, np.random.default_rng(1), aug)
    assert set(np.unique(chip_mask)) <= {0, 1, 2}  # labels never blended


def _pairs(root: Path) -> Path:
    for k in range(2):
        cmap = make_class_map((64, 64), n_classes=2, block=10, seed=k)
        for sub, arr in (("images", make_scene(cmap, seed=k)), ("masks", cmap)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            make_geotiff(root / sub / f"p{k}.tif", arr, nodata=None)
    return root


def test_cli_scale_jitter_is_recorded_and_checked(tmp_path: Path) -> None:
    data = _pairs(tmp_path / "d")
    out = tmp_path / "m.safetensors"
    tiny = ["--backbone", "resnet18", "--arch-param", "encoder_depth=3",
            "--arch-param", "decoder_channels=[16,8,4]", "--crop-size", "32",
            "--tile-size", "32", "--overlap", "8", "--batch-size", "4",
            "--steps-per-epoch", "2", "--epochs", "1", "--device", "cpu",
            "--precision", "fp32"]
    runner = CliRunner()
    r = runner.invoke(cli, ["train", str(data), "-o", str(out), "--scale-jitter", "0.5,2",
                            *tiny])
    assert r.exit_code == 0, r.output
    assert "scale 0.5-2" in r.output  # said at start-up
    assert read_spec(out).provenance["config"]["augment"]["scale"] == [0.5, 2.0]
    for bad, why in (("2,1", "need 0 < MIN <= MAX"), ("abc", "expected MIN,MAX"),
                     ("0,1", "need 0 < MIN")):
        r = runner.invoke(cli, ["train", str(data), "-o", str(tmp_path / "x.safetensors"),
                                "--scale-jitter", bad, *tiny])
        assert r.exit_code == 2 and why in r.output and "Traceback" not in r.output
        assert not (tmp_path / "x.safetensors").exists()
