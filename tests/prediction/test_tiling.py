"""Tile grid and chunk layout invariants (the basis of overlap-add blending)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from geoseg.errors import InputError
from geoseg.prediction.stitching import blend_window
from geoseg.prediction.tiling import plan_tiles, tile_origins


@pytest.mark.parametrize("n", [1, 31, 127, 128, 129, 200, 224, 225, 511, 900, 1000, 4097])
@pytest.mark.parametrize(("tile", "overlap"), [(128, 0), (128, 32), (128, 64), (256, 16)])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_axis_chunks_invariants(n: int, tile: int, overlap: int, k: int) -> None:
    grid = plan_tiles((n, 7), tile=tile, overlap=overlap, chunk_tiles=k)
    origins, chunks = grid.origins_y, grid.rows
    # tiles cover the axis, and each belongs to exactly one chunk
    cover = np.zeros(n, int)
    for o in origins:
        cover[o:o + tile] += 1
    assert (cover >= 1).all()
    owned = [t for c in chunks for t in c.tiles]
    assert owned == list(range(len(origins)))
    # cores partition [0, n); footprints start at the core; tails fit in the next core
    assert chunks[0].core[0] == 0 and chunks[-1].core[1] == n
    for a, b in itertools.pairwise(chunks):
        assert a.core[1] == b.core[0]
        assert a.tail <= b.core_size, (a, b)
    for c in chunks:
        assert c.footprint[0] == c.core[0]
        assert c.footprint[1] == min(origins[c.tiles[-1]] + tile, n)
    assert chunks[-1].tail == 0


def test_origins_examples() -> None:
    assert tile_origins(1000, 512, 448) == (0, 448, 488)
    assert tile_origins(512, 512, 448) == (0,)
    assert tile_origins(100, 512, 448) == (0,)


def test_window_is_a_partition_of_unity() -> None:
    tile, overlap = 64, 16
    w = blend_window(tile, overlap)[tile // 2]
    stride = tile - overlap
    total = np.zeros(stride * 3 + tile)
    for i in range(4):
        total[i * stride:i * stride + tile] += w
    inner = total[overlap:-overlap]
    np.testing.assert_allclose(inner, 1.0, atol=1e-6)
    assert (w > 0).all()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tile": 100}, "multiple of 32"),
    ({"tile": 128, "overlap": 80}, "overlap must be"),
    ({"chunk_tiles": 0}, "chunk_tiles"),
])
def test_bad_plans(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        plan_tiles((100, 100), **kwargs)
