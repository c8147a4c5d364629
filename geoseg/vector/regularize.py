"""Squaring of building outlines (``vectorize(..., regularize=True)``).

Hand-written because neither shapely nor GEOS has an orthogonalisation: shapely offers
the minimum rotated rectangle (used here as the fallback), which loses L- and U-shapes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import shapely

__all__ = ["regularize_polygon"]


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
