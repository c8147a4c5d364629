"""The ground sample distance a model is trained at, from the imagery's georeferencing."""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import Sequence

from geoseg.io import ground_sample_distance, open_raster
from geoseg.training.config import TrainConfig

__all__ = ["imagery_gsd", "with_gsd"]


def with_gsd(config: TrainConfig, images: Sequence[str | os.PathLike[str]]
             ) -> tuple[TrainConfig, str]:
    """``config`` with the GSD to record: ``--gsd`` if given, else the imagery's."""
    if config.gsd is not None:
        return config, "--gsd"
    gsd, how = imagery_gsd(images)
    return dataclasses.replace(config, gsd=gsd), how


def imagery_gsd(paths: Sequence[str | os.PathLike[str]]) -> tuple[float | None, str]:
    """GSD in metres of training images, and how it was found (for the provenance).

    Each georeferenced image gives its pixel size (:func:`geoseg.io.ground_sample_distance`:
    projected CRS in metres; geographic CRS converted at the image's centre); the result
    is the median over them. Without georeferencing the GSD stays unknown (None).
    """
    found: list[float] = []
    crss: set[str] = set()
    for path in paths:
        with open_raster(path) as src:
            gsd = ground_sample_distance(src.crs, src.transform, src.width, src.height)
            if gsd is not None:
                found.append(gsd)
                crss.add(src.crs.to_string())
    if not found:
        return None, "unknown: the imagery is not georeferenced (pass --gsd)"
    where = ", ".join(sorted(crss)[:3]) + (", ..." if len(crss) > 3 else "")
    many = f"median of {len(found)} images, " if len(found) > 1 else ""
    return statistics.median(found), f"from the imagery's georeferencing ({many}{where})"
