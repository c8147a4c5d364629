"""Training: datasets and colour decoding, augmentation, losses, the training loop.

``train(data, output, ...)`` trains a model on image/mask pairs and writes a bundle that
``geoseg predict`` uses directly; ``tile_scene`` cuts a georeferenced scene and its labels
into such pairs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "TrainResult", "fit", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from geoseg.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'geoseg.training' has no attribute {name!r}")
