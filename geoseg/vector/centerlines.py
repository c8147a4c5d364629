"""Road centre lines: skeletons of road classes, chunk by chunk with a halo."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import shapely

from geoseg.classmap import (
    ClassTable,
    class_table,
    open_class_map,
    road_classes,
)
from geoseg.io import Scene
from geoseg.progress import NullProgress, Progress
from geoseg.vector.chunks import _chunks, _concat, _run_tasks
from geoseg.vector.postprocess import Metric, metric_frame, pixel_to_crs

if TYPE_CHECKING:
    import geopandas as gpd


#: Pixels of halo read around each chunk for centre lines (roads narrower than twice
#: this
#: skeletonize exactly as on the whole map).
CENTERLINE_HALO = 64


def _centerline_frame(
    scene: Scene,
    table: ClassTable,
    roads: Sequence[int],
    *,
    simplify: float,
    chunk_size: int,
    workers: int | None,
    progress: Progress,
) -> gpd.GeoDataFrame:
    import geopandas as gpd
    from dask.delayed import delayed

    from geoseg.vector.polygonize import skeleton_lines_chunk

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
        parts = [p for p in _run_tasks(tasks, workers, progress, "centre lines") if len(p)]
        if parts:
            lines = shapely.get_parts(
                shapely.line_merge(shapely.multilinestrings(np.concatenate(parts)))
            )
        else:
            lines = np.empty(0, object)
        series = gpd.GeoSeries(pixel_to_crs(np.asarray(lines, object), scene), crs=scene.crs)
        metric = metric_frame(series)
        geoms = np.asarray(metric.series.values, dtype=object)
        if simplify > 0 and len(geoms):
            geoms = shapely.simplify(geoms, simplify / metric.factor, preserve_topology=True)
            series = Metric(
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
    scene = open_class_map(class_map)
    table = class_table(scene, class_names)
    roads = road_classes(table, True if classes is None else classes)
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
