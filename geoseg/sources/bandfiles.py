"""Lists of single-band files (``a.tif,b.tif`` or a folder of them)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from geoseg.bands import (
    canonical_name,
    family_of,
)
from geoseg.errors import InputError
from geoseg.sources.product import BandFile, Product

_FILE_BAND = re.compile(r"(?:^|[_\-.])((?:SR_|ST_)?B\d{1,2}A?|coastal|blue|green|red|nir\d*|"
                        r"rededge\d*|swir\d*|cirrus|pan)$", re.IGNORECASE)


def _band_files(source: str, files: Sequence[str]) -> Product:
    """Single-band files, named by their descriptions or their file names."""
    import rasterio

    from geoseg._raster import open_raster

    bands = []
    for f in files:
        if not f.startswith("/vsi") and not Path(f).is_file():
            raise InputError(f"band file not found: {f}")
        with open_raster(f) as src:
            if src.count != 1:
                raise InputError(f"{f} has {src.count} bands; a band list takes single-band "
                                 "files")
            desc = src.descriptions[0]
            nodata = src.nodata
        stem = Path(f.split("?")[0]).stem
        m = _FILE_BAND.search(stem)
        name = desc or (m.group(1) if m else None)
        if not name:
            raise InputError(f"cannot tell which band {f} is: name it like *_B04.tif or "
                             "*_red.tif, or set its band description")
        bands.append(BandFile(name, f, nodata=nodata))
    del rasterio
    names = [b.name for b in bands]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InputError(f"{source}: band {sorted(dup)[0]} is given twice")
    family = family_of(names)
    if family is not None:
        bands = [BandFile(canonical_name(b.name, family), b.path, b.scale, b.offset, b.nodata)
                 for b in bands]
    return Product(source=source, kind=f"{len(bands)} band files", bands=tuple(bands),
                   family=family)
