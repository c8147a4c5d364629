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


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    assert s.provenance["data"]["val"] == "t1"  # names: no path of the training machine
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


# -- issue 14: names, default models, colour-coded scene labels, help text ------------------

def test_train_help_names_only_existing_options(runner):
    import re

    from geoseg.cli.train import train

    r = runner.invoke(cli, ["train", "--help"])
    assert r.exit_code == 0
    known = {o for p in train.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", r.output))
    assert mentioned and mentioned <= known, mentioned - known


def test_bundle_inspect_and_train_init_take_default_model_names(runner, tmp_path):
    from geoseg.models import default_model_path

    if not default_model_path("deeplab").is_file():
        pytest.skip("default model deeplab not installed")
    r = runner.invoke(cli, ["bundle", "inspect", "deeplab"])
    assert r.exit_code == 0, r.output
    assert "deeplab" in r.output
    data = _pairs(tmp_path / "d", size=48)
    out = tmp_path / "ft.safetensors"
    r = runner.invoke(cli, ["train", str(data), "-o", str(out), "--init", "deeplab",
                            "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
                            "--crop-size", "32", "--tile-size", "32", "--overlap", "8",
                            "--device", "cpu",
                            "--precision", "fp32", "--quiet"])
    assert r.exit_code == 0, r.output
    from geoseg.models.bundle import read_spec

    assert read_spec(out).architecture == "deeplab"


def test_tile_and_train_cli_scene_labels_with_names_and_colours(runner, tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    cmap = make_class_map((256, 256), n_classes=3, block=16, seed=6)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=6), nodata=None)
    x0, y0 = 500000.0, 4000000.0
    gpd.GeoDataFrame({"kind": ["road", "building"]},
                     geometry=[box(x0, y0 - 200, x0 + 1280, y0),
                               box(x0 + 300, y0 - 900, x0 + 600, y0 - 500)],
                     crs="EPSG:32633").to_file(tmp_path / "l.geojson")
    r = runner.invoke(cli, ["tile", str(scene), "--labels", str(tmp_path / "l.geojson"),
                            "--label-field", "kind", "--class-names", "land,road,building",
                            "-o", str(tmp_path / "chips"), "--size", "64", "--quiet"])
    assert r.exit_code == 0, r.output
    import rasterio

    with rasterio.open(tmp_path / "chips" / "masks" / "s_r000000_c000000.tif") as ms:
        assert ms.read(1)[5, 5] == 1 and ms.read(1)[60, 40] == 2

    colours = {0: (60, 16, 152), 1: (132, 41, 246), 2: (110, 193, 228)}
    rgb = np.array([colours[i] for i in range(3)], np.uint8)[cmap].transpose(2, 0, 1)
    labels = make_geotiff(tmp_path / "rgb.tif", rgb, nodata=None)
    table = tmp_path / "classes.json"
    table.write_text(json.dumps([{"id": i, "name": f"c{i}", "color": list(c)}
                                 for i, c in colours.items()]))
    out = tmp_path / "m.safetensors"
    args = ["train", str(scene), "--labels", str(labels), "-o", str(out), *TINY]
    r = runner.invoke(cli, args)  # RGB labels without --class-colors: refused, one line
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "--class-colors" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(cli, [*args, "--class-colors", str(table)])
    assert r.exit_code == 0, r.output
    from geoseg.models.bundle import read_spec

    spec = read_spec(out)
    assert [c.name for c in spec.classes] == ["c0", "c1", "c2"]
    assert spec.gsd_m == 10.0  # the scene's pixel size (EPSG:32633, 10 m)
    assert spec.provenance["data"]["split"].endswith("rounded to whole blocks), seed 0")


def test_train_starts_with_a_block_and_counts_steps(runner, tmp_path):
    data = _pairs(tmp_path / "d")
    out = tmp_path / "m.safetensors"
    loud = [a for a in TINY if a != "-q"]
    r = runner.invoke(cli, ["train", str(data), "-o", str(out), *loud])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    start = [ln for ln in lines if ln.startswith(("data:", "device ", "output "))]
    assert start[0] == ("data: 2 training images, 2 validation images (1 of 2 tile folders "
                        "held out whole, --val-fraction 0.2, seed 0); 2 classes; gsd 10 m")
    assert start[1].startswith("device cpu, precision fp32, engine eager; 1 epochs x 3 steps")
    assert start[2].startswith(f"output {out} (metrics m.safetensors.metrics.csv")
    assert "epoch 1/1" in r.output and "step/s" in r.output and "tile/s" not in r.output
    from geoseg.models.bundle import read_spec

    assert read_spec(out).provenance["data"]["split"].startswith("1 of 2 tile folders")


def _csv_epochs(path: Path) -> list[int]:
    import csv

    with path.open(newline="") as f:
        return [int(row[0]) for row in list(csv.reader(f))[1:]]


def test_ctrl_c_leaves_a_resumable_run(tmp_path):  # ~30 s: a subprocess imports torch
    """SIGINT to a real ``geoseg train`` after its first epoch: exit 130, one line saying
    how to resume, a checkpoint and a CSV of the finished epochs; --resume finishes it."""
    import signal
    import subprocess
    import sys
    import time

    from geoseg.training.checkpoint import checkpoint_paths

    data = _pairs(tmp_path / "d")
    out = tmp_path / "m.safetensors"
    metrics = tmp_path / "m.safetensors.metrics.csv"
    args = [sys.executable, "-m", "geoseg.cli.main", "train", str(data), "-o", str(out),
            *[a for a in TINY if a not in ("--epochs", "1", "--steps-per-epoch", "3")],
            "--epochs", "3", "--steps-per-epoch", "25", "--threads", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if metrics.exists() and _csv_epochs(metrics):
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Interrupted after epoch ") and "--resume" in last, err
    assert "Traceback" not in err
    ckpt, state = checkpoint_paths(out)
    assert ckpt.is_file() and state.is_file() and out.is_file()
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 3
    assert _csv_epochs(metrics) == list(range(1, done + 1))
    again = CliRunner().invoke(cli, [*args[3:], "--resume"])  # in-process: one torch import
    assert again.exit_code == 0, again.output
    assert _csv_epochs(metrics) == [1, 2, 3]
    assert not ckpt.exists() and not state.exists()
