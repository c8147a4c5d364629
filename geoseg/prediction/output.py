"""The temporary outputs of a prediction run, its resume journal, and the final COG.

While a run works, it writes beside the destination ``OUT`` (``XXXXXXXX`` is a token
unique to the run that created the files):

- ``.OUT.XXXXXXXX.partial.tif`` (and ``.PROB.XXXXXXXX.partial.tif``): uncompressed tiled
  GeoTIFFs that finished chunks are written into (random-order writes into compressed tiles
  would fragment them, so compression happens once, in the final COG copy);
- ``.OUT.partial.json``: the journal, a JSON header (the run's settings fingerprint and the
  token), then one ``row col`` line per chunk whose block is on disk (written after the
  block, fsync'ed);
- ``.OUT.XXXXXXXX.partial.tails/``: each computed chunk's blend tails, so a resumed run can
  finish a chunk whose neighbours are already done without running their tiles again.

The caller holds ``OUT``'s lock (:func:`geoseg._atomic.destination_locks`), so the journal
found beside ``OUT`` is never a live run's. ``--resume`` continues from it when the
fingerprint matches; otherwise (or without ``--resume``) every stale temporary beside the
destinations is removed (stray ``.ovr.tmp`` of a killed COG copy included) and the run
starts over. Only a complete run renames its COG onto ``OUT``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geoseg._atomic import commit, partial_path, sweep_stale
from geoseg.errors import GeosegWarning
from geoseg.io import NODATA_CLASS, Scene

__all__ = ["PartialOutput"]


def _gtiff_profile(scene: Scene, count: int) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": scene.width, "height": scene.height, "count": count,
        "dtype": "uint8", "nodata": NODATA_CLASS, "tiled": True, "blockxsize": 512,
        "blockysize": 512, "BIGTIFF": "IF_SAFER", "interleave": "band",
    }
    if scene.crs is not None or not scene.transform.is_identity:
        profile["transform"] = scene.transform
    if scene.crs is not None:
        profile["crs"] = scene.crs
    return profile


def _open(path: Path, mode: str = "r", **profile: Any) -> Any:
    """``rasterio.open`` without the warning for outputs of non-georeferenced inputs."""
    from geoseg.io import open_raster

    return open_raster(path, mode, **profile)


def cog_copy(src: Path, dst: Path, *, categorical: bool) -> None:
    """Copy a GeoTIFF to a DEFLATE-compressed Cloud-Optimized GeoTIFF with overviews."""
    import rasterio.shutil
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    try:
        rasterio.shutil.copy(
            str(src), str(dst), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE="512",
            OVERVIEW_RESAMPLING="MODE" if categorical else "AVERAGE", NUM_THREADS="ALL_CPUS",
            BIGTIFF="IF_SAFER")
    except (RasterioError, CPLE_BaseError) as exc:
        # The source is our own finished file: whatever GDAL says (libtiff reports a full
        # volume as an IO, seek or directory error), the copy failed writing ``dst``.
        raise OSError(errno.EIO, f"write failed: {exc}") from exc


class PartialOutput:
    """Temporary outputs and resume journal of one prediction run.

    Parameters
    ----------
    output, probabilities : Path
        Final destinations (``probabilities`` may be None).
    scene : Scene
        The input, for the grid of the outputs.
    n_classes : int
        Bands of the probability output.
    fingerprint : dict
        Settings that must match for a resume to be valid.
    resume : bool
        Continue from an existing journal if it matches; else start over.
    """

    def __init__(self, output: Path, probabilities: Path | None, scene: Scene, n_classes: int,
                 fingerprint: dict[str, Any], *, resume: bool) -> None:
        self.output, self.probabilities = output, probabilities
        self.journal = output.with_name(f".{output.name}.partial.json")
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        self._lock = threading.Lock()
        self._discarded = False
        self.done: set[tuple[int, int]] = set()
        token = self._load() if resume else None
        self.resumed = len(self.done)
        self._name_files(token or uuid.uuid4().hex[:8])
        self._sweep()
        if token is not None:
            return
        self.journal.unlink(missing_ok=True)
        try:
            with _open(self.tmp_class, "w", **_gtiff_profile(scene, 1)):
                pass
            if self.tmp_prob is not None:
                with _open(self.tmp_prob, "w", **_gtiff_profile(scene, n_classes)):
                    pass
            self.tails_dir.mkdir()
            with self.journal.open("w") as f:
                header = {"fingerprint": self.fingerprint, "token": self.token}
                f.write(json.dumps(header, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            self.discard()
            raise

    def _name_files(self, token: str) -> None:
        self.token = token
        out, prob = self.output, self.probabilities
        self.tmp_class = out.with_name(f".{out.name}.{token}.partial.tif")
        self.tmp_prob = None if prob is None else \
            prob.with_name(f".{prob.name}.{token}.partial.tif")
        self.tails_dir = out.with_name(f".{out.name}.{token}.partial.tails")

    def _sweep(self) -> None:
        """Remove what earlier runs left beside the destinations (the lock is ours)."""
        keep = [p for p in (self.tmp_class, self.tmp_prob, self.tails_dir, self.journal)
                if p is not None]
        for dst in (self.output, self.probabilities):
            if dst is not None:
                sweep_stale(dst, keep=keep)

    def _load(self) -> str | None:
        """Read the journal; its run's token if it matches this run and its files are there."""
        if not self.journal.is_file():
            return None
        lines = self.journal.read_text().split("\n")
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = None
        token = header.get("token") if isinstance(header, dict) else None
        if not isinstance(token, str) or header.get("fingerprint") != self.fingerprint:
            warnings.warn(f"cannot resume {self.output.name}: the earlier run used other "
                          "settings; starting over", GeosegWarning, stacklevel=3)
            return None
        self._name_files(token)
        files = [self.tmp_class, self.tails_dir]
        if self.tmp_prob is not None:
            files.append(self.tmp_prob)
        if not all(p.exists() for p in files):
            return None
        for line in lines[1:]:
            parts = line.split()
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                self.done.add((int(parts[0]), int(parts[1])))
        return token

    def write(self, row: int, col: int, rows: tuple[int, int], cols: tuple[int, int],
              block: npt.NDArray[np.uint8]) -> int:
        """Write one finished chunk's block, then journal it. Thread-safe."""
        win = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
        with self._lock:
            if self._discarded:
                # A cancelled run's worker finishing a chunk after discard(): appending
                # would recreate the journal beside the output.
                return 0
            # Open and close per block: closing flushes GDAL's cache, so the journal
            # never lists a chunk whose pixels are not in the file.
            with _open(self.tmp_class, "r+") as dst:
                dst.write(block[:1], window=win)
            if self.tmp_prob is not None:
                with _open(self.tmp_prob, "r+") as dst:
                    dst.write(block[1:], window=win)
            with self.journal.open("a") as f:
                f.write(f"{row} {col}\n")
                f.flush()
                os.fsync(f.fileno())
            self.done.add((row, col))
        return int(block.shape[1] * block.shape[2])

    def finalize(self, *, colormap: dict[int, tuple[int, int, int, int]],
                 tags: dict[str, str], class_names: list[str], overwrite: bool) -> None:
        """Add metadata, copy to COGs beside the destinations, and rename them into place."""
        with _open(self.tmp_class, "r+") as dst:
            dst.write_colormap(1, colormap)
            dst.set_band_description(1, "class")
            dst.update_tags(**tags)
        if self.tmp_prob is not None:
            with _open(self.tmp_prob, "r+") as dst:
                for k, name in enumerate(class_names, start=1):
                    dst.set_band_description(k, f"p_{name}")
                dst.update_tags(**tags, scale=str(1 / 254), offset="0",
                                probability_scale="p = value / 254; 255 = nodata")
        final_class = partial_path(self.output)
        final_prob = None if self.probabilities is None else partial_path(self.probabilities)
        try:
            cog_copy(self.tmp_class, final_class, categorical=True)
            if self.tmp_prob is not None and final_prob is not None:
                cog_copy(self.tmp_prob, final_prob, categorical=False)
            if final_prob is not None and self.probabilities is not None:
                commit(final_prob, self.probabilities, overwrite=overwrite)
            commit(final_class, self.output, overwrite=overwrite)
        finally:
            for p in (final_class, final_prob):
                if p is not None:
                    p.unlink(missing_ok=True)
                    for sidecar in (".aux.xml", ".ovr", ".ovr.tmp"):
                        p.with_name(p.name + sidecar).unlink(missing_ok=True)
        self.discard()

    def discard(self) -> None:
        """Remove every temporary file of this output; later writes are dropped."""
        with self._lock:  # waits for a write in progress; none starts after it
            self._discarded = True
            for p in (self.tmp_class, self.tmp_prob, self.journal):
                if p is not None:
                    p.unlink(missing_ok=True)
                    p.with_name(p.name + ".aux.xml").unlink(missing_ok=True)
        # A cancelled run's stage-1 thread may still be saving one chunk's tails while the
        # tree is removed (rmtree then leaves the directory with that file): retry briefly.
        for _ in range(50):
            shutil.rmtree(self.tails_dir, ignore_errors=True)
            if not self.tails_dir.exists():
                break
            time.sleep(0.05)
