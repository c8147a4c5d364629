"""The dask task graph of a prediction: per-chunk inference (stage 1) and blending (stage 2).

Stage 1 of a chunk reads the chunk's footprint, runs its tiles through the model and
accumulates blend-weighted probabilities; it returns the chunk's core and the three tails
that spill into its right, lower and lower-right neighbours. Stage 2 adds the tails its
upper/left neighbours spilled into it (overlap-add, see
:mod:`geoseg.prediction.tiling`) and takes the argmax. Every tile runs exactly once; the
result does not depend on the chunking.

Why a hand-built overlap-add rather than ``dask.array.map_overlap``: ``map_overlap``
recomputes the halo of every chunk from its neighbours' *inputs*, so each halo tile would
run through the model twice; overlap-add shares the *outputs* instead.

Tasks find their model through :func:`get_predictor`, a per-process cache keyed by a small
:class:`ModelRef`: the graph carries a few strings, and every process (thread pool, or
dask.distributed worker) builds the model once and keeps it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.io import NODATA_CLASS, fill_nodata, read_window
from geoseg.prediction.stitching import combine_chunk, probabilities_u8
from geoseg.prediction.tiling import AxisChunk, TileGrid

if TYPE_CHECKING:
    from geoseg.prediction.inference import Predictor
    from geoseg.progress import Progress

__all__ = ["ChunkJob", "ModelRef", "build_blocks", "get_predictor", "register_predictor"]

Tails = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """How a process finds (or builds) the predictor a task needs."""

    source: str
    name: str
    sha256: str
    tile: int
    overlap: int
    batch_size: int
    device: str
    precision: str
    engine: str
    blend: str
    n_tiles: int = 0

    @property
    def key(self) -> str:
        """Cache key: same weights and settings share one predictor."""
        return (f"{self.sha256}:{self.tile}:{self.overlap}:{self.batch_size}:{self.device}:"
                f"{self.precision}:{self.engine}:{self.blend}")


_PREDICTORS: dict[str, Predictor] = {}
_PREDICTORS_LOCK = threading.Lock()
#: Set in a dask worker started for one device (``--devices``): replaces ``device="auto"``.
WORKER_DEVICE: dict[str, str] = {}
# Per-run state of the local (in-process) scheduler: progress sinks and cancelled runs.
PROGRESS: dict[str, Progress] = {}
CANCELLED: set[str] = set()


class RunCancelled(Exception):
    """Raised inside a chunk task of a run that is being abandoned."""


def register_predictor(ref: ModelRef, predictor: Predictor) -> None:
    """Make an already-built predictor available to this process's tasks."""
    with _PREDICTORS_LOCK:
        _PREDICTORS[ref.key] = predictor


def get_predictor(ref: ModelRef) -> Predictor:
    """Return this process's predictor for ``ref``, built on first use."""
    predictor = _PREDICTORS.get(ref.key)
    if predictor is not None:
        return predictor
    with _PREDICTORS_LOCK:
        predictor = _PREDICTORS.get(ref.key)
        if predictor is None:
            from geoseg.models.bundle import load_bundle
            from geoseg.prediction.inference import Predictor

            device = WORKER_DEVICE.get("device", ref.device) if ref.device == "auto" \
                else ref.device
            predictor = Predictor(load_bundle(ref.source, name=ref.name), tile=ref.tile,
                                  overlap=ref.overlap, batch_size=ref.batch_size,
                                  device=device, precision=ref.precision, engine=ref.engine,
                                  blend=ref.blend, n_tiles=ref.n_tiles)
            _PREDICTORS[ref.key] = predictor
    return predictor


def describe_predictor(ref: ModelRef) -> tuple[str, str, str]:
    """Return ``(device, precision, engine)`` this process resolved for ``ref``."""
    p = get_predictor(ref)
    return str(p.device), p.precision, p.engine


@dataclass(frozen=True, slots=True)
class ChunkJob:
    """Everything one stage-1 task needs (small and picklable)."""

    run_key: str
    ref: ModelRef
    path: str
    bands: tuple[int, ...]
    with_mask: bool
    row: AxisChunk
    col: AxisChunk
    origins_y: tuple[int, ...]
    origins_x: tuple[int, ...]
    tails_dir: str | None = None

    @property
    def n_tiles(self) -> int:
        """Tiles this chunk runs."""
        return len(self.row.tiles) * len(self.col.tiles)


def _tails_file(tails_dir: str, row: int, col: int) -> Path:
    return Path(tails_dir) / f"{row}_{col}.npz"


def save_tails(tails_dir: str, row: int, col: int, tails: Tails) -> None:
    """Persist a chunk's tails (for ``--resume``), atomically."""
    final = _tails_file(tails_dir, row, col)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.{threading.get_ident()}.npz")
    np.savez(tmp, bottom=tails[0], right=tails[1], corner=tails[2])
    os.replace(tmp, final)


def load_tails(tails_dir: str, row: int, col: int) -> Tails:
    """Tails a finished chunk saved before its result was written."""
    with np.load(_tails_file(tails_dir, row, col)) as f:
        return f["bottom"], f["right"], f["corner"]


def stage1(job: ChunkJob) -> tuple[npt.NDArray[np.float32], ...]:
    """Run one chunk's tiles; return its accumulator split into core and three tails."""
    predictor = get_predictor(job.ref)
    t = job.ref.tile
    (fy0, fy1), (fx0, fx1) = job.row.footprint, job.col.footprint
    data, band_valid = read_window(job.path, job.bands, (fy0, fy1), (fx0, fx1),
                                   with_mask=job.with_mask)
    fh, fw = fy1 - fy0, fx1 - fx0
    ph, pw = max(fh, t), max(fw, t)
    mean = predictor.spec.mean
    # Each band's nodata values become that band's mean (0 after normalisation), so
    # they do not disturb their valid neighbours; pixels where every band is nodata get
    # zero blend weight below (the one fill rule, shared with training).
    filled, valid = fill_nodata(data, band_valid, mean)
    if (ph, pw) == (fh, fw):
        x = filled
    else:  # scene smaller than a tile: pad, and give the pad no weight
        x = np.empty((data.shape[0], ph, pw), np.float32)
        x[...] = np.asarray(mean, np.float32)[:, None, None]
        x[:, :fh, :fw] = filled
        full = np.zeros((ph, pw), bool)
        full[:fh, :fw] = True if valid is None else valid
        valid = full
    c = predictor.n_classes
    acc = np.zeros((c + 1, ph, pw), np.float32)
    offsets = [(oy - fy0, ox - fx0)
               for oy in job.origins_y[job.row.tiles.start:job.row.tiles.stop]
               for ox in job.origins_x[job.col.tiles.start:job.col.tiles.stop]]
    window = predictor.window_np
    bs = predictor.batch_size
    for start in range(0, len(offsets), bs):
        if job.run_key in CANCELLED:
            raise RunCancelled(job.run_key)
        group = offsets[start:start + bs]
        batch = np.stack([x[:, y:y + t, xo:xo + t] for y, xo in group])
        probs = predictor.forward_tiles(batch)
        for (y, xo), p in zip(group, probs, strict=True):
            if valid is None:
                acc[:c, y:y + t, xo:xo + t] += p
                acc[c, y:y + t, xo:xo + t] += window
            else:
                v = valid[y:y + t, xo:xo + t]
                acc[:c, y:y + t, xo:xo + t] += p * v
                acc[c, y:y + t, xo:xo + t] += window * v
    acc = acc[:, :fh, :fw]
    ch, cw = job.row.core_size, job.col.core_size
    tails = (np.ascontiguousarray(acc[:, ch:, :cw]), np.ascontiguousarray(acc[:, :ch, cw:]),
             np.ascontiguousarray(acc[:, ch:, cw:]))
    if job.tails_dir is not None:
        save_tails(job.tails_dir, job.row.index, job.col.index, tails)
    progress = PROGRESS.get(job.run_key)
    if progress is not None:
        progress.advance(len(offsets))
    return (acc[:, :ch, :cw], *tails)


def stage2(core: npt.NDArray[np.float32], top: npt.NDArray[np.float32] | None,
           left: npt.NDArray[np.float32] | None, corner: npt.NDArray[np.float32] | None,
           class_ids: npt.NDArray[np.uint8], probabilities: bool) -> npt.NDArray[np.uint8]:
    """Add neighbours' tails, then argmax -> ``(1 [+ C], h, w)`` uint8 block."""
    acc = combine_chunk(core.copy(), top, left, corner)
    c = acc.shape[0] - 1
    best = acc[0].copy()
    idx = np.zeros(best.shape, np.uint8)
    for k in range(1, c):  # argmax over a short axis: C vectorised passes beat np.argmax
        better = acc[k] > best
        idx[better] = k
        np.maximum(best, acc[k], out=best)
    classes = class_ids[idx]
    classes[acc[c] <= 0] = NODATA_CLASS
    if not probabilities:
        return classes[None]
    return np.concatenate([classes[None], probabilities_u8(acc)])


def build_blocks(grid: TileGrid, template: ChunkJob, class_ids: list[int], *,
                 probabilities: bool, done: frozenset[tuple[int, int]] = frozenset()
                 ) -> dict[tuple[int, int], Any]:
    """Delayed ``(1 [+ C], h, w)`` uint8 blocks of the chunks not in ``done``.

    ``template`` carries the run-wide fields of the chunk jobs (its row/col are replaced).
    A finished chunk's tails are read from ``template.tails_dir`` instead of recomputed.
    """
    from dataclasses import replace

    from dask.delayed import delayed

    ids = np.asarray(class_ids, np.uint8)
    s1 = delayed(stage1, pure=True, nout=4)
    s2 = delayed(stage2, pure=True)
    lt = delayed(load_tails, pure=True, nout=3)
    tag = template.run_key
    parts: dict[tuple[int, int], Any] = {}

    def tails_of(a: int, b: int) -> Any:
        """Stage-1 outputs (index 1..3 are tails) of chunk (a, b), computed or loaded."""
        if (a, b) not in parts:
            if (a, b) in done:
                if template.tails_dir is None:
                    raise RuntimeError("resuming needs the tails directory")
                loaded = lt(template.tails_dir, a, b, dask_key_name=f"geoseg-tails-{tag}-{a}-{b}")
                parts[a, b] = (None, loaded[0], loaded[1], loaded[2])
            else:
                job = replace(template, row=grid.rows[a], col=grid.cols[b])
                out = s1(job, dask_key_name=f"geoseg-tiles-{tag}-{a}-{b}")
                parts[a, b] = (out[0], out[1], out[2], out[3])
        return parts[a, b]

    blocks: dict[tuple[int, int], Any] = {}
    for row in grid.rows:
        for col in grid.cols:
            a, b = row.index, col.index
            if (a, b) in done:
                continue
            own = tails_of(a, b)
            up = tails_of(a - 1, b)[1] if a > 0 else None
            lf = tails_of(a, b - 1)[2] if b > 0 else None
            cr = tails_of(a - 1, b - 1)[3] if a > 0 and b > 0 else None
            blocks[a, b] = s2(own[0], up, lf, cr, ids, probabilities,
                              dask_key_name=f"geoseg-blend-{tag}-{a}-{b}")
    return blocks
