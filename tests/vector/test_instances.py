"""vectorize on instance maps: one polygon per building, across chunk seams, library and CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.classmap import ClassMapInfo
from geoseg.errors import InputError
from geoseg.testing import make_geotiff
from geoseg.vector.instances import InstanceGroup, instance_tags, label_instances
from geoseg.vector.pipeline import vectorize

B, BD, CT = 1, 2, 3
NAMES = ("background", "building", "building_boundary", "building_contact")
RES = 0.5


def _house(arr: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> None:
    arr[r0:r1, c0:c1] = BD
    arr[r0 + 1:r1 - 1, c0 + 1:c1 - 1] = B


def _write(path: Path, arr: np.ndarray, *, tag: bool = True, names=NAMES) -> Path:
    make_geotiff(path, arr, nodata=255, res=RES)
    info = ClassMapInfo(tuple(range(len(names))), tuple(names))
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(**info.to_tags(), **({"instance_classes": ",".join(names[1:])}
                                             if tag else {}))
    return path


def _two_touching(tmp_path: Path, **kw) -> Path:
    arr = np.zeros((40, 60), np.uint8)
    _house(arr, 5, 30, 5, 25)
    _house(arr, 5, 30, 25, 50)
    arr[5:30, 23:27] = CT  # the shared wall
    return _write(tmp_path / "map.tif", arr, **kw)


def test_two_touching_buildings_are_two_polygons(tmp_path: Path) -> None:
    path = _two_touching(tmp_path)
    gdf = vectorize(path, classes=["building"])
    assert len(gdf) == 2 and set(gdf.class_name) == {"building"}
    assert sorted(gdf.area_m2) == pytest.approx([25 * 20 * RES**2, 25 * 25 * RES**2])
    a, b = gdf.geometry
    assert a.intersection(b).area == 0 and a.touches(b)  # they share the wall's edge
    merged = vectorize(path, classes=["building"], split_instances=False)
    assert len(merged) == 1 and merged.area_m2[0] == pytest.approx(25 * 45 * RES**2)
    # the default selection (all but background) absorbs boundary and contact too
    assert len(vectorize(path)) == 2
    # an explicit boundary class alone is polygonized as a class of its own
    alone = vectorize(path, classes=["building_boundary"])
    assert set(alone.class_name) == {"building_boundary"}


def test_map_without_tag_is_recognised_by_names(tmp_path: Path) -> None:
    path = _two_touching(tmp_path, tag=False)
    assert len(vectorize(path, classes=["building"])) == 2


def test_split_instances_on_a_plain_map_is_an_error(tmp_path: Path) -> None:
    arr = np.zeros((20, 20), np.uint8)
    arr[5:15, 5:15] = 1
    path = _write(tmp_path / "plain.tif", arr, tag=False, names=("background", "building"))
    with pytest.raises(InputError, match="--target instances"):
        vectorize(path, classes=["building"], split_instances=True)
    assert len(vectorize(path, classes=["building"])) == 1  # auto: nothing to split


def _row_houses(seed: int, shape: tuple[int, int] = (90, 120)) -> tuple[np.ndarray, int]:
    """Rows of touching houses of random widths (boundary ring, contact at shared walls)."""
    rng = np.random.default_rng(seed)
    arr = np.zeros(shape, np.uint8)
    n = 0
    for r0 in range(3, shape[0] - 18, 22):
        h = int(rng.integers(12, 18))
        c = int(rng.integers(2, 8))
        while c < shape[1] - 16:
            w = int(rng.integers(7, 15))
            _house(arr, r0, r0 + h, c, c + w)
            if arr[r0 + 2, c - 1] != 0:  # touches the previous house: contact
                arr[r0:r0 + h, c - 2:c + 2] = CT
            n += 1
            c += w + (0 if rng.random() < 0.7 else int(rng.integers(2, 5)))
    return arr, n


@pytest.mark.parametrize("chunk", [7, 13, 32])
def test_instances_across_chunk_seams_equal_the_whole_map(tmp_path: Path, chunk: int) -> None:
    arr, n = _row_houses(seed=chunk)
    path = _write(tmp_path / "rows.tif", arr)
    whole = vectorize(path, classes=["building"])
    assert len(whole) == n  # one polygon per house
    cut = vectorize(path, classes=["building"], chunk_size=chunk)
    assert len(cut) == n
    def ordered(gdf):  # by position (seams add collinear vertices: compare shapes)
        geoms = gdf.geometry.to_numpy()
        c = shapely.centroid(geoms)
        return geoms[np.lexsort((shapely.get_x(c), shapely.get_y(c)))]

    assert shapely.equals(ordered(whole), ordered(cut)).all()
    # round trip: the polygons cover exactly the building pixels
    from rasterio.features import rasterize

    with rasterio.open(path) as ds:
        back = rasterize(((g, 1) for g in cut.geometry), out_shape=arr.shape,
                         transform=ds.transform)
    assert np.array_equal(back == 1, arr > 0)
    eight = vectorize(path, classes=["building"], chunk_size=chunk, connectivity=8)
    assert len(eight) == n


def test_seed_erosion_and_minimum_seed() -> None:
    group = InstanceGroup("building", B, BD, CT)
    arr = np.zeros((20, 30), np.uint8)
    arr[2:18, 2:28] = BD
    arr[3:17, 3:13] = B
    arr[3:17, 17:27] = B
    arr[9:11, 13:17] = B  # a thin neck joins the two interiors
    assert label_instances(arr, group).max() == 1
    assert label_instances(arr, group, seed_erosion=2).max() == 2
    arr[5:7, 20:22] = BD  # cut a small seed off the right interior... then drop it
    arr2 = np.zeros_like(arr)
    arr2[2:18, 2:28] = BD
    arr2[4:16, 4:12] = B
    arr2[8:10, 20:22] = B  # a 4-px seed
    assert label_instances(arr2, group).max() == 2
    assert label_instances(arr2, group, min_seed=5).max() == 1
    assert label_instances(arr2, group, split=False).max() == 1


def test_group_argmax_decides_building_on_the_summed_probability() -> None:
    from geoseg.prediction.graph import group_argmax

    # background 0.4 beats each building channel, not their sum (0.6)
    acc = np.array([[0.4, 0.6, 0.1], [0.3, 0.2, 0.1], [0.2, 0.1, 0.1], [0.1, 0.1, 0.7]],
                   np.float32)[:, None, :]
    assert group_argmax(acc, (1, 2, 3))[0].tolist() == [1, 0, 3]
    assert group_argmax(acc, (0, 1, 2, 3))[0].tolist() == [0, 0, 3]


def test_predict_tags_of_an_instance_bundle() -> None:
    from geoseg.models.spec import ClassInfo, ModelSpec

    classes = tuple(ClassInfo(i, n, (i, i, i)) for i, n in enumerate(NAMES))
    spec = ModelSpec("unet", "resnet18", ("r", "g", "b"), (0.0,) * 3, (1.0,) * 3, classes,
                     provenance={"target": {"kind": "instances", "interior": "building",
                                            "boundary": "building_boundary",
                                            "contact": "building_contact"}})
    assert instance_tags(spec) == {"instance_classes": ",".join(NAMES[1:])}
    assert instance_tags(spec.with_(provenance={})) == {}
    from geoseg.vector.instances import instance_channels

    assert instance_channels(spec) == ((1, 2, 3),)
    assert instance_channels(spec.with_(provenance={})) == ()


def test_cli_splits_and_refuses(tmp_path: Path) -> None:
    import geopandas as gpd

    path = _two_touching(tmp_path)
    out = tmp_path / "roofs.gpkg"
    r = CliRunner().invoke(cli, ["vectorize", str(path), "--classes", "building", "-o",
                                 str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert len(gpd.read_file(out)) == 2
    r = CliRunner().invoke(cli, ["vectorize", str(path), "--classes", "building",
                                 "--no-split-instances", "-o", str(out), "--overwrite", "-q"])
    assert r.exit_code == 0, r.output
    assert len(gpd.read_file(out)) == 1
    arr = np.zeros((20, 20), np.uint8)
    arr[5:15, 5:15] = 1
    plain = _write(tmp_path / "plain.tif", arr, tag=False, names=("background", "building"))
    bad = CliRunner().invoke(cli, ["vectorize", str(plain), "--split-instances", "-o",
                                   str(tmp_path / "x.gpkg")])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert "--target instances" in bad.output and not (tmp_path / "x.gpkg").exists()
