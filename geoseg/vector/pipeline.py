"""``vectorize``: class map -> GIS-ready polygons and road centre lines, at any size.

The class map is cut into ``chunk_size`` windows; one dask task per window reads it,
labels the connected regions of each selected class and polygonizes them with
``rasterio.features.shapes``. Pieces that meet across a window seam are then unioned
(:mod:`geoseg.vector.polygonize` explains how they are found without geometry tests), so the
result is the same set of polygons as one whole-map polygonization, while memory
depends on the window size rather than the map size. Nodata pixels are never a polygon.

After the merge, optional steps run in metres (a geographic CRS such as EPSG:4326 is
projected to its local UTM zone for them, and back): hole filling, a minimum area,
squaring of building outlines, and simplification (on a lon/lat map it runs in lon/lat
with a tolerance in metres, so no outline is bent into an invalid one). When more than one class is
vectorized the polygons form a land-cover *coverage*, and simplification uses
``shapely.coverage_simplify`` so neighbours stay gap- and overlap-free.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geoseg._atomic import check_distinct, check_output, destination_locks
from geoseg.classmap import (
    ClassMapInfo,
    ClassTable,
    band_class_map,
    class_table,
    open_class_map,
    road_classes,
    selection,
)
from geoseg.errors import GeosegWarning, InputError
from geoseg.io import NODATA_CLASS, Scene, open_scene
from geoseg.progress import NullProgress, Progress
from geoseg.vector.chunks import _concat
from geoseg.vector.postprocess import metric_frame, pixel_to_crs, postprocess
from geoseg.vector.regularize import regularize_polygon
from geoseg.vector.write import VECTOR_FORMATS, vector_driver, write_vectors

if TYPE_CHECKING:
    import geopandas as gpd
from geoseg.vector.centerlines import _centerline_frame, centerlines
from geoseg.vector.chunks import _chunks, _run_tasks

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
    threshold: float | None = None,
    band: int | None = None,
    chunk_size: int = 2048,
    workers: int | None = None,
    progress: Progress | None = None,
    split_instances: bool | None = None,
    seed_erosion: int = 0,
    min_seed: int = 0,
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
    threshold : float, optional
        Read ``class_map`` as a probability or logit raster (any dtype): class 1 where
        band ``band`` is at least ``threshold`` (after its scale/offset), else class 0
        ``background``; see :func:`geoseg.classmap.band_class_map`.
    band : int, optional
        1-based band to read (default 1); without ``threshold`` it must hold class ids.
    chunk_size : int
        Chunk side in pixels; peak memory grows with its square, not with the map.
    workers : int, optional
        Processes working on chunks (default: the CPU count when the map has at least
        eight chunks, else 1; 1 runs in this process). A running ``dask.distributed``
        client is used instead when there is one.
    progress : Progress, optional
        Receives one unit per chunk.
    split_instances : bool, optional
        Maps of a model trained with ``--target instances`` (classes ``building``,
        ``building_boundary``, ``building_contact``: the map's ``instance_classes`` tag,
        or those names): selecting ``building`` gives one polygon per building, the
        three classes together, split between the interior regions
        (:mod:`geoseg.vector.instances`). None (default): split when the map has such
        classes; False: one polygon per connected building region; True: require them.
    seed_erosion : int
        With instance splitting: erode the interior regions by this many pixels first.
    min_seed : int
        With instance splitting: interior regions smaller than this many pixels are no
        buildings of their own.

    Returns
    -------
    GeoDataFrame
        Columns ``class_id``, ``class_name``, ``area_m2`` (polygons; ``area_px``, in
        pixels, when the map has no CRS; for centre lines ``length_m``),
        ``mean_confidence`` (with ``probabilities``), ``feature``
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
    progress = progress or NullProgress()
    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity}")
    for name, value in (
        ("simplify", simplify),
        ("min_area", min_area),
        ("fill_holes", fill_holes),
    ):
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{name} must be a non-negative number of metres, got {value}")
    if threshold is not None and not math.isfinite(threshold):
        raise InputError(f"threshold must be a finite number, got {threshold}")
    with ExitStack() as stack:
        if threshold is not None or band is not None:
            # The band as a class map on disk (streamed, bounded memory), so chunk
            # tasks in other processes read it like any map; removed on return.
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="geoseg-band-"))
            class_map = band_class_map(class_map, Path(tmp) / "classes.tif",
                                       band=band, threshold=threshold)
        return _vectorize(class_map, classes=classes, all_classes=all_classes,
                          class_names=class_names, simplify=simplify,
                          min_area=min_area, fill_holes=fill_holes,
                          connectivity=connectivity, regularize=regularize,
                          centerlines=centerlines, probabilities=probabilities,
                          chunk_size=chunk_size, workers=workers, progress=progress,
                          split_instances=split_instances, seed_erosion=seed_erosion,
                          min_seed=min_seed)


def _vectorize(
    class_map: str | os.PathLike[str],
    *,
    classes: Sequence[str | int] | None,
    all_classes: bool,
    class_names: Sequence[str] | None,
    simplify: float,
    min_area: float,
    fill_holes: float,
    connectivity: int,
    regularize: bool,
    centerlines: bool | Sequence[str | int],
    probabilities: str | os.PathLike[str] | None,
    chunk_size: int,
    workers: int | None,
    progress: Progress,
    split_instances: bool | None = None,
    seed_erosion: int = 0,
    min_seed: int = 0,
) -> gpd.GeoDataFrame:
    import geopandas as gpd
    from dask.delayed import delayed

    from geoseg.vector.instances import select_instances, vectorize_instances
    from geoseg.vector.polygonize import merge_pieces, polygonize_chunk

    scene = open_class_map(class_map)
    table = class_table(scene, class_names)
    nodata = None if scene.nodata is None else int(scene.nodata)
    if nodata is None and scene.dtype == "uint8":
        nodata = NODATA_CLASS
    lut_size = 256 if scene.dtype == "uint8" else 65536
    selected = selection(table, classes, all_classes, nodata, lut_size)
    groups, selected = select_instances(scene, table, selected, split_instances)
    if groups and probabilities is not None:
        raise InputError("--probabilities (mean_confidence) does not go with building "
                         "instances; pass --no-split-instances or leave it out")
    roads = road_classes(table, centerlines) if centerlines is not False else []
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
        if groups:  # one polygon per building; touching ones share an edge
            more, more_cls = vectorize_instances(
                scene, groups, split=split_instances is not False,
                seed_erosion=seed_erosion, min_seed=min_seed, connectivity=connectivity,
                chunk_size=chunk_size, workers=workers, progress=progress)
            geoms = np.concatenate([geoms, more])
            cls = np.concatenate([cls, more_cls])
        # neighbours of different classes, or buildings that touch: a coverage
        coverage = len(np.unique(cls)) > 1 or (bool(groups) and len(cls) > 1)
        if simplify > 0 and coverage:
            # Shared edges must hold the same vertices for coverage_simplify (GDAL
            # leaves out T-junction vertices): a vertex at every pixel corner, exact in
            # pixel coordinates.
            geoms = np.asarray(shapely.segmentize(geoms, 1.0), dtype=object)
        series = gpd.GeoSeries(pixel_to_crs(geoms, scene), crs=scene.crs)
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
        frame = postprocess(
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
            if min_area > 0 and len(lines):
                lines = _drop_small_road_lines(
                    lines, scene, roads, min_area, connectivity, chunk_size, workers, progress
                )
            frame = gpd.GeoDataFrame(_concat([frame, lines]), geometry="geometry", crs=scene.crs)
    finally:
        progress.close()
    return frame




def _drop_small_road_lines(
    lines: gpd.GeoDataFrame,
    scene: Scene,
    roads: Sequence[int],
    min_area: float,
    connectivity: int,
    chunk_size: int,
    workers: int | None,
    progress: Progress,
) -> gpd.GeoDataFrame:
    """Drop centre lines of road regions smaller than ``min_area`` square metres.

    The road regions are polygonized as for :func:`vectorize`; a line belongs to the
    region holding its first vertex (a pixel centre, kept by simplification).
    """
    import geopandas as gpd
    from dask.delayed import delayed

    from geoseg.vector.polygonize import merge_pieces, polygonize_chunk

    lut = np.zeros(256 if scene.dtype == "uint8" else 65536, bool)
    lut[list(roads)] = True
    specs, grid = _chunks(scene, chunk_size)
    tasks = [
        delayed(polygonize_chunk, pure=False)(
            s, lut, connectivity, None, None, dask_key_name=f"road-area-{s.row}-{s.col}"
        )
        for s in specs
    ]
    merged = merge_pieces(_run_tasks(tasks, workers, progress, "road areas"), grid, connectivity)
    regions = gpd.GeoSeries(pixel_to_crs(merged.geoms, scene), crs=scene.crs)
    metric = metric_frame(regions)
    small = regions.values[metric.series.area.to_numpy() * metric.factor**2 < min_area]
    if not len(small):
        return lines
    starts = shapely.get_point(lines.geometry.values, 0)
    inside, _ = shapely.STRtree(np.asarray(small)).query(starts, predicate="within")
    keep = np.ones(len(lines), bool)
    keep[inside] = False
    return lines[keep].reset_index(drop=True)


#: Tags ``geoseg predict`` writes on the class map and the probabilities of one run, most
#: specific first: the same run id means the same run; else they must name the same model.
RUN_TAGS = ("run_id", "model_sha256")


def _check_same_run(scene: Scene, prob: Scene) -> None:
    """Refuse probabilities of another predict run than the class map; warn if unknowable."""
    for tag in RUN_TAGS:
        a, b = scene.tags.get(tag), prob.tags.get(tag)
        if a and b:
            if a != b:
                what = "predict run" if tag == "run_id" else "model"
                raise InputError(
                    f"--probabilities {prob.path} comes from another {what} than the "
                    f"class map ({tag} {b[:12]} vs {a[:12]}); give the pair one "
                    "geoseg predict run wrote"
                )
            return
    warnings.warn(
        f"cannot check that --probabilities {prob.path} comes from the same run as the "
        "class map (no geoseg predict provenance tags)",
        GeosegWarning,
        stacklevel=4,
    )


def _probability_bands(
    scene: Scene, table: ClassTable, probabilities: str | os.PathLike[str] | None
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
    _check_same_run(scene, prob)
    import rasterio

    with rasterio.open(prob.path) as src:
        count = src.count  # all bands: open_scene hides a 4th band GDAL calls alpha
    info = ClassMapInfo.from_tags(prob, strict=True) or ClassMapInfo.from_tags(
        scene, strict=True
    )
    ids = list(info.ids) if info else sorted(table.names) or list(range(count))
    if len(ids) != count:
        raise InputError(
            f"probability raster {prob.path} has {count} bands for "
            f"{len(ids)} classes; expected one band per class"
        )
    return prob.path, {cid: k + 1 for k, cid in enumerate(ids)}


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
    vector_driver(dst)
    lines = None
    if options.get("centerlines") and dst.suffix.lower() != ".gpkg":
        lines = check_output(dst.with_name(f"{dst.stem}_centerlines{dst.suffix}"),
                             overwrite=overwrite)
    check_distinct([("-o", dst), ("centre lines", lines)],
                   [("class map", class_map), ("--probabilities", options.get("probabilities"))])
    progress = progress or NullProgress()
    with destination_locks(dst, lines):
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
