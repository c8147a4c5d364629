"""One polygon per building: splitting touching buildings with the instance classes.

A model trained with ``geoseg train --target instances`` predicts ``building`` (interior),
``building_boundary`` and ``building_contact`` (:mod:`geoseg.training.instances`). Here
the three classes together are the building, and each connected region of interior
pixels (the *seed*, optionally eroded and with small seeds dropped) becomes one building:
every building pixel joins the seed it reaches first, growing through building pixels only
(``skimage.segmentation.watershed`` on a flat image, i.e. nearest seed by geodesic
distance). A building region without any seed stays one polygon. Then each building is
polygonized, so two roofs that touch are two polygons sharing an edge.

How this works across chunk seams. Each chunk is labelled with ``halo`` extra pixels on
every side, so its seeds and growth see past the seam, and only the chunk's own pixels
are polygonized (the pieces). Two pieces that neighbour across a seam are one building
when **both** chunks' labellings put the two neighbouring pixels in the same building;
pieces are unioned over the connected groups such pairs form. Seeds that cross a seam
always join (neighbouring seed pixels are one seed in both labellings), and pixels of two
different seeds never join. The result equals one whole-map labelling wherever every
building pixel lies within ``halo`` pixels of the seed it belongs to and no seed is
connected only through pixels farther than ``halo`` from the seam (tested on maps cut into
small chunks); otherwise a building may be cut at a seam, never merged with a neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from affine import Affine

from geoseg.errors import InputError

if TYPE_CHECKING:
    from geoseg.classmap import ClassTable
    from geoseg.io import Scene
    from geoseg.progress import Progress
    from geoseg.vector.polygonize import ChunkSpec

__all__ = ["INSTANCE_TAG", "InstanceGroup", "instance_channels", "instance_groups",
           "instance_tags", "label_instances", "select_instances", "vectorize_instances"]

#: Class-map tag naming the interior, boundary and contact classes (written by predict).
INSTANCE_TAG = "instance_classes"
BOUNDARY_SUFFIX = "_boundary"
CONTACT_SUFFIX = "_contact"


@dataclass(frozen=True, slots=True)
class InstanceGroup:
    """The class ids that together make one instance class (e.g. a building)."""

    name: str
    interior: int
    boundary: int
    contact: int | None

    @property
    def ids(self) -> list[int]:
        """Every class id of the group."""
        return [self.interior, self.boundary] + ([] if self.contact is None else
                                                 [self.contact])


def instance_tags(spec: Any) -> dict[str, str]:
    """Class-map tags of a model trained on the instance target ({} for other models)."""
    target = (getattr(spec, "provenance", None) or {}).get("target") or {}
    if target.get("kind") != "instances":
        return {}
    names = [str(target.get(k, "")) for k in ("interior", "boundary", "contact")]
    if not all(names) or not set(names) <= set(spec.class_names()):
        return {}
    return {INSTANCE_TAG: ",".join(names)}


def instance_channels(spec: Any) -> tuple[tuple[int, ...], ...]:
    """Model channels of an instance target's classes, which predict decides on as one.

    A pixel is a building when the interior, boundary and contact probabilities together
    beat every other class (:func:`geoseg.prediction.graph.group_argmax`); () for other
    models.
    """
    tags = instance_tags(spec)
    if not tags:
        return ()
    names = spec.class_names()
    return (tuple(names.index(n) for n in tags[INSTANCE_TAG].split(",")),)


def instance_groups(scene: Scene, table: ClassTable) -> list[InstanceGroup]:
    """Instance classes of a class map: from its ``instance_classes`` tag, else by name.

    A map without the tag still has a group for every class ``N`` named beside
    ``N_boundary`` (and, optionally, ``N_contact``), so maps renamed with
    ``--class-names`` work too.
    """
    by_name = {n.lower(): i for i, n in table.names.items()}
    tag = str(scene.tags.get(INSTANCE_TAG, "")).strip() if scene.tags else ""
    groups = []
    if tag:
        names = [n.strip().lower() for n in tag.split(",")]
        if len(names) in (2, 3) and all(n in by_name for n in names):
            return [InstanceGroup(table.names[by_name[names[0]]], by_name[names[0]],
                                  by_name[names[1]],
                                  by_name[names[2]] if len(names) == 3 else None)]
    for cid, name in sorted(table.names.items()):
        key = name.lower()
        if key + BOUNDARY_SUFFIX in by_name:
            groups.append(InstanceGroup(name, cid, by_name[key + BOUNDARY_SUFFIX],
                                        by_name.get(key + CONTACT_SUFFIX)))
    return groups


def select_instances(scene: Scene, table: ClassTable, selected: npt.NDArray[np.bool_],
                     split: bool | None) -> tuple[list[InstanceGroup], npt.NDArray[np.bool_]]:
    """Return the groups whose interior class is selected, and the other selected classes.

    The boundary and contact classes of an active group are its building's pixels, never
    polygons of their own. ``split=True`` requires a group.
    """
    groups = instance_groups(scene, table) if table.named else []
    active = [g for g in groups if selected[g.interior]]
    if split and not active:
        if not groups:
            raise InputError(f"--split-instances needs a map of a model trained with "
                             f"--target instances (classes building, building_boundary, "
                             f"building_contact); {table.known()}")
        raise InputError(f"--split-instances: select the class {groups[0].name!r}")
    rest = selected.copy()
    for g in active:
        rest[g.ids] = False
    return active, rest


def label_instances(arr: npt.NDArray[Any], group: InstanceGroup, *, split: bool = True,
                    seed_erosion: int = 0, min_seed: int = 0,
                    connectivity: int = 4) -> npt.NDArray[np.int32]:
    """Label each building of a class-map window 1..n (0: not a building pixel).

    Parameters
    ----------
    arr : int array (H, W)
        Class ids.
    group : InstanceGroup
        The interior, boundary and contact class ids.
    split : bool
        False: every connected building region is one building (no seeds).
    seed_erosion : int
        Erode the interior by this many pixels before taking its regions as seeds (splits
        seeds joined by a thin neck).
    min_seed : int
        Seeds smaller than this many pixels are no seeds (their pixels join a neighbour).
    """
    from scipy import ndimage
    from skimage.measure import label
    from skimage.segmentation import watershed

    conn = 1 if connectivity == 4 else 2
    lut = np.zeros(max(int(arr.max()) + 1, max(group.ids) + 1), bool)
    lut[group.ids] = True
    mask = lut[arr]
    regions: npt.NDArray[np.int32] = label(  # type: ignore[no-untyped-call]
        mask, connectivity=conn).astype(np.int32)
    if not split or not mask.any():
        return regions
    seeds = (arr == group.interior)
    if seed_erosion > 0:
        r = seed_erosion
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        seeds = ndimage.binary_erosion(seeds, structure=xx * xx + yy * yy <= r * r + r)
    markers = label(seeds, connectivity=conn).astype(np.int32)  # type: ignore[no-untyped-call]
    if min_seed > 1 and markers.max():
        sizes = np.bincount(markers.ravel())
        small = sizes < min_seed
        small[0] = False
        markers[small[markers]] = 0
        markers = label(markers > 0, connectivity=conn).astype(np.int32)  # type: ignore[no-untyped-call]
    n = int(markers.max())
    seeded = np.zeros(int(regions.max()) + 1, bool)
    seeded[regions[markers > 0]] = True
    seedless = ~seeded[regions] & mask  # a region without a seed is its own building
    markers[seedless] = regions[seedless] + n
    flat = np.zeros(arr.shape, np.uint8)  # nearest seed: flooding in the order reached
    out: npt.NDArray[np.int32] = watershed(flat, markers, mask=mask,  # type: ignore[no-untyped-call]
                                           connectivity=conn).astype(np.int32)
    return out


@dataclass(slots=True)
class _Pieces:
    """One chunk's buildings cut to its window, and what it says about its seams."""

    spec: ChunkSpec
    geoms: npt.NDArray[np.object_]
    pixels: npt.NDArray[np.int64]
    #: piece ids (1-based, 0 none) on the top, bottom, left and right pixel lines
    edges: tuple[npt.NDArray[np.int64], ...]
    #: per side, (3, n) booleans: the line's pixel k is the same building as the pixel
    #: across the seam at k-1, k, k+1 (this chunk's labelling)
    same: tuple[npt.NDArray[np.bool_], ...]


def _instance_chunk(spec: ChunkSpec, group: InstanceGroup, split: bool, seed_erosion: int,
                    min_seed: int, connectivity: int, halo: int,
                    map_shape: tuple[int, int]) -> _Pieces:
    from rasterio.features import shapes
    from rasterio.windows import Window
    from skimage.measure import label

    from geoseg.vector.polygonize import _make_valid, _polygon, _read

    h, w = map_shape
    r0, c0 = max(spec.row_off - halo, 0), max(spec.col_off - halo, 0)
    r1 = min(spec.row_off + spec.height + halo, h)
    c1 = min(spec.col_off + spec.width + halo, w)
    arr = _read(spec.path, 1, Window(c0, r0, c1 - c0, r1 - r0)).astype(np.int64)
    labels = label_instances(arr, group, split=split, seed_erosion=seed_erosion,
                             min_seed=min_seed, connectivity=connectivity)
    # pad by one pixel of "nothing" so the lines across the map's edges exist
    lab = np.pad(labels, 1)
    y0, x0 = spec.row_off - r0 + 1, spec.col_off - c0 + 1
    ys, xs = slice(y0, y0 + spec.height), slice(x0, x0 + spec.width)
    core = lab[ys, xs]
    pieces = label(core, background=0,  # type: ignore[no-untyped-call]
                   connectivity=1 if connectivity == 4 else 2).astype(np.int32)
    n = int(pieces.max())
    geoms = np.empty(n, dtype=object)
    if n:
        shift = Affine.translation(spec.col_off, spec.row_off)
        for geom, value in shapes(pieces, mask=pieces > 0, connectivity=connectivity,
                                  transform=shift):
            geoms[int(value) - 1] = _polygon(geom["coordinates"])
        _make_valid(geoms, connectivity)
    pixels = np.bincount(pieces.ravel(), minlength=n + 1)[1:].astype(np.int64)
    # each side: the line's own labels and the line across the seam, one pixel wider
    xw = slice(x0 - 1, x0 + spec.width + 1)
    yw = slice(y0 - 1, y0 + spec.height + 1)
    lines = (
        (lab[y0, xs], lab[y0 - 1, xw]),  # top: across is the row above
        (lab[y0 + spec.height - 1, xs], lab[y0 + spec.height, xw]),  # bottom
        (lab[ys, x0], lab[yw, x0 - 1]),  # left
        (lab[ys, x0 + spec.width - 1], lab[yw, x0 + spec.width]),  # right
    )
    same = tuple(np.stack([(own > 0) & (own == across[k:k + len(own)]) for k in range(3)])
                 for own, across in lines)
    edges = (pieces[0].astype(np.int64), pieces[-1].astype(np.int64),
             pieces[:, 0].astype(np.int64), pieces[:, -1].astype(np.int64))
    return _Pieces(spec, geoms, pixels, edges, same)


def _seam_pairs(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64],
                same_a: npt.NDArray[np.bool_], same_b: npt.NDArray[np.bool_],
                connectivity: int) -> npt.NDArray[np.int64]:
    """Global piece pairs across a seam that both sides call one building.

    ``a`` is above/left of ``b``; ``same_a[1 + s][k]``: a's pixel k is a's building at
    b's pixel k + s; ``same_b[1 - s][k + s]``: b's pixel k + s is b's building at a's k.
    """
    out = [np.empty((0, 2), np.int64)]
    n = len(a)
    for s in ((-1, 0, 1) if connectivity == 8 else (0,)):
        k = np.arange(max(0, -s), min(n, n - s))
        ok = (a[k] > 0) & (b[k + s] > 0) & same_a[1 + s][k] & same_b[1 - s][k + s]
        out.append(np.stack([a[k][ok], b[k + s][ok]], axis=1))
    pairs = np.concatenate(out)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def _merge(chunks: Sequence[_Pieces], grid_shape: tuple[int, int], connectivity: int
           ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]:
    """Union pieces joined across seams; the buildings' geometries and pixel counts."""
    from geoseg.vector.polygonize import union_connected

    by_pos = {(c.spec.row, c.spec.col): c for c in chunks}
    keys = sorted(by_pos)
    offsets, total = {}, 0
    for key in keys:
        offsets[key] = total
        total += len(by_pos[key].geoms)
    if total == 0:
        return np.empty(0, object), np.empty(0, np.int64)
    geoms = np.concatenate([by_pos[k].geoms for k in keys])
    pixels = np.concatenate([by_pos[k].pixels for k in keys])

    def strip(key: tuple[int, int], side: int) -> npt.NDArray[np.int64]:
        e = by_pos[key].edges[side]
        return np.where(e > 0, e + offsets[key], 0)

    def same(key: tuple[int, int], side: int) -> npt.NDArray[np.bool_]:
        return by_pos[key].same[side]

    n_rows, n_cols = grid_shape
    pairs = [np.empty((0, 2), np.int64)]
    for i in range(n_rows - 1):  # whole map width at once: diagonal pairs at corners too
        a = np.concatenate([strip((i, j), 1) for j in range(n_cols)])
        b = np.concatenate([strip((i + 1, j), 0) for j in range(n_cols)])
        sa = _across_chunks([same((i, j), 1) for j in range(n_cols)])
        sb = _across_chunks([same((i + 1, j), 0) for j in range(n_cols)])
        pairs.append(_seam_pairs(a, b, sa, sb, connectivity))
    for j in range(n_cols - 1):
        a = np.concatenate([strip((i, j), 3) for i in range(n_rows)])
        b = np.concatenate([strip((i, j + 1), 2) for i in range(n_rows)])
        sa = _across_chunks([same((i, j), 3) for i in range(n_rows)])
        sb = _across_chunks([same((i, j + 1), 2) for i in range(n_rows)])
        pairs.append(_seam_pairs(a, b, sa, sb, connectivity))
    out, group = union_connected(geoms, np.concatenate(pairs) - 1)
    return out, np.bincount(group, weights=pixels, minlength=len(out)).astype(np.int64)


def _across_chunks(parts: Sequence[npt.NDArray[np.bool_]]) -> npt.NDArray[np.bool_]:
    """Concatenate per-chunk ``(3, n)`` seam booleans along the seam."""
    return np.concatenate(list(parts), axis=1)


def vectorize_instances(scene: Scene, groups: Sequence[InstanceGroup], *,
                        split: bool = True, seed_erosion: int = 0, min_seed: int = 0,
                        connectivity: int = 4, chunk_size: int = 2048,
                        workers: int | None = None, progress: Progress,
                        halo: int | None = None
                        ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]:
    """One polygon per building of each group (pixel coordinates), and their class ids.

    The class id of a building is its group's interior class (``building``).
    """
    from dask.delayed import delayed

    from geoseg.vector.chunks import _chunks, _run_tasks

    if seed_erosion < 0 or min_seed < 0:
        raise InputError(f"seed erosion and minimum seed size must be >= 0, got "
                         f"{seed_erosion} and {min_seed}")
    halo = max(64, 4 * seed_erosion) if halo is None else max(halo, 1)
    specs, grid = _chunks(scene, chunk_size)
    geoms, cls = [], []
    for group in groups:
        tasks = [delayed(_instance_chunk, pure=False)(
            s, group, split, seed_erosion, min_seed, connectivity, halo,
            (scene.height, scene.width), dask_key_name=f"polygonize-instances-{s.row}-{s.col}")
            for s in specs]
        merged, _ = _merge(_run_tasks(tasks, workers, progress, "buildings"), grid,
                           connectivity)
        geoms.append(merged)
        cls.append(np.full(len(merged), group.interior, np.int64))
    if not geoms:
        return np.empty(0, object), np.empty(0, np.int64)
    return np.concatenate(geoms), np.concatenate(cls)
