"""Many scenes, and dask.distributed clusters: ``predict_many`` and ``dask_client``.

One model per worker process (built once by a worker plugin, see
:func:`geoseg.prediction.pipeline.predict`), one progress display for all scenes, and a
failure in one scene reported without stopping the others.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg._atomic import check_distinct
from geoseg.errors import GeosegError, InputError, OutputError
from geoseg.io import is_remote
from geoseg.models import DEFAULT_MODEL
from geoseg.prediction.config import InferenceConfig
from geoseg.progress import NullProgress, Progress

__all__ = ["BatchResult", "SceneOutcome", "dask_client", "expand_inputs", "predict_many"]

_GLOB_CHARS = set("*?[")


def _gdal_path(path: str) -> str:
    """Map URLs to GDAL's virtual file systems (``s3://b/k`` -> ``/vsis3/b/k``)."""
    if path.startswith(("http://", "https://")):
        return "/vsicurl/" + path
    for prefix, vsi in (("s3://", "/vsis3/"), ("gs://", "/vsigs/"), ("az://", "/vsiaz/")):
        if path.startswith(prefix):
            return vsi + path[len(prefix):]
    return path


def expand_inputs(items: Sequence[str]) -> list[str]:
    """Expand globs and ``@list.txt`` files (one path or URL per line, ``#`` comments).

    Remote paths (``/vsicurl/...``, ``s3://...``, ``https://...``) pass through unchanged
    (URLs are mapped to GDAL's ``/vsi`` prefixes).
    """
    out: list[str] = []
    for item in items:
        if item.startswith("@"):
            listing = Path(item[1:])
            if not listing.is_file():
                raise InputError(f"scene list not found: {listing}")
            lines = [ln.strip() for ln in listing.read_text().splitlines()]
            out.extend(expand_inputs([ln for ln in lines if ln and not ln.startswith("#")]))
        elif not is_remote(item) and _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise InputError(f"no file matches {item!r}")
            out.extend(matches)
        else:
            out.append(_gdal_path(item))
    if not out:
        raise InputError("no input scene given")
    return out


@contextmanager
def dask_client(*, scheduler: str | None = None, workers: int | None = None,
                devices: Sequence[str] = ()) -> Iterator[Any]:
    """Yield a dask.distributed client: an existing cluster, a local one, or None.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).
    workers : int, optional
        Start a local cluster of this many worker processes (one thread each; torch in
        each uses ``cores // workers`` threads).
    devices : sequence of str
        Start one local worker per device (``cuda:0,cuda:1``); implies ``workers``.
    """
    if scheduler is None and not workers and not devices:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise InputError(f"cannot reach the dask scheduler at {scheduler}: {exc}") \
                from None
        try:
            yield client
        finally:
            client.close()
        return
    check_devices(devices)
    n = len(devices) or int(workers or 1)
    threads = max(1, (os.cpu_count() or 1) // n)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # workers log like us
        env["DASK_LOGGING__DISTRIBUTED"] = "warning"

    with _quiet_cluster_logs(), \
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                         dashboard_address=None, env=env,
                         silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client


class _DropShutdownNoise(logging.Filter):
    """Drop the nanny's report of workers it stops itself at shutdown."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "killed by signal" not in record.getMessage()


@contextmanager
def _quiet_cluster_logs() -> Iterator[None]:
    """Hold dask.distributed's loggers at WARNING (or the user's level with --verbose).

    distributed sets its loggers to INFO, which otherwise prints ~30 lines per run.
    """
    root = logging.getLogger().getEffectiveLevel()
    level = max(root, logging.WARNING)
    names = ["distributed", *[n for n in logging.root.manager.loggerDict
                              if n.startswith("distributed.")]]
    saved = {n: logging.getLogger(n).level for n in names}
    noise = _DropShutdownNoise()
    for n in names:
        logging.getLogger(n).setLevel(level)
    logging.getLogger("distributed.nanny").addFilter(noise)
    try:
        yield
    finally:
        for n, old in saved.items():
            logging.getLogger(n).setLevel(old)
        logging.getLogger("distributed.nanny").removeFilter(noise)


def check_devices(devices: Sequence[str]) -> None:
    """Refuse ``cuda:N`` devices this machine does not have, before starting workers."""
    cuda = [d for d in devices if d.startswith("cuda")]
    if not cuda:
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for d in cuda:
        index = d.partition(":")[2] or "0"
        if not index.isdigit() or int(index) >= count:
            have = f"{count} CUDA device(s): cuda:0..cuda:{count - 1}" if count else \
                "no CUDA device"
            raise InputError(f"--devices {d}: this machine has {have}")


@dataclass(frozen=True)
class SceneOutcome:
    """The fate of one scene in a batch."""

    scene: str
    output: Path
    error: str | None = None
    seconds: float = 0.0
    mpx_per_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the scene's class map was written."""
        return self.error is None


@dataclass(frozen=True)
class BatchResult:
    """Outcomes of :func:`predict_many`, in input order."""

    outcomes: list[SceneOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[SceneOutcome]:
        """The scenes that failed."""
        return [o for o in self.outcomes if not o.ok]

    def table(self) -> str:
        """Return a summary table, one row per scene."""
        width = max([len(Path(o.scene).name) for o in self.outcomes] + [5])
        rows = [f"{'scene':<{width}}  status  seconds  Mpx/s  output / error"]
        for o in self.outcomes:
            status = "ok" if o.ok else "FAILED"
            detail = str(o.output) if o.ok else o.error
            rows.append(f"{Path(o.scene).name:<{width}}  {status:<6}  {o.seconds:7.1f}  "
                        f"{o.mpx_per_s:5.2f}  {detail}")
        n_ok = len(self.outcomes) - len(self.failed)
        rows.append(f"{n_ok} of {len(self.outcomes)} scenes done, {len(self.failed)} failed")
        return "\n".join(rows)


class _SharedProgress(Progress):
    """Forwards several runs' counts to one display."""

    def __init__(self, parent: Progress) -> None:
        super().__init__()
        self._parent = parent

    def start(self, total: int, desc: str = "") -> None:
        return None

    def advance(self, n: int = 1) -> None:
        self._parent.advance(n)

    def log(self, message: str) -> None:
        self._parent.log(message)


def _output_for(scene: str, out_dir: Path) -> Path:
    name = Path(scene.rstrip("/").split("?")[0]).stem or "scene"
    return out_dir / f"{name}.tif"


def _model_for(model: Any, paths: Sequence[str]) -> Any:
    """``model``, or the default the first scene gets when None."""
    if model is not None or not paths:
        return DEFAULT_MODEL if model is None else model
    from geoseg.io import open_scene
    from geoseg.prediction.pipeline import auto_model

    return auto_model(open_scene(paths[0]))[0]


def predict_many(scenes: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                 *, model: Any = None, config: InferenceConfig | None = None,
                 bands: Sequence[int | str] | None = None, mask: str | None = None,
                 overwrite: bool = False,
                 resume: bool = False, num_workers: int = 2, client: Any = None,
                 devices: Sequence[str] = (), scale: float | str | None = None,
                 progress: Progress | None = None, max_concurrent: int = 4) -> BatchResult:
    """Predict class maps for many scenes into ``out_dir`` (``<scene stem>.tif``).

    The model is loaded once and shared. With ``client`` (dask.distributed) up to
    ``max_concurrent`` scenes are in flight at once; otherwise they run one after the other
    (each already uses every core). ``config``, ``bands``, ``overwrite``, ``resume``,
    ``num_workers``, ``devices`` and ``scale`` mean what they mean for
    :func:`geoseg.predict`.
    A scene that fails is recorded in the result and the others go on. Without
    ``model``, the first scene picks it (:func:`geoseg.prediction.pipeline.auto_model`).
    """
    from geoseg.io import open_scene
    from geoseg.models import resolve_model
    from geoseg.models.bundle import Bundle
    from geoseg.prediction.pipeline import predict
    from geoseg.prediction.tiling import plan_tiles

    progress = progress or NullProgress()
    config = config or InferenceConfig()
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory} is not a directory; with several scenes -o names a "
                          "directory")
    try:  # a folder that does not exist yet is made, with its parents
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {directory}: {exc.strerror}") from None
    paths = [os.fspath(s) for s in scenes]
    outputs = [_output_for(s, directory) for s in paths]
    dupes = {o.name for o in outputs if outputs.count(o) > 1}
    if dupes:
        raise InputError(f"several scenes would write {sorted(dupes)[0]}; give scenes distinct "
                         "file names")
    check_distinct([("output", o) for o in outputs], [("scene", p) for p in paths])
    bundle = model if isinstance(model, Bundle) else resolve_model(_model_for(model, paths))
    resolved = config.resolve(bundle.spec)
    total = 0
    for p in paths:  # one display for all scenes: count every scene's tiles up front
        try:
            total += plan_tiles(open_scene(p).shape, tile=resolved.tile_px,
                                overlap=resolved.overlap_px,
                                chunk_tiles=resolved.chunk_tiles).n_tiles
        except GeosegError:
            continue  # reported when the scene runs
    shared = _SharedProgress(progress)

    def run(i: int) -> SceneOutcome:
        t0 = time.perf_counter()
        try:
            r = predict(paths[i], outputs[i], model=bundle, config=config, bands=bands, mask=mask,
                        overwrite=overwrite, resume=resume, num_workers=num_workers,
                        client=client, devices=devices, scale=scale, progress=shared)
        except (GeosegError, OSError, RuntimeError, ValueError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else \
                type(exc).__name__
            if not isinstance(exc, GeosegError):
                message = f"{type(exc).__name__}: {message}"
            progress.log(f"{Path(paths[i]).name}: FAILED: {message}")
            return SceneOutcome(paths[i], outputs[i], message, time.perf_counter() - t0)
        progress.log(f"{Path(paths[i]).name}: {r.summary()}")
        return SceneOutcome(paths[i], outputs[i], None, r.seconds, r.mpx_per_s)

    progress.start(total, desc=f"{len(paths)} scenes")
    try:
        if client is None or len(paths) == 1:
            outcomes = [run(i) for i in range(len(paths))]
        else:
            with ThreadPoolExecutor(max_workers=max(1, min(max_concurrent, len(paths)))) as ex:
                outcomes = list(ex.map(run, range(len(paths))))
        progress.finish([str(o.output) for o in outcomes if o.ok])
    finally:
        progress.close()
    return BatchResult(outcomes)
