"""geoseg.scoring.pipeline: aligning labels (rasters, vectors, tiles) with a prediction."""

from __future__ import annotations

import json
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import shapes
from shapely.geometry import shape

from geoseg.errors import GeosegWarning, InputError, NoOverlapError, UnknownNameError
from geoseg.scoring.pipeline import ScoreReport, score, score_arrays, write_confusion_csv
from geoseg.testing import make_class_map, make_geotiff

NAMES = ("water", "forest", "urban", "crop")
IDS = (0, 1, 2, 3)
ORIGIN = (500000.0, 4000000.0)
RES = 10.0
H, W = 120, 96


def write_pred(path, data, *, names=NAMES, origin=ORIGIN, crs="EPSG:32633"):
    make_geotiff(path, data, nodata=255, crs=crs, res=RES, origin=origin)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(class_names=",".join(names),
                        class_ids=",".join(str(i) for i in range(len(names))))
    return path


@pytest.fixture
def maps():
    # Truth made of 2x2 blocks, so a 2x coarser raster represents it exactly.
    coarse = make_class_map((H // 2, W // 2), n_classes=4, block=6, seed=11)
    truth = np.kron(coarse, np.ones((2, 2), np.uint8))
    rng = np.random.default_rng(1)
    pred = truth.copy()
    flip = rng.random(truth.shape) < 0.25
    pred[flip] = rng.integers(0, 4, flip.sum())
    pred[:4, :10] = 255
    return coarse, truth, pred


@pytest.fixture
def pred_path(tmp_path, maps):
    return write_pred(tmp_path / "pred.tif", maps[2])


@pytest.fixture
def reference(maps):
    _, truth, pred = maps
    return score_arrays(truth, pred, IDS, NAMES)


def same(a: ScoreReport, b: ScoreReport):
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert a.miou == b.miou
    assert a.kappa == b.kappa


def test_same_grid(tmp_path, pred_path, maps, reference):
    labels = make_geotiff(tmp_path / "labels.tif", maps[1], nodata=None, res=RES)
    report = score(pred_path, labels, chunk_size=32)
    same(report, reference)
    assert report.class_names == NAMES
    assert report.counts.nodata_pred == 40
    assert report.counts.total == H * W


def test_shifted_larger_grid(tmp_path, pred_path, maps, reference):
    # Labels on a bigger grid, pixel-aligned but shifted: 5 rows above, 7 columns left.
    big = np.full((H + 20, W + 20), 200, np.uint8)
    big[5:5 + H, 7:7 + W] = maps[1]
    origin = (ORIGIN[0] - 7 * RES, ORIGIN[1] + 5 * RES)
    labels = make_geotiff(tmp_path / "big.tif", big, nodata=200, res=RES, origin=origin)
    same(score(pred_path, labels, chunk_size=40), reference)


def test_coarser_grid_nearest_is_exact(tmp_path, pred_path, maps, reference):
    labels = make_geotiff(tmp_path / "coarse.tif", maps[0], nodata=None, res=2 * RES)
    same(score(pred_path, labels, chunk_size=32), reference)


def test_partial_overlap_counts_uncovered_as_nodata(tmp_path, pred_path, maps):
    # Labels cover only the right half (and stick out beyond the prediction).
    right = np.zeros((H, W), np.uint8)
    right[:, : W // 2] = maps[1][:, W // 2:]
    origin = (ORIGIN[0] + (W // 2) * RES, ORIGIN[1])
    labels = make_geotiff(tmp_path / "right.tif", right, nodata=None, res=RES,
                          origin=origin)
    report = score(pred_path, labels, chunk_size=32)
    expect = score_arrays(maps[1][:, W // 2:], maps[2][:, W // 2:], IDS)
    np.testing.assert_array_equal(report.matrix, expect.matrix)
    assert report.counts.total == H * (W // 2)  # only the overlap is looked at


def test_other_crs_exact(tmp_path, pred_path, maps, reference):
    # The same UTM zone with false easting 0: a real reprojection, exact pixel centres.
    crs = "+proj=tmerc +lon_0=15 +k=0.9996 +x_0=0 +datum=WGS84 +units=m +no_defs"
    labels = make_geotiff(tmp_path / "utm0.tif", maps[0], nodata=None, res=2 * RES,
                          crs=crs, origin=(ORIGIN[0] - 500000.0, ORIGIN[1]))
    same(score(pred_path, labels, chunk_size=48), reference)


def test_geographic_crs_close(tmp_path, maps):
    # Labels in EPSG:4326 that cannot match pixel for pixel: only block edges may move.
    from rasterio.warp import calculate_default_transform, reproject

    _, truth, pred = maps
    big = np.kron(truth, np.ones((4, 4), np.uint8))  # 2.5 m source of the 4326 labels
    src_t = rasterio.Affine(RES / 4, 0, ORIGIN[0], 0, -RES / 4, ORIGIN[1])
    dst_t, w, h = calculate_default_transform("EPSG:32633", "EPSG:4326", big.shape[1],
                                              big.shape[0], *rasterio.transform.
                                              array_bounds(*big.shape, src_t))
    out = np.full((h, w), 255, np.uint8)
    reproject(big, out, src_transform=src_t, src_crs="EPSG:32633", dst_transform=dst_t,
              dst_crs="EPSG:4326", dst_nodata=255)
    labels = tmp_path / "geo.tif"
    with rasterio.open(labels, "w", driver="GTiff", width=w, height=h, count=1,
                       dtype="uint8", crs="EPSG:4326", transform=dst_t,
                       nodata=255) as d:
        d.write(out, 1)
    pred_path = write_pred(tmp_path / "pred.tif", pred)
    report = score(pred_path, labels, chunk_size=64)
    expect = score_arrays(truth, pred, IDS)
    assert report.counts.scored >= 0.97 * expect.counts.scored
    assert abs(report.miou - expect.miou) < 0.02


def _polygons(data, transform, crs, *, names=False):
    rows = [{"geometry": shape(g), "cls": NAMES[int(v)] if names else int(v)}
            for g, v in shapes(data, transform=transform)]
    return gpd.GeoDataFrame(rows, crs=crs)


@pytest.mark.parametrize("names", [False, True])
def test_vector_labels(tmp_path, pred_path, maps, reference, names):
    transform = rasterio.Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
    gdf = _polygons(maps[1], transform, "EPSG:32633", names=names)
    path = tmp_path / "labels.gpkg"
    gdf.to_file(path)
    same(score(pred_path, path, label_field="cls", chunk_size=32), reference)


def test_vector_labels_other_crs_and_fill(tmp_path, pred_path, maps):
    # Only class "urban" is drawn, in EPSG:3857; every other pixel is filled as "water".
    transform = rasterio.Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
    gdf = _polygons(maps[1], transform, "EPSG:32633")
    gdf = gdf[gdf["cls"] == 2].to_crs("EPSG:3857")
    path = tmp_path / "urban.geojson"
    gdf.to_file(path)
    report = score(pred_path, path, label_field="cls", label_fill="water",
                   chunk_size=32)
    truth = np.where(maps[1] == 2, 2, 0).astype(np.uint8)
    expect = score_arrays(truth, maps[2], IDS)
    # Reprojected vertices move by far less than a pixel: a few edge pixels at most.
    diff = np.abs(report.matrix - expect.matrix).sum()
    assert diff <= 0.01 * expect.counts.scored
    assert report.counts.total == H * W


def test_tile_directory(tmp_path, pred_path, maps, reference):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for i, (r, c) in enumerate([(0, 0), (0, 48), (60, 0), (60, 48)]):
        origin = (ORIGIN[0] + c * RES, ORIGIN[1] - r * RES)
        if i == 3:  # one tile on a coarser grid
            make_geotiff(tiles / f"t{i}.tif", maps[0][r // 2:(r + 60) // 2,
                                                       c // 2:(c + 48) // 2],
                         nodata=None, res=2 * RES, origin=origin)
        else:
            make_geotiff(tiles / f"t{i}.tif", maps[1][r:r + 60, c:c + 48], nodata=None,
                         res=RES, origin=origin)
    make_geotiff(tiles / "far.tif", maps[1][:10, :10], nodata=None, res=RES,
                 origin=(ORIGIN[0] + 1e5, ORIGIN[1]))
    with pytest.warns(GeosegWarning, match="1 of 5 label tiles"):
        report = score(pred_path, tiles, chunk_size=40)
    same(report, reference)


def test_report_outputs(tmp_path, pred_path, maps):
    labels = make_geotiff(tmp_path / "labels.tif", maps[1], nodata=None, res=RES)
    report = score(pred_path, labels, ignore_index=3)
    d = report.to_dict()
    assert d["pixels"]["ignored"] == int(np.sum(maps[1] == 3))
    assert d["classes"][3]["iou"] is None  # the ignored class takes no part
    assert d["miou"] == pytest.approx(np.nanmean(report.iou))
    assert "absent" in d["convention"] or "NaN" in d["convention"]
    out = report.to_json(tmp_path / "r.json")
    assert json.loads(out.read_text())["confusion_matrix"]["counts"] == \
        report.matrix.tolist()
    csv = write_confusion_csv(report, tmp_path / "cm.csv").read_text().splitlines()
    assert csv[0].split(",")[1:] == list(NAMES)
    assert [int(v) for v in csv[1].split(",")[1:]] == report.matrix[0].tolist()
    table = report.table()
    assert "mIoU" in table
    assert "urban" in table


# ------------------------------------------------------------------ bad input


def test_no_overlap(tmp_path, pred_path, maps):
    far = make_geotiff(tmp_path / "far.tif", maps[1], nodata=None, res=RES,
                       origin=(ORIGIN[0] + 1e5, ORIGIN[1]))
    with pytest.raises(NoOverlapError, match="does not overlap"):
        score(pred_path, far)
    gdf = gpd.GeoDataFrame({"cls": [1]}, geometry=[
        __import__("shapely").box(0, 0, 10, 10)], crs="EPSG:32633")
    with pytest.raises(NoOverlapError):
        score(pred_path, gdf, label_field="cls")


def test_label_values_beyond_prediction_classes(tmp_path, pred_path, maps):
    bad = maps[1].copy()
    bad[:3, :3] = 7
    labels = make_geotiff(tmp_path / "l.tif", bad, nodata=None, res=RES)
    with pytest.raises(InputError, match=r"9 pixels with values such as 7.*not match"):
        score(pred_path, labels)


def test_mismatched_class_counts(tmp_path, pred_path, maps):
    labels = make_geotiff(tmp_path / "l.tif", maps[1], nodata=None, res=RES)
    # --classes with another count replaces the tags (ids 0..2): the 3s are then no
    # class, and each message gives advice that the call can follow.
    with pytest.warns(GeosegWarning, match="replace the 4 classes"), \
            pytest.raises(InputError, match=r"values such as 3 .*pass --label-map"):
        score(pred_path, labels, classes=["a", "b", "c"])
    with pytest.warns(GeosegWarning, match="replace the 4 classes"), \
            pytest.raises(InputError, match=r"pred.tif has .* values such as 3 .*"
                                            r"pass --classes to name every class"):
        score(pred_path, labels, classes=["a", "b", "c"], label_map="3=a")
    assert score(pred_path, labels, classes=["a", "b", "c", "d"]).class_names == (
        "a", "b", "c", "d")
    with rasterio.open(labels, "r+") as dst:
        dst.update_tags(class_names="a,b,c,d,e")
    with pytest.raises(InputError, match=r"names classes a,b,c,d,e, none of which"):
        score(pred_path, labels)


def test_vector_errors(tmp_path, pred_path, maps):
    transform = rasterio.Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
    gdf = _polygons(maps[1], transform, "EPSG:32633")
    with pytest.raises(InputError, match="no field 'klass'; fields: cls"):
        score(pred_path, gdf, label_field="klass")
    with pytest.raises(InputError, match="pass --label-field"):
        score(pred_path, gdf)
    nocrs = tmp_path / "nocrs.gpkg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gdf.set_crs(None, allow_override=True).to_file(nocrs)
    with pytest.raises(InputError, match="have no CRS"):
        score(pred_path, nocrs, label_field="cls")
    gdf.loc[0, "cls"] = 9
    with pytest.raises(InputError, match="class value 9"):
        score(pred_path, gdf, label_field="cls")
    named = gdf.assign(cls="lava")
    with pytest.raises(UnknownNameError, match=r"none of the classes .* \(lava\)"):
        score(pred_path, named, label_field="cls")


def test_prediction_without_class_names_is_named_by_ids(tmp_path, maps, reference):
    # Item 9: two plain class-id rasters score; names are the ids, said in the notes.
    bare = make_geotiff(tmp_path / "bare.tif", maps[2], nodata=255, res=RES)
    labels = make_geotiff(tmp_path / "l.tif", maps[1], nodata=None, res=RES)
    with pytest.warns(GeosegWarning, match="no class names: classes are named by"):
        report = score(bare, labels)
    assert report.class_names == ("0", "1", "2", "3")
    np.testing.assert_array_equal(report.matrix, reference.matrix)
    assert any("named by their ids" in n for n in report.notes)
    report = score(bare, labels, classes=list(NAMES))
    assert report.class_names == NAMES


def test_untagged_uint16_maps_and_label_only_class(tmp_path, maps):
    # Not uint8: the classes present are found first; a class only in the labels
    # is reported with IoU 0 (not dropped, not an error).
    truth = maps[1].astype(np.uint16)
    truth[10:16, 10:16] = 300
    pred = maps[2].astype(np.uint16)
    pred[pred == 255] = 65535
    bare = make_geotiff(tmp_path / "bare.tif", pred, nodata=65535, res=RES)
    labels = make_geotiff(tmp_path / "l.tif", truth, nodata=None, res=RES)
    with pytest.warns(GeosegWarning, match="named by their ids"):
        report = score(bare, labels, chunk_size=32)
    assert report.class_ids == (0, 1, 2, 3, 300)
    assert report.iou[-1] == 0.0
    assert report.to_dict()["classes"][-1]["label_pixels"] == 36


def test_named_label_class_absent_from_model_has_iou_zero(tmp_path, pred_path, maps):
    truth = maps[1].copy()
    truth[10:20, 10:20] = 9  # "glacier", which the model does not know
    labels = make_geotiff(tmp_path / "l.tif", truth, nodata=None, res=RES)
    with rasterio.open(labels, "r+") as dst:
        dst.update_tags(class_names="water,forest,urban,crop,glacier",
                        class_ids="0,1,2,3,9")
    with pytest.warns(GeosegWarning, match="'glacier' is not a class"):
        report = score(pred_path, labels)
    assert report.class_names == (*NAMES, "glacier")
    k = report.class_names.index("glacier")
    assert report.iou[k] == 0.0 and report.to_dict()["classes"][k]["label_pixels"] == 100
    assert report.matrix.sum() == score_arrays(
        maps[1], maps[2], IDS).matrix.sum()  # every labelled pixel is scored
    # Names are matched, not ids: labels whose ids are in another order still agree.
    order = np.array([3, 2, 1, 0], np.uint8)[maps[1]]
    swapped = make_geotiff(tmp_path / "s.tif", order, nodata=None, res=RES)
    with rasterio.open(swapped, "r+") as dst:
        dst.update_tags(class_names="crop,urban,forest,water", class_ids="0,1,2,3")
    same(score(pred_path, swapped), score_arrays(maps[1], maps[2], IDS, NAMES))


def test_label_map(tmp_path, maps):
    # Item 7: a 0/1 building mask against a map whose class 0 is "building".
    pred = np.where(maps[2] == 1, 0, 1).astype(np.uint8)  # 0 building, 1 background
    pred_path = write_pred(tmp_path / "p.tif", pred, names=("building", "background"))
    mask = (maps[1] == 1).astype(np.uint8)  # 1 = building, 0 = land
    labels = make_geotiff(tmp_path / "m.tif", mask, nodata=None, res=RES)
    plain = score(pred_path, labels)  # ids fit: read as ids (the documented default)
    mapped = score(pred_path, labels, label_map="0=background,1=building")
    by_id = score(pred_path, labels, label_map={0: 1, 1: 0})
    same(mapped, by_id)
    assert mapped.miou > 0.7 > plain.miou
    expect = score_arrays(1 - mask, pred, (0, 1))
    np.testing.assert_array_equal(mapped.matrix, expect.matrix)
    # Ids that do not fit a named prediction: one line, never a guess.
    three = make_geotiff(tmp_path / "t.tif", maps[1], nodata=None, res=RES)
    with pytest.raises(InputError, match=r"values such as 2, 3 .*--label-map"):
        score(pred_path, three)
    with pytest.raises(InputError, match="is not VALUE=CLASS"):
        score(pred_path, labels, label_map="0:background")
    with pytest.raises(InputError, match="class id 7 is not a class"):
        score(pred_path, labels, label_map="0=7")
    # Vector labels go through the same map (values or names).
    transform = rasterio.Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
    gdf = _polygons(mask, transform, "EPSG:32633")
    vec = score(pred_path, gdf, label_field="cls", label_map="0=background,1=building")
    np.testing.assert_array_equal(vec.matrix, expect.matrix)


def test_rasters_without_georeferencing_score_pixel_by_pixel(tmp_path, maps, reference):
    # Item 16: the quick-start case (a JPEG input has no CRS).
    pred = write_pred(tmp_path / "p.tif", maps[2], crs=None)
    labels = make_geotiff(tmp_path / "l.tif", maps[1], nodata=None, crs=None)
    with pytest.warns(GeosegWarning, match="no georeferencing: scored pixel by pixel"):
        report = score(pred, labels)
    same(report, reference)
    small = make_geotiff(tmp_path / "s.tif", maps[1][:50], nodata=None, crs=None)
    with pytest.raises(InputError, match="sizes differ"):
        score(pred, small)
    georef = make_geotiff(tmp_path / "g.tif", maps[1], nodata=None, res=RES)
    with pytest.raises(InputError, match="prediction has no CRS but"):
        score(pred, georef)


def test_labels_without_crs(tmp_path, pred_path, maps):
    labels = make_geotiff(tmp_path / "l.tif", maps[1], nodata=None, res=RES, crs=None)
    with pytest.raises(InputError, match="has no CRS"):
        score(pred_path, labels)


def test_nothing_to_score(tmp_path, pred_path):
    labels = make_geotiff(tmp_path / "l.tif", np.full((H, W), 9, np.uint8), nodata=9,
                          res=RES)
    with pytest.raises(InputError, match="no pixel to score"):
        score(pred_path, labels)
