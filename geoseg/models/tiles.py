"""Tile sides and overlaps: one rule for every command that takes a tile size.

It lives with the models (a bundle records its tile and overlap) so that bundles, training
and prediction share it; :mod:`geoseg.prediction.limits` re-exports it with the run limits.
"""

from __future__ import annotations

from geoseg.errors import InputError

__all__ = ["MAX_TILE", "OVERLAP_SHARE", "TILE_MULTIPLE", "default_overlap", "validate_tile"]

#: Tile sides must be multiples of this (the encoders' output stride).
TILE_MULTIPLE = 32
#: Largest tile side accepted (a 4096² tile already needs tens of GB of activations).
MAX_TILE = 4096
#: Without a model to take it from, the default overlap is this share of the tile (1/8:
#: 64 px of a 512 px tile).
OVERLAP_SHARE = 8


def validate_tile(tile: int, what: str = "--tile-size") -> int:
    """Return ``tile`` if it is a multiple of 32 in ``32..MAX_TILE``; else raise."""
    if tile < TILE_MULTIPLE or tile > MAX_TILE or tile % TILE_MULTIPLE:
        raise InputError(f"{what} {tile} must be a multiple of {TILE_MULTIPLE} between "
                         f"{TILE_MULTIPLE} and {MAX_TILE}")
    return tile


def default_overlap(tile: int, model_tile: int | None = None,
                    model_overlap: int | None = None) -> int:
    """Return the overlap of a ``tile`` px tile when none is given (one rule for all).

    The overlap follows the tile: a model's own overlap at its own tile size, scaled with
    the tile (the same share of it: ``model_overlap * tile / model_tile``); without a
    model (``train``, ``bundle import``) an eighth of the tile. Never more than half.
    """
    if model_tile and model_overlap is not None:
        return min(int(model_overlap) * int(tile) // int(model_tile), int(tile) // 2)
    return int(tile) // OVERLAP_SHARE
