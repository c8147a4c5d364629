"""What predict checks before any compute (outputs, tile, memory, values); nodata counts."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg._atomic import check_distinct, check_output
from geoseg.errors import GeosegWarning, InputError
from geoseg.io import Scene, count_nodata

if TYPE_CHECKING:
    from geoseg.models.bundle import Bundle
    from geoseg.prediction.output import PartialOutput
    from geoseg.progress import Progress

__all__ = ["RASTER_EXTENSIONS", "check_destinations"]

#: File extensions a class map (or probabilities) may be written as.
RASTER_EXTENSIONS = (".tif", ".tiff")


def check_destinations(scene: str | os.PathLike[str], output: str | os.PathLike[str],
                       probabilities: str | os.PathLike[str] | None,
                       preview: str | os.PathLike[str] | None,
                       vectorize: str | os.PathLike[str] | None, *, overwrite: bool,
                       inputs: Sequence[tuple[str, str | os.PathLike[str] | None]] = ()
                       ) -> tuple[Path, Path | None, Path | None, Path | None]:
    """Check every output of a run before any compute: formats, existence, identity.

    No output may be the scene or one of ``inputs`` (``(option, path)``: the model
    bundle, the calibration rasters).
    """
    from geoseg.vector.write import vector_driver

    def check(dst: str | os.PathLike[str] | None, extensions: tuple[str, ...], what: str
              ) -> Path | None:
        return None if dst is None else check_output(dst, overwrite=overwrite,
                                                     extensions=extensions, what=what)

    out = check_output(output, overwrite=overwrite, extensions=RASTER_EXTENSIONS,
                       what="class map")
    prob = check(probabilities, RASTER_EXTENSIONS, "probabilities")
    prev = check(preview, (".png",), "preview")
    vec = check(vectorize, (), "vectors")
    if vec is not None:
        vector_driver(vec)
    check_distinct([("-o", out), ("--probabilities", prob), ("--preview", prev),
                    ("--vectorize", vec)], [("scene", scene), *inputs])
    return out, prob, prev, vec


def _tile_and_checks(spec: Any, shape: tuple[int, int], tile_size: int | None, overlap: int | None,
                     batch_size: int, chunk_tiles: int, n_bands: int) -> tuple[int, int]:
    """Return the tile and overlap of a run (capped at the scene) after the memory check."""
    from geoseg.models.onnx_bundle import ONNX_ARCHITECTURE
    from geoseg.prediction.limits import check_memory, fit_tile, validate_tile

    tile = validate_tile(int(tile_size or spec.tile_size))
    ov = int(spec.overlap if overlap is None else overlap)
    if spec.architecture != ONNX_ARCHITECTURE:  # an imported model may take one tile size only
        tile, ov = fit_tile(tile, ov, shape)
    check_memory(tile, batch_size, spec.n_classes, n_bands, chunk_tiles)
    return tile, ov


def _check_values(bundle: Bundle, src: Scene, chosen: Sequence[int],
                  scale: float | str | None, client: Any, progress: Progress) -> Bundle:
    """Warn when the scene's values are far from the trained range, or apply --scale."""
    from geoseg.models.value_range import range_warning, scaled_spec

    if scale is None:
        message = range_warning(src, chosen, bundle.spec)
        if message:
            warnings.warn(message, GeosegWarning, stacklevel=3)
        return bundle
    if client is not None:
        raise InputError("--scale is not supported on a dask.distributed cluster (its "
                         "workers load the bundle themselves); rescale the scene first")
    spec = scaled_spec(bundle.spec, src, chosen, scale)
    progress.log(f"scale={scale}: normalisation mean={_fmt(spec.mean)} std={_fmt(spec.std)}")
    return replace(bundle, spec=spec)


def _nodata_counts(partial: PartialOutput, grid: Any, src: Scene, chosen: Sequence[int]
                   ) -> tuple[int, int]:
    """Return filled and nodata pixels of the scene, summed from the chunks' saved counts.

    Falls back to a pass over the scene only when a chunk's counts are missing (tails
    saved by an older geoseg, or cluster workers that do not share the output's disk).
    """
    from geoseg.prediction.graph import saved_counts

    if not src.has_mask:
        return 0, 0
    filled = nodata = 0
    for row in grid.rows:
        for col in grid.cols:
            counts = saved_counts(str(partial.tails_dir), row.index, col.index)
            if counts is None:
                return count_nodata(src.path, chosen)
            filled, nodata = filled + counts[0], nodata + counts[1]
    return filled, nodata


def _fmt(values: Sequence[float]) -> str:
    return ",".join(f"{v:.4g}" for v in values)
