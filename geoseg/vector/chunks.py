"""Chunk windows of a class map and running per-chunk tasks (threads or dask.distributed)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from geoseg.errors import InputError
from geoseg.io import Scene
from geoseg.progress import Progress

if TYPE_CHECKING:
    import geopandas as gpd


def _chunks(scene: Scene, chunk_size: int) -> tuple[list[Any], tuple[int, int]]:
    from geoseg.vector.polygonize import ChunkSpec

    if chunk_size < 2:
        raise InputError(f"chunk_size must be at least 2 pixels, got {chunk_size}")
    rows = list(range(0, scene.height, chunk_size))
    cols = list(range(0, scene.width, chunk_size))
    specs = [
        ChunkSpec(
            scene.path,
            i,
            j,
            r,
            c,
            min(chunk_size, scene.height - r),
            min(chunk_size, scene.width - c),
        )
        for i, r in enumerate(rows)
        for j, c in enumerate(cols)
    ]
    return specs, (len(rows), len(cols))


def _run_tasks(tasks: list[Any], workers: int | None, progress: Progress, desc: str) -> list[Any]:
    """Compute dask delayed tasks; several processes when the map has several chunks.

    ``rasterio.features.shapes`` holds the GIL, so threads would not run in parallel.
    A ``dask.distributed`` client that is already running is used when there is one.
    The local schedulers are passed as functions: naming them by string makes dask
    import ``distributed`` (half a second) just to look for a client.
    """
    import multiprocessing as mp
    import sys

    import dask
    import dask.local
    import dask.multiprocessing
    from dask.base import compute
    from dask.callbacks import Callback

    n = len(tasks)
    if "distributed" in sys.modules:
        from distributed import default_client

        try:
            client = default_client()  # type: ignore[no-untyped-call]
        except ValueError:
            client = None
        if client is not None:
            progress.start(n, desc=desc)
            out = list(compute(*tasks, scheduler=client))  # type: ignore[no-untyped-call]
            progress.advance(n)
            return out
    if workers is None:
        # Below a few chunks per worker, forking and shipping results back cost more
        # than they save (measured: a 4096 px map in 2048 px chunks ran faster in one
        # process on a 2-core machine).
        cpus = os.cpu_count() or 1
        workers = 1 if n < 4 * min(cpus, 2) else min(cpus, n)
    progress.start(n, desc=desc)

    def _posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if isinstance(key, tuple) or "polygonize" in str(key) or "skeleton" in str(key):
            progress.advance(1)

    with Callback(posttask=_posttask):  # type: ignore[no-untyped-call]
        if workers <= 1 or n <= 1:
            return list(
                compute(  # type: ignore[no-untyped-call]
                    *tasks, scheduler=dask.local.get_sync
                )
            )
        # fork (where there is one) starts workers in milliseconds; spawn re-imports.
        ctx = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with dask.config.set({"multiprocessing.context": ctx}):
            return list(
                compute(  # type: ignore[no-untyped-call]
                    *tasks,
                    scheduler=dask.multiprocessing.get,
                    num_workers=workers,
                    chunksize=1,  # the default batches 6 tasks per worker call
                )
            )


def _concat(frames: list[gpd.GeoDataFrame]) -> Any:
    import pandas as pd

    return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
