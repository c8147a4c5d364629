"""geoseg: semantic segmentation of satellite and aerial scenes.

The user-facing verbs are re-exported here; the ones that need torch load lazily, so
``import geoseg`` stays cheap.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from geoseg.errors import GeosegError

try:
    __version__ = version("geoseg")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

__all__ = ["GeosegError", "__version__", "load_bundle", "open_scene", "predict", "score",
           "score_objects", "train", "vectorize"]

_LAZY = {
    "predict": "geoseg.prediction.pipeline",
    "train": "geoseg.training.loop",
    "load_bundle": "geoseg.models.bundle",
    "open_scene": "geoseg.io",
    "score": "geoseg.scoring.pipeline",
    "score_objects": "geoseg.scoring.objects",
    "vectorize": "geoseg.vector.pipeline",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
