"""Chunk-level work behind :mod:`geoseg.vector.pipeline`: polygonize, merge seams, skeletons.

Everything here works in *pixel* coordinates (column, row of pixel corners), so every
vertex is an integer held exactly in a float and unions across chunk seams are exact;
:mod:`geoseg.vector.pipeline` maps the result to the CRS once, at the end.

How the exact seam merge works. Each chunk polygonizes its selected classes with
``rasterio.features.shapes`` (4- or 8-connectivity) and returns, for each of its four
border pixel lines, the id of the polygon ("piece") covering each pixel. Two pieces in
neighbouring chunks belong to the same feature exactly when two of their pixels are
neighbours across the seam (directly, or diagonally with 8-connectivity) and hold the
same class: comparing the border strips finds these pairs without geometry tests.
Connected groups of pieces (``scipy.sparse.csgraph.connected_components``) are unioned
with ``shapely.union_all``; pieces that touch no neighbour are kept as they are. The
result is the same set of polygons as one whole-map ``rasterio.features.shapes`` run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from affine import Affine

__all__ = [
    "ChunkPieces",
    "ChunkSpec",
    "merge_pieces",
    "polygonize_chunk",
    "skeleton_lines_chunk",
]


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """One chunk of the map: its pixel window and where it sits in the chunk grid."""

    path: str
    row: int
    col: int
    row_off: int
    col_off: int
    height: int
    width: int


@dataclass(slots=True)
class ChunkPieces:
    """The pieces one chunk produced, and its edge strips for the seam merge.

    ``labels`` ids run 1..n inside the chunk (0 = not a selected pixel). ``edges`` holds
    the label ids of the top, bottom, left and right pixel rows/columns.
    """

    spec: ChunkSpec
    geoms: npt.NDArray[np.object_]
    class_ids: npt.NDArray[np.int64]
    pixels: npt.NDArray[np.int64]
    prob_sum: npt.NDArray[np.float64] | None
    prob_n: npt.NDArray[np.int64] | None
    edges: tuple[npt.NDArray[np.int64], ...]


def _read(path: str, band: int, window: Any) -> npt.NDArray[Any]:
    """Read one window from a freshly opened dataset, closed straight after.

    Each window is read once, so GDAL's block cache would only grow with the map (to
    the whole decompressed raster); closing the dataset drops its cached blocks. Opening
    per task also keeps forked workers off their parent's file handles.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    from geoseg.io import read_error

    try:
        with rasterio.open(path) as src:
            out: npt.NDArray[Any] = src.read(band, window=window)
    except RasterioIOError as exc:
        raise read_error(path, window, exc) from None
    return out


def read_band(path: str, spec: ChunkSpec, band: int = 1) -> npt.NDArray[Any]:
    """Read one band over the chunk's window."""
    from rasterio.windows import Window

    win = Window(spec.col_off, spec.row_off, spec.width, spec.height)
    return _read(path, band, win)


def label_classes(
    arr: npt.NDArray[Any], selected: npt.NDArray[np.bool_], connectivity: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """Label the connected regions of equal selected class 1..n, in one pass.

    Returns the label image and ``lut``: ``lut[label] = class id`` (``lut[0] = -1``).
    """
    from skimage.measure import label

    off = selected.size  # a value no class has: background for the labelling
    work = np.where(selected[arr], arr.astype(np.int32), off)
    labels, n = label(  # type: ignore[no-untyped-call]
        work,
        background=off,
        connectivity=1 if connectivity == 4 else 2,
        return_num=True,
    )
    lut = np.full(n + 1, -1, np.int64)
    lut[labels.ravel()] = work.ravel()
    lut[0] = -1
    return labels.astype(np.int32, copy=False), lut


def polygonize_chunk(
    spec: ChunkSpec,
    selected: npt.NDArray[np.bool_],
    connectivity: int,
    prob_path: str | None = None,
    prob_bands: dict[int, int] | None = None,
) -> ChunkPieces:
    """Polygonize one chunk (pixel coordinates) and find its pieces' seam strips.

    Without probabilities the class array is polygonized directly and the edge strips
    are painted from the pieces' intersections with the chunk's border rows (the
    fastest path). With probabilities the regions are labelled first, so per-piece sums
    of the
    probability bands are one ``bincount`` each.
    """
    from rasterio.features import shapes

    arr = read_band(spec.path, spec)
    if arr.dtype not in (np.uint8, np.uint16):
        arr = arr.astype(np.uint16)
    shift = Affine.translation(spec.col_off, spec.row_off)
    if prob_path is None or prob_bands is None:
        geoms_l, cls_l = [], []
        mask = _selected_mask(arr, selected)
        # A mask makes GDAL about a quarter slower: leave it out where every pixel is
        # selected (the mask changes no polygon of a selected class, only skips others).
        for geom, value in shapes(
            arr,
            mask=None if mask.all() else mask,
            connectivity=connectivity,
            transform=shift,
        ):
            geoms_l.append(_polygon(geom["coordinates"]))
            cls_l.append(int(value))
        geoms = np.asarray([*geoms_l, None], dtype=object)[:-1]
        _make_valid(geoms, connectivity)
        return ChunkPieces(
            spec=spec,
            geoms=geoms,
            class_ids=np.asarray(cls_l, np.int64),
            pixels=np.rint(shapely.area(geoms)).astype(np.int64),
            prob_sum=None,
            prob_n=None,
            edges=_edge_strips(geoms, spec),
        )
    labels, lut = label_classes(arr, selected, connectivity)
    n = len(lut) - 1
    pixels = np.bincount(labels.ravel(), minlength=n + 1).astype(np.int64)
    geoms = np.empty(n + 1, dtype=object)
    if n:
        for geom, value in shapes(
            labels, mask=labels > 0, connectivity=connectivity, transform=shift
        ):
            geoms[int(value)] = _polygon(geom["coordinates"])
        _make_valid(geoms[1:], connectivity)
    prob_sum = np.zeros(n + 1, np.float64)
    prob_n = np.zeros(n + 1, np.int64)
    if n:
        cls_of = lut[labels]
        for cls, band in prob_bands.items():
            where = cls_of == cls
            if not where.any():
                continue
            p = read_band(prob_path, spec, band)[where]
            ok = p != 255
            lab = labels[where][ok]
            prob_sum += np.bincount(lab, weights=p[ok] / 254.0, minlength=n + 1)
            prob_n += np.bincount(lab, minlength=n + 1)
    edges = (
        labels[0].astype(np.int64),
        labels[-1].astype(np.int64),
        labels[:, 0].astype(np.int64),
        labels[:, -1].astype(np.int64),
    )
    return ChunkPieces(
        spec=spec,
        geoms=geoms[1:],
        class_ids=lut[1:],
        pixels=pixels[1:],
        prob_sum=prob_sum[1:],
        prob_n=prob_n[1:],
        edges=edges,
    )


def _selected_mask(arr: npt.NDArray[Any], selected: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """``selected[arr]``; one comparison when a single value (nodata) is left out."""
    off = np.flatnonzero(~selected)
    if len(off) == 1:
        return arr != off[0]  # type: ignore[no-any-return]
    return selected[arr]  # type: ignore[no-any-return]


def _make_valid(geoms: npt.NDArray[np.object_], connectivity: int) -> None:
    """Repair, in place, rings that touch themselves at a corner.

    GDAL writes these only with 8-connectivity (checked on noise maps: 4-connected
    output is always valid), so the check is skipped for 4.
    """
    if connectivity == 8 and len(geoms):
        bad = np.flatnonzero(~shapely.is_valid(geoms))
        if len(bad):
            geoms[bad] = shapely.make_valid(geoms[bad])


def _edge_strips(
    geoms: npt.NDArray[np.object_], spec: ChunkSpec
) -> tuple[npt.NDArray[np.int64], ...]:
    """Piece ids (1-based, 0 = none) along the top, bottom, left and right pixel lines.

    Only pieces whose bounds reach a border are intersected with that border's
    one-pixel strip; in pixel coordinates each part of the intersection is an exact
    rectangle, whose bounds give the run of border pixels it covers.
    """
    h, w, r0, c0 = spec.height, spec.width, spec.row_off, spec.col_off
    bounds = shapely.bounds(geoms) if len(geoms) else np.empty((0, 4))
    sides = (  # strip box, which bound touches it, axis of the strip
        (shapely.box(c0, r0, c0 + w, r0 + 1), bounds[:, 1] == r0, 0),
        (shapely.box(c0, r0 + h - 1, c0 + w, r0 + h), bounds[:, 3] == r0 + h, 0),
        (shapely.box(c0, r0, c0 + 1, r0 + h), bounds[:, 0] == c0, 1),
        (shapely.box(c0 + w - 1, r0, c0 + w, r0 + h), bounds[:, 2] == c0 + w, 1),
    )
    out = []
    for box, touch, axis in sides:
        strip = np.zeros(w if axis == 0 else h, np.int64)
        cand = np.flatnonzero(touch)
        if len(cand):
            parts, idx = shapely.get_parts(
                shapely.intersection(geoms[cand], box), return_index=True
            )
            area = shapely.area(parts) > 0
            pb = np.rint(shapely.bounds(parts[area])).astype(np.int64)
            for (minx, miny, maxx, maxy), k in zip(pb, idx[area], strict=True):
                if axis == 0:
                    strip[minx - c0 : maxx - c0] = cand[k] + 1
                else:
                    strip[miny - r0 : maxy - r0] = cand[k] + 1
        out.append(strip)
    return tuple(out)


def _polygon(rings: list[list[tuple[float, float]]]) -> shapely.Polygon:
    # Builds the polygon from coordinate arrays: several times faster than
    # shapely.geometry.shape() on the GeoJSON dict.
    shell = np.asarray(rings[0], np.float64)
    holes = [np.asarray(r, np.float64) for r in rings[1:]]
    return shapely.Polygon(shell, holes or None)


def _seam_pairs(
    a: npt.NDArray[np.int64],
    b: npt.NDArray[np.int64],
    cls: npt.NDArray[np.int64],
    connectivity: int,
) -> npt.NDArray[np.int64]:
    """Pairs of global piece ids that neighbour across a seam (a above/left of b)."""
    out = []
    shifts = (0, -1, 1) if connectivity == 8 else (0,)
    for s in shifts:
        if s == 0:
            x, y = a, b
        elif s > 0:
            x, y = a[:-s], b[s:]
        else:
            x, y = a[-s:], b[:s]
        ok = (x > 0) & (y > 0)
        x, y = x[ok], y[ok]
        same = cls[x] == cls[y]
        out.append(np.stack([x[same], y[same]], axis=1))
    return np.unique(np.concatenate(out), axis=0) if out else np.empty((0, 2), np.int64)


@dataclass(slots=True)
class MergedPieces:
    """Whole-map features after the seam merge (pixel coordinates)."""

    geoms: npt.NDArray[np.object_]
    class_ids: npt.NDArray[np.int64]
    pixels: npt.NDArray[np.int64]
    mean_prob: npt.NDArray[np.float64] | None


def merge_pieces(
    chunks: list[ChunkPieces], grid_shape: tuple[int, int], connectivity: int
) -> MergedPieces:
    """Union the pieces connected across chunk seams; keep the others as they are."""
    by_pos = {(c.spec.row, c.spec.col): c for c in chunks}
    offsets: dict[tuple[int, int], int] = {}
    total = 0
    for key in sorted(by_pos):
        offsets[key] = total
        total += len(by_pos[key].geoms)
    if total == 0:
        empty = np.empty(0, object)
        return MergedPieces(empty, np.empty(0, np.int64), np.empty(0, np.int64), None)
    cls = np.concatenate([[-1]] + [by_pos[k].class_ids for k in sorted(by_pos)])
    geoms = np.concatenate([by_pos[k].geoms for k in sorted(by_pos)])
    pixels = np.concatenate([by_pos[k].pixels for k in sorted(by_pos)])
    has_prob = chunks[0].prob_sum is not None

    def strip(key: tuple[int, int], side: int) -> npt.NDArray[np.int64]:
        e = by_pos[key].edges[side]
        return np.where(e > 0, e + offsets[key], 0)  # global ids start at 1

    n_rows, n_cols = grid_shape
    pairs = [np.empty((0, 2), np.int64)]
    for i in range(n_rows - 1):  # horizontal seams: whole map width at once, so
        a = np.concatenate([strip((i, j), 1) for j in range(n_cols)])  # diagonal pairs
        b = np.concatenate([strip((i + 1, j), 0) for j in range(n_cols)])  # at corners too
        pairs.append(_seam_pairs(a, b, cls, connectivity))
    for j in range(n_cols - 1):  # vertical seams
        a = np.concatenate([strip((i, j), 3) for i in range(n_rows)])
        b = np.concatenate([strip((i, j + 1), 2) for i in range(n_rows)])
        pairs.append(_seam_pairs(a, b, cls, connectivity))
    out_geoms, group = union_connected(geoms, np.concatenate(pairs) - 1)
    n_groups = len(out_geoms)
    out_cls = np.zeros(n_groups, np.int64)
    out_cls[group] = cls[1:]
    out_pixels = np.bincount(group, weights=pixels, minlength=n_groups).astype(np.int64)
    mean_prob = None
    if has_prob:
        psum = np.concatenate([by_pos[k].prob_sum for k in sorted(by_pos)])  # type: ignore[arg-type]
        pn = np.concatenate([by_pos[k].prob_n for k in sorted(by_pos)])  # type: ignore[arg-type]
        s = np.bincount(group, weights=psum, minlength=n_groups)
        c = np.bincount(group, weights=pn, minlength=n_groups)
        mean_prob = np.divide(s, c, out=np.full(n_groups, np.nan), where=c > 0)
    return MergedPieces(out_geoms, out_cls, out_pixels, mean_prob)


def skeleton_lines_chunk(
    spec: ChunkSpec, road: npt.NDArray[np.bool_], halo: int, map_shape: tuple[int, int]
) -> npt.NDArray[np.object_]:
    """Centre lines of the ``road`` classes in one chunk, as pixel-centre LineStrings.

    The chunk is read with a ``halo`` of extra pixels on each side and skeletonized
    (``skimage.morphology.skeletonize``); only skeleton edges that start inside the
    chunk are kept, so neighbouring chunks produce disjoint segments that
    ``shapely.line_merge`` joins later. Thinning is local: where roads are narrower than
    about twice the halo, the skeleton inside the chunk equals that of the whole map.
    """
    from rasterio.windows import Window
    from skimage.morphology import skeletonize

    h, w = map_shape
    r0, c0 = max(spec.row_off - halo, 0), max(spec.col_off - halo, 0)
    r1 = min(spec.row_off + spec.height + halo, h)
    c1 = min(spec.col_off + spec.width + halo, w)
    arr = _read(spec.path, 1, Window(c0, r0, c1 - c0, r1 - r0))
    mask = road[arr.astype(np.int64)]
    if not mask.any():
        return np.empty(0, object)
    sk = np.pad(skeletonize(mask), 1)  # type: ignore[no-untyped-call]
    # (padded: every skeleton pixel has all eight neighbours)
    core = np.zeros_like(sk)
    y0, x0 = spec.row_off - r0 + 1, spec.col_off - c0 + 1
    core[y0 : y0 + spec.height, x0 : x0 + spec.width] = True
    segs = []
    # Edges of the 8-neighbour pixel graph, without the diagonal of an L-corner (which
    # would make a small triangle): the hand-written part, as skimage has no vectorizer.
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        nb = np.roll(sk, (-dy, -dx), axis=(0, 1))
        edge = sk & nb & core
        if dy and dx:
            edge &= ~np.roll(sk, -dx, axis=1) & ~np.roll(sk, -dy, axis=0)
        ys, xs = np.nonzero(edge)
        if len(ys):
            gy, gx = ys - 1 + r0 + 0.5, xs - 1 + c0 + 0.5
            segs.append(np.stack([np.stack([gx, gy], 1), np.stack([gx + dx, gy + dy], 1)], 1))
    # Isolated single skeleton pixels (dots) carry no line and are dropped.
    if not segs:
        return np.empty(0, object)
    lines = shapely.linestrings(np.concatenate(segs))
    merged = shapely.line_merge(shapely.multilinestrings(lines))
    return np.asarray(shapely.get_parts(merged), dtype=object)


def union_connected(geoms: npt.NDArray[Any], edges: npt.NDArray[np.int64]
                    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Union the pieces ``geoms`` joined by ``edges`` (index pairs) into whole polygons.

    Returns one geometry per connected group of pieces and each piece's group index (a
    piece without an edge is its own group). Shared by the class and the instance seams.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    total = len(geoms)
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])),
                       shape=(total, total))
    n_groups, group = connected_components(graph, directed=False)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(n_groups + 1))
    out = np.empty(n_groups, object)
    for g in range(n_groups):
        members = order[bounds[g]:bounds[g + 1]]
        out[g] = geoms[members[0]] if len(members) == 1 else \
            shapely.union_all(geoms[members])
    return out, group.astype(np.int64)
