"""dask.distributed worker plugin: each worker builds the model once and keeps it.

Imported only for distributed runs (it imports ``distributed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distributed import WorkerPlugin

from geoseg.prediction.graph import WORKER_DEVICE, ModelRef, get_predictor

__all__ = ["ModelPlugin"]


class ModelPlugin(WorkerPlugin):  # type: ignore[misc]
    """Build the predictor for ``ref`` when a worker starts (or joins later).

    With ``devices``, worker ``i`` (by its name in a local cluster) runs on
    ``devices[i % len(devices)]``.
    """

    def __init__(self, ref: ModelRef, devices: Sequence[str] = ()) -> None:
        self.ref = ref
        self.devices = tuple(devices)

    def setup(self, worker: Any) -> None:
        if self.devices:
            try:
                index = int(worker.name)
            except (TypeError, ValueError):
                index = sum(map(ord, str(worker.address)))
            WORKER_DEVICE["device"] = self.devices[index % len(self.devices)]
        get_predictor(self.ref)
