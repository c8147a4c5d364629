"""Blending overlapping tiles: weight windows, overlap-add across chunks, argmax.

The cosine window is flat (weight 1) in a tile's centre and ramps with ``sin^2`` over the
``overlap`` pixels at each side. Two neighbouring tiles overlapping by exactly ``overlap``
pixels then have weights ``sin^2 + cos^2 = 1``: a partition of unity, so blending never
changes a pixel covered by one tile's centre and makes seams smooth. Nodata pixels get
weight 0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from geoseg.errors import InputError

__all__ = ["BlendWindow", "blend_window", "combine_chunk", "probabilities_u8"]

BlendWindow = Literal["cosine", "flat"]


def blend_window(tile: int, overlap: int, kind: BlendWindow = "cosine"
                 ) -> npt.NDArray[np.float32]:
    """2-D weight window of side ``tile``: separable, positive everywhere.

    >>> w = blend_window(8, 2)[4]          # one row through the centre
    >>> bool(np.allclose(w[6:] + w[:2], 1.0))  # next tile starts 6 px later: sums to 1
    True
    >>> float(w[4])
    1.0
    """
    if kind == "flat" or overlap == 0:
        return np.ones((tile, tile), np.float32)
    if kind != "cosine":
        raise InputError(f"unknown blend window {kind!r}; use 'cosine' or 'flat'")
    ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
    w1 = np.ones(tile, np.float64)
    w1[:overlap] = ramp
    w1[tile - overlap:] = ramp[::-1]
    return np.outer(w1, w1).astype(np.float32)


def combine_chunk(core: npt.NDArray[np.float32],
                  top: npt.NDArray[np.float32] | None,
                  left: npt.NDArray[np.float32] | None,
                  corner: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
    """Overlap-add the tails neighbouring chunks spilled into this chunk's core.

    ``core`` is ``(C + 1, h, w)`` (weighted scores and, last, the weight sum). ``top`` is
    the tail of the chunk above (its rows past its core, over this chunk's columns),
    ``left`` that of the chunk to the left, ``corner`` that of the chunk above-left.
    ``core`` is modified in place and returned.
    """
    # np.add(out=view): ``core[...] += x`` would also copy the summed view onto itself
    if top is not None:
        view = core[:, : top.shape[1], :]
        np.add(view, top, out=view)
    if left is not None:
        view = core[:, :, : left.shape[2]]
        np.add(view, left, out=view)
    if corner is not None:
        view = core[:, : corner.shape[1], : corner.shape[2]]
        np.add(view, corner, out=view)
    return core


def probabilities_u8(acc: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Blended class probabilities quantised to uint8 (``p = value / 254``; 255 = nodata).

    ``acc`` is ``(C + 1, h, w)``: weighted probabilities, then the weight sum.
    """
    weight = acc[-1]
    valid = weight > 0
    scale = np.divide(254.0, weight, out=np.zeros_like(weight), where=valid)
    out: npt.NDArray[np.uint8] = np.rint(acc[:-1] * scale).astype(np.uint8)
    out[:, ~valid] = 255
    return out
