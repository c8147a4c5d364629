"""Object-level scores: predicted footprints matched one-to-one with true footprints.

This is the SpaceNet building metric: a predicted polygon is a true positive when its
intersection over union with a still unmatched true polygon reaches the threshold
(0.5 by default); each polygon takes part in at most one match. Unmatched predictions
are false positives, unmatched true polygons false negatives.

Matching is greedy by decreasing IoU over every candidate pair (ties: lower prediction
index, then lower truth index). With a threshold of 0.5 or more and polygons that do not
overlap within each set, every polygon has at most one candidate, so the matching is
unique and greedy equals optimal; below 0.5 greedy is the usual (COCO-style) rule.
IoU is computed on areas in a common metric CRS: the truth's CRS when it is projected,
else the prediction's when projected, else the UTM zone of the truth.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import GeosegWarning, InputError
from geoseg.scoring.mosaic import chip_paths, prediction_mosaic

__all__ = ["ObjectScore", "load_polygons", "score_objects"]

RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".img", ".jp2"})


@dataclass(frozen=True)
class ObjectScore:
    """Object-level precision, recall and F1, with the matched pairs.

    Attributes
    ----------
    tp, fp, fn : int
        Matched predictions, unmatched predictions, unmatched true polygons.
    precision, recall, f1 : float
        ``tp / (tp + fp)``, ``tp / (tp + fn)`` and their harmonic mean
        ``2 tp / (2 tp + fp + fn)``; NaN when undefined (0/0, e.g. no polygons at all).
    iou_threshold : float
        Minimum IoU of a match.
    matches : tuple of (int, int, float)
        ``(prediction index, truth index, IoU)`` of each match, indexes into the inputs'
        rows (after dropping empty geometries), by decreasing IoU.
    pred_iou, truth_iou : float64 ndarray
        For each predicted / true polygon: the IoU of its match, or of its best
        overlap when unmatched (0 when it overlaps nothing).
    crs : str
        The metric CRS areas were measured in.
    """

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    iou_threshold: float
    matches: tuple[tuple[int, int, float], ...]
    pred_iou: npt.NDArray[np.float64]
    truth_iou: npt.NDArray[np.float64]
    crs: str = ""

    @property
    def mean_iou(self) -> float:
        """Mean IoU of the matched pairs (NaN without matches)."""
        if not self.matches:
            return math.nan
        return float(np.mean([m[2] for m in self.matches]))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN becomes None)."""
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "precision": num(self.precision), "recall": num(self.recall),
            "f1": num(self.f1), "mean_matched_iou": num(self.mean_iou),
            "iou_threshold": self.iou_threshold, "crs": self.crs,
            "matches": [{"pred": p, "truth": t, "iou": iou}
                        for p, t, iou in self.matches],
            "pred_iou": self.pred_iou.tolist(), "truth_iou": self.truth_iou.tolist(),
            "convention": "one-to-one matching at IoU >= threshold, greedy by "
                          "decreasing IoU; precision/recall/F1 NaN (null) when 0/0",
        }

    def table(self) -> str:
        """Return the scores as a short readable text."""
        def fmt(x: float) -> str:
            return "nan" if math.isnan(x) else f"{x:.4f}"

        return "\n".join([
            f"objects matched at IoU >= {self.iou_threshold:g} (areas in {self.crs})",
            f"TP {self.tp}  FP {self.fp}  FN {self.fn}",
            f"precision {fmt(self.precision)}  recall {fmt(self.recall)}  "
            f"F1 {fmt(self.f1)}  mean matched IoU {fmt(self.mean_iou)}",
        ])


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def load_polygons(source: str | os.PathLike[str] | Any, *, what: str,
                  label_field: str | None = None,
                  classes: Sequence[str | int] | None = None,
                  workers: int | None = None) -> Any:
    """Read polygons (a vector file, a GeoDataFrame, or a class map to vectorize).

    Parameters
    ----------
    source : path or GeoDataFrame
        Vector file, GeoDataFrame or class-map raster (vectorized with
        :func:`geoseg.vector.pipeline.vectorize`, ``classes`` selecting the object classes).
    what : str
        "prediction" or "labels", for messages.
    label_field, classes : optional
        Keep only features whose ``label_field`` value is in ``classes`` (names or ids).

    Returns
    -------
    GeoDataFrame
        Polygonal, non-empty, valid geometries, with a CRS.
    """
    import geopandas as gpd
    import shapely

    if isinstance(source, gpd.GeoDataFrame):
        gdf, name = source, f"{what} GeoDataFrame"
    else:
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise InputError(f"{what} not found: {path}")
        if path.suffix.lower() in RASTER_SUFFIXES:
            from geoseg.vector.pipeline import vectorize

            gdf = vectorize(path, classes=list(classes) if classes else None,
                            workers=workers)
            label_field, classes = None, None  # already selected
        else:
            try:
                gdf = gpd.read_file(path)
            except Exception as exc:  # noqa: BLE001  # pyogrio raises several unrelated types
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputError(f"cannot read {what} polygons {path} ({msg})") \
                    from None
    if gdf.crs is None:
        raise InputError(f"{what} polygons {name} have no CRS; set one (e.g. ogr2ogr "
                         f"-a_srs EPSG:4326) so they can be compared")
    if label_field is not None and classes:
        if label_field not in gdf.columns:
            fields = ", ".join(c for c in gdf.columns if c != gdf.geometry.name)
            raise InputError(f"{what} polygons {name} have no field {label_field!r}; "
                             f"fields: {fields or 'none'}")
        wanted = {str(c) for c in classes}
        gdf = gdf[gdf[label_field].astype(str).isin(wanted)]
    geoms = gdf.geometry.to_numpy()
    keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    gdf = gdf[keep]
    geoms = gdf.geometry.to_numpy()
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():  # repair; keep only the polygonal part of what make_valid gives
        fixed = shapely.make_valid(geoms[invalid])
        geoms[invalid] = [_polygonal(g) for g in fixed]
    polygonal = np.isin(shapely.get_type_id(geoms), [3, 6])  # Polygon, MultiPolygon
    if not polygonal.all():
        warnings.warn(f"{(~polygonal).sum()} non-polygon features of {name} are "
                      f"ignored", GeosegWarning, stacklevel=3)
    out = gpd.GeoDataFrame(gdf.drop(columns=gdf.geometry.name)[polygonal],
                           geometry=geoms[polygonal], crs=gdf.crs)
    return out.reset_index(drop=True)


def _polygonal(geom: Any) -> Any:
    import shapely

    if shapely.get_type_id(geom) == 7:  # GeometryCollection
        parts = [g for g in shapely.get_parts(geom) if shapely.get_type_id(g) in (3, 6)]
        return shapely.union_all(parts) if parts else shapely.Polygon()
    return geom


def _raster_footprint(pred: Any) -> tuple[Any, Any] | None:
    """Bounds of a class-map prediction (shapely box, CRS); None for vector input."""
    if not isinstance(pred, (str, os.PathLike)) or \
            Path(pred).suffix.lower() not in RASTER_SUFFIXES:
        return None
    import shapely

    from geoseg.io import open_scene

    scene = open_scene(pred)
    if scene.crs is None:
        return None
    t = scene.transform
    xs, ys = (t.c, t.c + t.a * scene.width), (t.f, t.f + t.e * scene.height)
    return shapely.box(min(xs), min(ys), max(xs), max(ys)), scene.crs


def _clip(truth: Any, footprint: Any, crs: Any) -> Any:
    """Cut true polygons to where there is a prediction (outside: no false negatives)."""
    import geopandas as gpd
    import shapely

    area = gpd.GeoSeries([footprint], crs=crs).to_crs(truth.crs).iloc[0]
    geoms = truth.geometry.to_numpy()
    inside = shapely.intersects(geoms, area)
    cut = np.array([_polygonal(g) for g in shapely.intersection(geoms[inside], area)],
                   dtype=object)
    keep = ~shapely.is_empty(cut) & (shapely.area(cut) > 0)
    kept = truth[inside][keep]
    return gpd.GeoDataFrame(kept.drop(columns=kept.geometry.name), geometry=cut[keep],
                            crs=truth.crs).reset_index(drop=True)


def _metric_crs(pred: Any, truth: Any) -> Any:
    if truth.crs.is_projected:
        return truth.crs
    if pred.crs.is_projected:
        return pred.crs
    return truth.estimate_utm_crs() if len(truth) else pred.estimate_utm_crs()


def score_objects(pred: str | os.PathLike[str] | Any,
                  truth: str | os.PathLike[str] | Any, *, iou_threshold: float = 0.5,
                  label_field: str | None = None,
                  classes: Sequence[str | int] | None = None,
                  workers: int | None = None) -> ObjectScore:
    """Match predicted and true polygons one-to-one and score them (SpaceNet metric).

    Parameters
    ----------
    pred : path or GeoDataFrame
        Predicted footprints: a vector file, a GeoDataFrame, a class map (GeoTIFF)
        that is vectorized first, or a folder or glob of class-map chips (one VRT
        mosaic). For a class map, true polygons are cut to its footprint (the chips'
        boxes): truth where nothing was predicted is not a false negative.
    truth : path or GeoDataFrame
        True footprints.
    iou_threshold : float
        Minimum IoU of a match, in (0, 1].
    label_field, classes : optional
        Keep only features whose ``label_field`` is one of ``classes``; for a class map,
        ``classes`` selects the classes to vectorize (default: all but background).
    workers : int, optional
        Processes for vectorizing a class map.

    Returns
    -------
    ObjectScore

    Raises
    ------
    InputError
        Unreadable input, no CRS, a bad threshold or a missing field.

    Examples
    --------
    >>> import geopandas as gpd, shapely
    >>> t = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:32633")
    >>> p = gpd.GeoDataFrame(geometry=[shapely.box(2, 0, 12, 10)], crs="EPSG:32633")
    >>> s = score_objects(p, t)
    >>> s.tp, s.fp, s.fn, round(s.matches[0][2], 4)
    (1, 0, 0, 0.6667)
    """
    import shapely

    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"IoU threshold must be in (0, 1], got {iou_threshold}")
    chips = chip_paths(pred) if isinstance(pred, (str, os.PathLike)) else None
    if chips is not None:  # a folder or glob of class-map chips: one VRT mosaic
        with prediction_mosaic(chips, os.fspath(pred)) as mosaic:
            p = load_polygons(mosaic.path, what="prediction", classes=classes,
                              workers=workers)
        footprint: tuple[Any, Any] | None = (mosaic.footprint(), mosaic.crs)
    else:
        p = load_polygons(pred, what="prediction", label_field=label_field,
                          classes=classes, workers=workers)
        footprint = _raster_footprint(pred)
    t = load_polygons(truth, what="labels", label_field=label_field, classes=classes)
    if footprint is not None:
        t = _clip(t, *footprint)
    crs = _metric_crs(p, t)
    pg = p.geometry.to_crs(crs).to_numpy() if p.crs != crs else p.geometry.to_numpy()
    tg = t.geometry.to_crs(crs).to_numpy() if t.crs != crs else t.geometry.to_numpy()
    pi, ti = shapely.STRtree(tg).query(pg, predicate="intersects")
    inter = shapely.area(shapely.intersection(pg[pi], tg[ti]))
    union = shapely.area(pg[pi]) + shapely.area(tg[ti]) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    pred_iou = np.zeros(len(pg))
    truth_iou = np.zeros(len(tg))
    np.maximum.at(pred_iou, pi, iou)
    np.maximum.at(truth_iou, ti, iou)
    # A hand-written greedy pass: no library does one-to-one IoU matching of polygons.
    order = np.lexsort((ti, pi, -iou))
    used_p = np.zeros(len(pg), bool)
    used_t = np.zeros(len(tg), bool)
    matches: list[tuple[int, int, float]] = []
    for k in order:
        if iou[k] < iou_threshold:
            break
        a, b = int(pi[k]), int(ti[k])
        if not used_p[a] and not used_t[b]:
            used_p[a] = used_t[b] = True
            matches.append((a, b, float(iou[k])))
            pred_iou[a] = truth_iou[b] = float(iou[k])
    tp = len(matches)
    fp, fn = len(pg) - tp, len(tg) - tp
    return ObjectScore(tp=tp, fp=fp, fn=fn, precision=_ratio(tp, tp + fp),
                       recall=_ratio(tp, tp + fn), f1=_ratio(2 * tp, 2 * tp + fp + fn),
                       iou_threshold=iou_threshold, matches=tuple(matches),
                       pred_iou=pred_iou, truth_iou=truth_iou, crs=str(crs))
