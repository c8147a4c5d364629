"""Fine-tuning a user can plan: the whole run's ETA, and the validation split as done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.testing import make_class_map, make_geotiff, make_scene
from geoseg.training.loop import run_eta

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--backbone", "resnet18", "--arch-param", "encoder_depth=3",
        "--arch-param", "decoder_channels=[16,8,4]", "--crop-size", "32", "--tile-size", "32",
        "--overlap", "8", "--batch-size", "2", "--device", "cpu", "--precision", "fp32"]


def test_run_eta_is_the_mean_pace_times_the_steps_left() -> None:
    assert run_eta(0.0, 0, 100, None) == "run ETA ?"
    assert run_eta(30.0, 10, 100, None) == "run ETA 4m30s"  # 3 s/step x 90 steps
    assert run_eta(7200.0, 100, 300, None) == "run ETA 4h00m"
    assert run_eta(30.0, 10, 100, 60.0) == "run ETA 0m30s"  # --max-minutes caps it
    assert run_eta(30.0, 100, 100, None) == "run ETA 0m00s"


def test_progress_line_carries_the_run_eta(tmp_path: Path) -> None:
    cmap = make_class_map((256, 256), n_classes=2, block=12, seed=0)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=0), nodata=None)
    labels = make_geotiff(tmp_path / "l.tif", cmap[None], nodata=None)
    r = CliRunner().invoke(cli, ["train", str(scene), "--labels", str(labels), *TINY,
                                 "--steps-per-epoch", "3", "--epochs", "2", "--progress",
                                 "json", "-o", str(tmp_path / "m.safetensors")])
    assert r.exit_code == 0, r.output
    events = [json.loads(ln) for ln in r.output.splitlines() if ln.startswith("{")]
    notes = [e["note"] for e in events if e.get("event") == "progress" and "note" in e]
    assert notes and all(n.startswith("run ETA ") for n in notes)


def test_scene_split_says_the_share_it_held_out(tmp_path: Path) -> None:
    """4 blocks and --val-fraction 0.2: one whole block, 25 % of the labelled pixels."""
    from geoseg.models.bundle import read_spec
    from geoseg.training.chips import train_scene
    from geoseg.training.config import TrainConfig

    cmap = make_class_map((128, 128), n_classes=2, block=12, seed=1)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=1), nodata=None)
    labels = make_geotiff(tmp_path / "l.tif", cmap[None], nodata=None)
    config = TrainConfig(backbone="resnet18", arch_params={"encoder_depth": 3,
                                                           "decoder_channels": (16, 8, 4)},
                         crop_size=32, tile_size=32, overlap=8, batch_size=2,
                         steps_per_epoch=2, epochs=1, device="cpu", precision="fp32")
    out = tmp_path / "m.safetensors"
    train_scene(scene, labels, out, config=config, block=64, val_fraction=0.2)
    split = read_spec(out).provenance["data"]["split"]
    assert split.startswith("1 of 4 disjoint 64-px blocks held out (25% of the labelled "
                            "pixels: --val-fraction 0.2 of the blocks, rounded to whole "
                            "blocks)"), split
