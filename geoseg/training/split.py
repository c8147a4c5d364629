"""Training/validation splits that never put validation pixels beside training chips."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InputError
from geoseg.training.data import LabeledImage, Pair


def split_groups(pairs: Sequence[Pair], fraction: float, seed: int
                 ) -> tuple[list[Pair], list[Pair]]:
    """Hold out whole groups of pairs for validation, never overlapping chips.

    A group is the folder above ``images/`` (e.g. ``tile_7``) when there are several,
    else a single image. The last ``fraction`` of groups in a seeded shuffle is held out.
    """
    if not 0 < fraction < 1:
        raise InputError(f"--val-fraction must be between 0 and 1, got {fraction}")
    groups: dict[Path, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p.image.parent.parent, []).append(p)
    keys: list[Any] = sorted(groups) if len(groups) > 1 else [p.image for p in pairs]
    by_key = groups if len(groups) > 1 else {p.image: [p] for p in pairs}
    if len(keys) < 2:
        raise InputError("cannot split one image into training and validation without "
                         "overlap; give --val DIR")
    order = np.random.default_rng(seed).permutation(len(keys))
    n_val = min(max(1, round(len(keys) * fraction)), len(keys) - 1)
    val_keys = {keys[i] for i in order[len(keys) - n_val:]}
    train_pairs = [p for k in keys if k not in val_keys for p in by_key[k]]
    val_pairs = [p for k in keys if k in val_keys for p in by_key[k]]
    return train_pairs, val_pairs


def split_blocks(blocks: Sequence[LabeledImage], fraction: float, seed: int
                 ) -> tuple[list[LabeledImage], list[LabeledImage]]:
    """Hold out a seeded ``fraction`` of whole, non-overlapping spatial blocks."""
    if not 0 < fraction < 1:
        raise InputError(f"--val-fraction must be between 0 and 1, got {fraction}")
    if len(blocks) < 2:
        raise InputError("the scene gives only one block: too small to split into training "
                         "and validation without overlap; give --val, or a smaller --crop-size")
    order = np.random.default_rng(seed).permutation(len(blocks))
    n_val = min(max(1, round(len(blocks) * fraction)), len(blocks) - 1)
    held = set(order[len(blocks) - n_val:].tolist())
    return ([b for i, b in enumerate(blocks) if i not in held],
            [b for i, b in enumerate(blocks) if i in held])
