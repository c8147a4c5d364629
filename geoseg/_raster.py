"""Opening rasters: what :mod:`geoseg.io` and :mod:`geoseg.sources` both need.

A module of its own so that ``sources`` (which ``io`` calls to open products) never
imports ``io`` back.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from geoseg.errors import InputError

__all__ = ["is_remote", "open_raster"]


def is_remote(path: str) -> bool:
    """Whether ``path`` is a GDAL virtual/remote path or URL (not a local file)."""
    return path.startswith(("/vsi", "http://", "https://", "s3://", "gs://", "az://"))


def open_raster(path: str | os.PathLike[str], mode: str = "r", *, what: str = "",
                **profile: Any) -> Any:
    """``rasterio.open``, quiet about missing georeferencing.

    Non-georeferenced images (JPEG/PNG chips) are normal input, and their outputs have
    none either; callers that care say so themselves. Use as ``with open_raster(p) as
    src:`` or keep the handle. ``mode`` and ``profile`` are ``rasterio.open``'s.

    Raises
    ------
    InputError
        Reading, GDAL cannot read the file; ``what`` (e.g. ``"labels "``) starts the
        message.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    text = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(text, mode, **profile)
    except RasterioIOError as exc:
        if mode != "r":
            raise
        msg = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise InputError(f"{what}{text} is not a raster GDAL can read ({msg})") from None
