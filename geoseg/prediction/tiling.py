"""Tile and chunk layout: a global tile grid, grouped into chunks that own their tiles.

Tiles of side ``tile`` are laid on one global grid with stride ``tile - overlap``; the last
tile of a row/column is shifted back so it ends at the scene edge (no padding except for
scenes smaller than one tile). Chunks group ``chunk_tiles`` consecutive tiles per axis.
Each tile belongs to exactly one chunk, so no tile is ever run twice; a chunk's blended
scores spill ``overlap`` pixels ("tail") past its core into the next chunk, which adds them
(overlap-add). This is why tiled prediction is identical for any chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from geoseg.errors import InputError

__all__ = ["AxisChunk", "TileGrid", "plan_tiles", "tile_origins"]


def tile_origins(n: int, tile: int, stride: int) -> tuple[int, ...]:
    """Start offsets of tiles covering ``[0, n)``; the last one ends at ``n``.

    >>> tile_origins(1000, 512, 448)
    (0, 448, 488)
    >>> tile_origins(300, 512, 448)
    (0,)
    """
    if n <= tile:
        return (0,)
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)
    return tuple(starts)


@dataclass(frozen=True, slots=True)
class AxisChunk:
    """One chunk along one axis.

    ``tiles`` are the indices of the tile origins it owns; ``core`` is the half-open pixel
    range whose final result it produces; ``footprint`` is the range its tiles cover
    (clipped to the scene); ``footprint[0] == core[0]`` and the part past ``core[1]`` is the
    tail handed to the next chunk.
    """

    index: int
    tiles: range
    core: tuple[int, int]
    footprint: tuple[int, int]

    @property
    def core_size(self) -> int:
        """Pixels in the core."""
        return self.core[1] - self.core[0]

    @property
    def tail(self) -> int:
        """Pixels past the core that spill into the next chunk."""
        return self.footprint[1] - self.core[1]


def _axis_chunks(n: int, origins: tuple[int, ...], tile: int, per_chunk: int
                 ) -> tuple[AxisChunk, ...]:
    chunks = []
    n_tiles = len(origins)
    firsts = list(range(0, n_tiles, per_chunk))
    if len(firsts) > 1 and firsts[-1] == n_tiles - 1:
        # A last chunk of one tile: that tile is usually shifted back to end at the scene
        # edge, and as a chunk of its own it would leave the previous chunk a core thinner
        # than the tail spilling into it. Give it to the previous chunk instead.
        firsts.pop()
    for index, first in enumerate(firsts):
        last = firsts[index + 1] if index + 1 < len(firsts) else n_tiles
        start = origins[first]
        stop = origins[last] if last < n_tiles else n
        foot_stop = min(origins[last - 1] + tile, n)
        chunks.append(AxisChunk(index, range(first, last), (start, stop), (start, foot_stop)))
    return tuple(chunks)


@dataclass(frozen=True)
class TileGrid:
    """The tile grid of a scene and its grouping into chunks.

    Attributes
    ----------
    height, width : int
        Scene size in pixels.
    tile : int
        Tile side in pixels.
    overlap : int
        Pixels shared by neighbouring tiles.
    chunk_tiles : int
        Tiles per chunk along each axis.
    multiple : int
        The tile side must be a multiple of this: 32 for model tiles; 1 for the scene-pixel
        tiles of a resampled run (:mod:`geoseg.prediction.resample`), whose model tiles are
        checked on the working grid.
    """

    height: int
    width: int
    tile: int
    overlap: int
    chunk_tiles: int
    multiple: int = 32

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise InputError(f"scene size must be positive, got {self.height}x{self.width}")
        if self.tile < max(self.multiple, 2) or self.tile % self.multiple:
            raise InputError(f"tile size must be a multiple of {self.multiple} "
                             f"(>= {max(self.multiple, 2)}), got {self.tile}")
        if not 0 <= self.overlap <= self.tile // 2:
            raise InputError(f"overlap must be between 0 and half the tile size "
                             f"({self.tile // 2}), got {self.overlap}")
        if self.chunk_tiles < 1:
            raise InputError(f"chunk_tiles must be >= 1, got {self.chunk_tiles}")

    @property
    def stride(self) -> int:
        """Distance between consecutive tile origins."""
        return self.tile - self.overlap

    @cached_property
    def origins_y(self) -> tuple[int, ...]:
        """Row offsets of the tiles."""
        return tile_origins(self.height, self.tile, self.stride)

    @cached_property
    def origins_x(self) -> tuple[int, ...]:
        """Column offsets of the tiles."""
        return tile_origins(self.width, self.tile, self.stride)

    @cached_property
    def rows(self) -> tuple[AxisChunk, ...]:
        """Chunks along the rows."""
        return _axis_chunks(self.height, self.origins_y, self.tile, self.chunk_tiles)

    @cached_property
    def cols(self) -> tuple[AxisChunk, ...]:
        """Chunks along the columns."""
        return _axis_chunks(self.width, self.origins_x, self.tile, self.chunk_tiles)

    @property
    def n_tiles(self) -> int:
        """Number of tiles the scene needs."""
        return len(self.origins_y) * len(self.origins_x)

    def chunk_tile_count(self, row: AxisChunk, col: AxisChunk) -> int:
        """Return the number of tiles one chunk runs."""
        return len(row.tiles) * len(col.tiles)


def plan_tiles(shape: tuple[int, int], *, tile: int = 512, overlap: int = 64,
               chunk_tiles: int = 4, multiple: int = 32) -> TileGrid:
    """Plan tiles and chunks for a scene of ``shape = (height, width)`` pixels."""
    return TileGrid(int(shape[0]), int(shape[1]), int(tile), int(overlap), int(chunk_tiles),
                    int(multiple))
