"""Products as scenes: Sentinel-2 .SAFE, STAC items, Landsat folders, band-file lists.

Each is opened as ONE virtual scene.

:func:`geoseg.io.open_scene` calls :func:`open_product` first; when the input is a
product, this module writes a GDAL VRT (a small XML file in a per-process temporary folder,
removed at exit) and the Scene reads through it, window by window, like any GeoTIFF: every
command (predict, score, train, tile, the library) reads a product the same way and
memory stays bounded (nothing is read here but metadata, and the cloud mask below).

The virtual scene
-----------------
- Grid: that of the finest band the model needs (``want``; all bands when none is named
  or none matches). Coarser bands are resampled bilinearly by GDAL as they are read (a
  ``ComplexSource`` with ``resampling="bilinear"``); every band must share one CRS.
- Values: float32, ``DN * scale + offset`` per band, in the units geoseg's satellite models
  use: **reflectance x 10000** for every reflective band (Sentinel-2 L1C TOA and L2A BOA,
  Landsat TOA and surface reflectance), so Sentinel-2 before processing baseline 04.00
  keeps its DNs unchanged. Landsat thermal bands (``ST_B10``) are in kelvin, as the MTL
  scales them.

  * Sentinel-2 (MTD_MSIL1C.xml / MTD_MSIL2A.xml): ``reflectance = (DN + ADD_OFFSET) /
    QUANTIFICATION_VALUE`` with ``RADIO_ADD_OFFSET`` (L1C) or ``BOA_ADD_OFFSET`` (L2A), per
    ``band_id``, present from baseline 04.00 (typically -1000) and absent (0) before. So
    ``value = (DN + offset) * 10000 / Q`` (``DN - 1000`` for Q = 10000). A baseline >= 04.00
    product whose XML lacks the offsets is refused rather than guessed.
  * Landsat C2 (MTL.txt or MTL.xml): ``reflectance = DN * REFLECTANCE_MULT_BAND_n +
    REFLECTANCE_ADD_BAND_n`` (L2 surface reflectance: 2.75e-05 and -0.2); Level-1 TOA is
    also divided by ``sin(SUN_ELEVATION)`` as USGS prescribes. ``value = reflectance *
    10000``.
  * STAC items: ``raster:bands`` ``scale``/``offset`` (physical = DN * scale + offset,
    reflectance for the reflective bands) times 10000; without them, DNs as they are,
    except Sentinel-2 items with ``s2:processing_baseline`` >= 04.00, which get ESA's
    documented -1000 with a warning.
  * Band files: values as they are.
- Nodata: a band's source nodata (0 for Sentinel-2 and Landsat) is never painted, so it
  reads as NaN, the VRT's nodata; geoseg treats NaN as nodata everywhere. A resampled band
  is read through a one-band VRT on its own grid that declares that nodata (Sentinel-2
  JP2s do not), so bilinear weights leave nodata pixels out: values next to a tile's
  nodata edge stay within their valid neighbours' range, never pulled toward
  ``0 * scale + offset``.
- Names: band descriptions ``B01``..``B12``, ``B8A`` (Sentinel-2) or ``B1``..``B11``
  (Landsat), matched to a model's names by :mod:`geoseg.bands`.
- ``mask="clouds"``: the product's own flags become nodata through the VRT's mask band
  (computed once, window by window, into a byte GeoTIFF on the scene's grid): Sentinel-2
  L2A SCL classes 0 (no data), 3 (cloud shadow), 8, 9 (cloud) and 10 (cirrus); L1C
  ``MSK_CLASSI_B00`` opaque clouds and cirrus (baseline >= 04.00); Landsat ``QA_PIXEL``
  bits 0 (fill), 1 (dilated cloud), 2 (cirrus), 3 (cloud) and 4 (cloud shadow).

Why not GDAL's SENTINEL2 driver: it opens a product as 10/20/60 m subdatasets (one per
resolution), not as one grid, and does not apply the baseline 04.00 offsets, so geoseg
would still resample and rescale by hand; the MTD XML gives the band files and the
offsets directly, for a folder and a zip (``/vsizip/``) alike. STAC items are read as JSON
(no pystac needed) and their band files through GDAL.

Modules: :mod:`~geoseg.sources.product` (what a product is), ``sentinel2``, ``landsat``,
``stac``, ``bandfiles`` (reading each kind), :mod:`~geoseg.sources.vrt` (the virtual
scene) and ``masks`` (cloud masks); this package holds the public API.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg.errors import GeosegWarning, InputError
from geoseg.sources.bandfiles import _band_files
from geoseg.sources.landsat import _landsat
from geoseg.sources.product import _RASTER_EXT, REFLECTANCE_UNIT, BandFile, MaskLayer, Product
from geoseg.sources.sentinel2 import _DirTree, _find_mtd, _safe, _zip_product
from geoseg.sources.stac import _stac_item
from geoseg.sources.vrt import build_vrt

__all__ = [
    "REFLECTANCE_UNIT",
    "BandFile",
    "MaskLayer",
    "Product",
    "build_vrt",
    "is_product",
    "level_warning",
    "model_level",
    "open_product",
    "read_product",
]


def _split_list(text: str) -> list[str] | None:
    """``a.tif,b.tif`` -> the files, when ``text`` is such a list (and not a file)."""
    if "," not in text or Path(text).exists():
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return parts if len(parts) > 1 else None


def _is_stac(text: str) -> bool:
    return text.lower().endswith(".json") or text.lower().endswith(".geojson")


def is_product(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an input this module opens (not a plain raster)."""
    text = os.fspath(path)
    if _split_list(text) is not None or _is_stac(text):
        return True
    p = Path(text)
    if text.startswith("/vsi"):
        return False
    return p.is_dir() or (p.suffix.lower() == ".zip" and p.is_file())


def read_product(path: str | os.PathLike[str]) -> Product:
    """Read a product's metadata: which bands, where, with which scale and offset.

    Raises
    ------
    InputError
        Not a product geoseg knows, or one with missing files or metadata (one line).
    """
    text = os.fspath(path)
    files = _split_list(text)
    if files is not None:
        return _band_files(text, files)
    if _is_stac(text):
        return _stac_item(text)
    p = Path(text)
    if p.suffix.lower() == ".zip":
        return _zip_product(p)
    if p.is_dir():
        if _find_mtd(_DirTree(p)) is not None:
            return _safe(_DirTree(p), text)
        mtl = sorted(p.glob("*_MTL.txt")) + sorted(p.glob("*_MTL.xml"))
        if mtl:
            return _landsat(p, mtl[0])
        rasters = sorted(str(f) for f in p.iterdir() if f.suffix in _RASTER_EXT)
        if rasters:
            return _band_files(text, rasters)
        raise InputError(f"{text} is a folder holding no product (no MTD_MSIL*.xml, no "
                         "*_MTL.txt, no band files)")
    raise InputError(f"{text} is not a product geoseg can read")


def open_product(path: str | os.PathLike[str], *, want: Sequence[str] = (),
                 wanted_family: str | None = None, mask: str | None = None
                 ) -> tuple[Product, str] | None:
    """``(product, vrt path)`` when ``path`` is a product, else None (a plain raster)."""
    text = os.fspath(path)
    if not is_product(text):
        return None
    product = read_product(text)
    for note in product.notes:
        warnings.warn(note, GeosegWarning, stacklevel=3)
    return product, build_vrt(product, want=want, wanted_family=wanted_family, mask=mask)


def model_level(spec: Any) -> str | None:
    """Return the product level a model was trained on (``L1C``, ``L2A``), if known.

    Read from ``spec.input_kind``, else ``spec.provenance`` keys ``level``,
    ``product_level``, ``input_kind`` or ``input`` (e.g. ``"Sentinel-2 L1C
    top-of-atmosphere reflectance x 10000"``).
    """
    prov = getattr(spec, "provenance", {}) or {}
    text = " ".join([str(getattr(spec, "input_kind", "") or "")] + [
        str(prov.get(k, "")) for k in ("level", "product_level", "input_kind", "input")]).upper()
    for level in ("L1C", "L2A"):
        if level in text:
            return level
    if "TOP-OF-ATMOSPHERE" in text or "TOA" in text.split():
        return "L1C" if "SENTINEL" in text else None
    return None


def level_warning(scene: Any, spec: Any, name: str | None) -> str | None:
    """One line when a product's level differs from the model's (L2A into an L1C model)."""
    level = getattr(scene, "level", None)
    trained = model_level(spec)
    if level is None or trained is None or level == trained:
        return None
    article = "an" if level[0] in "ALM" else "a"
    return (f"{scene.label} is {article} {level} product but model {name or 'the model'} was "
            f"trained on {trained} input: expect less accurate classes")
