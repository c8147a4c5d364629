"""geoseg train / geoseg tile through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.testing import make_class_map, make_geotiff, make_scene


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pairs(root: Path, groups: int = 2, n: int = 2, size: int = 64) -> Path:
    k = 0
    for g in range(groups):
        for _ in range(n):
            cmap = make_class_map((size, size), n_classes=2, block=10, seed=k)
            for sub, arr in (("images", make_scene(cmap, seed=0)), ("masks", cmap)):
                (root / f"t{g}" / sub).mkdir(parents=True, exist_ok=True)
                make_geotiff(root / f"t{g}" / sub / f"p{k}.tif", arr, nodata=None)
            k += 1
    return root


TINY = ["--backbone", "resnet18", "--arch-param", "encoder_depth=3",
        "--arch-param", "decoder_channels=[16,8,4]", "--crop-size", "32", "--tile-size", "32",
        "--overlap", "8", "--batch-size", "4", "--steps-per-epoch", "3", "--epochs", "1",
        "--device", "cpu", "--precision", "fp32", "-q"]


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_train_cli_writes_bundle_and_metrics(runner, tmp_path):
    data = _pairs(tmp_path / "d")
    out = tmp_path / "m.safetensors"
    r = runner.invoke(cli, ["train", str(data / "t0"), "--val", str(data / "t1"),
                            "--class-names", "ground,roof", "--half", "-o", str(out), *TINY])
    assert r.exit_code == 0, r.output
    from geoseg.models.bundle import read_spec

    s = read_spec(out)
    assert [c.name for c in s.classes] == ["ground", "roof"]
    assert s.provenance["data"]["val"] == str(data / "t1")
    assert (tmp_path / "m.safetensors.metrics.csv").is_file()
    # an existing output is refused before any work
    again = runner.invoke(cli, ["train", str(data), "-o", str(out), *TINY])
    assert "exists; pass --overwrite" in _one_line_error(again)


def test_train_cli_bad_input_is_one_line(runner, tmp_path):
    data = _pairs(tmp_path / "d")
    (data / "t0" / "masks" / "p0.tif").unlink()
    r = runner.invoke(cli, ["train", str(data), "-o", str(tmp_path / "m.safetensors"), *TINY])
    assert "p0.tif has no mask" in _one_line_error(r)

    colours = tmp_path / "c.json"
    colours.write_text(json.dumps([{"id": 0, "name": "a", "color": [1, 2, 3]}]))
    data2 = _pairs(tmp_path / "d2", groups=1, n=2)
    r = runner.invoke(cli, ["train", str(data2), "--class-colors", str(colours),
                            "-o", str(tmp_path / "m2.safetensors"), *TINY])
    assert "masks/p0.tif: a colour-coded mask needs 3 bands" in _one_line_error(r)

    r = runner.invoke(cli, ["train", str(data2), "--model", "unte",
                            "-o", str(tmp_path / "m3.safetensors"), *TINY])
    assert "unte" in _one_line_error(r)


def test_tile_cli_writes_chip_pairs(runner, tmp_path):
    cmap = make_class_map((64, 96), n_classes=3, block=8, seed=2)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap), nodata=None)
    labels = make_geotiff(tmp_path / "l.tif", cmap, nodata=None)
    r = runner.invoke(cli, ["tile", str(scene), "--labels", str(labels), "-o",
                            str(tmp_path / "chips"), "--size", "32"])
    assert r.exit_code == 0, r.output
    masks = sorted((tmp_path / "chips" / "masks").glob("*.tif"))
    assert len(masks) == 6
    import rasterio

    with rasterio.open(masks[1]) as ds:  # s_r000000_c000032
        assert np.array_equal(ds.read(1), cmap[0:32, 32:64])
    r = runner.invoke(cli, ["tile", str(scene), "--labels", str(labels), "-o",
                            str(tmp_path / "chips"), "--size", "32"])
    assert "exists; pass --overwrite" in _one_line_error(r)
