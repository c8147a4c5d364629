"""The building-instance target: interior / boundary / contact, and `train --target instances`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.errors import InputError
from geoseg.models.spec import ClassInfo
from geoseg.testing import make_geotiff
from geoseg.training.data import IGNORE, LabeledImage, MaskClasses
from geoseg.training.instances import InstanceTarget, instance_images, instance_mask

ORIGIN = (500000.0, 4000000.0)
B, BD, CT = 1, 2, 3  # building (interior), boundary, contact


def _two_touching() -> tuple[np.ndarray, np.ndarray]:
    """Two 8x6 squares sharing an edge (ids 1 and 2), background around them."""
    mask = np.zeros((12, 16), np.uint8)
    inst = np.zeros((12, 16), np.int32)
    mask[2:10, 2:14] = 1
    inst[2:10, 2:8] = 1
    inst[2:10, 8:14] = 2
    return mask, inst


def test_touching_footprints_get_contact_between_them() -> None:
    mask, inst = _two_touching()
    out = instance_mask(mask, inst, building=B, boundary=BD, contact=CT, boundary_px=1,
                        contact_px=1)
    assert (out[mask == 0] == 0).all()  # background untouched
    assert (out[mask == 1] != 0).all()  # every footprint pixel is still building
    assert (out[2:10, 7:9] == CT).all()  # the shared wall, both sides
    assert (out[2:10, :7] != CT).all() and (out[2:10, 9:] != CT).all()
    assert (out[2, 2:7] == BD).all() and (out[9, 9:14] == BD).all()  # outer rows
    assert (out[2:10, 2] == BD).all() and (out[2:10, 13] == BD).all()  # outer columns
    assert (out[3:9, 3:7] == B).all() and (out[3:9, 9:13] == B).all()  # interiors
    # the two interiors are apart: no 4-connected path of interior pixels joins them
    from skimage.measure import label

    assert label(out == B, connectivity=1).max() == 2


def test_near_footprints_within_contact_distance() -> None:
    mask = np.zeros((12, 20), np.uint8)
    inst = np.zeros((12, 20), np.int32)
    mask[2:10, 2:8], inst[2:10, 2:8] = 1, 1
    mask[2:10, 10:16], inst[2:10, 10:16] = 1, 2  # a 2-px gap
    out = instance_mask(mask, inst, building=B, boundary=BD, contact=CT, boundary_px=1,
                        contact_px=4)  # pixel centres 3 and 4 px apart across the gap
    assert (out[2:10, 6:8] == CT).all() and (out[2:10, 10:12] == CT).all()
    assert (out == CT).sum() == 32
    assert (out[:, 8:10] == 0).all()  # the gap stays background
    near = instance_mask(mask, inst, building=B, boundary=BD, contact=CT, boundary_px=1,
                         contact_px=3)
    assert (near == CT).sum() == 16  # only the columns next to the gap
    far = instance_mask(mask, inst, building=B, boundary=BD, contact=CT, boundary_px=1,
                        contact_px=2)
    assert not (far == CT).any()


def test_without_ids_regions_are_instances_and_unknown_is_not_outside() -> None:
    mask, _ = _two_touching()
    out = instance_mask(mask, None, building=B, boundary=BD, contact=CT, boundary_px=1)
    assert not (out == CT).any()  # one region: nothing to tell apart
    mask2 = mask.copy()
    mask2[:, :2] = IGNORE  # no label left of the footprint
    mask2[2:10, 1] = IGNORE
    out2 = instance_mask(mask2, None, building=B, boundary=BD, contact=CT, boundary_px=1)
    assert (out2[3:9, 2] == B).all()  # beside unknown pixels: not a boundary
    # a footprint cut by the image edge gets no boundary along the edge
    edge = np.zeros((6, 6), np.uint8)
    edge[:, :3] = 1
    out3 = instance_mask(edge, None, building=B, boundary=BD, contact=CT, boundary_px=1)
    assert (out3[:, 0] == B).all() and (out3[:, 2] == BD).all()


def test_instance_images_adds_classes_and_checks_names() -> None:
    mask, inst = _two_touching()
    table = MaskClasses((ClassInfo(0, "background", (0, 0, 0)),
                         ClassInfo(1, "Building", (255, 0, 0))))
    image = LabeledImage(np.zeros((3, 12, 16), np.uint8), mask, "a", instances=inst)
    out, new = instance_images([image], table, InstanceTarget(boundary_px=1, contact_px=1))
    assert [c.name for c in new.classes] == ["background", "Building", "Building_boundary",
                                            "Building_contact"]
    assert [c.id for c in new.classes] == [0, 1, 2, 3]
    assert (out[0].mask == CT).sum() == 16
    with pytest.raises(InputError, match="needs a class named 'roof'"):
        instance_images([image], table, InstanceTarget("roof"))
    with pytest.raises(InputError, match="already hold a class"):
        instance_images(out, new, InstanceTarget())


def _scene_with_touching_houses(tmp_path: Path) -> tuple[Path, Path]:
    """A 160x160 scene (1 m) with rows of touching bright roofs, and their polygons."""
    import geopandas as gpd
    from shapely.geometry import box

    img = np.full((3, 160, 160), 40, np.uint8)
    polys = []
    for r0 in (8, 40, 72, 104, 136):
        for c0 in range(8, 140, 12):
            img[:, r0:r0 + 16, c0:c0 + 12] = 150 + (c0 % 24) * 3
            img[:, r0:r0 + 16, c0] = 90  # a darker wall line between roofs
            polys.append(box(ORIGIN[0] + c0, ORIGIN[1] - r0 - 16, ORIGIN[0] + c0 + 12,
                             ORIGIN[1] - r0))
    scene = make_geotiff(tmp_path / "scene.tif", img, res=1.0, nodata=None)
    labels = tmp_path / "houses.geojson"
    gpd.GeoDataFrame(geometry=polys, crs="EPSG:32633").to_file(labels)
    return scene, labels


def test_vector_labels_give_one_instance_per_feature(tmp_path: Path) -> None:
    from geoseg.training.chips import scene_blocks
    from geoseg.training.instances import with_vector_instances

    scene, labels = _scene_with_touching_houses(tmp_path)
    blocks, _ = scene_blocks(scene, labels, block=160)
    blocks = with_vector_instances(blocks, scene, labels)
    inst = blocks[0].instances
    assert inst is not None and len(np.unique(inst)) - 1 == 55
    table = MaskClasses((ClassInfo(0, "background", (0, 0, 0)),
                         ClassInfo(1, "building", (255, 0, 0))))
    out, _ = instance_images(blocks, table, InstanceTarget(boundary_px=1, contact_px=1))
    assert (out[0].mask[8:24, 19:21] == CT).all()  # the wall between the first two roofs


@pytest.mark.usefixtures("one_torch_thread")
def test_train_cli_target_instances_writes_instance_bundle(tmp_path: Path) -> None:
    from geoseg.models.bundle import load_bundle

    scene, labels = _scene_with_touching_houses(tmp_path)
    out = tmp_path / "m.safetensors"
    r = CliRunner().invoke(cli, [
        "train", str(scene), "--labels", str(labels), "--class-names", "background,building",
        "--target", "instances", "--boundary-px", "1", "--contact-px", "2",
        "--backbone", "resnet18", "--arch-param", "encoder_depth=3",
        "--arch-param", "decoder_channels=[16,8,4]", "--crop-size", "32", "--tile-size", "32",
        "--overlap", "8", "--batch-size", "4", "--steps-per-epoch", "3", "--epochs", "1",
        "--device", "cpu", "--precision", "fp32", "-q", "-o", str(out)])
    assert r.exit_code == 0, r.output
    spec = load_bundle(out).spec
    assert spec.class_names() == ["background", "building", "building_boundary",
                                  "building_contact"]
    target = spec.provenance["target"]
    assert target == {"kind": "instances", "interior": "building",
                      "boundary": "building_boundary", "contact": "building_contact",
                      "boundary_px": 1, "contact_px": 2}
    assert json.loads(json.dumps(spec.provenance["config"]))["instances"]["cls"] == "building"
    # predict tags the map; vectorize --classes building then splits (any model quality)
    r = CliRunner().invoke(cli, ["predict", str(scene), "-m", str(out), "-o",
                                 str(tmp_path / "map.tif"), "--resample", "off", "-q"])
    assert r.exit_code == 0, r.output
    import rasterio

    with rasterio.open(tmp_path / "map.tif") as ds:
        assert ds.tags()["instance_classes"] == "building,building_boundary,building_contact"
    r = CliRunner().invoke(cli, ["vectorize", str(tmp_path / "map.tif"), "--classes",
                                 "building", "-o", str(tmp_path / "b.gpkg"), "-q"])
    assert r.exit_code == 0, r.output
    bad = CliRunner().invoke(cli, [
        "train", str(scene), "--labels", str(labels), "--class-names", "background,roof",
        "--target", "instances", "--crop-size", "32", "--tile-size", "32", "-q",
        "-o", str(tmp_path / "x.safetensors")])
    assert bad.exit_code == 1 and "needs a class named 'building'" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "x.safetensors").exists()
