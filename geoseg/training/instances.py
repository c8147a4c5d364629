"""The building-instance training target: interior, boundary and contact classes.

A plain building mask cannot tell two touching roofs apart: their pixels form one region,
and so one polygon. The instance target, as footprint extraction models do it (SpaceNet,
solaris, ramp), turns the ``building`` class of a mask into three classes, so the model
learns where one building ends and the next begins:

- ``building`` (interior): footprint pixels that are neither boundary nor contact;
- ``building_boundary``: footprint pixels within ``boundary_px`` of a pixel outside their
  own footprint (background or another footprint);
- ``building_contact``: footprint pixels within ``contact_px`` of *another* footprint,
  where two buildings touch or nearly touch (it overrides boundary).

Every footprint pixel stays one of the three classes, so "building" is interior, boundary
and contact together, exactly the footprint; gaps between buildings stay background.
``geoseg vectorize`` grows one polygon per connected interior region over the three
classes (:mod:`geoseg.vector.instances`).

Footprints come from the labels: each polygon of a vector file is one instance (the
best source: touching polygons stay apart); a raster or mask gives only connected regions
of the building class, so touching buildings there are one instance. Pixels that take no
part in the loss (``IGNORE``) and the image border count as "unknown", never as outside, so
a roof cut by a chip edge gets no false boundary.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import InputError

if TYPE_CHECKING:
    from geoseg.training.data import LabeledImage, MaskClasses

__all__ = ["BOUNDARY_SUFFIX", "CONTACT_SUFFIX", "InstanceTarget", "instance_images",
           "instance_mask", "vector_instances"]

BOUNDARY_SUFFIX = "_boundary"
CONTACT_SUFFIX = "_contact"
_BOUNDARY_COLOR = (255, 170, 0)
_CONTACT_COLOR = (255, 0, 255)


@dataclass(frozen=True, slots=True)
class InstanceTarget:
    """Settings of the instance target (recorded in the bundle).

    Attributes
    ----------
    cls : str
        Name of the class split into instances (``building``).
    boundary_px : int
        Width of the boundary band inside each footprint, pixels.
    contact_px : int
        A footprint pixel within this distance of another footprint is contact, pixels.
    """

    cls: str = "building"
    boundary_px: int = 2
    contact_px: int = 3

    def __post_init__(self) -> None:
        if not self.cls or "," in self.cls:
            raise InputError(f"instance class name {self.cls!r} must be non-empty, no commas")
        if not 1 <= self.boundary_px <= 64 or not 1 <= self.contact_px <= 64:
            raise InputError(f"boundary and contact widths must be 1..64 px, got "
                             f"{self.boundary_px} and {self.contact_px}")

    @property
    def names(self) -> tuple[str, str, str]:
        """Class names of the interior, boundary and contact channels."""
        return self.cls, self.cls + BOUNDARY_SUFFIX, self.cls + CONTACT_SUFFIX

    def provenance(self) -> dict[str, Any]:
        """Return the record ``predict`` and ``vectorize`` read: what the classes mean."""
        interior, boundary, contact = self.names
        return {"kind": "instances", "interior": interior, "boundary": boundary,
                "contact": contact, "boundary_px": self.boundary_px,
                "contact_px": self.contact_px}


def _disk(radius: int) -> npt.NDArray[np.bool_]:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return np.asarray(xx * xx + yy * yy <= radius * radius + radius)  # round disk


def _others_near(values: npt.NDArray[np.int64], known: npt.NDArray[np.bool_],
                 radius: int) -> npt.NDArray[np.bool_]:
    """Where a known pixel within ``radius`` holds another value than the pixel's own."""
    from scipy import ndimage

    big = 1 << 52  # (scipy's filters overflow near the int64 limit)
    fp = _disk(radius)
    hi = ndimage.maximum_filter(np.where(known, values, -1), footprint=fp, mode="nearest")
    lo = ndimage.minimum_filter(np.where(known, values, big), footprint=fp, mode="nearest")
    return np.asarray((hi > values) | (lo < values))


def instance_mask(mask: npt.NDArray[np.uint8], instances: npt.NDArray[Any] | None, *,
                  building: int, boundary: int, contact: int, boundary_px: int = 2,
                  contact_px: int = 3, ignore: int = 255) -> npt.NDArray[np.uint8]:
    """Turn the ``building`` value of a mask into interior, boundary and contact values.

    Parameters
    ----------
    mask : uint8 array (H, W)
        Channel indices (``ignore`` = no label).
    instances : int array (H, W), optional
        Footprint id per pixel (0: none), e.g. one id per vector polygon. Building pixels
        without an id, or all of them when None, get the ids of their connected regions
        (4-connected).
    building, boundary, contact : int
        Mask values of the building class (kept for interior pixels) and of the two new
        classes.

    Returns
    -------
    uint8 array (H, W)
        The mask with building pixels re-labelled; other pixels unchanged.
    """
    from skimage.measure import label

    footprint = mask == building
    out = mask.copy()
    if not footprint.any():
        return out
    inst = np.zeros(mask.shape, np.int64)
    if instances is not None:
        inst = np.where(footprint, instances, 0).astype(np.int64)
    orphan = footprint & (inst <= 0)
    if orphan.any():
        regions = label(orphan, connectivity=1).astype(np.int64)  # type: ignore[no-untyped-call]
        inst = np.where(orphan, regions + max(int(inst.max()), 0), inst)
    known = mask != ignore
    # outside one's footprint: background or another footprint (not unknown pixels)
    edge = footprint & _others_near(np.where(footprint, inst, 0), known, boundary_px)
    near = footprint & _others_near(inst, footprint, contact_px)
    out[footprint] = building
    out[edge] = boundary
    out[near] = contact
    return out


def instance_images(images: Sequence[LabeledImage], table: MaskClasses,
                    target: InstanceTarget) -> tuple[list[LabeledImage], MaskClasses]:
    """Apply the instance target to labelled images; return them and the new classes.

    The classes gain ``<cls>_boundary`` and ``<cls>_contact`` (the next free class ids);
    ``<cls>`` keeps its id and now means the interior.

    Raises
    ------
    InputError
        No class named ``target.cls``, or the classes already hold the derived names.
    """
    from geoseg.models.spec import ClassInfo
    from geoseg.training.data import IGNORE, MaskClasses

    names = [c.name for c in table.classes]
    lower = [n.lower() for n in names]
    if target.cls.lower() not in lower:
        raise InputError(f"--target instances needs a class named {target.cls!r} (classes: "
                         f"{', '.join(names)}); name it with --class-names or "
                         "--instance-class")
    taken = [n for n in target.names[1:] if n.lower() in lower]
    if taken:
        raise InputError(f"the labels already hold a class {taken[0]!r}: they look like an "
                         "instance target already; train them without --target instances")
    channel = lower.index(target.cls.lower())
    interior = replace(target, cls=names[channel])
    free = max(c.id for c in table.classes) + 1
    if free + 1 >= IGNORE:
        raise InputError("no free class ids left for the boundary and contact classes")
    extra = (ClassInfo(free, interior.names[1], _BOUNDARY_COLOR),
             ClassInfo(free + 1, interior.names[2], _CONTACT_COLOR))
    new_table = MaskClasses(table.classes + extra, dict(table.colors), table.ignore_colors)
    n = len(table.classes)
    out = [replace(im, mask=instance_mask(
        im.mask, im.instances, building=channel, boundary=n, contact=n + 1,
        boundary_px=target.boundary_px, contact_px=target.contact_px, ignore=IGNORE))
        for im in images]
    return out, new_table


def vector_instances(labels: str | os.PathLike[str] | Any, *, crs: Any, transform: Any,
                     windows: Sequence[tuple[int, int, int, int]]
                     ) -> list[npt.NDArray[np.int32]]:
    """One footprint id per vector feature (1-based row number), rasterized per window.

    ``windows`` are ``(row, col, height, width)`` on the grid ``crs``/``transform``;
    where features overlap, the later one wins (as in the class masks).
    """
    import shapely
    from affine import Affine
    from rasterio.features import rasterize

    from geoseg.scoring.labels.vector import _read_vector

    gdf, _ = _read_vector(labels)
    geoms = gdf.geometry.to_crs(crs).to_numpy() if gdf.crs != crs else \
        gdf.geometry.to_numpy()
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    ids = np.flatnonzero(ok) + 1
    geoms = geoms[ok]
    tree = shapely.STRtree(geoms)
    out = []
    for row, col, height, width in windows:
        t = transform @ Affine.translation(col, row)
        x0, y0 = t @ (0, 0)
        x1, y1 = t @ (width, height)
        hits = np.sort(tree.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1),
                                              max(y0, y1))))
        if hits.size == 0:
            out.append(np.zeros((height, width), np.int32))
            continue
        out.append(rasterize(zip(geoms[hits], ids[hits].tolist(), strict=True),
                             out_shape=(height, width), transform=t, fill=0,
                             dtype="int32"))
    return out


def with_vector_instances(blocks: Sequence[LabeledImage], scene: str | os.PathLike[str],
                          labels: str | os.PathLike[str] | Any) -> list[LabeledImage]:
    """Blocks cut from ``scene`` with the footprint ids of vector ``labels`` (else as given).

    Label rasters and tiles carry no footprint ids: the blocks are returned unchanged and
    :func:`instance_mask` uses connected regions.
    """
    from geoseg.io import open_raster
    from geoseg.scoring.labels.grid import _labels_kind

    if _labels_kind(labels) != "vector" or any(b.window is None for b in blocks):
        return list(blocks)
    with open_raster(scene) as ds:
        crs, transform = ds.crs, ds.transform
    ids = vector_instances(labels, crs=crs, transform=transform,
                           windows=[b.window for b in blocks if b.window is not None])
    return [replace(b, instances=i) for b, i in zip(blocks, ids, strict=True)]
