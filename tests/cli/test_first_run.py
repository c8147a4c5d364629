"""A run that talks: status lines for slow steps, warnings once, JSON lines only in JSON mode.

Through the CLI: ``--progress json`` must give a program nothing but JSON objects (also
for warnings and log records), each warning prints once per run, slow first-time steps
(the ONNX export, ``bundle export``) say what they do, and an output where nothing can be
written says so.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.testing import make_class_map, make_scene


def _jpeg(path: Path, seed: int = 0) -> Path:
    """An RGB JPEG without any georeferencing (no world file, no CRS)."""
    from PIL import Image

    img = make_scene(make_class_map((160, 224), n_classes=3, block=24, seed=seed), seed=seed)
    Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(path, quality=95)
    return path


def _events(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as JSON (fails on the first line that is not)."""
    return [json.loads(line) for line in text.splitlines()]


def test_json_progress_writes_only_json_lines_for_an_unreferenced_jpeg(
        tmp_path: Path, tiny_bundle: Path) -> None:
    """The issue's check: ``predict ... --progress json 2>&1`` parses line by line."""
    scene = _jpeg(tmp_path / "photo.jpg")
    code = "from geoseg.cli.main import cli; cli()"
    out = subprocess.run(
        [sys.executable, "-c", code, "predict", str(scene), "-m", str(tiny_bundle),
         "-o", str(tmp_path / "map.tif"), "--device", "cpu", "--progress", "json"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    events = _events(out.stdout + out.stderr)
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len([w for w in warnings if "no georeferencing" in w]) == 1, events
    assert events[-1] == {"event": "done", "outputs": [str(tmp_path / "map.tif")]}


def test_multi_scene_warnings_print_once_and_never_inside_the_bar(
        tmp_path: Path, tiny_bundle: Path) -> None:
    scenes = [str(_jpeg(tmp_path / f"{n}.jpg", seed=k)) for k, n in enumerate("ab")]
    args = ["predict", *scenes, "-m", str(tiny_bundle), "-o", str(tmp_path / "maps") + "/",
            "--device", "cpu", "--engine", "eager"]
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    for name in ("a.jpg", "b.jpg"):
        said = [line for line in text.output.replace("\r", "\n").splitlines()
                if f"{name} has no georeferencing" in line]
        assert len(said) == 1, text.output
        assert said[0].startswith("Warning: "), said  # its own line, not after a bar
    as_json = CliRunner().invoke(cli, [*args, "--overwrite", "--progress", "json"])
    assert as_json.exit_code == 0, as_json.output
    events = _events(as_json.output)
    warned = [e["message"] for e in events if e["event"] == "warning"]
    assert sorted(warned) == sorted(f"{s} has no georeferencing; outputs will have none "
                                    "either" for s in scenes), events


def test_log_records_become_json_events(tmp_path: Path, tiny_bundle: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A library's logging warning (e.g. GDAL through rasterio) is a JSON event, once."""
    from geoseg.prediction import pipeline

    original = pipeline.open_scene

    def noisy(*args: Any, **kwargs: Any) -> Any:
        for _ in range(2):
            logging.getLogger("rasterio._env").warning("CPLE_AppDefined in %s", "x.tif")
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "open_scene", noisy)
    scene = _jpeg(tmp_path / "photo.jpg")
    result = CliRunner().invoke(cli, ["predict", str(scene), "-m", str(tiny_bundle),
                                      "-o", str(tmp_path / "m.tif"), "--device", "cpu",
                                      "--engine", "eager", "--progress", "json"])
    assert result.exit_code == 0, result.output
    events = _events(result.output)
    assert events.count({"event": "warning", "message": "CPLE_AppDefined in x.tif"}) == 1


def test_a_slow_first_engine_build_says_what_it_does(
        tmp_path: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first ONNX export prints one status line before the bar (text and JSON)."""
    pytest.importorskip("openvino")
    from geoseg.prediction import engines

    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache"))  # a first run
    original = engines.head_model

    def slow_export(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)  # as a real model's first export (~20 s for deeplab)
        return original(*args, **kwargs)

    monkeypatch.setattr(engines, "head_model", slow_export)
    scene = _jpeg(tmp_path / "photo.jpg")
    base = ["predict", str(scene), "-m", str(tiny_bundle), "--device", "cpu",
            "--engine", "openvino", "--precision", "fp32"]
    text = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "a.tif")])
    assert text.exit_code == 0, text.output
    lines = text.output.replace("\r", "\n").splitlines()
    said = [line for line in lines if line.startswith("preparing the OpenVINO engine")]
    assert said == ["preparing the OpenVINO engine for tiny (once, ~20 s)"], text.output
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache2"))
    as_json = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "b.tif"),
                                       "--progress", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert {"event": "log", "message": "preparing the OpenVINO engine for tiny (once, ~20 s)"
            } in _events(as_json.output)


def test_a_cached_engine_says_nothing(tmp_path: Path, tiny_bundle: Path) -> None:
    pytest.importorskip("openvino")
    scene = _jpeg(tmp_path / "photo.jpg")
    base = ["predict", str(scene), "-m", str(tiny_bundle), "--device", "cpu",
            "--engine", "openvino", "--precision", "fp32", "--progress", "json"]
    CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "a.tif")])
    again = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "b.tif")])
    assert again.exit_code == 0, again.output
    assert not [e for e in _events(again.output) if "preparing" in e.get("message", "")]


def test_bundle_export_says_it_is_exporting(tmp_path: Path, tiny_bundle: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from geoseg.models import onnx_bundle

    original = onnx_bundle.export_onnx

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)  # the shipped deeplab takes ~40 s
        return original(*args, **kwargs)

    monkeypatch.setattr(onnx_bundle, "export_onnx", slow)
    out = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(cli, ["bundle", "export", str(tiny_bundle), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "exporting tiny.safetensors to ONNX (can take a minute)", f"wrote {out}"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_writing_into_proc_says_not_writable(tmp_path: Path, tiny_bundle: Path) -> None:
    scene = _jpeg(tmp_path / "photo.jpg")
    result = CliRunner().invoke(cli, ["predict", str(scene), "-m", str(tiny_bundle),
                                      "-o", "/proc/x.tif"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: cannot write /proc/x.tif: directory /proc is " \
                                    "not writable"


def test_a_slow_train_set_up_says_what_it_does(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from geoseg.testing import make_geotiff
    from geoseg.training import loop

    for k in range(4):
        cmap = make_class_map((32, 32), n_classes=2, block=8, seed=k)
        for sub, arr in (("images", make_scene(cmap, seed=k)), ("masks", cmap)):
            (tmp_path / "d" / sub).mkdir(parents=True, exist_ok=True)
            make_geotiff(tmp_path / "d" / sub / f"p{k}.tif", arr, nodata=None)
    original = loop._setup

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)  # a real backbone and a few hundred chips take seconds
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "_setup", slow)
    result = CliRunner().invoke(cli, [
        "train", str(tmp_path / "d"), "-o", str(tmp_path / "m.safetensors"),
        "--backbone", "resnet18", "--arch-param", "encoder_depth=3", "--arch-param",
        "decoder_channels=[16,8,4]", "--crop-size", "32", "--tile-size", "32",
        "--batch-size", "2", "--steps-per-epoch", "1", "--epochs", "1", "--device", "cpu",
        "--progress", "json"])
    assert result.exit_code == 0, result.output
    assert {"event": "log", "message": "setting up: the model, normalisation statistics and "
            "validation chips"} in _events(result.output)
