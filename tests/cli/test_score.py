"""``geoseg score`` through the CLI: outputs, one-line errors, objects."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.testing import make_class_map, make_geotiff

SPACENET = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "spacenet"
NAMES = "water,forest,urban,crop"


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def pair(tmp_path):
    truth = make_class_map((80, 64), n_classes=4, block=8, seed=3)
    pred = truth.copy()
    pred[::3] = (pred[::3] + 1) % 4
    pred[:2] = 255
    p = make_geotiff(tmp_path / "pred.tif", pred, nodata=255)
    with rasterio.open(p, "r+") as dst:
        dst.update_tags(class_names=NAMES, class_ids="0,1,2,3")
    t = make_geotiff(tmp_path / "truth.tif", truth, nodata=None)
    return p, t, truth, pred


def one_line_error(result):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error:")
    return lines[0]


def test_score_writes_json_csv_plot(runner, tmp_path, pair):
    p, t, truth, pred = pair
    out, cm, png = tmp_path / "r.json", tmp_path / "cm.csv", tmp_path / "cm.png"
    r = runner.invoke(cli, ["score", str(p), "--labels", str(t), "-o", str(out),
                            "--csv", str(cm), "--plot", str(png), "--chunk-size", "32"])
    assert r.exit_code == 0, r.output
    assert "mIoU" in r.output
    assert "urban" in r.output
    report = json.loads(out.read_text())
    keep = pred != 255
    expect = np.zeros((4, 4), np.int64)
    np.add.at(expect, (truth[keep], pred[keep]), 1)
    assert report["confusion_matrix"]["counts"] == expect.tolist()
    assert report["pixels"]["nodata_pred"] == 128
    rows = list(csv.reader(cm.open()))
    assert rows[0][1:] == NAMES.split(",")
    assert [[int(v) for v in row[1:]] for row in rows[1:]] == expect.tolist()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_output_refused_before_compute(runner, tmp_path, pair):
    p, t, *_ = pair
    out = tmp_path / "r.json"
    out.write_text("keep me")
    r = runner.invoke(cli, ["score", str(p), "--labels", str(t), "-o", str(out)])
    assert "exists" in one_line_error(r)
    assert out.read_text() == "keep me"
    r = runner.invoke(cli, ["score", str(p), "--labels", str(t), "-o", str(out),
                            "--overwrite", "-q"])
    assert r.exit_code == 0
    assert r.output == ""
    assert json.loads(out.read_text())["miou"] > 0


def test_ignore_index_option(runner, tmp_path, pair):
    p, t, truth, _ = pair
    out = tmp_path / "r.json"
    r = runner.invoke(cli, ["score", str(p), "--labels", str(t), "--ignore-index", "2",
                            "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert report["pixels"]["ignored"] == int(np.sum(truth == 2))  # before pred nodata
    assert report["classes"][2]["iou"] is None


def test_no_overlap_is_one_line(runner, tmp_path, pair):
    p, _, truth, _ = pair
    far = make_geotiff(tmp_path / "far.tif", truth, nodata=None, origin=(9e5, 4e6))
    assert "does not overlap" in one_line_error(
        runner.invoke(cli, ["score", str(p), "--labels", str(far)]))


def test_mismatched_classes_is_one_line(runner, pair):
    p, t, *_ = pair
    line = one_line_error(runner.invoke(cli, ["score", str(p), "--labels", str(t),
                                              "--label-map", "0=7"]))
    assert "class id 7 is not a class of the prediction" in line
    line = one_line_error(runner.invoke(cli, ["score", str(p), "--labels", str(t),
                                              "--label-map", "0"]))
    assert "is not VALUE=CLASS" in line


def test_label_map_option(runner, pair, tmp_path):
    p, t, *_ = pair
    r = runner.invoke(cli, ["score", str(p), "--labels", str(t), "-q", "-o",
                            str(tmp_path / "r.json")])
    plain = json.loads((tmp_path / "r.json").read_text())
    r = runner.invoke(cli, ["score", str(p), "--labels", str(t), "-q", "--overwrite",
                            "-o", str(tmp_path / "r.json"), "--label-map",
                            "0=1,1=0"])
    assert r.exit_code == 0, r.output
    swapped = json.loads((tmp_path / "r.json").read_text())
    m, n = plain["confusion_matrix"]["counts"], swapped["confusion_matrix"]["counts"]
    assert n[0] == m[1] and n[1] == m[0] and n[2:] == m[2:]


def test_vector_errors_are_one_line(runner, tmp_path, pair):
    p, *_ = pair
    gdf = gpd.GeoDataFrame({"cls": [1]}, geometry=[shapely.box(500000, 3999500,
                                                                500300, 4000000)],
                           crs="EPSG:32633")
    path = tmp_path / "v.gpkg"
    gdf.to_file(path)
    line = one_line_error(runner.invoke(cli, ["score", str(p), "--labels", str(path),
                                              "--label-field", "kind"]))
    assert "no field 'kind'" in line
    nocrs = tmp_path / "nocrs.shp"
    gdf.set_crs(None, allow_override=True).to_file(nocrs)
    line = one_line_error(runner.invoke(cli, ["score", str(p), "--labels", str(nocrs),
                                              "--label-field", "cls"]))
    assert "no CRS" in line


def test_vector_labels_by_name(runner, tmp_path, pair):
    p, *_ = pair
    gdf = gpd.GeoDataFrame({"cls": ["urban"]}, geometry=[shapely.box(500000, 3999500,
                                                                      500300, 4000000)],
                           crs="EPSG:32633")
    path = tmp_path / "v.geojson"
    gdf.to_file(path)
    out = tmp_path / "r.json"
    r = runner.invoke(cli, ["score", str(p), "--labels", str(path), "--label-field",
                            "cls", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    # 30 x 50 pixels of 10 m labelled "urban", minus 2 nodata rows of the prediction.
    assert report["pixels"]["total"] == 30 * 50
    assert sum(report["confusion_matrix"]["counts"][2]) == 30 * 48


def test_objects_spacenet(runner, tmp_path):
    gt, pred = SPACENET / "gt.geojson", SPACENET / "pred.geojson"
    if not gt.exists():
        pytest.skip(f"SpaceNet sample footprints not found in {SPACENET.resolve()}")
    out = tmp_path / "o.json"
    r = runner.invoke(cli, ["score", str(pred), "--labels", str(gt), "--objects",
                            "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "TP 8  FP 20  FN 20" in r.output
    d = json.loads(out.read_text())
    assert d["f1"] == 0.2857142857142857
    r = runner.invoke(cli, ["score", str(pred), "--labels", str(gt), "--objects",
                            "--csv", str(tmp_path / "x.csv")])
    assert r.exit_code != 0
    assert "Traceback" not in r.output
