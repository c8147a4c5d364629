"""The value range a model was trained on, checked against a scene, and ``--scale``.

A model trained on 8-bit imagery sees garbage in uint16 or 0..1 reflectance and gives one
class everywhere, silently. The bundle spec records the training input's data type and,
per band, the 1st and 99th percentiles of its valid pixels (``input_dtype``,
``input_range``); bundles without them fall back to ``mean +- 2.33 std`` (the 1st/99th
percentiles of a normal law). Before predicting, :func:`range_warning` compares a
decimated read of the scene with that range and says, in one line, when it is far off (a
scene whose every band lies inside the trained range is never "too narrow": a small
homogeneous crop of a wide training domain, one forest in a global model, is normal);
:func:`scaled_spec` applies ``--scale``: a factor, or ``percentile`` (each band's 1st..99th
percentiles stretched onto the trained ones). Any such affine scaling ``a x + b`` is
folded into the normalisation (``mean' = (mean - b) / a``, ``std' = std / a``), so the
model code does not change and nodata is still filled with the (new) mean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import GeosegWarning, InputError
from geoseg.io import Scene
from geoseg.models.spec import ModelSpec

__all__ = ["image_range", "range_warning", "scaled_spec", "scene_range"]

#: Percentiles that define a value range (robust to a few outliers).
PERCENTILES = (1.0, 99.0)
#: A scene is "far" from the trained range when its spread differs by this factor ...
SPREAD_FACTOR = 4.0
#: ... unless every band lies inside the trained range, give or take this share of it
INSIDE_SLACK = 0.05
_Z99 = 2.326  # the 99th percentile of a standard normal law


def image_range(images: Sequence[npt.NDArray[Any]],
                valids: Sequence[npt.NDArray[np.bool_] | None],
                max_pixels: int = 1_000_000) -> tuple[tuple[float, float], ...]:
    """Per-band 1st/99th percentiles of the valid, finite pixels of ``(B, H, W)`` images.

    A regular subsample of at most ``max_pixels`` pixels per band is used.
    """
    n_bands = images[0].shape[0]
    total = sum(int(im.shape[1] * im.shape[2]) for im in images)
    step = max(1, total // max_pixels)
    parts = []
    for im, valid in zip(images, valids, strict=True):
        data = im.reshape(n_bands, -1)[:, ::step].astype(np.float64)
        if valid is not None:
            # validity per band (bands, H, W) or per pixel (H, W): invalid values -> NaN
            keep = valid.reshape(valid.shape[0] if valid.ndim == 3 else 1, -1)[:, ::step]
            data = np.where(keep, data, np.nan)
        parts.append(data)
    values = np.concatenate(parts, axis=1)
    out = []
    for row in values:
        band = row[np.isfinite(row)]
        if band.size == 0:
            raise InputError("no valid pixel to measure the input value range from")
        lo, hi = np.percentile(band, PERCENTILES)
        out.append((float(lo), float(hi)))
    return tuple(out)


def trained_range(spec: ModelSpec) -> tuple[tuple[float, float], ...]:
    """Return the spec's ``input_range``, or ``mean +- 2.33 std`` for bundles without one."""
    if spec.input_range:
        return spec.input_range
    return tuple((m - _Z99 * s, m + _Z99 * s) for m, s in zip(spec.mean, spec.std,
                                                                strict=True))


def scene_range(scene: Scene, bands: Sequence[int], windows: int = 16, size: int = 256
                ) -> tuple[tuple[float, float], ...]:
    """Per-band 1st/99th percentiles of the valid pixels of a sample of the scene.

    Up to ``windows`` windows of ``size`` px spread evenly over the scene are read with
    :func:`geoseg.io.read_window` (the one nodata rule, the one read-error message): a
    bounded cost however large the scene, where a decimated whole-scene read would touch
    every block of a file without overviews.
    """
    from geoseg.io import read_window

    side = max(1, math.isqrt(windows))
    h, w = min(size, scene.height), min(size, scene.width)
    rows = sorted({int(r) for r in np.linspace(0, scene.height - h, side)})
    cols = sorted({int(c) for c in np.linspace(0, scene.width - w, side)})
    images, valids = [], []
    for r in rows:
        for c in cols:
            data, valid = read_window(scene.path, bands, (r, r + h), (c, c + w),
                                      with_mask=True)
            images.append(data)
            valids.append(valid)
    return image_range(images, valids)


def range_warning(scene: Scene, bands: Sequence[int], spec: ModelSpec) -> str | None:
    """One line when the scene's values are far from the trained range, else None."""
    try:
        seen = scene_range(scene, bands)
    except InputError:
        return None  # no valid pixel: nothing to compare (the run says so itself)
    trained = trained_range(spec)
    ratios, far, inside = [], False, True
    for (a, b), (lo, hi) in zip(seen, trained, strict=True):
        span, want = b - a, hi - lo
        if span > 0 and want > 0:
            ratios.append(want / span)
        if want > 0 and not lo - 2 * want <= (a + b) / 2 <= hi + 2 * want:
            far = True
        slack = INSIDE_SLACK * max(want, 0.0)
        if not lo - slack <= a <= b <= hi + slack:
            inside = False
    factor = float(np.median(ratios)) if ratios else 1.0
    if not far and (inside or 1 / SPREAD_FACTOR <= factor <= SPREAD_FACTOR):
        return None
    dtype = f"{spec.input_dtype} " if spec.input_dtype else ""
    return (f"{scene.path} ({scene.dtype}) has values {_span(seen)}; the model was "
            f"trained on {dtype}values {_span(trained)}: predictions will likely be "
            f"wrong. Pass --scale {factor:.3g} or --scale percentile")


def _span(ranges: Sequence[tuple[float, float]]) -> str:
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return f"{lo:.4g}..{hi:.4g}"


def scaled_spec(spec: ModelSpec, scene: Scene, bands: Sequence[int],
                scale: float | str) -> ModelSpec:
    """Return the spec with ``scale`` folded into its normalisation (see the module docstring).

    ``scale`` is a positive factor applied to the raw values, or ``"percentile"``.
    """
    if isinstance(scale, str):
        if scale != "percentile":
            raise InputError(f"--scale must be a positive number or 'percentile', got "
                             f"{scale!r}")
        coef = []
        for k, ((a, b), (lo, hi)) in enumerate(zip(scene_range(scene, bands),
                                                   trained_range(spec), strict=True)):
            if not b > a:  # no spread: any stretch would move its one value anywhere
                warnings.warn(f"--scale percentile: band {bands[k]} ({spec.bands[k]}) of "
                              f"{scene.path} has no spread (1st and 99th percentiles "
                              f"{a:.4g}); it is left unscaled", GeosegWarning, stacklevel=3)
                coef.append((1.0, 0.0))
                continue
            gain = (hi - lo) / (b - a) if hi > lo else 1.0
            coef.append((gain, lo - a * gain))
    else:
        if not np.isfinite(scale) or scale <= 0:
            raise InputError(f"--scale must be a positive number, got {scale}")
        coef = [(float(scale), 0.0)] * spec.n_bands
    mean = tuple((m - b) / a for m, (a, b) in zip(spec.mean, coef, strict=True))
    std = tuple(s / a for s, (a, _) in zip(spec.std, coef, strict=True))
    return spec.with_(mean=mean, std=std)
