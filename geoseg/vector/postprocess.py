"""Geometry steps after the seam merge, in metres.

Hole filling, minimum area, squaring and ``area_m2``; a geographic CRS is projected to
its local UTM zone for them and back. Simplification of a lon/lat map runs in lon/lat
(see :func:`_simplify_geographic`), so outlines stay valid and a coverage gap-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import shapely

from geoseg.classmap import ClassTable, building_classes
from geoseg.io import Scene
from geoseg.vector.regularize import regularize_polygon

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["Metric", "metric_frame", "pixel_to_crs", "postprocess"]


def pixel_to_crs(
    geoms: npt.NDArray[np.object_], scene: Scene
) -> npt.NDArray[np.object_]:
    """Map geometries from pixel (col, row) to the scene's CRS coordinates."""
    t = scene.transform

    def apply(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = xy[:, 0], xy[:, 1]
        return np.stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f], axis=1)

    out = np.empty(len(geoms), dtype=object)
    for i in range(0, len(geoms), 20000):  # batches bound the coordinate arrays
        out[i : i + 20000] = shapely.transform(geoms[i : i + 20000], apply)
    return out


@dataclass
class Metric:
    """Geometries in a frame whose unit is ``factor`` metres."""

    series: gpd.GeoSeries
    factor: float  # metres per unit of ``series``
    geographic: bool

    def back(self, crs: Any) -> gpd.GeoSeries:
        return self.series.to_crs(crs) if self.geographic else self.series


def metric_frame(series: gpd.GeoSeries) -> Metric:
    """Return the geometries in metres (projected to local UTM for a geographic CRS)."""
    crs = series.crs
    if crs is None:
        return Metric(series, 1.0, False)
    if crs.is_geographic:
        utm = series.estimate_utm_crs() if len(series) else None
        if utm is None:
            return Metric(series, 1.0, False)
        return Metric(series.to_crs(utm), 1.0, True)
    factor = float(crs.axis_info[0].unit_conversion_factor) if crs.axis_info else 1.0
    return Metric(series, factor, False)


def _fill_holes(geom: Any, max_area: float) -> Any:
    def fill(poly: shapely.Polygon) -> shapely.Polygon:
        keep = [r for r in poly.interiors if shapely.Polygon(r).area >= max_area]
        return shapely.Polygon(poly.exterior, keep)

    if isinstance(geom, shapely.MultiPolygon):
        return shapely.MultiPolygon([fill(p) for p in geom.geoms])
    return fill(geom)


def postprocess(
    frame: gpd.GeoDataFrame,
    scene: Scene,
    table: ClassTable,
    selected: npt.NDArray[np.bool_],
    *,
    simplify: float,
    min_area: float,
    fill_holes: float,
    regularize: bool,
    coverage: bool,
) -> gpd.GeoDataFrame:
    """Hole filling, minimum area, squaring and simplification in metres; area_m2.

    A map without a CRS has no metres: its ``area_px`` column counts pixels instead.
    """
    metric = metric_frame(frame.geometry)
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
        todo = np.flatnonzero(frame["class_id"].isin(building_classes(table, selected)))
        tol = max(simplify / f, 1.5 * px)
        for i in todo:
            parts = [regularize_polygon(p, tol) for p in shapely.get_parts(geoms[i])]
            geoms[i] = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
        changed = changed or len(todo) > 0
    else:
        todo = np.empty(0, np.int64)
    rest = np.setdiff1d(np.arange(len(geoms)), todo)
    if simplify > 0 and len(geoms) and not metric.geographic:
        geoms[rest] = _simplify(geoms[rest], simplify / f, coverage=coverage)
        changed = True
    frame["area_m2"] = shapely.area(geoms) * f**2
    import geopandas as gpd

    if changed:
        series = gpd.GeoSeries(geoms, crs=metric.series.crs)
        frame = frame.set_geometry(Metric(series, f, metric.geographic).back(scene.crs))
    if simplify > 0 and len(geoms) and metric.geographic:
        out = np.asarray(frame.geometry.values, dtype=object)
        out[rest] = _simplify_geographic(out[rest], simplify, coverage=coverage)
        frame = frame.set_geometry(gpd.GeoSeries(out, crs=scene.crs))
        frame["area_m2"] = metric_frame(frame.geometry).series.area.to_numpy()
    return _area_columns(frame, scene)


def _area_columns(frame: gpd.GeoDataFrame, scene: Scene) -> gpd.GeoDataFrame:
    """Order the columns; without a CRS (no unit known) ``area_m2`` becomes ``area_px``."""
    area = "area_m2"
    if scene.crs is None:
        t = scene.transform
        pixel = abs(t.a * t.e - t.b * t.d) or 1.0
        frame = frame.rename(columns={"area_m2": "area_px"})
        frame["area_px"] = frame["area_px"] / pixel
        area = "area_px"
    cols = ["class_id", "class_name", area]
    cols += [c for c in frame.columns if c not in (*cols, "geometry")] + ["geometry"]
    return frame[cols]


def _simplify(geoms: npt.NDArray[np.object_], tolerance: float, *, coverage: bool
              ) -> npt.NDArray[np.object_]:
    """Simplify outlines (a coverage together, gap- and overlap-free); always valid."""
    if coverage:
        out = np.asarray(shapely.coverage_simplify(geoms, tolerance), dtype=object)
    else:
        out = np.asarray(shapely.simplify(geoms, tolerance, preserve_topology=True),
                         dtype=object)
    return _repair(out)


def _simplify_geographic(geoms: npt.NDArray[np.object_], simplify_m: float, *,
                         coverage: bool) -> npt.NDArray[np.object_]:
    """Simplify lon/lat outlines in their own coordinates, at most ``simplify_m`` off.

    Simplifying in UTM and projecting back bends every straight edge (the projection
    is not affine), and even an affine scaling there and back rounds coordinates: a
    vertex that lay on a neighbouring edge ends up across it, and real maps got
    self-intersecting rings. So the outlines are simplified where they are written,
    with the tolerance of a degree of latitude (the longest): north-south it is the
    tolerance asked for, east-west ``cos(latitude)`` times stricter; never more.
    """
    degree_m = math.pi * 6378137.0 / 180.0  # metres per degree of latitude (sphere)
    return _simplify(geoms, simplify_m / degree_m, coverage=coverage)


def _repair(geoms: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Make invalid polygons valid (their polygonal part), one by one.

    ``make_valid`` keeps every vertex and only splits where rings cross, so neighbours
    in a coverage keep their shared edges: no gap and no overlap appear.
    """
    bad = np.flatnonzero(~shapely.is_valid(geoms))
    for i in bad:
        fixed = shapely.make_valid(geoms[i])
        if shapely.get_type_id(fixed) == 7:  # GeometryCollection: keep the polygons
            parts = [g for g in shapely.get_parts(fixed)
                     if shapely.get_type_id(g) in (3, 6)]
            fixed = shapely.union_all(parts) if parts else shapely.Polygon()
        geoms[i] = fixed
    return geoms


def _pixel_metres(scene: Scene, metric: Metric) -> float:
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
