"""The typed, versioned description of a model bundle (stored as JSON in the file)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from geoseg.errors import BundleError

__all__ = ["FORMAT_VERSION", "ClassInfo", "ModelSpec"]

#: Major version of the bundle format. A loader rejects other majors.
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ClassInfo:
    """One output class: its id in the class map, a name and an RGB colour."""

    id: int
    name: str
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        if not 0 <= self.id <= 254:
            raise BundleError(f"class id {self.id} out of range 0..254 (255 is nodata)")
        if not self.name or "," in self.name:
            raise BundleError(f"class name {self.name!r} must be non-empty without commas")
        if len(self.color) != 3 or not all(0 <= c <= 255 for c in self.color):
            raise BundleError(f"class {self.name!r}: colour {self.color} is not RGB 0..255")


def _check_normalisation(mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Refuse a non-finite mean, or a std that is not finite and positive.

    NaN compares false with everything: without this a NaN std passed ``> 0`` and the
    model saw NaN everywhere (one class, silently).
    """
    def text(values: tuple[float, ...]) -> str:
        return ",".join(f"{v:g}" for v in values)

    if not all(math.isfinite(m) for m in mean):
        raise BundleError(f"mean must be finite numbers, got {text(mean)}")
    if not all(math.isfinite(s) and s > 0 for s in std):
        raise BundleError(f"std must be finite positive numbers, got {text(std)}")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to use a model's weights, without reading any code.

    Attributes
    ----------
    architecture, backbone : str
        Registry keys (``geoseg models``), resolved only through the registries.
    bands : tuple of str
        Names of the input bands in model order; ``len(bands)`` is the input channels.
    mean, std : tuple of float
        Per-band normalisation applied to raw pixel values: ``(x - mean) / std``.
    classes : tuple of ClassInfo
        Output classes; the model's channel ``k`` is ``classes[k]``.
    tile_size, overlap : int
        Default tile side and tile overlap for inference, pixels.
    gsd_m : float
        Ground sample distance of the training data, metres (NaN if unknown).
    scale_range : tuple of (float, float), or None
        The zoom range of the training crops (``train --scale-jitter MIN,MAX``: a crop of
        ``size / s`` pixels was shown at ``size``), so the model has seen GSDs from
        ``gsd_m / MAX`` to ``gsd_m / MIN`` (:meth:`seen_gsd`); ``(1, 1)`` without scale
        jitter, None where unknown (bundles that predate it).
    input_dtype : str or None
        Data type of the training images (``uint8``, ``uint16``, ``float32`` ...).
    input_range : tuple of (float, float), or None
        Per band, the 1st and 99th percentiles of the training images' valid pixels
        (raw values); predict warns when a scene is far from them
        (:mod:`geoseg.models.value_range`). None for bundles that predate it.
    input_kind : str or None
        What the input pixels are, in words, when it matters beyond the bands' names
        (``"Sentinel-2 L1C top-of-atmosphere reflectance x 10000 (0-10000)"``): the
        product level and units the model was trained on. None when not recorded (older
        bundles, or images with no particular kind).
    arch_params : dict
        Extra keyword arguments of the architecture builder (e.g. decoder channels).
    provenance : dict
        Free-form training provenance (data, epochs, validation mIoU, geoseg version).
    """

    architecture: str
    backbone: str
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[ClassInfo, ...]
    tile_size: int = 512
    overlap: int = 64
    gsd_m: float = math.nan
    scale_range: tuple[float, float] | None = None
    input_dtype: str | None = None
    input_range: tuple[tuple[float, float], ...] | None = None
    input_kind: str | None = None
    arch_params: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # JSON has no tuples: normalise sequences so a spec equals its round trip.
        object.__setattr__(self, "bands", tuple(self.bands))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "arch_params", {
            k: tuple(v) if isinstance(v, list) else v for k, v in self.arch_params.items()})
        if self.scale_range is not None:
            lo, hi = (float(v) for v in self.scale_range)
            if not (0 < lo <= hi and math.isfinite(hi)):
                raise BundleError(f"scale_range must be 0 < MIN <= MAX, got {self.scale_range}")
            object.__setattr__(self, "scale_range", (lo, hi))
        if self.input_range is not None:
            object.__setattr__(self, "input_range", tuple(
                (float(lo), float(hi)) for lo, hi in self.input_range))
        n = len(self.bands)
        if self.input_range is not None and len(self.input_range) != n:
            raise BundleError(f"input_range has {len(self.input_range)} entries for "
                              f"{n} bands")
        if n == 0:
            raise BundleError("a model needs at least one input band")
        if len(self.mean) != n or len(self.std) != n:
            raise BundleError(f"mean/std have {len(self.mean)}/{len(self.std)} values for "
                              f"{n} bands")
        _check_normalisation(self.mean, self.std)
        if not self.classes:
            raise BundleError("a model needs at least one class")
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise BundleError(f"duplicate class ids {ids}")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise BundleError(f"duplicate class names {names}")
        if self.tile_size < 32 or self.tile_size % 32:
            raise BundleError(f"tile_size must be a multiple of 32 (>= 32), got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size // 2 + 1:
            raise BundleError(f"overlap {self.overlap} must be in 0..tile_size/2")

    @property
    def n_classes(self) -> int:
        """Number of output classes."""
        return len(self.classes)

    @property
    def n_bands(self) -> int:
        """Number of input bands."""
        return len(self.bands)

    def seen_gsd(self) -> tuple[float, float] | None:
        """Return the range of GSDs (metres) the model saw in training, or None if unknown.

        ``gsd_m / MAX`` to ``gsd_m / MIN`` of :attr:`scale_range`; None when the GSD or
        the zoom range is not recorded.
        """
        if self.scale_range is None or not (math.isfinite(self.gsd_m) and self.gsd_m > 0):
            return None
        return self.gsd_m / self.scale_range[1], self.gsd_m / self.scale_range[0]

    def class_names(self) -> list[str]:
        """Class names in output-channel order."""
        return [c.name for c in self.classes]

    def with_(self, **changes: Any) -> ModelSpec:
        """Return a copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["classes"] = [{"id": c.id, "name": c.name, "color": list(c.color)}
                        for c in self.classes]
        if isinstance(d["gsd_m"], float) and math.isnan(d["gsd_m"]):
            d["gsd_m"] = None
        return d

    def to_json(self) -> str:
        """Serialise to the JSON string stored in the bundle."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Validate and build a spec from a dict read from a bundle."""
        if not isinstance(d, dict):
            raise BundleError("bundle spec is not a JSON object")
        version = d.get("format_version")
        if not isinstance(version, int):
            raise BundleError("bundle spec has no integer format_version")
        if version != FORMAT_VERSION:
            raise BundleError(f"bundle format version {version} is not supported (this geoseg "
                              f"reads version {FORMAT_VERSION}); upgrade geoseg")
        try:
            classes = tuple(ClassInfo(int(c["id"]), str(c["name"]),
                                      (int(c["color"][0]), int(c["color"][1]), int(c["color"][2])))
                            for c in d["classes"])
            gsd = d.get("gsd_m")
            return cls(
                architecture=str(d["architecture"]),
                backbone=str(d["backbone"]),
                bands=tuple(str(b) for b in d["bands"]),
                mean=tuple(float(m) for m in d["mean"]),
                std=tuple(float(s) for s in d["std"]),
                classes=classes,
                tile_size=int(d.get("tile_size", 512)),
                overlap=int(d.get("overlap", 64)),
                gsd_m=math.nan if gsd is None else float(gsd),
                scale_range=None if d.get("scale_range") is None else (
                    float(d["scale_range"][0]), float(d["scale_range"][1])),
                input_dtype=None if d.get("input_dtype") is None else str(d["input_dtype"]),
                input_range=None if d.get("input_range") is None else tuple(
                    (float(lo), float(hi)) for lo, hi in d["input_range"]),
                input_kind=None if d.get("input_kind") is None else str(d["input_kind"]),
                arch_params=dict(d.get("arch_params") or {}),
                provenance=dict(d.get("provenance") or {}),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BundleError(f"bundle spec is malformed: {exc!r}") from None

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Parse the JSON string stored in a bundle."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise BundleError(f"bundle spec is not valid JSON: {exc}") from None
