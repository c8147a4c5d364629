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

Tasks find their model through :func:`get_predictor`, a small per-process cache
(:class:`PredictorCache`, least recently used evicted, :func:`release` to free) keyed by a
:class:`ModelRef`: the graph carries a few strings and the inference config, and every
process (thread pool, or dask.distributed worker) builds the model once and keeps it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.io import NODATA_CLASS, fill_nodata, read_window
from geoseg.prediction.config import InferenceConfig
from geoseg.prediction.stitching import combine_chunk, probabilities_u8
from geoseg.prediction.tiling import AxisChunk, TileGrid

if TYPE_CHECKING:
    from geoseg.prediction.inference import Predictor
    from geoseg.prediction.resample import ScaledTiles
    from geoseg.progress import Progress

__all__ = ["PREDICTORS", "ChunkJob", "ModelRef", "PredictorCache", "RunState", "build_blocks",
           "get_predictor", "register_predictor", "release"]

Tails = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """How a process finds (or builds) the predictor a task needs.

    ``config`` is the run's resolved :class:`InferenceConfig`; ``bands`` are the scene's
    bands the model reads (for int8 calibration tiles).
    """

    source: str
    name: str
    sha256: str
    config: InferenceConfig
    n_tiles: int = 0
    bands: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        """Cache key: same weights and settings share one predictor."""
        c = self.config
        return (f"{self.sha256}:{c.tile}:{c.overlap}:{c.batch_size}:{c.device}:"
                f"{c.precision}:{c.engine}:{c.blend}:{c.calibration}")

    def build(self) -> Predictor:
        """Load the bundle and build its predictor (in this process)."""
        from functools import partial

        from geoseg.models.bundle import load_bundle
        from geoseg.prediction.engines import calibration_tiles
        from geoseg.prediction.inference import Predictor

        bundle = load_bundle(self.source, name=self.name, network=False)
        config = self.config
        if config.device == "auto" and "device" in WORKER_DEVICE:
            config = config.with_(device=WORKER_DEVICE["device"])
        calibration = None if config.calibration is None else partial(
            calibration_tiles, config.calibration, self.bands, bundle.spec, config.tile_px)
        return Predictor(bundle, config, n_tiles=self.n_tiles, calibration=calibration)


class PredictorCache:
    """Keep this process's predictors, at most ``maxsize``; the least recently used goes first.

    A model (possibly on a GPU) stays only while it is among the last ``maxsize`` used;
    :meth:`release` frees one or all of them now.
    """

    def __init__(self, maxsize: int = 2) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, ref: ModelRef, predictor: Predictor) -> None:
        """Keep ``predictor`` for ``ref`` (evicting the least recently used beyond maxsize)."""
        with self._lock:
            self._items[ref.key] = predictor
            self._items.move_to_end(ref.key)
            while len(self._items) > self.maxsize:
                _, old = self._items.popitem(last=False)
                old.release()

    def get(self, ref: ModelRef) -> Predictor:
        """Return the predictor for ``ref``, built on first use."""
        with self._lock:
            predictor = self._items.get(ref.key)
            if predictor is not None:
                self._items.move_to_end(ref.key)
                return predictor
        with _BUILD_LOCK:  # one build at a time; a concurrent caller waits, then finds it
            with self._lock:
                predictor = self._items.get(ref.key)
            if predictor is None:
                predictor = ref.build()
                self.put(ref, predictor)
        return predictor

    def release(self, ref: ModelRef | None = None) -> None:
        """Free the predictor of ``ref`` (all of them when None)."""
        with self._lock:
            keys = list(self._items) if ref is None else [ref.key]
            dropped = [self._items.pop(k) for k in keys if k in self._items]
        for predictor in dropped:
            predictor.release()


_BUILD_LOCK = threading.Lock()
#: This process's predictors (a thread pool, or one dask.distributed worker).
PREDICTORS = PredictorCache()
#: Set in a dask worker started for one device (``--devices``): replaces ``device="auto"``.
WORKER_DEVICE: dict[str, str] = {}


class RunState:
    """One run's shared state for its local tasks: progress sink and cancellation flag.

    Carried by the run's :class:`ChunkJob` itself (local runs only; None on a cluster,
    where the driver reports progress and cancels futures), so nothing is keyed by ids
    that a later run could reuse.
    """

    __slots__ = ("cancelled", "progress")

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Make the run's remaining tasks stop at their next batch."""
        self.cancelled.set()

    def __reduce__(self) -> Any:  # a run's state never leaves its process
        raise TypeError("RunState is local to one process")


class RunCancelled(Exception):
    """Raised inside a chunk task of a run that is being abandoned."""


def register_predictor(ref: ModelRef, predictor: Predictor) -> None:
    """Make an already-built predictor available to this process's tasks."""
    PREDICTORS.put(ref, predictor)


def get_predictor(ref: ModelRef) -> Predictor:
    """Return this process's predictor for ``ref``, built on first use."""
    return PREDICTORS.get(ref)


def release(ref: ModelRef | None = None) -> None:
    """Free this process's predictor for ``ref``, or all of them."""
    PREDICTORS.release(ref)


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
    state: RunState | None = field(default=None, compare=False, repr=False)
    scaled: ScaledTiles | None = None  # resampled run: scene-pixel tiles (resample.py)

    @property
    def n_tiles(self) -> int:
        """Tiles this chunk runs."""
        return len(self.row.tiles) * len(self.col.tiles)


def _tails_file(tails_dir: str, row: int, col: int) -> Path:
    return Path(tails_dir) / f"{row}_{col}.npz"


def save_tails(tails_dir: str, row: int, col: int, tails: Tails,
               counts: tuple[int, int] = (0, 0)) -> None:
    """Persist a chunk's tails (for ``--resume``) and its core's nodata counts, atomically."""
    final = _tails_file(tails_dir, row, col)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.{threading.get_ident()}.npz")
    np.savez(tmp, bottom=tails[0], right=tails[1], corner=tails[2],
             counts=np.asarray(counts, np.int64))
    os.replace(tmp, final)


def saved_counts(tails_dir: str, row: int, col: int) -> tuple[int, int] | None:
    """Return ``(filled, nodata)`` pixels of a chunk's core as stage 1 counted them, if saved."""
    try:
        with np.load(_tails_file(tails_dir, row, col)) as f:  # reads only this member
            if "counts" not in f.files:
                return None
            filled, nodata = (int(v) for v in f["counts"])
    except OSError:
        return None
    return filled, nodata


def core_counts(band_valid: npt.NDArray[np.bool_] | None, ch: int, cw: int
                ) -> tuple[int, int]:
    """Pixels of the ``ch x cw`` core where some but not all bands are nodata, and all are.

    Counted from the validity stage 1 reads anyway (no second pass over the scene); cores
    partition the scene, so the chunks' counts add up to the scene's.
    """
    if band_valid is None:
        return 0, 0
    n_valid = band_valid[:, :ch, :cw].sum(axis=0, dtype=np.int32)
    nodata = int(np.count_nonzero(n_valid == 0))
    filled = int(np.count_nonzero(n_valid < band_valid.shape[0])) - nodata
    return filled, nodata


def load_tails(tails_dir: str, row: int, col: int) -> Tails:
    """Tails a finished chunk saved before its result was written."""
    with np.load(_tails_file(tails_dir, row, col)) as f:
        return f["bottom"], f["right"], f["corner"]


def stage1(job: ChunkJob) -> tuple[npt.NDArray[np.float32], ...]:
    """Run one chunk's tiles; return its accumulator split into core and three tails."""
    from functools import partial

    from geoseg.prediction.augment import forward_tta

    predictor = get_predictor(job.ref)
    forward = partial(forward_tta, predictor, tta=job.ref.config.tta)
    if job.scaled is not None:
        from geoseg.prediction.resample import accumulate

        return _split(job, *accumulate(job, predictor, forward))
    t = predictor.tile
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
        if job.state is not None and job.state.cancelled.is_set():
            raise RunCancelled(job.run_key)
        group = offsets[start:start + bs]
        batch = np.stack([x[:, y:y + t, xo:xo + t] for y, xo in group])
        probs = forward(batch)
        for (y, xo), p in zip(group, probs, strict=True):
            # np.add(out=view), not ``acc[...] += x``: that also assigns the summed view
            # back onto itself, a second full copy of every tile (~10% of a run's samples)
            scores, weight = acc[:c, y:y + t, xo:xo + t], acc[c, y:y + t, xo:xo + t]
            weighted = p
            if valid is not None:  # nodata pixels get no weight (in place: no temporaries)
                v = valid[y:y + t, xo:xo + t]
                weighted = np.multiply(p, v, out=p if p.flags.writeable else None)
                np.add(weight, window * v, out=weight)
            else:
                np.add(weight, window, out=weight)
            np.add(scores, weighted, out=scores)
    return _split(job, acc[:, :fh, :fw], len(offsets), band_valid)


def _split(job: ChunkJob, acc: npt.NDArray[np.float32], n_tiles: int,
           band_valid: npt.NDArray[np.bool_] | None) -> tuple[npt.NDArray[np.float32], ...]:
    """Split a chunk's accumulator into core and three tails, saved for resume.

    The core's nodata counts (from ``band_valid``) are saved with the tails.
    """
    ch, cw = job.row.core_size, job.col.core_size
    tails = (np.ascontiguousarray(acc[:, ch:, :cw]), np.ascontiguousarray(acc[:, :ch, cw:]),
             np.ascontiguousarray(acc[:, ch:, cw:]))
    if job.tails_dir is not None:
        save_tails(job.tails_dir, job.row.index, job.col.index, tails,
                   core_counts(band_valid, ch, cw))
    if job.state is not None and job.state.progress is not None:
        job.state.progress.advance(n_tiles)
    return (acc[:, :ch, :cw], *tails)


def stage2(core: npt.NDArray[np.float32], top: npt.NDArray[np.float32] | None,
           left: npt.NDArray[np.float32] | None, corner: npt.NDArray[np.float32] | None,
           class_ids: npt.NDArray[np.uint8], probabilities: bool,
           groups: tuple[tuple[int, ...], ...] = ()) -> npt.NDArray[np.uint8]:
    """Add neighbours' tails, then argmax -> ``(1 [+ C], h, w)`` uint8 block.

    ``core`` is modified in place: it is this chunk's own stage-1 output, used by this
    task only, and disjoint from the tails stage 1 handed on (no scene-chunk copy).
    ``groups``: channels that compete as one class (see :func:`group_argmax`).
    """
    acc = combine_chunk(core, top, left, corner)
    c = acc.shape[0] - 1
    best = acc[0].copy()
    idx = np.zeros(best.shape, np.uint8)
    for k in range(1, c):  # argmax over a short axis: C vectorised passes beat np.argmax
        better = acc[k] > best
        idx[better] = k
        np.maximum(best, acc[k], out=best)
    for members in groups:
        idx = group_argmax(acc[:c], members)
    classes = class_ids[idx]
    classes[acc[c] <= 0] = NODATA_CLASS
    if not probabilities:
        return classes[None]
    return np.concatenate([classes[None], probabilities_u8(acc)])


def group_argmax(acc: npt.NDArray[np.float32], members: Sequence[int]
                 ) -> npt.NDArray[np.uint8]:
    """Argmax where the channels ``members`` compete as one class, by their summed score.

    A model trained with ``--target instances`` splits a building's probability between
    its interior, boundary and contact channels; a pixel is a building when their sum beats
    every other class, and then takes the member with the highest score (else the best
    other class). Ties go to the other class.
    """
    m = list(members)
    others = [k for k in range(acc.shape[0]) if k not in m]
    member_best: npt.NDArray[np.uint8] = np.asarray(m, np.uint8)[np.argmax(acc[m], axis=0)]
    if not others:
        return member_best
    other = acc[others]
    other_best = np.asarray(others, np.uint8)[np.argmax(other, axis=0)]
    wins = acc[m].sum(axis=0) > other.max(axis=0)
    out: npt.NDArray[np.uint8] = np.where(wins, member_best, other_best).astype(np.uint8)
    return out


def build_blocks(grid: TileGrid, template: ChunkJob, class_ids: list[int], *,
                 probabilities: bool, done: frozenset[tuple[int, int]] = frozenset(),
                 groups: tuple[tuple[int, ...], ...] = ()
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
            blocks[a, b] = s2(own[0], up, lf, cr, ids, probabilities, groups,
                              dask_key_name=f"geoseg-blend-{tag}-{a}-{b}")
    return blocks
