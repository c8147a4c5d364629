"""One inference configuration: how a model runs over a scene.

:class:`InferenceConfig` is the single place the knobs of a prediction live (tile, overlap,
batch, chunking, device, precision, engine, blend window, int8 calibration source). It is
frozen, checked when built, and filled from the model spec's defaults in one place
(:meth:`InferenceConfig.resolve`), so the pipeline, the dask graph, workers and the CLI all
read the same values instead of passing a dozen arguments along.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from geoseg.errors import InputError

if TYPE_CHECKING:
    from geoseg.models.spec import ModelSpec

__all__ = ["BLENDS", "ENGINES", "PRECISIONS", "TTAS", "Engine", "InferenceConfig", "Precision"]

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
Engine = Literal["auto", "eager", "compile", "openvino", "onnxruntime"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16", "int8")
ENGINES: tuple[str, ...] = ("auto", "eager", "compile", "openvino", "onnxruntime")
BLENDS: tuple[str, ...] = ("cosine", "flat")
TTAS: tuple[str, ...] = ("none", "flips")


@dataclass(frozen=True, slots=True)
class InferenceConfig:
    """How a model runs over a scene.

    Parameters
    ----------
    tile, overlap : int or None
        Tile side and overlap, pixels; ``None`` = the model's; an overlap not given
        follows the tile (see :meth:`resolve`).
    batch_size : int
        Tiles per forward pass.
    chunk_tiles : int
        Tiles per dask chunk side (memory per chunk grows with its square).
    device : str
        ``auto|cpu|cuda|cuda:N|mps``.
    precision : str
        ``auto|fp32|bf16|fp16|int8`` (``auto`` never picks int8).
    engine : str
        ``auto|eager|compile|openvino|onnxruntime``.
    blend : str
        Blend window of overlapping tiles, ``cosine`` or ``flat``.
    calibration : str or None
        int8 only: a raster or a directory of rasters to draw calibration tiles from
        (default: the scene being predicted).
    resample : str or float
        ``auto`` (default): run the model at its own ground sample distance when the
        scene's differs from it by more than 1.5x (:mod:`geoseg.prediction.resample`);
        ``off``: never; a number: the working GSD in metres. :func:`~geoseg.prediction.
        pipeline.predict` resolves it to ``off`` or the working GSD.
    tta : str
        Test-time augmentation: ``none`` or ``flips`` (the mean of the tile's softmax
        and those of its horizontal, vertical and double flip; 4x the model time).
    """

    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    chunk_tiles: int = 4
    device: str = "auto"
    precision: str = "auto"
    engine: str = "auto"
    blend: str = "cosine"
    calibration: str | None = None
    resample: str | float = "auto"
    tta: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "resample", _check_resample(self.resample))
        _check_choice("tta", self.tta, TTAS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("engine", self.engine, ENGINES)
        _check_choice("blend", self.blend, BLENDS)
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.chunk_tiles < 1:
            raise InputError(f"chunk tiles must be >= 1, got {self.chunk_tiles}")
        if self.overlap is not None and self.overlap < 0:
            raise InputError(f"overlap must be >= 0 px, got {self.overlap}")

    def with_(self, **changes: Any) -> InferenceConfig:
        """Copy with ``changes``; a ``None`` value keeps the current field (a typo raises)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown inference setting(s) {unknown}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def resolve(self, spec: ModelSpec) -> InferenceConfig:
        """Fill ``tile`` and ``overlap`` from the model's defaults (the only place it happens).

        An overlap not given follows the tile (:func:`~geoseg.prediction.limits.
        default_overlap`): the model's own at its tile size, the same share of another.
        """
        from geoseg.prediction.limits import default_overlap

        tile = int(self.tile or spec.tile_size)
        overlap = int(default_overlap(tile, spec.tile_size, spec.overlap)
                      if self.overlap is None else self.overlap)
        return replace(self, tile=tile, overlap=overlap)

    @property
    def tile_px(self) -> int:
        """Tile side of a resolved config (raises if :meth:`resolve` was not called)."""
        if self.tile is None:
            raise RuntimeError("InferenceConfig.resolve(spec) must run before tile_px")
        return self.tile

    @property
    def overlap_px(self) -> int:
        """Overlap of a resolved config."""
        if self.overlap is None:
            raise RuntimeError("InferenceConfig.resolve(spec) must run before overlap_px")
        return self.overlap


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}; use {', '.join(choices)}")


def _check_resample(value: str | float) -> str | float:
    """``auto``, ``off`` or a positive working GSD in metres (a number or its text)."""
    if isinstance(value, str) and value.strip().lower() in ("auto", "off"):
        return value.strip().lower()
    try:
        gsd = float(value)
    except ValueError:
        raise InputError(f"resample must be auto, off or a ground sample distance in "
                         f"metres, got {value!r}") from None
    if not (gsd > 0 and math.isfinite(gsd)):
        raise InputError(f"resample GSD must be a positive number of metres, got {value!r}")
    return gsd
