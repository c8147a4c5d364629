"""geoseg.training: data, colour masks, augmentation, losses, loop, resume, chips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from geoseg.errors import InputError
from geoseg.testing import make_class_map, make_geotiff, make_scene
from geoseg.training.augment import Augment, random_chip
from geoseg.training.data import (
    IGNORE,
    MaskClasses,
    Pair,
    decode_colors,
    find_pairs,
    load_pairs,
    read_class_table,
    read_pair,
)
from geoseg.training.loop import (
    TrainConfig,
    checkpoint_paths,
    confusion_matrix,
    iou_from_confusion,
    train,
)
from geoseg.training.losses import LOSSES, make_loss

from ..conftest import SHARED_DATA

COLORS = {0: (60, 16, 152), 1: (132, 41, 246), 2: (110, 193, 228)}
TINY = {"encoder_depth": 3, "decoder_channels": (32, 16, 8)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _colour_file(tmp_path: Path, *, ignore_black: bool = True) -> Path:
    rows = [{"id": i, "name": f"c{i}", "color": list(c)} for i, c in COLORS.items()]
    if ignore_black:
        rows.append({"id": None, "name": "border", "color": [0, 0, 0]})
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(rows))
    return path


def _rgb(ids: np.ndarray) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    for i, c in COLORS.items():
        lut[i] = c
    return lut[ids].transpose(2, 0, 1)  # ignore (255) -> black


def make_pairs(root: Path, n: int, *, size: int = 96, seed: int = 0, groups: int = 1) -> Path:
    """n learnable image/mask pairs (id masks, 3 classes) in root/gK/images|masks."""
    k = 0
    for g in range(groups):
        for _ in range(n):
            cmap = make_class_map((size, size), n_classes=3, block=12, seed=seed + k)
            img = make_scene(cmap, bands=3, seed=seed)  # same class means in every image
            base = root / f"g{g}" if groups > 1 else root
            (base / "images").mkdir(parents=True, exist_ok=True)
            (base / "masks").mkdir(parents=True, exist_ok=True)
            make_geotiff(base / "images" / f"p{k}.tif", img, nodata=None)
            make_geotiff(base / "masks" / f"p{k}.tif", cmap, nodata=None)
            k += 1
    return root


def tiny_config(**kw: object) -> TrainConfig:
    base = {"architecture": "unet", "backbone": "resnet18", "arch_params": TINY,
            "epochs": 2, "steps_per_epoch": 8, "batch_size": 8, "crop_size": 48,
            "lr": 5e-3, "warmup_steps": 3, "tile_size": 64, "overlap": 16, "device": "cpu",
            "precision": "fp32", "channels_last": False}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


# -- data: colours, pairs, bad input -------------------------------------------------------

def test_colour_mask_decodes_exactly_rgb_and_palette(tmp_path):
    table = read_class_table(_colour_file(tmp_path))
    ids = make_class_map((40, 50), n_classes=3, block=8, seed=3)
    ids[:3] = IGNORE  # a black border
    assert np.array_equal(decode_colors(_rgb(ids), table), ids)

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    make_geotiff(tmp_path / "images" / "a.tif", make_scene(np.where(ids == IGNORE, 0, ids)),
                 nodata=None)
    pal = Image.fromarray(np.where(ids == IGNORE, 3, ids).astype(np.uint8), mode="P")
    pal.putpalette([*COLORS[0], *COLORS[1], *COLORS[2], 0, 0, 0] + [0] * (252 * 3))
    pal.save(tmp_path / "masks" / "a.png")
    labelled, _ = read_pair(find_pairs(tmp_path)[0], table)
    assert np.array_equal(labelled.mask, ids)


def test_class_table_csv_and_channel_order(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,name,r,g,b\n7,water,0,0,255\n2,land,0,255,0\nignore,border,0,0,0\n")
    table = read_class_table(path)
    assert table.ids == [2, 7] and [c.name for c in table.classes] == ["land", "water"]
    rgb = np.array([[[0, 0, 0]], [[0, 255, 0]], [[255, 0, 0]]], np.uint8)  # (3, 1, 3)
    assert decode_colors(rgb, table).tolist() == [[1, 0, IGNORE]]


def test_unknown_colour_is_one_line_error_naming_file(tmp_path):
    table = read_class_table(_colour_file(tmp_path, ignore_black=False))
    rgb = _rgb(np.zeros((4, 4), np.uint8))
    rgb[:, 0, 0] = (1, 2, 3)
    with pytest.raises(InputError, match=r"m\.png: colour \(1, 2, 3\) \(1 px\)") as exc:
        decode_colors(rgb, table, source="m.png")
    assert "\n" not in str(exc.value)


def test_bad_inputs_name_the_file(tmp_path):
    root = make_pairs(tmp_path / "d", 2, size=32)
    (root / "images" / "lonely.tif").write_bytes((root / "images" / "p0.tif").read_bytes())
    with pytest.raises(InputError, match=r"lonely\.tif has no mask"):
        find_pairs(root)
    (root / "images" / "lonely.tif").unlink()

    make_geotiff(root / "masks" / "p1.tif", np.zeros((20, 32), np.uint8), nodata=None)
    with pytest.raises(InputError, match=r"mask .*p1\.tif is 32x20 px but image .*p1\.tif"):
        load_pairs(find_pairs(root), None)

    make_geotiff(root / "masks" / "p1.tif", np.full((32, 32), 9, np.uint8), nodata=None)
    with pytest.raises(InputError, match=r"p1\.tif holds value 9, which is no class"):
        read_pair(find_pairs(root)[1], MaskClasses.from_ids([0, 1, 2]))

    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    with pytest.raises(InputError, match=r"no image files in .*empty"):
        find_pairs(empty)
    with pytest.raises(InputError, match="dataset is empty"):
        load_pairs([], None)


# -- augmentation --------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [(1.0, 1.0), (0.7, 1.4)])
def test_augmentation_keeps_image_and_mask_aligned(scale):
    ids = make_class_map((120, 140), n_classes=4, block=10, seed=1)
    image = np.stack([ids * 50.0, ids * 20.0 + 7])  # the mask is a function of the image
    aug = Augment(flips=True, rot90=True, scale=scale)
    for seed in range(20):
        img, msk = random_chip(image, ids, 48, np.random.default_rng(seed), aug)
        derived = np.rint(img[0] / 50.0).astype(np.uint8)
        agree = (derived == msk).mean()
        if scale == (1.0, 1.0):
            assert agree == 1.0 and np.allclose(img[1], msk * 20.0 + 7)
        else:  # bilinear image vs nearest mask differ only on class edges
            assert agree > 0.85


def test_small_image_is_padded_with_ignore():
    ids = np.ones((10, 12), np.uint8)
    img, msk = random_chip(np.ones((1, 10, 12)), ids, 16, np.random.default_rng(0))
    assert img.shape == (1, 16, 16) and (msk == 1).sum() == 120
    assert set(np.unique(msk)) == {1, IGNORE}


# -- losses and metrics --------------------------------------------------------------------

@pytest.mark.parametrize("name", LOSSES)
def test_ignore_index_excluded_from_loss(name):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :3] = IGNORE
    loss = make_loss(name, n_classes=3, weights=[1.0, 2.0, 0.5])
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 3, 3, 8) * 10  # only ignored pixels change
    assert torch.isclose(loss(logits, target), loss(changed, target), atol=1e-6)
    assert math.isfinite(float(loss(logits, target)))


def test_confusion_and_iou_skip_ignore():
    truth = torch.tensor([0, 0, 1, 1, IGNORE, IGNORE])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(pred, truth, 3).numpy()
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    iou, miou = iou_from_confusion(cm)
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(2 / 3)
    assert math.isnan(iou[2]) and miou == pytest.approx((0.5 + 2 / 3) / 2)
    assert iou_from_confusion(cm, [1])[1] == pytest.approx(2 / 3)


# -- the loop ------------------------------------------------------------------------------

def test_folder_class_names_in_id_order_keep_a_class_only_in_validation(tmp_path):
    """Names in id order: every named id is a class, even one the training tiles lack."""
    from geoseg.models.bundle import read_spec

    train_dir, val_dir = tmp_path / "train", tmp_path / "val"
    for root, top in ((train_dir, 2), (val_dir, 3)):
        for d in ("images", "masks"):
            (root / d).mkdir(parents=True)
        cmap = make_class_map((64, 64), n_classes=top, block=12, seed=top)
        make_geotiff(root / "images" / "p.tif", make_scene(cmap, bands=3), nodata=None)
        make_geotiff(root / "masks" / "p.tif", cmap, nodata=None)
    out = tmp_path / "m.safetensors"
    train(train_dir, out, val=val_dir, config=tiny_config(epochs=1, steps_per_epoch=1),
          class_names=["a", "b", "c"])
    spec = read_spec(out)
    assert list(spec.class_names()) == ["a", "b", "c"]
    assert [c.id for c in spec.classes] == [0, 1, 2]
    with pytest.raises(InputError, match="give one name per id"):
        train(train_dir, tmp_path / "n.safetensors", val=val_dir, config=tiny_config(),
              class_names=["a"])


def test_training_learns_and_bundle_roundtrips_through_predict(tmp_path):
    from geoseg.models.bundle import load_bundle
    from geoseg.prediction.pipeline import predict

    root = make_pairs(tmp_path / "data", 3, size=96, groups=2)
    out = tmp_path / "m.safetensors"
    result = train(root, out, val_fraction=0.5, config=tiny_config(seed=1),
                   class_names=["a", "b", "c"], band_names=["r", "g", "b"])
    first, best = result.history[0], result.best_miou
    assert best > 0.6, result.history  # chance is ~0.2 for 3 balanced classes
    assert best >= first.miou
    bundle = load_bundle(out)
    prov = bundle.spec.provenance
    assert prov["val_miou"] == pytest.approx(best, abs=1e-6)
    assert set(prov["val_iou"]) == {"a", "b", "c"} and prov["epochs"] == result.best_epoch
    assert prov["data"]["train_images"] == 3 and prov["data"]["val_images"] == 3
    assert bundle.spec.bands == ("r", "g", "b")
    assert bundle.spec.input_dtype == "uint8"  # what predict checks scenes against
    assert all(0 <= lo < hi <= 255 for lo, hi in bundle.spec.input_range)
    assert not any(p.exists() for p in checkpoint_paths(out))  # finished: no checkpoint
    lines = result.metrics_csv.read_text().splitlines()
    assert lines[0].startswith("epoch,step,train_loss,val_loss,val_miou,iou_a")
    assert len(lines) == 1 + len(result.history)

    # round trip: the bundle predicts a validation image through the public pipeline
    val_img = next(p for p in find_pairs(root) if p.image.parent.parent.name == "g1")
    pred_path = predict(val_img.image, tmp_path / "pred.tif", model=out, device="cpu",
                        engine="eager").output
    with rasterio.open(pred_path) as ds, rasterio.open(val_img.mask) as ms:
        accuracy = (ds.read(1) == ms.read(1)).mean()
    assert accuracy > 0.7


def test_resume_continues_from_saved_epoch(tmp_path):
    root = make_pairs(tmp_path / "data", 2, size=64, groups=2)
    out = tmp_path / "m.safetensors"
    cut = train(root, out, val_fraction=0.5,
                config=tiny_config(epochs=3, steps_per_epoch=3, max_minutes=1e-6))
    assert cut.stopped.startswith("time limit") and [h.epoch for h in cut.history] == [1]
    ckpt, state = checkpoint_paths(out)
    assert ckpt.is_file() and json.loads(state.read_text())["epoch"] == 1
    with pytest.raises(Exception, match="exists"):
        train(root, out, val_fraction=0.5, config=tiny_config(epochs=3, steps_per_epoch=3))
    done = train(root, out, val_fraction=0.5, resume=True,
                 config=tiny_config(epochs=3, steps_per_epoch=3))
    assert [h.epoch for h in done.history] == [1, 2, 3]
    assert [h.steps for h in done.history] == [1, 4, 7]  # continued the step counter
    assert len(done.metrics_csv.read_text().splitlines()) == 4
    assert not ckpt.exists()


def test_seed_makes_runs_repeatable(tmp_path):
    root = make_pairs(tmp_path / "data", 2, size=64, groups=2)
    cfg = tiny_config(epochs=1, steps_per_epoch=3)
    a = train(root, tmp_path / "a.safetensors", val_fraction=0.5, config=cfg)
    b = train(root, tmp_path / "b.safetensors", val_fraction=0.5, config=cfg)
    assert a.history[0].train_loss == b.history[0].train_loss


def test_validation_split_holds_out_whole_groups(tmp_path):
    from geoseg.training.loop import split_groups

    root = make_pairs(tmp_path / "data", 2, size=32, groups=4)
    tr, va = split_groups(find_pairs(root), 0.25, seed=0)
    assert len(va) == 2 and len(tr) == 6
    assert {p.image.parent.parent for p in va}.isdisjoint({p.image.parent.parent for p in tr})


# -- scene + labels ------------------------------------------------------------------------

def test_vector_labels_rasterize_onto_chips(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from geoseg.training.chips import tile_scene

    scene = make_geotiff(tmp_path / "s.tif", shape=(3, 64, 64), res=10.0,
                         origin=(500000.0, 4000000.0), nodata=None)
    # pixel rows 8..20, cols 36..50 -> class 2; rows 40..48, cols 4..12 -> class 1
    def pix(r0, r1, c0, c1):
        return box(500000 + c0 * 10, 4000000 - r1 * 10, 500000 + c1 * 10, 4000000 - r0 * 10)

    gdf = gpd.GeoDataFrame({"cls": [2, 1]}, geometry=[pix(8, 20, 36, 50), pix(40, 48, 4, 12)],
                           crs="EPSG:32633").to_crs("EPSG:4326")
    gdf.to_file(tmp_path / "l.geojson")
    pairs = tile_scene(scene, tmp_path / "l.geojson", tmp_path / "chips", size=32,
                       label_field="cls")
    assert len(pairs) == 4
    full = np.zeros((64, 64), np.uint8)
    for p in pairs:
        with rasterio.open(p.mask) as ms, rasterio.open(p.image) as im:
            assert ms.crs == im.crs and ms.transform == im.transform
            r = round((4000000 - ms.transform.f) / 10)
            c = round((ms.transform.c - 500000) / 10)
            full[r:r + 32, c:c + 32] = ms.read(1)
    expected = np.zeros((64, 64), np.uint8)
    expected[8:20, 36:50] = 2
    expected[40:48, 4:12] = 1
    # reprojection to EPSG:4326 and back moves edges by far less than a pixel
    assert (full != expected).sum() <= 4
    assert full[10:18, 38:48].min() == 2 and full[42:46, 6:10].min() == 1

    kept = tile_scene(scene, tmp_path / "l.geojson", tmp_path / "chips2", size=32,
                      label_field="cls", skip_background=True)
    assert len(kept) == 2  # two of the four chips hold only background
    with pytest.raises(InputError, match="no field 'kind'"):
        tile_scene(scene, tmp_path / "l.geojson", tmp_path / "c3", size=32, label_field="kind")


def test_scene_with_label_raster_trains(tmp_path):
    from geoseg.training.chips import train_scene

    cmap = make_class_map((128, 128), n_classes=2, block=12, seed=5)
    scene = make_geotiff(tmp_path / "s.tif", make_scene(cmap, seed=2), nodata=None)
    labels = make_geotiff(tmp_path / "l.tif", cmap, nodata=None)
    result = train_scene(scene, labels, tmp_path / "m.safetensors", block=64,
                         config=tiny_config(epochs=1, steps_per_epoch=4, crop_size=32,
                                            tile_size=32))
    assert result.output.is_file() and 0 <= result.best_miou <= 1


# -- the shipped default models ------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["deeplab", "unet"])
def test_default_model_matches_its_card_on_dubai_heldout(name):
    from geoseg.models import default_model_path
    from geoseg.models.bundle import read_spec
    from geoseg.training.evaluate import evaluate_bundle

    data = SHARED_DATA / "dubai"
    if not data.is_dir():
        pytest.skip(f"real data not available: {data.resolve()}")
    path = default_model_path(name)
    if not path.is_file():
        pytest.skip(f"default model {name} is not built: {path}")
    card = read_spec(path).provenance["heldout"]
    key = "tile_7/image_part_001.jpg"
    table = read_class_table(Path(__file__).resolve().parents[2] / "examples"
                             / "dubai_classes.json")
    pair = Pair(data / "tile_7" / "images" / "image_part_001.jpg",
                data / "tile_7" / "masks" / "image_part_001.png")
    got = evaluate_bundle(name, [pair], table, exclude=("unlabeled",))
    assert got.miou == pytest.approx(card["per_image_miou"][key], abs=0.02)


# -- GSD from the imagery's georeferencing ---------------------------------------------------

def test_ground_sample_distance_projected_geographic_and_none():
    from affine import Affine
    from pyproj import Geod
    from rasterio.crs import CRS

    from geoseg.io import ground_sample_distance

    assert ground_sample_distance(CRS.from_epsg(32633), Affine(0.5, 0, 0, 0, -0.5, 0),
                                  10, 10) == 0.5
    feet = CRS.from_epsg(2263)  # NY state plane, US survey feet
    assert ground_sample_distance(feet, Affine(1, 0, 0, 0, -1, 0), 10, 10) == \
        pytest.approx(0.3048006, rel=1e-6)
    # 1e-5 degrees at (lon 85.5, lat 27.6): the geodesic size of that pixel at the centre
    t = Affine(1e-5, 0, 85.5 - 5e-4, 0, -1e-5, 27.6 + 5e-4)
    geod = Geod(ellps="WGS84")
    dx = geod.inv(85.5 - 5e-6, 27.6, 85.5 + 5e-6, 27.6)[2]
    dy = geod.inv(85.5, 27.6 - 5e-6, 85.5, 27.6 + 5e-6)[2]
    got = ground_sample_distance(CRS.from_epsg(4326), t, 100, 100)
    assert got == pytest.approx((dx * dy) ** 0.5, rel=1e-6)
    assert 0.95 < got < 1.05  # about a metre there
    assert ground_sample_distance(None, Affine.identity(), 10, 10) is None


def _gsd_pairs(root: Path, **geo) -> Path:
    for k in range(2):
        cmap = make_class_map((64, 64), n_classes=2, block=12, seed=k)
        (root / f"g{k}" / "images").mkdir(parents=True)
        (root / f"g{k}" / "masks").mkdir(parents=True)
        make_geotiff(root / f"g{k}" / "images" / "p.tif", make_scene(cmap, seed=k),
                     nodata=None, **geo)
        make_geotiff(root / f"g{k}" / "masks" / "p.tif", cmap, nodata=None, **geo)
    return root


@pytest.mark.parametrize(("geo", "gsd", "expected", "source"), [
    ({"res": 0.3}, None, 0.3, "from the imagery's georeferencing (EPSG:32633)"),
    ({"res": 0.3}, 0.5, 0.5, "--gsd"),
    ({"crs": None}, None, None, "unknown: the imagery is not georeferenced"),
])
def test_bundle_gsd_from_imagery_or_gsd_option(tmp_path, geo, gsd, expected, source):
    from geoseg.models.bundle import read_spec

    data = _gsd_pairs(tmp_path / "d", **geo)
    out = tmp_path / "m.safetensors"
    train(data, out, config=tiny_config(epochs=1, steps_per_epoch=1, batch_size=2,
                                        crop_size=32, tile_size=32, gsd=gsd))
    spec = read_spec(out)
    if expected is None:
        assert math.isnan(spec.gsd_m)
    else:
        assert spec.gsd_m == pytest.approx(expected)
    assert spec.provenance["data"]["gsd"].startswith(source)


def test_ctrl_c_is_held_while_an_epoch_is_saved():
    """SIGINT during an epoch's CSV/bundle/checkpoint writes arrives after them."""
    import os
    import signal

    from geoseg.training.loop import _deferred_interrupt

    before = signal.getsignal(signal.SIGINT)
    done = []

    def save() -> None:
        with _deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("saved")

    with pytest.raises(KeyboardInterrupt):
        save()
    assert done == ["saved"]
    assert signal.getsignal(signal.SIGINT) is before


def test_all_ignore_batches_neither_nan_the_loss_nor_the_weights() -> None:
    """A batch without one labelled pixel (sparse labels, e.g. Indian Pines) is skipped:
    its loss would be NaN, and one NaN step would silently poison every weight."""
    from types import SimpleNamespace

    from geoseg.models.architectures import build_model
    from geoseg.training.data import IGNORE
    from geoseg.training.evaluate import evaluate_images
    from geoseg.training.loop import _step

    from ..conftest import tiny_spec

    torch.manual_seed(0)
    spec = tiny_spec()
    model = build_model(spec)
    loss_fn = make_loss("ce", n_classes=spec.n_classes, ignore_index=IGNORE)
    x = np.random.default_rng(0).normal(size=(3, 32, 32)).astype(np.float32)
    empty = np.full((32, 32), IGNORE, np.uint8)
    labelled = np.zeros((32, 32), np.uint8)
    chips = [(x, empty)] * 4 + [(x, labelled)] * 4
    _, val_loss = evaluate_images(model, chips, spec.n_classes, loss_fn=loss_fn, batch_size=4)
    assert math.isfinite(val_loss)
    _, only_empty = evaluate_images(model, chips[:4], spec.n_classes, loss_fn=loss_fn)
    assert math.isnan(only_empty)  # no labelled pixel: no loss, said as NaN, not 0

    run = SimpleNamespace(model=model, loss_fn=loss_fn, device=torch.device("cpu"),
                          precision="fp32", scaler=None,
                          config=SimpleNamespace(channels_last=False),
                          optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    xb = torch.from_numpy(np.stack([x] * 2))
    assert math.isnan(_step(run, xb, torch.from_numpy(np.stack([empty] * 2)).long(), 0.1))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    loss = _step(run, xb, torch.from_numpy(np.stack([labelled] * 2)).long(), 0.1)
    assert math.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
