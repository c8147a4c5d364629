"""Image chips as one scene: a virtual mosaic (GDAL VRT) of a folder or glob of chips.

Imagery is often published as chips: XYZ tiles named ``z/x/y.png`` or ``...-X-Y-Z.png``
(placed by their names, :mod:`geoseg.xyz`), or small GeoTIFFs. ``tile``, ``train`` and
``predict`` read a folder or a quoted glob of them as one scene, as ``score`` reads
prediction chips: each chip lands at its place on the first chip's grid, and the mosaic's
mask is each chip's own (its alpha band, nodata or mask; a chip without any is all valid)
so a transparent corner of an RGBA chip and the gaps between chips are nodata, while RGB
and RGBA chips mix freely. Nothing is copied: the VRT points at the chips.

All chips must share a CRS, a pixel size (within 0.1 %), a data type and a band count
(not counting an alpha band); anything else is a one-line :class:`InputError`.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from affine import Affine

from geoseg.errors import InputError

__all__ = ["CHIP_SUFFIXES", "chip_files", "chip_mosaic", "is_chip_source"]

#: Raster chip suffixes a folder is searched for.
CHIP_SUFFIXES = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".webp"})

_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def _is_product_folder(p: Path) -> bool:
    """Tell whether ``p`` is a folder geoseg opens as one product (SAFE, Landsat MTL)."""
    if p.suffix.upper() == ".SAFE" or any(p.glob("MTD_*.xml")):
        return True
    return any(p.glob("*_MTL.txt")) or any(p.glob("*_MTL.xml"))


def chip_files(source: str | os.PathLike[str]) -> list[str] | None:
    """List the chips of a folder or glob, in name order; None when ``source`` is neither.

    A folder is searched recursively for raster files (:data:`CHIP_SUFFIXES`); a product
    folder (``.SAFE``, Landsat) is not a chip folder. A folder of single-band files with
    band names (``B02.tif``...) is a product too: only a folder whose chips hold several
    bands each, or whose names are XYZ names, is read as chips.
    """
    text = os.fspath(source)
    p = Path(text)
    if p.is_dir():
        if _is_product_folder(p):
            return None
        paths = sorted(str(f) for f in p.rglob("*")
                       if f.is_file() and f.suffix.lower() in CHIP_SUFFIXES)
        where = f"folder {text}"
        if paths and not _looks_like_chips(paths):
            return None
    elif glob.has_magic(text) and not p.exists():
        paths = sorted(f for f in glob.glob(text, recursive=True)
                       if Path(f).is_file() and Path(f).suffix.lower() in CHIP_SUFFIXES)
        where = f"pattern {text!r}"
    else:
        return None
    if not paths:
        raise InputError(f"{where} holds no image chips ({', '.join(sorted(CHIP_SUFFIXES))})")
    return paths


def is_chip_source(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is a folder or glob of chips (:func:`chip_files`)."""
    try:
        return chip_files(source) is not None
    except InputError:
        return True  # a chip source that holds nothing: its reader says so


def _looks_like_chips(paths: list[str]) -> bool:
    from geoseg.xyz import xyz_georef

    if all(xyz_georef(p, 256, 256) is not None for p in paths):
        return True
    import rasterio

    with rasterio.open(paths[0]) as src:
        return bool(src.count > 1)


@dataclass(frozen=True, slots=True)
class _Chip:
    path: str
    width: int
    height: int
    count: int  # data bands (alpha excluded)
    alpha: int | None  # 1-based alpha band, if any
    dtype: str
    crs: Any
    transform: Affine


def _read_chip(path: str) -> _Chip:
    from rasterio.enums import ColorInterp

    from geoseg.io import open_raster, open_scene

    scene = open_scene(path)  # honours sidecars and XYZ names
    if scene.crs is None:
        raise InputError(f"chip {path} has no georeferencing (no CRS, no .aux.xml or world "
                         "file, no XYZ name; see --xyz-pattern): chips are placed by it")
    with open_raster(path) as src:
        alpha = [i + 1 for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha]
        if not alpha and src.count == 4 and src.dtypes[0] == "uint8" \
                and path.lower().endswith(".png"):
            alpha = [4]
    return _Chip(path, scene.width, scene.height, src.count - len(alpha),
                 alpha[0] if alpha else None, scene.dtype, scene.crs, scene.transform)


def _check(chips: list[_Chip]) -> None:
    first = chips[0]
    for c in chips[1:]:
        if c.crs != first.crs:
            raise InputError(f"chips {first.path} and {c.path} have different CRSs; "
                             "reproject them to one CRS first")
        if c.count != first.count or c.dtype != first.dtype:
            raise InputError(f"chips {first.path} and {c.path} differ in bands or data type "
                             f"({first.count} x {first.dtype} vs {c.count} x {c.dtype}, "
                             "alpha not counted)")
        a, b = first.transform, c.transform
        if abs(a.a - b.a) > 1e-3 * abs(a.a) or abs(a.e - b.e) > 1e-3 * abs(a.e) \
                or a.b or a.d or b.b or b.d:
            raise InputError(f"chips {first.path} and {c.path} differ in pixel size (or are "
                             "rotated): mosaic chips of one zoom level / resolution")
    if first.dtype not in _GDAL_TYPES:
        raise InputError(f"chip {first.path} has data type {first.dtype}, which a chip "
                         "mosaic does not support")


def _vrt_xml(chips: list[_Chip]) -> str:
    t0 = chips[0].transform
    px, py = t0.a, t0.e
    lefts = [c.transform.c for c in chips]
    tops = [c.transform.f for c in chips]
    rights = [c.transform.c + c.width * c.transform.a for c in chips]
    bottoms = [c.transform.f + c.height * c.transform.e
               for c in chips]
    x0, y0 = min(lefts), max(tops)
    width = round((max(rights) - x0) / px)
    height = round((min(bottoms) - y0) / py)
    from rasterio.crs import CRS

    srs = escape(CRS.from_user_input(chips[0].crs).to_wkt())
    gdal_type = _GDAL_TYPES[chips[0].dtype]

    def rects(c: _Chip) -> str:
        col = round((c.transform.c - x0) / px)
        row = round((c.transform.f - y0) / py)
        w = round(c.width * c.transform.a / px)
        h = round(c.height * c.transform.e / py)
        return (f'<SrcRect xOff="0" yOff="0" xSize="{c.width}" ySize="{c.height}"/>'
                f'<DstRect xOff="{col}" yOff="{row}" xSize="{w}" ySize="{h}"/>')

    def source(c: _Chip, band: int, *, constant: bool = False) -> str:
        name = escape(str(Path(c.path).resolve()))
        if constant:  # an opaque chip: a mask of 255 over its footprint
            return (f'<ComplexSource><SourceFilename relativeToVRT="0">{name}</SourceFilename>'
                    f"<SourceBand>1</SourceBand>{rects(c)}<ScaleOffset>255</ScaleOffset>"
                    "<ScaleRatio>0</ScaleRatio></ComplexSource>")
        return (f'<SimpleSource resampling="nearest"><SourceFilename relativeToVRT="0">'
                f"{name}</SourceFilename><SourceBand>{band}</SourceBand>{rects(c)}"
                "</SimpleSource>")

    bands = []
    for b in range(1, chips[0].count + 1):
        srcs = "".join(source(c, b) for c in chips)
        bands.append(f'<VRTRasterBand dataType="{gdal_type}" band="{b}">{srcs}</VRTRasterBand>')
    mask = "".join(source(c, c.alpha) if c.alpha else source(c, 1, constant=True)
                   for c in chips)
    return (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{srs}</SRS>'
            f"<GeoTransform>{x0!r}, {px!r}, 0, {y0!r}, 0, {py!r}</GeoTransform>"
            f"{''.join(bands)}<MaskBand><VRTRasterBand dataType=\"Byte\">{mask}"
            "</VRTRasterBand></MaskBand></VRTDataset>")


@contextmanager
def chip_mosaic(source: str | os.PathLike[str] | list[str]) -> Iterator[str]:
    """Yield the path of a VRT mosaic of the chips of ``source`` (removed on exit).

    ``source`` is a folder, a glob (:func:`chip_files`) or a list of chip paths.
    """
    if isinstance(source, list):
        paths: list[str] | None = source
    else:
        paths = chip_files(source)
        if paths is None:
            raise InputError(f"{os.fspath(source)} is not a folder or glob of chips")
    if not paths:
        raise InputError("no image chips given")
    chips = [_read_chip(p) for p in paths]
    _check(chips)
    with tempfile.TemporaryDirectory(prefix="geoseg-chips-") as tmp:
        vrt = Path(tmp) / "chips.vrt"
        vrt.write_text(_vrt_xml(chips))
        yield str(vrt)
