"""``vectorize``: class map -> GIS-ready polygons and road centre lines, at any size.

The class map is cut into ``chunk_size`` windows; one dask task per window reads it,
labels the connected regions of each selected class and polygonizes them with
``rasterio.features.shapes``. Pieces that meet across a window seam are then unioned
(:mod:`geoseg._polygonize` explains how they are found without geometry tests), so the
result is the same set of polygons as one whole-map polygonization, while memory
depends on the window size rather than the map size. Nodata pixels are never a polygon.

After the merge, optional steps run in metres (a geographic CRS such as EPSG:4326 is
projected to its local UTM zone for them, and back): hole filling, a minimum area,
squaring of building outlines, and simplification. When more than one class is
vectorized the polygons form a land-cover *coverage*, and simplification uses
``shapely.coverage_simplify`` so neighbours stay gap- and overlap-free.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import shapely

from geoseg._atomic import check_output, partial_path
from geoseg.errors import GeosegWarning, InputError, OutputError, UnknownNameError
from geoseg.io import NODATA_CLASS, Scene, open_scene
from geoseg.progress import NullProgress, Progress

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "VECTOR_FORMATS",
    "VectorizeResult",
    "centerlines",
    "regularize_polygon",
    "vectorize",
    "vectorize_to_file",
    "write_vectors",
]

log = logging.getLogger(__name__)

#: Output extension -> OGR driver (``.parquet``: GeoParquet, written by geopandas).
VECTOR_FORMATS: dict[str, str] = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".parquet": "GeoParquet",
    ".shp": "ESRI Shapefile",
}
_SHP_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix")
#: Pixels of halo read around each chunk for centre lines (roads narrower than twice
#: this
#: skeletonize exactly as on the whole map).
CENTERLINE_HALO = 64


# --------------------------------------------------------------------------- classes


@dataclass(frozen=True)
class _ClassTable:
    names: dict[int, str]  # id -> name for the classes the map (or user) names
    named: bool  # False: the map has no class names; any id is allowed

    def name(self, cid: int) -> str:
        return self.names.get(cid, f"class_{cid}")

    def known(self) -> str:
        if not self.named:
            return "this map has no class names; use class ids or pass --class-names"
        return "known: " + ", ".join(
            f"{n} ({i})" for i, n in sorted(self.names.items())
        )


def _class_table(scene: Scene, class_names: Sequence[str] | None) -> _ClassTable:
    if class_names is not None:
        names = [str(n).strip() for n in class_names]
        if not names or any(not n for n in names):
            raise InputError(f"class names must be non-empty, got {','.join(names)!r}")
        return _ClassTable(dict(enumerate(names)), True)
    tag_names = scene.tags.get("class_names", "")
    if not tag_names:
        return _ClassTable({}, False)
    names = [n.strip() for n in tag_names.split(",")]
    tag_ids = scene.tags.get("class_ids", "")
    try:
        ids = (
            [int(i) for i in tag_ids.split(",")] if tag_ids else list(range(len(names)))
        )
    except ValueError:
        ids = list(range(len(names)))
    if len(ids) != len(names):
        ids = list(range(len(names)))
    return _ClassTable(dict(zip(ids, names, strict=True)), True)


def _resolve(table: _ClassTable, items: Sequence[str | int]) -> list[int]:
    by_name = {n.lower(): i for i, n in table.names.items()}
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if text.lower() in by_name:
            out.append(by_name[text.lower()])
        elif (
            text.isdigit()
            and int(text) < NODATA_CLASS
            and (not table.named or int(text) in table.names)
        ):
            out.append(int(text))
        else:
            raise UnknownNameError(f"unknown class {text!r}; {table.known()}")
    return sorted(set(out))


def _selection(
    table: _ClassTable,
    classes: Sequence[str | int] | None,
    all_classes: bool,
    nodata: int | None,
    lut_size: int,
) -> npt.NDArray[np.bool_]:
    if classes is not None and all_classes:
        raise InputError(
            "give either classes (--classes) or all_classes (--all), not both"
        )
    selected = np.zeros(lut_size, bool)
    if classes is not None:
        ids = _resolve(table, classes)
        if not ids:
            raise InputError("no class selected; name at least one with --classes")
        selected[[i for i in ids if i < lut_size]] = True
    elif table.named and not all_classes:
        # Default: every named class but "background" (--all includes it).
        selected[
            [
                i
                for i, n in table.names.items()
                if n.lower() != "background" and i < lut_size
            ]
        ] = True
    elif table.named:
        selected[[i for i in table.names if i < lut_size]] = True
    else:
        selected[:] = True
    if nodata is not None and 0 <= nodata < lut_size:
        selected[int(nodata)] = False
    return selected


def _road_classes(
    table: _ClassTable, centerlines: bool | Sequence[str | int]
) -> list[int]:
    if not isinstance(centerlines, bool):
        return _resolve(table, centerlines)
    ids = [
        i for i, n in table.names.items() if n.lower().startswith(("road", "street"))
    ]
    if not ids:
        raise UnknownNameError(
            f"centre lines need a road class and none is named 'road'; {table.known()}"
        )
    return ids


def _building_classes(table: _ClassTable, selected: npt.NDArray[np.bool_]) -> list[int]:
    ids = [i for i, n in table.names.items() if n.lower().startswith("building")]
    return ids or [int(i) for i in np.flatnonzero(selected)]


def _open_class_map(class_map: str | os.PathLike[str]) -> Scene:
    scene = open_scene(class_map)
    if (
        not np.issubdtype(np.dtype(scene.dtype), np.integer)
        or np.dtype(scene.dtype).itemsize > 2
        or np.dtype(scene.dtype).kind == "i"
    ):
        raise InputError(
            f"{scene.path} has dtype {scene.dtype}; a class map holds unsigned "
            "integer class ids (uint8, as geoseg predict writes)"
        )
    if scene.count != 1:
        warnings.warn(
            f"{scene.path} has {scene.count} bands; vectorizing band 1",
            GeosegWarning,
            stacklevel=3,
        )
    return scene


# --------------------------------------------------------------------------- chunks


def _chunks(scene: Scene, chunk_size: int) -> tuple[list[Any], tuple[int, int]]:
    from geoseg._polygonize import ChunkSpec

    if chunk_size < 2:
        raise InputError(f"chunk_size must be at least 2 pixels, got {chunk_size}")
    rows = list(range(0, scene.height, chunk_size))
    cols = list(range(0, scene.width, chunk_size))
    specs = [
        ChunkSpec(
            scene.path,
            i,
            j,
            r,
            c,
            min(chunk_size, scene.height - r),
            min(chunk_size, scene.width - c),
        )
        for i, r in enumerate(rows)
        for j, c in enumerate(cols)
    ]
    return specs, (len(rows), len(cols))


def _run_tasks(
    tasks: list[Any], workers: int | None, progress: Progress, desc: str
) -> list[Any]:
    """Compute dask delayed tasks; several processes when the map has several chunks.

    ``rasterio.features.shapes`` holds the GIL, so threads would not run in parallel.
    A ``dask.distributed`` client that is already running is used when there is one.
    The local schedulers are passed as functions: naming them by string makes dask
    import ``distributed`` (half a second) just to look for a client.
    """
    import multiprocessing as mp
    import sys

    import dask
    import dask.local
    import dask.multiprocessing
    from dask.base import compute
    from dask.callbacks import Callback

    n = len(tasks)
    if "distributed" in sys.modules:
        from distributed import default_client

        try:
            client = default_client()  # type: ignore[no-untyped-call]
        except ValueError:
            client = None
        if client is not None:
            progress.start(n, desc=desc)
            out = list(compute(*tasks, scheduler=client))  # type: ignore[no-untyped-call]
            progress.advance(n)
            return out
    if workers is None:
        workers = min(os.cpu_count() or 1, n)
    progress.start(n, desc=desc)

    def _posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if isinstance(key, tuple) or "polygonize" in str(key) or "skeleton" in str(key):
            progress.advance(1)

    with Callback(posttask=_posttask):  # type: ignore[no-untyped-call]
        if workers <= 1 or n <= 1:
            return list(
                compute(  # type: ignore[no-untyped-call]
                    *tasks, scheduler=dask.local.get_sync
                )
            )
        # fork (where there is one) starts workers in milliseconds; spawn re-imports.
        ctx = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with dask.config.set({"multiprocessing.context": ctx}):
            return list(
                compute(  # type: ignore[no-untyped-call]
                    *tasks, scheduler=dask.multiprocessing.get, num_workers=workers
                )
            )


# --------------------------------------------------------------------------- metres


def _pixel_to_crs(
    geoms: npt.NDArray[np.object_], scene: Scene
) -> npt.NDArray[np.object_]:
    t = scene.transform

    def apply(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = xy[:, 0], xy[:, 1]
        return np.stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f], axis=1)

    out = np.empty(len(geoms), dtype=object)
    for i in range(0, len(geoms), 20000):  # batches bound the coordinate arrays
        out[i : i + 20000] = shapely.transform(geoms[i : i + 20000], apply)
    return out


@dataclass
class _Metric:
    """Geometries in a frame whose unit is ``factor`` metres."""

    series: gpd.GeoSeries
    factor: float  # metres per unit of ``series``
    geographic: bool

    def back(self, crs: Any) -> gpd.GeoSeries:
        return self.series.to_crs(crs) if self.geographic else self.series


def _metric(series: gpd.GeoSeries) -> _Metric:
    crs = series.crs
    if crs is None:
        return _Metric(series, 1.0, False)
    if crs.is_geographic:
        utm = series.estimate_utm_crs() if len(series) else None
        if utm is None:
            return _Metric(series, 1.0, False)
        return _Metric(series.to_crs(utm), 1.0, True)
    factor = float(crs.axis_info[0].unit_conversion_factor) if crs.axis_info else 1.0
    return _Metric(series, factor, False)


def _fill_holes(geom: Any, max_area: float) -> Any:
    def fill(poly: shapely.Polygon) -> shapely.Polygon:
        keep = [r for r in poly.interiors if shapely.Polygon(r).area >= max_area]
        return shapely.Polygon(poly.exterior, keep)

    if isinstance(geom, shapely.MultiPolygon):
        return shapely.MultiPolygon([fill(p) for p in geom.geoms])
    return fill(geom)


def _dominant_angle(ring: npt.NDArray[np.float64]) -> float:
    """Return the dominant edge direction (radians, modulo 90 degrees).

    It is the length-weighted circular mean of four times each edge's angle, so
    perpendicular edges vote together.
    """
    d = np.diff(ring, axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    theta = np.arctan2(d[:, 1], d[:, 0])
    return float(
        np.arctan2(
            (length * np.sin(4 * theta)).sum(), (length * np.cos(4 * theta)).sum()
        )
        / 4
    )


def _orthogonal_ring(ring: npt.NDArray[np.float64]) -> npt.NDArray[np.float64] | None:
    """Axis-aligned ring through a ring already rotated to its dominant direction.

    Each edge is classed horizontal or vertical; runs of one kind become one straight
    line at their length-weighted mean offset; corners are where consecutive lines meet.
    None when fewer than four runs remain.
    """
    pts = ring[:-1]
    nxt = np.roll(pts, -1, axis=0)
    d = nxt - pts
    length = np.hypot(d[:, 0], d[:, 1])
    ok = length > 0
    pts, nxt, d, length = pts[ok], nxt[ok], d[ok], length[ok]
    horiz = np.abs(d[:, 0]) >= np.abs(d[:, 1])
    if len(horiz) < 4 or horiz.all() or not horiz.any():
        return None
    start = int(np.flatnonzero(horiz != np.roll(horiz, 1))[0])  # a run boundary
    idx = np.roll(np.arange(len(horiz)), -start)
    runs: list[tuple[bool, float]] = []
    k = 0
    while k < len(idx):
        kind = horiz[idx[k]]
        m = k
        while m < len(idx) and horiz[idx[m]] == kind:
            m += 1
        sel = idx[k:m]
        mid = (pts[sel] + nxt[sel]) / 2
        w = length[sel]
        offset = float((mid[:, 1 if kind else 0] * w).sum() / w.sum())
        runs.append((bool(kind), offset))
        k = m
    if len(runs) < 4 or len(runs) % 2:
        return None
    corners = []
    for (kind, off), (_, off_next) in zip(runs, runs[1:] + runs[:1], strict=True):
        corners.append((off_next, off) if kind else (off, off_next))
    corners.append(corners[0])
    return np.asarray(corners, np.float64)


def regularize_polygon(poly: shapely.Polygon, tolerance: float) -> shapely.Polygon:
    """Square a building outline: orthogonal edges along its dominant direction.

    The outline is simplified by ``tolerance`` (map units), rotated so that its dominant
    edge direction is horizontal, every edge is snapped to horizontal or vertical, and
    the result is rotated back. Holes are squared the same way (or dropped if they
    vanish).
    Where squaring fails (a degenerate or self-intersecting result), the minimum rotated
    rectangle is used instead.

    Parameters
    ----------
    poly : Polygon
        A footprint in a metric (projected) frame.
    tolerance : float
        Simplification tolerance applied before squaring; a pixel or two.

    Returns
    -------
    Polygon
    """
    from shapely import affinity

    if poly.is_empty or poly.area == 0:
        return poly
    simple = shapely.simplify(poly, tolerance, preserve_topology=True)
    if not isinstance(simple, shapely.Polygon) or simple.is_empty:
        return poly
    angle = _dominant_angle(np.asarray(simple.exterior.coords))
    origin = simple.centroid
    rot = affinity.rotate(simple, -angle, origin=origin, use_radians=True)
    shell = _orthogonal_ring(np.asarray(rot.exterior.coords))
    if shell is None:
        return shapely.minimum_rotated_rectangle(poly)
    holes = [
        h
        for h in (_orthogonal_ring(np.asarray(r.coords)) for r in rot.interiors)
        if h is not None
    ]
    square = shapely.Polygon(shell, holes)
    if not square.is_valid:
        square = shapely.Polygon(shell)
    if not square.is_valid or square.area == 0:
        return shapely.minimum_rotated_rectangle(poly)
    out = affinity.rotate(square, angle, origin=origin, use_radians=True)
    return out if isinstance(out, shapely.Polygon) else poly


# --------------------------------------------------------------------------- main


@dataclass(frozen=True)
class VectorizeResult:
    """What :func:`vectorize_to_file` wrote."""

    outputs: list[Path]
    n_polygons: int
    n_lines: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: what was written, how many features, how long."""
        per = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))
        lines = f" and {self.n_lines} centre lines" if self.n_lines else ""
        return (
            f"wrote {', '.join(map(str, self.outputs))}: {self.n_polygons} polygons"
            f"{lines}{f' ({per})' if per else ''} in {self.seconds:.1f} s"
        )


def vectorize(
    class_map: str | os.PathLike[str],
    *,
    classes: Sequence[str | int] | None = None,
    all_classes: bool = False,
    class_names: Sequence[str] | None = None,
    simplify: float = 0.0,
    min_area: float = 0.0,
    fill_holes: float = 0.0,
    connectivity: int = 4,
    regularize: bool = False,
    centerlines: bool | Sequence[str | int] = False,
    probabilities: str | os.PathLike[str] | None = None,
    chunk_size: int = 2048,
    workers: int | None = None,
    progress: Progress | None = None,
) -> gpd.GeoDataFrame:
    """Polygons of the selected classes of a class map, merged exactly across chunks.

    Parameters
    ----------
    class_map : path
        Single-band unsigned-integer class map (as ``geoseg predict`` writes: uint8
        class ids, nodata 255, tags ``class_names``/``class_ids``).
    classes : sequence of str or int, optional
        Class names or ids to vectorize. Default: every named class except one named
        ``background`` (every value but nodata when the map names none).
    all_classes : bool
        Vectorize every class, ``background`` included.
    class_names : sequence of str, optional
        Names for ids 0, 1, 2, ... overriding the map's tags.
    simplify : float
        Simplification tolerance in metres (0: none). With more than one class the
        polygons are a coverage and ``shapely.coverage_simplify`` keeps them gap- and
        overlap-free; for one class each outline is simplified preserving topology.
    min_area : float
        Drop polygons smaller than this, in square metres (in a land-cover coverage this
        leaves a gap where they were).
    fill_holes : float
        Fill holes smaller than this, in square metres; features lying inside a filled
        hole are dropped, so a coverage stays overlap-free.
    connectivity : {4, 8}
        Pixel connectivity of a region (8: diagonal neighbours join).
    regularize : bool
        Square building outlines (classes named ``building*``; every selected class if
        none is so named). See :func:`regularize_polygon`.
    centerlines : bool or sequence of str or int
        Also return centre lines (LineStrings) of the road classes (named ``road*``,
        or the classes given). Road polygons are kept only when the road class is among
        ``classes``; so ``classes=["building"], centerlines=True`` gives building
        polygons plus road lines.
    probabilities : path, optional
        Probability raster from ``geoseg predict --probabilities`` (one uint8 band per
        class, ``p = value / 254``, 255 nodata); adds ``mean_confidence``.
    chunk_size : int
        Chunk side in pixels; peak memory grows with its square, not with the map.
    workers : int, optional
        Processes working on chunks (default: CPU count; 1 runs in this process).
    progress : Progress, optional
        Receives one unit per chunk.

    Returns
    -------
    GeoDataFrame
        Columns ``class_id``, ``class_name``, ``area_m2`` (polygons; for centre lines
        ``length_m``), ``mean_confidence`` (with ``probabilities``), ``feature``
        (``"polygon"`` or ``"centerline"``) and ``geometry``, in the class map's CRS.
        Polygon features are ``Polygon`` (with 8-connectivity a ``MultiPolygon`` where
        parts touch only at a corner).

    Raises
    ------
    InputError
        Not a raster, not an integer class map, a bad option value, or a probability
        raster that does not match the map.
    UnknownNameError
        A class that the map does not name.
    """
    import geopandas as gpd
    from dask.delayed import delayed

    from geoseg._polygonize import merge_pieces, polygonize_chunk

    progress = progress or NullProgress()
    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity}")
    for name, value in (
        ("simplify", simplify),
        ("min_area", min_area),
        ("fill_holes", fill_holes),
    ):
        if not math.isfinite(value) or value < 0:
            raise InputError(
                f"{name} must be a non-negative number of metres, got {value}"
            )
    scene = _open_class_map(class_map)
    table = _class_table(scene, class_names)
    nodata = None if scene.nodata is None else int(scene.nodata)
    if nodata is None and scene.dtype == "uint8":
        nodata = NODATA_CLASS
    lut_size = 256 if scene.dtype == "uint8" else 65536
    selected = _selection(table, classes, all_classes, nodata, lut_size)
    roads = _road_classes(table, centerlines) if centerlines is not False else []
    prob_path, prob_bands = _probability_bands(scene, table, probabilities)
    specs, grid = _chunks(scene, chunk_size)

    tasks = [
        delayed(polygonize_chunk, pure=False)(
            s,
            selected,
            connectivity,
            prob_path,
            prob_bands,
            dask_key_name=f"polygonize-{s.row}-{s.col}",
        )
        for s in specs
    ]
    try:
        if selected.any():
            merged = merge_pieces(
                _run_tasks(tasks, workers, progress, "vectorize"), grid, connectivity
            )
            geoms, cls = merged.geoms, merged.class_ids
            mean_prob = merged.mean_prob
            del merged
        else:
            geoms, cls, mean_prob = np.empty(0, object), np.empty(0, np.int64), None
        coverage = len(np.unique(cls)) > 1  # neighbours of different classes
        if simplify > 0 and coverage:
            # Shared edges must hold the same vertices for coverage_simplify (GDAL
            # leaves out T-junction vertices): a vertex at every pixel corner, exact in
            # pixel coordinates.
            geoms = np.asarray(shapely.segmentize(geoms, 1.0), dtype=object)
        series = gpd.GeoSeries(_pixel_to_crs(geoms, scene), crs=scene.crs)
        del geoms  # the pixel-coordinate copy: keep one copy of the output in memory
        frame = gpd.GeoDataFrame(
            {
                "class_id": cls.astype(np.int64),
                "class_name": [table.name(int(c)) for c in cls],
            },
            geometry=series,
        )
        if mean_prob is not None:
            frame["mean_confidence"] = mean_prob
        frame["feature"] = "polygon"
        frame = _postprocess(
            frame,
            scene,
            table,
            selected,
            simplify=simplify,
            min_area=min_area,
            fill_holes=fill_holes,
            regularize=regularize,
            coverage=coverage,
        )
        if roads:
            lines = _centerline_frame(
                scene,
                table,
                roads,
                simplify=simplify,
                chunk_size=chunk_size,
                workers=workers,
                progress=progress,
            )
            frame = gpd.GeoDataFrame(
                _concat([frame, lines]), geometry="geometry", crs=scene.crs
            )
    finally:
        progress.close()
    return frame


def _concat(frames: list[gpd.GeoDataFrame]) -> Any:
    import pandas as pd

    return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)


def _probability_bands(
    scene: Scene, table: _ClassTable, probabilities: str | os.PathLike[str] | None
) -> tuple[str | None, dict[int, int] | None]:
    if probabilities is None:
        return None, None
    prob = open_scene(probabilities)
    if prob.shape != scene.shape:
        raise InputError(
            f"probability raster {prob.path} is {prob.width}x{prob.height} px; "
            f"the class map is {scene.width}x{scene.height}"
        )
    if prob.dtype != "uint8":
        raise InputError(
            f"probability raster {prob.path} has dtype {prob.dtype}; expected "
            "uint8 (p = value / 254) as written by geoseg predict"
        )
    import rasterio

    with rasterio.open(prob.path) as src:
        count = src.count  # all bands: open_scene hides a 4th band GDAL calls alpha
    tag_ids = prob.tags.get("class_ids") or scene.tags.get("class_ids", "")
    ids = (
        [int(i) for i in tag_ids.split(",")]
        if tag_ids
        else sorted(table.names) or list(range(count))
    )
    if len(ids) != count:
        raise InputError(
            f"probability raster {prob.path} has {count} bands for "
            f"{len(ids)} classes; expected one band per class"
        )
    return prob.path, {cid: k + 1 for k, cid in enumerate(ids)}


def _postprocess(
    frame: gpd.GeoDataFrame,
    scene: Scene,
    table: _ClassTable,
    selected: npt.NDArray[np.bool_],
    *,
    simplify: float,
    min_area: float,
    fill_holes: float,
    regularize: bool,
    coverage: bool,
) -> gpd.GeoDataFrame:
    """Hole filling, minimum area, squaring and simplification in metres; area_m2."""
    metric = _metric(frame.geometry)
    f = metric.factor
    geoms = np.asarray(metric.series.values, dtype=object)
    keep = np.ones(len(geoms), bool)
    changed = False
    if fill_holes > 0 and len(geoms):
        holey = np.flatnonzero(
            shapely.get_num_interior_rings(geoms)
            > 0 | (shapely.get_type_id(geoms) == 6)
        )
        filled = [_fill_holes(geoms[i], fill_holes / f**2) for i in holey]
        for i, g in zip(holey, filled, strict=True):
            if not shapely.equals_exact(g, geoms[i], 0):
                geoms[i] = g
                changed = True
        if len(holey):
            tree = shapely.STRtree(geoms)
            src, hit = tree.query(geoms[holey], predicate="covers")
            inside = hit[holey[src] != hit]
            keep[inside] = False
    if min_area > 0:
        keep &= shapely.area(geoms) * f**2 >= min_area
    geoms, frame = geoms[keep], frame[keep].reset_index(drop=True)
    px = _pixel_metres(scene, metric)
    if regularize and len(geoms):
        todo = np.flatnonzero(
            frame["class_id"].isin(_building_classes(table, selected))
        )
        tol = max(simplify / f, 1.5 * px)
        for i in todo:
            parts = [regularize_polygon(p, tol) for p in shapely.get_parts(geoms[i])]
            geoms[i] = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
        changed = changed or len(todo) > 0
    else:
        todo = np.empty(0, np.int64)
    if simplify > 0 and len(geoms):
        rest = np.setdiff1d(np.arange(len(geoms)), todo)
        if coverage:
            geoms[rest] = shapely.coverage_simplify(geoms[rest], simplify / f)
        else:
            geoms[rest] = shapely.simplify(
                geoms[rest], simplify / f, preserve_topology=True
            )
        changed = True
    frame["area_m2"] = shapely.area(geoms) * f**2
    import geopandas as gpd

    if changed:
        series = gpd.GeoSeries(geoms, crs=metric.series.crs)
        frame = frame.set_geometry(
            _Metric(series, f, metric.geographic).back(scene.crs)
        )
    cols = ["class_id", "class_name", "area_m2"]
    cols += [c for c in frame.columns if c not in (*cols, "geometry")] + ["geometry"]
    return frame[cols]


def _pixel_metres(scene: Scene, metric: _Metric) -> float:
    """Side in the metric frame's units of one pixel at the map's centre."""
    import geopandas as gpd

    if not metric.geographic:
        return float(
            math.sqrt(
                abs(
                    scene.transform.a * scene.transform.e
                    - scene.transform.b * scene.transform.d
                )
            )
        )
    t = scene.transform
    cx, cy = t @ (scene.width / 2, scene.height / 2)
    box = shapely.box(cx, cy, cx + abs(t.a), cy + abs(t.e))
    area = gpd.GeoSeries([box], crs=scene.crs).to_crs(metric.series.crs).area.iloc[0]
    return float(math.sqrt(area))


def _centerline_frame(
    scene: Scene,
    table: _ClassTable,
    roads: Sequence[int],
    *,
    simplify: float,
    chunk_size: int,
    workers: int | None,
    progress: Progress,
) -> gpd.GeoDataFrame:
    import geopandas as gpd
    from dask.delayed import delayed

    from geoseg._polygonize import skeleton_lines_chunk

    lut = np.zeros(256 if scene.dtype == "uint8" else 65536, bool)
    lut[list(roads)] = True
    specs, _ = _chunks(scene, chunk_size)
    frames = []
    for cid in roads:
        one = np.zeros_like(lut)
        one[cid] = True
        tasks = [
            delayed(skeleton_lines_chunk, pure=False)(
                s,
                one,
                CENTERLINE_HALO,
                scene.shape,
                dask_key_name=f"skeleton-{cid}-{s.row}-{s.col}",
            )
            for s in specs
        ]
        parts = [
            p for p in _run_tasks(tasks, workers, progress, "centre lines") if len(p)
        ]
        if parts:
            lines = shapely.get_parts(
                shapely.line_merge(shapely.multilinestrings(np.concatenate(parts)))
            )
        else:
            lines = np.empty(0, object)
        series = gpd.GeoSeries(
            _pixel_to_crs(np.asarray(lines, object), scene), crs=scene.crs
        )
        metric = _metric(series)
        geoms = np.asarray(metric.series.values, dtype=object)
        if simplify > 0 and len(geoms):
            geoms = shapely.simplify(
                geoms, simplify / metric.factor, preserve_topology=True
            )
            series = _Metric(
                gpd.GeoSeries(geoms, crs=metric.series.crs),
                metric.factor,
                metric.geographic,
            ).back(scene.crs)
        frames.append(
            gpd.GeoDataFrame(
                {
                    "class_id": np.full(len(geoms), cid, np.int64),
                    "class_name": [table.name(cid)] * len(geoms),
                    "length_m": shapely.length(geoms) * metric.factor,
                    "feature": "centerline",
                },
                geometry=series.values,
                crs=scene.crs,
            )
        )
    return gpd.GeoDataFrame(_concat(frames), geometry="geometry", crs=scene.crs)


def centerlines(
    class_map: str | os.PathLike[str],
    *,
    classes: Sequence[str | int] | None = None,
    class_names: Sequence[str] | None = None,
    simplify: float = 0.0,
    chunk_size: int = 2048,
    workers: int | None = None,
    progress: Progress | None = None,
) -> gpd.GeoDataFrame:
    """Road centre lines (LineStrings) from a class map: skeletons joined into lines.

    Parameters
    ----------
    class_map : path
        Class map, as for :func:`vectorize`.
    classes : sequence of str or int, optional
        Road classes; default: the classes named ``road*``.
    class_names, simplify, chunk_size, workers, progress
        As for :func:`vectorize` (``simplify`` in metres).

    Returns
    -------
    GeoDataFrame
        ``class_id``, ``class_name``, ``length_m``, ``feature`` (``"centerline"``) and
        LineString geometry, in the class map's CRS. Lines run through pixel centres and
        meet at junctions.
    """
    scene = _open_class_map(class_map)
    table = _class_table(scene, class_names)
    roads = _road_classes(table, True if classes is None else classes)
    progress = progress or NullProgress()
    try:
        return _centerline_frame(
            scene,
            table,
            roads,
            simplify=simplify,
            chunk_size=chunk_size,
            workers=workers,
            progress=progress,
        )
    finally:
        progress.close()


# --------------------------------------------------------------------------- writing


def _driver(path: Path) -> str:
    driver = VECTOR_FORMATS.get(path.suffix.lower())
    if driver is None:
        raise OutputError(
            f"cannot tell the vector format of {path.name}; use one of "
            f"{', '.join(sorted(set(VECTOR_FORMATS)))}"
        )
    return driver


def _targets(path: Path, gdf: gpd.GeoDataFrame) -> list[tuple[Path, str | None, Any]]:
    """(file, layer, frame) to write: lines go to a second layer or a sibling file."""
    if "feature" in gdf.columns:
        polys = gdf[gdf["feature"] != "centerline"]
        lines = gdf[gdf["feature"] == "centerline"]
    else:
        polys, lines = gdf, gdf.iloc[:0]
    polys = polys.drop(
        columns=[c for c in ("feature", "length_m") if c in polys.columns]
    )
    lines = lines.drop(
        columns=[
            c for c in ("feature", "area_m2", "mean_confidence") if c in lines.columns
        ]
    )
    if not len(lines):
        return [(path, path.stem if _driver(path) == "GPKG" else None, polys)]
    if (
        not len(polys)
        and "feature" in gdf.columns
        and not (gdf["feature"] == "polygon").any()
    ):
        return [(path, path.stem if _driver(path) == "GPKG" else None, lines)]
    if _driver(path) == "GPKG":
        return [(path, path.stem, polys), (path, f"{path.stem}_centerlines", lines)]
    return [
        (path, None, polys),
        (path.with_name(f"{path.stem}_centerlines{path.suffix}"), None, lines),
    ]


def _sidecars(path: Path) -> list[Path]:
    if path.suffix.lower() != ".shp":
        return [path]
    return [path.with_suffix(ext) for ext in _SHP_SIDECARS]


def write_vectors(
    gdf: gpd.GeoDataFrame,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    dst_crs: Any = None,
) -> list[Path]:
    """Write features to a vector file, atomically; the format follows the extension.

    ``.gpkg`` (GeoPackage), ``.geojson``/``.json``, ``.fgb`` (FlatGeobuf), ``.parquet``
    (GeoParquet) and ``.shp`` (Shapefile, with its sidecar files). Centre lines (rows
    with ``feature == "centerline"``) next to polygons go to a second layer
    ``<name>_centerlines`` of a GeoPackage, or to a sibling file
    ``<name>_centerlines.<ext>``.

    Parameters
    ----------
    gdf : GeoDataFrame
        Features with a CRS (from :func:`vectorize`).
    path : path
        Destination.
    overwrite : bool
        Replace an existing destination.
    dst_crs : CRS-like, optional
        Reproject to this CRS (e.g. ``"EPSG:3857"``) before writing.

    Returns
    -------
    list of Path
        The files written.
    """
    import pyogrio
    from pyproj.exceptions import CRSError

    dst = check_output(path, overwrite=overwrite)
    driver = _driver(dst)
    if dst_crs is not None:
        try:
            gdf = gdf.to_crs(dst_crs)
        except (CRSError, ValueError, TypeError) as exc:
            raise InputError(f"cannot reproject to {dst_crs!r}: {exc}") from None
    targets = _targets(dst, gdf)
    for file, _, _ in targets[1:]:
        if file != dst:
            check_output(file, overwrite=overwrite)
    tmps: dict[Path, Path] = {}
    try:
        for file, layer, frame in targets:
            tmp = tmps.setdefault(file, partial_path(file))
            if driver == "GeoParquet":
                try:
                    frame.to_parquet(tmp)
                except ImportError:
                    raise OutputError(
                        "writing GeoParquet needs pyarrow: pip install "
                        "pyarrow, or choose .gpkg/.fgb"
                    ) from None
                continue
            kw: dict[str, Any] = {"driver": driver, "layer": layer}
            if driver in ("ESRI Shapefile", "FlatGeobuf"):
                kw["promote_to_multi"] = True
            if layer is not None and tmp.exists():
                kw["append"] = False
            try:
                pyogrio.write_dataframe(frame, tmp, **kw)
            except (
                pyogrio.errors.DataSourceError,
                pyogrio.errors.DataLayerError,
                OSError,
            ) as exc:
                raise OutputError(
                    f"cannot write {file}: {str(exc).splitlines()[0]}"
                ) from None
        for file, tmp in tmps.items():
            for src, final in zip(_sidecars(tmp), _sidecars(file), strict=True):
                if src.exists():
                    os.replace(src, final)
                elif final.exists() and final.suffix.lower() in (
                    ".cpg",
                    ".prj",
                    ".qix",
                ):
                    final.unlink()  # a stale sidecar of an overwritten shapefile
    finally:
        for tmp in tmps.values():
            for leftover in _sidecars(tmp):
                leftover.unlink(missing_ok=True)
    return list(tmps)


def vectorize_to_file(
    class_map: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    dst_crs: Any = None,
    progress: Progress | None = None,
    **options: Any,
) -> VectorizeResult:
    """Run :func:`vectorize` then :func:`write_vectors`; checks the output first.

    Parameters
    ----------
    class_map, output : path
        Class map to read and vector file to write (format from the extension).
    overwrite, dst_crs
        As for :func:`write_vectors`.
    progress : Progress, optional
        Progress display; receives ``finish`` with the outputs.
    **options
        Keyword arguments of :func:`vectorize`.

    Returns
    -------
    VectorizeResult
    """
    t0 = time.perf_counter()
    dst = check_output(output, overwrite=overwrite)
    _driver(dst)
    if options.get("centerlines") and dst.suffix.lower() != ".gpkg":
        check_output(
            dst.with_name(f"{dst.stem}_centerlines{dst.suffix}"), overwrite=overwrite
        )
    progress = progress or NullProgress()
    gdf = vectorize(class_map, progress=progress, **options)
    outputs = write_vectors(gdf, dst, overwrite=overwrite, dst_crs=dst_crs)
    progress.finish([str(p) for p in outputs])
    kind = gdf["feature"] if len(gdf) else gdf.get("feature", [])
    polys = gdf[np.asarray(kind) == "polygon"] if len(gdf) else gdf
    counts = {str(k): int(v) for k, v in polys["class_name"].value_counts().items()}
    return VectorizeResult(
        outputs=outputs,
        n_polygons=len(polys),
        n_lines=len(gdf) - len(polys),
        seconds=time.perf_counter() - t0,
        counts=counts,
    )
