"""Names survive the whole path, and outputs say what they hold (through the CLI).

``tile`` -> ``classes.json`` -> ``train`` -> ``bundle inspect`` keeps class names, colours
and the chips' GSD; a fine-tuned model keeps its init's names and colours where classes
match; bundles record no path of the training machine; ``vectorize --probabilities``
refuses probabilities of another predict run; ``area_px`` where a map has no CRS.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.testing import make_class_map, make_geotiff, make_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = ["--crop-size", "32", "--tile-size", "32", "--overlap", "8", "--batch-size", "2",
         "--steps-per-epoch", "1", "--epochs", "1", "--val-fraction", "0.25",
         "--device", "cpu", "--precision", "fp32", "-q"]


@pytest.fixture(scope="module")
def named_init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3-class bundle whose classes have names and colours (an --init)."""
    import torch

    from geoseg.models.architectures import build_model
    from geoseg.models.bundle import save_bundle
    from geoseg.models.spec import ClassInfo
    from tests.conftest import tiny_spec

    torch.manual_seed(0)
    spec = tiny_spec().with_(classes=(ClassInfo(0, "water", (0, 0, 255)),
                                      ClassInfo(1, "building", (200, 0, 0)),
                                      ClassInfo(2, "road", (90, 90, 90))))
    path = tmp_path_factory.mktemp("init") / "init.safetensors"
    save_bundle(path, build_model(spec).eval(), spec)
    return path


def _scene_and_labels(root: Path, size: int = 128, **label_profile: object
                      ) -> tuple[Path, Path]:
    """A ``size`` px scene at 0.5 m (EPSG:32633) and its 2-class label raster."""
    root.mkdir(parents=True, exist_ok=True)
    cmap = make_class_map((size, size), n_classes=2, block=12, seed=4)
    scene = make_geotiff(root / "scene.tif", make_scene(cmap, seed=4), res=0.5, nodata=None)
    labels = make_geotiff(root / "labels.tif", cmap, res=0.5, nodata=255, **label_profile)
    return scene, labels


def _inspect(bundle: Path) -> list[str]:
    result = CliRunner().invoke(cli, ["bundle", "inspect", str(bundle)])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_tile_class_names_reach_train_and_bundle_inspect(tmp_path: Path,
                                                          named_init: Path) -> None:
    """The issue's check: tile --class-names -> train --init -> inspect: names, colours, GSD."""
    scene, labels = _scene_and_labels(tmp_path / "data")
    tiles = tmp_path / "tiles"
    _invoke(["tile", str(scene), "--labels", str(labels), "--class-names",
             "background,building", "-o", str(tiles), "--size", "64", "-q"])
    assert json.loads((tiles / "classes.json").read_text())["classes"] == [
        {"id": 0, "name": "background"}, {"id": 1, "name": "building"}]
    out = tmp_path / "model.safetensors"
    _invoke(["train", str(tiles), "--init", str(named_init), "-o", str(out), *TRAIN])
    lines = _inspect(out)
    assert "    0  background           #e6194b" in lines  # no init class: the palette's
    assert "    1  building             #c80000" in lines  # the init's colour for its class
    assert any(line.startswith("tile size: 32") and line.endswith("gsd: 0.5 m")
               for line in lines), lines


def test_label_raster_tags_and_colours_travel_to_the_model(tmp_path: Path,
                                                           named_init: Path) -> None:
    """A label raster that names its classes (a geoseg class map) needs no option."""
    from geoseg.classmap import ClassMapInfo

    info = ClassMapInfo((0, 1), ("field", "building"), ((10, 200, 10), (250, 250, 0)))
    scene, labels = _scene_and_labels(tmp_path / "data")
    import rasterio

    with rasterio.open(labels, "r+") as dst:
        dst.update_tags(**info.to_tags())
    tiles = tmp_path / "tiles"
    _invoke(["tile", str(scene), "--labels", str(labels), "-o", str(tiles), "--size", "64",
             "-q"])
    out = tmp_path / "model.safetensors"
    _invoke(["train", str(tiles), "--init", str(named_init), "-o", str(out), *TRAIN])
    lines = _inspect(out)
    assert "    0  field                #0ac80a" in lines
    assert "    1  building             #fafa00" in lines  # given colours win over the init's


def test_unnamed_classes_take_the_init_names_of_their_ids(tmp_path: Path,
                                                          named_init: Path) -> None:
    scene, labels = _scene_and_labels(tmp_path / "data")
    tiles = tmp_path / "tiles"
    _invoke(["tile", str(scene), "--labels", str(labels), "-o", str(tiles), "--size", "64",
             "-q"])
    assert not (tiles / "classes.json").exists()  # nothing known about the ids
    out = tmp_path / "model.safetensors"
    _invoke(["train", str(tiles), "--init", str(named_init), "-o", str(out), *TRAIN])
    lines = _inspect(out)
    assert "    0  water                #0000ff" in lines
    assert "    1  building             #c80000" in lines


def test_a_second_tile_run_that_renames_a_class_is_refused(tmp_path: Path) -> None:
    scene, labels = _scene_and_labels(tmp_path / "data")
    tiles = tmp_path / "tiles"
    _invoke(["tile", str(scene), "--labels", str(labels), "--class-names", "bg,building",
             "-o", str(tiles), "--size", "64", "-q"])
    before = sorted(p.name for p in (tiles / "images").iterdir())
    result = CliRunner().invoke(cli, ["tile", str(scene), "--labels", str(labels),
                                      "--class-names", "bg,roof", "-o", str(tiles),
                                      "--size", "64", "--overwrite", "-q"])
    assert result.exit_code == 1
    assert result.output.strip().endswith("names class 1 'building', these labels name it "
                                          "'roof'; write the chips to another folder")
    assert sorted(p.name for p in (tiles / "images").iterdir()) == before


def test_bundle_records_no_machine_path_and_prints_provenance_readably(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    scene, labels = _scene_and_labels(tmp_path / "data")
    tiles = tmp_path / "tiles"
    _invoke(["tile", str(scene), "--labels", str(labels), "--class-names", "bg,building",
             "-o", str(tiles), "--size", "64", "-q"])
    out = tmp_path / "model.safetensors"
    args = ["train", str(tiles), "--backbone", "resnet18", "--arch-param",
            "encoder_depth=3", "--arch-param", "decoder_channels=[16,8,4]",
            "-o", str(out), *TRAIN]
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "venv" / "bin" / "geoseg"), *args])
    _invoke(args)
    lines = _inspect(out)
    assert not [line for line in lines if str(tmp_path) in line], lines
    assert "provenance:" in lines
    assert "  data:" in lines and "    train: tiles" in lines
    assert max(len(line) for line in lines  # no one-line JSON dump (the command is one)
               if not line.startswith("  command: ")) < 120
    command = next(line for line in lines if line.startswith("  command: "))
    assert command.startswith("  command: geoseg train tiles --backbone resnet18 "), command
    assert " -o model.safetensors " in command


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    cmap = make_class_map((96, 96), n_classes=3, block=16, seed=2)
    return make_geotiff(tmp_path / "scene.tif", make_scene(cmap, seed=2), nodata=None)


def _predict(scene: Path, bundle: Path, out: Path, prob: Path, *more: str) -> None:
    _invoke(["predict", str(scene), "-m", str(bundle), "-o", str(out), "--probabilities",
             str(prob), "--device", "cpu", "--engine", "eager", "-q", *more])


def test_vectorize_refuses_probabilities_of_another_run(tmp_path: Path, scene: Path,
                                                        tiny_bundle: Path) -> None:
    """The same model, other settings (another tile): another run, other probabilities.

    (A rerun with the same scene and settings writes the same bytes, run id included, as
    resumed and distributed runs must: that is the same run's output.)
    """
    _predict(scene, tiny_bundle, tmp_path / "a.tif", tmp_path / "pa.tif")
    _predict(scene, tiny_bundle, tmp_path / "b.tif", tmp_path / "pb.tif", "--tile-size", "64")
    same = CliRunner().invoke(cli, ["vectorize", str(tmp_path / "a.tif"), "--probabilities",
                                    str(tmp_path / "pa.tif"), "-o", str(tmp_path / "a.gpkg"),
                                    "--all", "-q"])
    assert same.exit_code == 0 and same.output == "", same.output
    other = CliRunner().invoke(cli, ["vectorize", str(tmp_path / "a.tif"), "--probabilities",
                                     str(tmp_path / "pb.tif"), "-o", str(tmp_path / "x.gpkg"),
                                     "--all", "-q"])
    assert other.exit_code == 1
    lines = other.output.strip().splitlines()
    assert len(lines) == 1 and "comes from another predict run than the class map" in \
        lines[0], other.output
    assert not (tmp_path / "x.gpkg").exists()


def test_vectorize_warns_when_the_run_cannot_be_checked(tmp_path: Path) -> None:
    cmap = make_class_map((64, 64), n_classes=2, block=16, seed=1)
    class_map = make_geotiff(tmp_path / "map.tif", cmap, nodata=255)
    prob = make_geotiff(tmp_path / "p.tif", np.full((2, 64, 64), 127, np.uint8), nodata=255)
    result = CliRunner().invoke(cli, ["vectorize", str(class_map), "--probabilities",
                                      str(prob), "-o", str(tmp_path / "v.gpkg"), "--all",
                                      "-q"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines() == [
        f"Warning: cannot check that --probabilities {prob} comes from the same run as the "
        "class map (no geoseg predict provenance tags)"]


def test_area_is_in_pixels_and_named_so_without_a_crs(tmp_path: Path) -> None:
    import geopandas as gpd

    cmap = np.zeros((40, 40), np.uint8)
    cmap[5:15, 5:25] = 1  # 200 px
    no_crs = make_geotiff(tmp_path / "plain.tif", cmap, crs=None, res=2.0, nodata=255)
    _invoke(["vectorize", str(no_crs), "-o", str(tmp_path / "plain.gpkg"), "--all", "-q"])
    gdf = gpd.read_file(tmp_path / "plain.gpkg")
    assert "area_m2" not in gdf.columns
    assert sorted(gdf.area_px) == [200.0, 1400.0]
    with_crs = make_geotiff(tmp_path / "geo.tif", cmap, res=2.0, nodata=255)
    _invoke(["vectorize", str(with_crs), "-o", str(tmp_path / "geo.gpkg"), "--all", "-q"])
    assert sorted(gpd.read_file(tmp_path / "geo.gpkg").area_m2) == [800.0, 5600.0]


def test_train_on_a_scene_reads_the_label_raster_class_tags(tmp_path: Path) -> None:
    import rasterio

    from geoseg.classmap import ClassMapInfo

    info = ClassMapInfo((0, 1), ("field", "building"), ((10, 200, 10), (250, 250, 0)))
    scene, labels = _scene_and_labels(tmp_path / "data", size=256)  # 4 blocks of 128 px
    with rasterio.open(labels, "r+") as dst:
        dst.update_tags(**info.to_tags())
    out = tmp_path / "model.safetensors"
    _invoke(["train", str(scene), "--labels", str(labels), "--backbone", "resnet18",
             "--arch-param", "encoder_depth=3", "--arch-param", "decoder_channels=[16,8,4]",
             "-o", str(out), *TRAIN])
    lines = _inspect(out)
    assert "    0  field                #0ac80a" in lines
    assert "    1  building             #fafa00" in lines
