"""Training on real-world inputs: nodata (per band, NaN, +-inf), labels on other grids,
names in label fields, colour-coded scene labels, disjoint validation blocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.warp import Resampling, reproject

from geoseg.errors import InputError, UnknownNameError
from geoseg.testing import make_class_map, make_geotiff, make_scene
from geoseg.training.augment import Augment, random_chip
from geoseg.training.chips import scene_blocks, tile_scene, train_scene
from geoseg.training.data import IGNORE, ChipDataset, Pair, band_stats, read_pair
from geoseg.training.split import split_blocks

from .test_training import tiny_config

ND = -99999.0
ORIGIN = (500000.0, 4000000.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _nodata_pair(tmp_path: Path) -> tuple[Pair, np.ndarray, np.ndarray]:
    """A float image: a -99999 ring on every band, a ring on band 2 only, NaN and +inf."""
    cmap = make_class_map((96, 96), n_classes=3, block=16, seed=1)
    img = make_scene(cmap, seed=1).astype(np.float32)
    raw = img.copy()
    raw[:, :8, :] = ND  # top rows: no band holds data
    raw[1, :, -8:] = ND  # right columns: band 2 only
    raw[0, 50, 50] = np.inf
    raw[2, 60, 60] = np.nan
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    make_geotiff(tmp_path / "images" / "a.tif", raw, nodata=ND)
    make_geotiff(tmp_path / "masks" / "a.tif", cmap, nodata=None)
    return Pair(tmp_path / "images" / "a.tif", tmp_path / "masks" / "a.tif"), img, cmap


def test_nodata_is_left_out_of_statistics_and_loss(tmp_path: Path) -> None:
    pair, img, cmap = _nodata_pair(tmp_path)
    labelled, _ = read_pair(pair, None)
    # the loss ignores pixels where no band holds data, and only those
    assert (labelled.mask[:8] == IGNORE).all()
    assert (labelled.mask[8:] == cmap[8:]).all()
    mean, std = band_stats([labelled])
    for b in range(3):
        keep = np.ones(img.shape[1:], bool)
        keep[:8] = False
        if b == 1:
            keep[:, -8:] = False
        if b == 0:
            keep[50, 50] = False
        if b == 2:
            keep[60, 60] = False
        expected = img[b][keep].astype(np.float64)
        assert mean[b] == pytest.approx(expected.mean(), rel=1e-9)
        assert std[b] == pytest.approx(expected.std(), rel=1e-9)
        assert 30 < mean[b] < 230  # -99999 would drag it to about -10000


def test_chips_fill_nodata_as_predict_does(tmp_path: Path) -> None:
    pair, _, _ = _nodata_pair(tmp_path)
    labelled, _ = read_pair(pair, None)
    mean, std = band_stats([labelled])
    ds = ChipDataset([labelled], size=64, length=16, mean=mean, std=std, seed=3,
                     augment=Augment(scale=(0.75, 1.33)))  # resampled chips too
    for i in range(len(ds)):
        x, _ = ds[i]
        assert torch.isfinite(x).all() and x.abs().max() < 20
    # the filled values are the band means, i.e. exactly 0 after normalisation
    x, _ = random_chip(labelled.image, labelled.mask, 96, np.random.default_rng(0),
                       valid=labelled.valid, fill=mean)
    assert x[1, 20, -1] == np.float32(mean[1]) and x[0, 50, 50] == np.float32(mean[0])
    assert x[:, 0, 0].tolist() == pytest.approx(list(mean))


def test_scene_with_nodata_ring_trains_with_sane_statistics(tmp_path: Path) -> None:
    cmap = make_class_map((128, 128), n_classes=2, block=12, seed=5)
    img = make_scene(cmap, seed=2).astype(np.float32)
    img[:, :, :16] = ND
    img[2, -16:, :] = ND
    scene = make_geotiff(tmp_path / "s.tif", img, nodata=ND)
    labels = make_geotiff(tmp_path / "l.tif", cmap, nodata=None)
    result = train_scene(scene, labels, tmp_path / "m.safetensors", block=64,
                         config=tiny_config(epochs=1, steps_per_epoch=2, crop_size=32,
                                            tile_size=32))
    from geoseg.models.bundle import read_spec

    spec = read_spec(result.output)
    assert all(30 < m < 230 for m in spec.mean) and all(s < 200 for s in spec.std)


# -- labels on another grid (one label source, shared with score) ----------------------------

def _scene_and_geographic_labels(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A 128x128 UTM scene at 10 m; labels at 20 m in EPSG:4326 covering its left 3/4."""
    cmap = make_class_map((128, 128), n_classes=3, block=32, seed=4)
    scene = make_geotiff(tmp_path / "scene.tif", make_scene(cmap, seed=4), nodata=None)
    coarse = cmap[::2, ::2][:, :48]  # 20 m, 96 columns of the scene
    utm = rasterio.transform.from_origin(ORIGIN[0], ORIGIN[1], 20.0, 20.0)
    dst_crs = "EPSG:4326"
    from rasterio.warp import calculate_default_transform

    bounds = rasterio.transform.array_bounds(64, 48, utm)  # west, south, east, north
    transform, w, h = calculate_default_transform("EPSG:32633", dst_crs, 48, 64, *bounds,
                                                  resolution=0.0002)
    out = np.full((h, w), 255, np.uint8)
    reproject(coarse, out, src_transform=utm, src_crs="EPSG:32633", dst_transform=transform,
              dst_crs=dst_crs, resampling=Resampling.nearest, src_nodata=None, dst_nodata=255)
    path = tmp_path / "labels_4326.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
                       crs=dst_crs, transform=transform, nodata=255) as dst:
        dst.write(out, 1)
    return scene, path, cmap


def test_labels_on_another_grid_tile_and_train(tmp_path: Path) -> None:
    scene, labels, cmap = _scene_and_geographic_labels(tmp_path)
    pairs = tile_scene(scene, labels, tmp_path / "chips", size=64)
    full = np.full((128, 128), 254, np.uint8)
    for p in pairs:
        with rasterio.open(p.mask) as ms:
            r = round((ORIGIN[1] - ms.transform.f) / 10)
            c = round((ms.transform.c - ORIGIN[0]) / 10)
            full[r:r + 64, c:c + 64] = ms.read(1)
    assert (full[:, 100:] == IGNORE).all()  # not covered by the labels: ignored
    covered = full[4:-4, 4:92]
    assert (covered != IGNORE).all()
    assert (covered == cmap[4:-4, 4:92]).mean() > 0.9  # coarser labels: edges move
    # exactly what GDAL's nearest-neighbour warp onto the scene's grid gives
    with rasterio.open(labels) as src, rasterio.open(scene) as sc:
        warped = np.full((128, 128), 255, np.uint8)
        reproject(src.read(1), warped, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=sc.transform, dst_crs=sc.crs, resampling=Resampling.nearest,
                  src_nodata=255, dst_nodata=255)
    assert (full == warped).mean() > 0.995
    result = train_scene(scene, labels, tmp_path / "m.safetensors", block=64,
                         config=tiny_config(epochs=1, steps_per_epoch=2, crop_size=32,
                                            tile_size=32))
    assert result.output.is_file()


def test_vector_field_with_class_names(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    scene = make_geotiff(tmp_path / "s.tif", shape=(3, 64, 64), nodata=None)

    def pix(r0, r1, c0, c1):
        return box(ORIGIN[0] + c0 * 10, ORIGIN[1] - r1 * 10, ORIGIN[0] + c1 * 10,
                   ORIGIN[1] - r0 * 10)

    gdf = gpd.GeoDataFrame({"kind": ["road", "building", "road"]},
                           geometry=[pix(0, 8, 0, 64), pix(20, 40, 20, 40), pix(56, 64, 0, 64)],
                           crs="EPSG:32633")
    gdf.to_file(tmp_path / "l.gpkg")
    pairs = tile_scene(scene, tmp_path / "l.gpkg", tmp_path / "chips", size=64,
                       label_field="kind")
    with rasterio.open(pairs[0].mask) as ms:
        mask = ms.read(1)
        assert ms.tags()["class_names_by_id"] == "0=background;1=building;2=road"
    assert mask[2, 2] == 2 and mask[30, 30] == 1 and mask[12, 2] == 0
    _, table = read_pair(pairs[0], None)
    assert [c.name for c in table.classes] == ["background", "building", "road"]
    named = tile_scene(scene, tmp_path / "l.gpkg", tmp_path / "chips2", size=64,
                       label_field="kind", class_names=["land", "road", "building"])
    with rasterio.open(named[0].mask) as ms:
        assert ms.read(1)[2, 2] == 1 and ms.read(1)[30, 30] == 2
    with pytest.raises(UnknownNameError, match="'building', which is not in --class-names"):
        tile_scene(scene, tmp_path / "l.gpkg", tmp_path / "c3", size=64, label_field="kind",
                   class_names=["land", "road"])


def test_vector_field_names_and_ids_through_scorings_source(tmp_path: Path) -> None:
    """Training's vector labels go through scoring's ``_vector_source``: a field may mix
    ids and names; names differing only in case stay distinct classes."""
    import geopandas as gpd
    from affine import Affine
    from shapely.geometry import box

    from geoseg.scoring.labels import grid_labels

    gdf = gpd.GeoDataFrame({"kind": ["Road", "road", "3"]},
                           geometry=[box(0, 0, 10, 10), box(10, 0, 20, 10),
                                     box(20, 0, 30, 10)], crs="EPSG:32633")
    src = grid_labels(gdf, crs=rasterio.crs.CRS.from_epsg(32633),
                      transform=Affine(1, 0, 0, 0, -1, 10), height=10, width=30,
                      label_field="kind", background=0,
                      class_names=["land", "road", "Road", "water"])
    ids = src.read((0, 10), (0, 30))
    assert ids[5, 5] == 2 and ids[5, 15] == 1 and ids[5, 25] == 3
    assert src.names[3] == "water"


COLORS = {0: (60, 16, 152), 1: (132, 41, 246), 2: (110, 193, 228)}


def test_scene_with_colour_coded_labels(tmp_path: Path) -> None:
    cmap = make_class_map((128, 128), n_classes=3, block=16, seed=6)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=6), nodata=None)
    lut = np.array([COLORS[i] for i in range(3)], np.uint8)
    rgb = lut[cmap].transpose(2, 0, 1)
    rgb[:, :4, :] = 0  # black border: ignored
    labels = make_geotiff(tmp_path / "rgb.tif", rgb, nodata=None)
    colors = tmp_path / "classes.json"
    colors.write_text(json.dumps([{"id": i, "name": f"c{i}", "color": list(c)}
                                  for i, c in COLORS.items()]
                                 + [{"id": None, "color": [0, 0, 0]}]))
    with pytest.raises(InputError, match="3 bands; labels need 1 band"):
        train_scene(scene, labels, tmp_path / "x.safetensors", block=64,
                    config=tiny_config(epochs=1, steps_per_epoch=1))
    pairs = tile_scene(scene, labels, tmp_path / "chips", size=64, class_colors=colors)
    with rasterio.open(pairs[0].mask) as ms:
        assert (ms.read(1)[:4] == IGNORE).all() and (ms.read(1)[4:] == cmap[4:64, :64]).all()
    result = train_scene(scene, labels, tmp_path / "m.safetensors", class_colors=colors,
                         block=64, config=tiny_config(epochs=1, steps_per_epoch=2,
                                                      crop_size=32, tile_size=32))
    from geoseg.models.bundle import read_spec

    assert [c.name for c in read_spec(result.output).classes] == ["c0", "c1", "c2"]


def test_one_class_is_an_error(tmp_path: Path) -> None:
    scene = make_geotiff(tmp_path / "s.tif", shape=(3, 128, 128), nodata=None)
    labels = make_geotiff(tmp_path / "l.tif", np.full((128, 128), 3, np.uint8), nodata=None)
    with pytest.raises(InputError, match="at least 2"):
        train_scene(scene, labels, tmp_path / "m.safetensors", block=64,
                    config=tiny_config(epochs=1, steps_per_epoch=1))


@pytest.mark.parametrize("shape", [(600, 600), (300, 700), (129, 64)])
def test_scene_validation_blocks_never_inside_a_training_crop(tmp_path: Path, shape) -> None:
    """With --crop-size 64 (blocks of 4 crops, at least the 512 px tile): disjoint blocks."""
    cmap = make_class_map(shape, n_classes=2, block=16, seed=2)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=2), nodata=None)
    labels = make_geotiff(tmp_path / "l.tif", cmap, nodata=None)
    crop, tile = 64, 512 if shape[0] >= 512 else 64
    blocks, _ = scene_blocks(scene, labels, block=max(crop * 4, tile))
    assert all(b.window[2] <= max(crop * 4, tile) >= b.window[3] for b in blocks)
    if shape == (600, 600):
        assert len(blocks) == 4  # 2 x 2 blocks of 300 px, not 4 overlapping 512 px ones
    if len(blocks) < 2:
        with pytest.raises(InputError, match="only one block"):
            split_blocks(blocks, 0.2, 0)
        return
    train, val = split_blocks(blocks, 0.2, 0)
    covered = np.zeros(shape, np.int32)
    for b in blocks:
        r, c, h, w = b.window
        covered[r:r + h, c:c + w] += 1
    assert (covered == 1).all()  # every pixel in exactly one block
    in_val = np.zeros(shape, bool)
    for b in val:
        r, c, h, w = b.window
        in_val[r:r + h, c:c + w] = True
    rng = np.random.default_rng(0)
    for b in train:  # any training crop lies inside its block, hence outside validation
        r, c, h, w = b.window
        for _ in range(20):
            x, m = random_chip(np.indices((h, w)).astype(np.float32), b.mask, crop, rng)
            rows = x[0][m != IGNORE].astype(int) + r
            cols = x[1][m != IGNORE].astype(int) + c
            assert not in_val[rows, cols].any()
