"""Contracts of geoseg.vector.pipeline: round trip, chunked = whole, coverage, real data."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.features import rasterize, shapes

from geoseg.errors import InputError, OutputError, OutputExistsError, UnknownNameError
from geoseg.testing import make_class_map, make_geotiff
from geoseg.vector.pipeline import (
    centerlines,
    regularize_polygon,
    vectorize,
    vectorize_to_file,
    write_vectors,
)

from ..conftest import SHARED_DATA

DATA = SHARED_DATA
BANEPA_MASK = DATA / "banepa" / "mosaic_buildings_mask.tif"
NAMES = "building,road,water,forest"


def _tricky_map(seed: int = 3) -> np.ndarray:
    """Blocky classes, holes, diagonal touches, thin shapes, nodata over seams."""
    m = make_class_map((256, 256), n_classes=4, block=16, seed=seed)
    m[100:110, 20:220] = 255  # a nodata band across many chunks
    m[40:90, 150:210] = 1  # a ring spanning seams at 64 ...
    m[50:80, 160:200] = 2  # ... with a hole of another class
    m[60:70, 170:190] = 1  # ... and an island in the hole
    for k in range(30):  # a diagonal staircase of single pixels
        m[150 + k, 30 + k] = 3
        m[150 + k, 31 + k] = 0
    cb = (np.indices((20, 20)).sum(0) % 2).astype(np.uint8)  # a checkerboard at a seam
    m[54:74, 54:74] = cb * 2
    m[200:256, 0:5] = 255  # nodata touching the map edge
    return m


def _write(tmp_path: Path, m: np.ndarray, name: str = "map.tif", **kw) -> Path:
    path = make_geotiff(tmp_path / name, m, dtype="uint8", nodata=255, **kw)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(class_names=NAMES, class_ids="0,1,2,3")
    return path


def _whole(m: np.ndarray, transform, connectivity: int) -> list:
    return [
        shapely.make_valid(shapely.geometry.shape(g))
        for g, _ in shapes(
            m, mask=m != 255, connectivity=connectivity, transform=transform
        )
    ]


def _same_set(got: list, ref: list) -> bool:
    """Each geometry equals exactly one of the reference (topological equality)."""
    if len(got) != len(ref):
        return False
    ref_arr = np.asarray(ref, dtype=object)
    tree = shapely.STRtree(ref_arr)
    used: set[int] = set()
    for g in got:
        hits = [int(j) for j in tree.query(g) if shapely.equals(g, ref_arr[j])]
        free = [j for j in hits if j not in used]
        if not free:
            return False
        used.add(free[0])
    return True


@pytest.fixture
def tricky(tmp_path: Path) -> tuple[Path, np.ndarray]:
    m = _tricky_map()
    return _write(tmp_path, m), m


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("chunk", [37, 64, 100])
def test_chunked_equals_whole_map(tricky, connectivity, chunk):
    path, m = tricky
    with rasterio.open(path) as src:
        transform = src.transform
    gdf = vectorize(
        path, all_classes=True, chunk_size=chunk, connectivity=connectivity, workers=1
    )
    ref = _whole(m, transform, connectivity)
    assert len(gdf) == len(ref)
    assert _same_set(list(gdf.geometry), ref)
    assert gdf.geometry.is_valid.all()


@pytest.mark.parametrize("connectivity", [4, 8])
def test_chunked_equals_whole_with_probabilities(tricky, tmp_path, connectivity):
    """The labelled path (used with a probability raster) merges seams exactly too."""
    path, m = tricky
    prob = np.full((4, *m.shape), 200, np.uint8)
    ppath = make_geotiff(tmp_path / "p.tif", prob, dtype="uint8", nodata=255)
    with rasterio.open(path) as src:
        transform = src.transform
    gdf = vectorize(
        path,
        all_classes=True,
        chunk_size=37,
        connectivity=connectivity,
        probabilities=ppath,
        workers=1,
    )
    assert _same_set(list(gdf.geometry), _whole(m, transform, connectivity))
    assert np.allclose(gdf.mean_confidence, 200 / 254)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_round_trip_rasterize_gives_class_map(tricky, connectivity):
    path, m = tricky
    with rasterio.open(path) as src:
        transform = src.transform
    gdf = vectorize(
        path, all_classes=True, chunk_size=37, connectivity=connectivity, workers=1
    )
    back = rasterize(
        zip(gdf.geometry, gdf.class_id, strict=True),
        out_shape=m.shape,
        transform=transform,
        fill=255,
        dtype="uint8",
    )
    np.testing.assert_array_equal(back, m)
    # no polygon covers nodata, and polygons never overlap
    assert shapely.union_all(gdf.geometry.values).area == pytest.approx(
        (m != 255).sum() * 100.0
    )
    assert gdf.area.sum() == pytest.approx((m != 255).sum() * 100.0)


def test_processes_scheduler_gives_the_same(tricky):
    path, _ = tricky
    a = vectorize(path, all_classes=True, chunk_size=64, workers=1)
    b = vectorize(path, all_classes=True, chunk_size=64, workers=2)
    assert _same_set(list(b.geometry), list(a.geometry))


def test_columns_names_and_area(tricky):
    path, m = tricky
    gdf = vectorize(path, classes=["building", "3"], chunk_size=64, workers=1)
    assert list(gdf.columns) == [
        "class_id",
        "class_name",
        "area_m2",
        "feature",
        "geometry",
    ]
    assert set(gdf.class_name) == {"building", "forest"}
    assert gdf.crs == "EPSG:32633"
    for cid in (0, 3):
        assert gdf[gdf.class_id == cid].area_m2.sum() == pytest.approx(
            (m == cid).sum() * 100.0
        )


def test_default_skips_background(tmp_path):
    m = np.zeros((40, 40), np.uint8)
    m[5:15, 5:15] = 1
    path = make_geotiff(tmp_path / "b.tif", m, dtype="uint8", nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(class_names="background,building", class_ids="0,1")
    assert list(vectorize(path).class_name) == ["building"]
    assert sorted(vectorize(path, all_classes=True).class_name) == [
        "background",
        "building",
    ]


def test_mean_confidence(tmp_path):
    m = np.full((64, 64), 255, np.uint8)
    m[:, :40] = 0
    m[:, 40:] = 1
    path = make_geotiff(tmp_path / "m.tif", m, dtype="uint8", nodata=255)
    prob = np.zeros((2, 64, 64), np.uint8)
    prob[0, :, :20] = 254  # p = 1.0
    prob[0, :, 20:40] = 127  # p = 0.5
    prob[1, :, 40:] = 254 // 2  # p = 0.5
    prob[1, :4, 40:] = 255  # nodata: ignored in the mean
    ppath = make_geotiff(tmp_path / "p.tif", prob, dtype="uint8", nodata=255)
    gdf = vectorize(
        path, class_names=["a", "b"], probabilities=ppath, chunk_size=32, workers=1
    ).set_index("class_name")
    assert gdf.loc["a", "mean_confidence"] == pytest.approx(0.75)
    assert gdf.loc["b", "mean_confidence"] == pytest.approx(127 / 254)


def test_coverage_simplify_keeps_a_coverage(tricky):
    path, m = tricky
    gdf = vectorize(path, all_classes=True, simplify=25.0, chunk_size=64, workers=1)
    geoms = gdf.geometry.values
    raw = vectorize(path, all_classes=True, chunk_size=64, workers=1)
    assert (
        shapely.get_num_coordinates(geoms).sum()
        < shapely.get_num_coordinates(raw.geometry.values).sum()
    )
    assert shapely.coverage_is_valid(np.asarray(geoms))
    valid_area = (m != 255).sum() * 100.0
    assert shapely.union_all(geoms).area == pytest.approx(valid_area, rel=1e-3)
    assert gdf.area.sum() == pytest.approx(shapely.union_all(geoms).area, rel=1e-9)
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    pairs = a < b
    inter = shapely.area(shapely.intersection(geoms[a[pairs]], geoms[b[pairs]]))
    assert inter.max() < 1e-6


def test_single_class_simplify_and_min_area_and_fill_holes(tmp_path):
    m = np.zeros((100, 100), np.uint8)
    m[10:60, 10:60] = 1
    m[20:22, 20:22] = 0  # 4 px hole = 400 m2
    m[30:45, 30:45] = 0  # 225 px hole
    m[80:82, 80:82] = 1  # 400 m2 speck
    path = make_geotiff(tmp_path / "s.tif", m, dtype="uint8", nodata=255)
    gdf = vectorize(path, classes=[1], min_area=500, fill_holes=500, workers=1)
    assert len(gdf) == 1
    assert len(gdf.geometry.iloc[0].interiors) == 1
    assert gdf.area_m2.iloc[0] == pytest.approx((2500 - 225) * 100.0)


def test_fill_holes_drops_what_it_covers(tmp_path):
    m = np.zeros((60, 60), np.uint8)
    m[20:23, 20:23] = 1
    path = make_geotiff(tmp_path / "h.tif", m, dtype="uint8", nodata=255)
    gdf = vectorize(path, fill_holes=1000, workers=1)  # the 900 m2 island is filled
    assert len(gdf) == 1
    assert gdf.class_id.iloc[0] == 0
    assert gdf.area_m2.iloc[0] == pytest.approx(3600 * 100.0)


def test_geographic_crs_areas_in_metres(tmp_path):
    m = np.zeros((100, 100), np.uint8)
    m[10:50, 10:50] = 1
    path = make_geotiff(
        tmp_path / "g.tif",
        m,
        crs="EPSG:4326",
        res=1e-4,
        origin=(85.5, 27.6),
        dtype="uint8",
        nodata=255,
    )
    gdf = vectorize(path, classes=[1], workers=1)
    # 40 x 40 px of 1e-4 deg at 27.6 N: about 11.1 m x 9.86 m per pixel
    expected = gpd.GeoSeries(gdf.geometry, crs=4326).to_crs(6933).area.iloc[0]
    assert gdf.area_m2.iloc[0] == pytest.approx(expected, rel=2e-3)
    small = vectorize(path, classes=[1], min_area=expected * 1.01, workers=1)
    assert len(small) == 0


def test_regularize_squares_a_rotated_noisy_rectangle():
    rect = shapely.affinity.rotate(shapely.box(0, 0, 40, 20), 30, origin=(0, 0))
    rng = np.random.default_rng(0)
    pts = np.asarray(shapely.segmentize(rect, 1.0).exterior.coords)[:-1]
    pts = pts + rng.normal(0, 0.3, pts.shape)
    noisy = shapely.Polygon(pts)
    out = regularize_polygon(noisy, 1.5)
    assert out.is_valid
    ring = np.asarray(out.exterior.coords)
    d = np.diff(ring, axis=0)
    ang = np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 90
    assert np.ptp(ang) < 1e-6 or np.ptp((ang + 45) % 90) < 1e-6  # all edges orthogonal
    assert min(abs(ang[0] - 30), 90 - abs(ang[0] - 30)) < 1.0  # the rectangle's angle
    assert (
        shapely.area(shapely.intersection(out, rect))
        / shapely.area(shapely.union(out, rect))
        > 0.95
    )


def test_regularize_keeps_an_l_shape():
    ell = shapely.Polygon([(0, 0), (30, 0), (30, 10), (10, 10), (10, 30), (0, 30)])
    wobbly = shapely.Polygon(
        np.asarray(shapely.segmentize(ell, 1).exterior.coords)
        + np.random.default_rng(1).normal(0, 0.2, (1, 2))
    )
    out = regularize_polygon(wobbly, 1.0)
    assert len(out.exterior.coords) == 7  # six corners, closed
    assert out.symmetric_difference(ell).area < 0.05 * ell.area


def test_regularize_option(tmp_path):
    m = np.zeros((80, 80), np.uint8)
    yy, xx = np.mgrid[:80, :80]
    u, v = (xx - 40) * 0.8 + (yy - 40) * 0.6, -(xx - 40) * 0.6 + (yy - 40) * 0.8
    m[(np.abs(u) < 20) & (np.abs(v) < 10)] = 1  # a rotated rectangle, staircase edges
    path = make_geotiff(tmp_path / "r.tif", m, dtype="uint8", nodata=255)
    gdf = vectorize(
        path, class_names=["background", "building"], regularize=True, workers=1
    )
    g = gdf.geometry.iloc[0]
    assert len(g.exterior.coords) == 5
    raw = vectorize(path, classes=[1], workers=1).geometry.iloc[0]
    assert len(raw.exterior.coords) > 20
    assert g.symmetric_difference(raw).area < 0.1 * raw.area


def _road_map(tmp_path: Path) -> Path:
    m = np.zeros((200, 200), np.uint8)
    m[95:104, 10:190] = 1  # a horizontal road 9 px wide
    m[10:190, 45:52] = 1  # a vertical road crossing it
    path = make_geotiff(tmp_path / "roads.tif", m, dtype="uint8", nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(class_names="background,road", class_ids="0,1")
    return path


def test_centerlines_chunked_equals_whole(tmp_path):
    path = _road_map(tmp_path)
    whole = centerlines(path, chunk_size=256, workers=1)
    chunked = centerlines(path, chunk_size=64, workers=1)
    assert set(whole.geom_type) == {"LineString"}
    assert shapely.equals(
        shapely.union_all(whole.geometry.values),
        shapely.union_all(chunked.geometry.values),
    )
    assert len(whole) == len(chunked)
    # the horizontal road's centre line runs along its middle row
    ys = np.asarray(shapely.get_coordinates(whole.geometry.values))[:, 1]
    with rasterio.open(path) as src:
        t = src.transform
    row_mid = t.f + t.e * 99.5
    assert np.isclose(ys, row_mid).sum() > 100
    assert whole.length_m.sum() == pytest.approx(whole.length.sum())


def test_centerlines_written_as_second_layer(tmp_path):
    path = _road_map(tmp_path)
    out = tmp_path / "roads.gpkg"
    res = vectorize_to_file(path, out, centerlines=True, workers=1)
    layers = {name for name, _ in pyogrio.list_layers(out)}
    assert layers == {"roads", "roads_centerlines"}
    assert res.n_lines > 0
    assert res.n_polygons == 1
    lines = gpd.read_file(out, layer="roads_centerlines")
    assert set(lines.geom_type) == {"LineString"}
    assert "length_m" in lines
    geojson = tmp_path / "r.geojson"
    got = vectorize_to_file(path, geojson, centerlines=True, workers=1).outputs
    assert got == [geojson, tmp_path / "r_centerlines.geojson"]


@pytest.mark.parametrize("ext", [".gpkg", ".geojson", ".fgb", ".parquet", ".shp"])
def test_formats_and_crs(tricky, tmp_path, ext):
    path, _ = tricky
    out = tmp_path / f"out{ext}"
    res = vectorize_to_file(path, out, classes=["building"], workers=1)
    back = gpd.read_parquet(out) if ext == ".parquet" else gpd.read_file(out)
    assert len(back) == res.n_polygons > 0
    assert back.crs == "EPSG:32633"
    assert {"class_id", "class_name", "area_m2"} <= set(back.columns)
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_dst_crs_and_overwrite(tricky, tmp_path):
    path, _ = tricky
    out = tmp_path / "o.gpkg"
    vectorize_to_file(path, out, classes=["road"], dst_crs="EPSG:4326", workers=1)
    assert pyogrio.read_info(out)["crs"] == "EPSG:4326"
    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        vectorize_to_file(path, out, classes=["road"], workers=1)
    assert out.read_bytes() == before
    vectorize_to_file(path, out, classes=["road"], overwrite=True, workers=1)
    assert pyogrio.read_info(out)["crs"] == "EPSG:32633"


def test_shapefile_sidecars_move_together(tricky, tmp_path):
    path, _ = tricky
    out = tmp_path / "b.shp"
    write_vectors(vectorize(path, classes=["building"], workers=1), out)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("b."))
    assert names == ["b.cpg", "b.dbf", "b.prj", "b.shp", "b.shx"]


@pytest.mark.parametrize(
    ("make", "exc", "words"),
    [
        (
            lambda d: (d / "notes.tif").write_text("hello") and d / "notes.tif",
            InputError,
            "not a raster",
        ),
        (
            lambda d: make_geotiff(
                d / "f.tif", np.zeros((1, 8, 8), np.float32), dtype="float32"
            ),
            InputError,
            "float32",
        ),
        (lambda d: d / "missing.tif", InputError, "not found"),
    ],
)
def test_bad_input(tmp_path, make, exc, words):
    with pytest.raises(exc, match=words):
        vectorize(make(tmp_path))


def test_unknown_class_lists_known(tricky):
    path, _ = tricky
    with pytest.raises(UnknownNameError) as info:
        vectorize(path, classes=["building", "roof"])
    msg = str(info.value)
    assert "'roof'" in msg
    assert "building (0)" in msg
    assert "forest (3)" in msg
    assert "\n" not in msg


def test_bad_options(tricky):
    path, _ = tricky
    with pytest.raises(InputError, match="connectivity"):
        vectorize(path, connectivity=6)
    with pytest.raises(InputError, match="simplify"):
        vectorize(path, simplify=-1)
    with pytest.raises(InputError, match="not both"):
        vectorize(path, classes=["road"], all_classes=True)


def test_unwritable_output_fails_before_compute(tricky, tmp_path):
    path, _ = tricky
    with pytest.raises(OutputError, match="does not exist"):
        vectorize_to_file(path, tmp_path / "nope" / "o.gpkg")
    with pytest.raises(OutputError, match="vector format"):
        vectorize_to_file(path, tmp_path / "o.xyz")


@pytest.fixture(scope="module")
def banepa() -> Path:
    if not BANEPA_MASK.exists():
        pytest.skip(f"real data not found: {BANEPA_MASK}")
    return BANEPA_MASK


def test_banepa_buildings_match_whole_map(banepa, tmp_path):
    with rasterio.open(banepa) as src:
        m, transform, crs = src.read(1), src.transform, src.crs
    ref = gpd.GeoSeries(
        [
            shapely.geometry.shape(g)
            for g, v in shapes(m, mask=m == 1, transform=transform)
        ],
        crs=crs,
    )
    out = tmp_path / "buildings.gpkg"
    res = vectorize_to_file(banepa, out, classes=[1], chunk_size=1000, workers=2)
    got = gpd.read_file(out)
    assert res.n_polygons == len(got) == len(ref)
    utm = ref.estimate_utm_crs()
    assert got.area_m2.sum() == pytest.approx(ref.to_crs(utm).area.sum(), rel=1e-9)
    assert got.to_crs(utm).area.sum() == pytest.approx(
        ref.to_crs(utm).area.sum(), rel=1e-9
    )
    info = pyogrio.read_info(out)
    assert info["crs"] == "EPSG:4326"
    assert info["features"] == len(ref)


@pytest.mark.timeout(60)
def test_uses_a_running_distributed_client(tricky):
    distributed = pytest.importorskip("distributed")
    path, _ = tricky
    local = vectorize(path, all_classes=True, chunk_size=64, workers=1)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=None):
        remote = vectorize(path, all_classes=True, chunk_size=64)
    assert _same_set(list(remote.geometry), list(local.geometry))
