"""Landsat Collection 2 Level-1 and Level-2 folders, read from their MTL (text or XML)."""

from __future__ import annotations

import math
from pathlib import Path
from xml.etree import ElementTree as ET

from geoseg.bands import (
    LANDSAT_OLI,
    LANDSAT_TM,
)
from geoseg.errors import InputError
from geoseg.sources.product import REFLECTANCE_UNIT, BandFile, MaskLayer, Product, _local, _round


def _mtl_txt(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key not in ("GROUP", "END_GROUP"):
            out.setdefault(key, value.strip().strip('"'))
    return out


def _mtl_xml(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in ET.fromstring(data).iter():
        if e.text and e.text.strip() and len(e) == 0:
            out.setdefault(_local(e.tag), e.text.strip())
    return out


def _landsat(folder: Path, mtl_path: Path) -> Product:
    """Read a Landsat Collection 2 Level-1 or Level-2 folder from its MTL (text or XML)."""
    source = str(folder)
    try:
        mtl = _mtl_xml(mtl_path.read_bytes()) if mtl_path.suffix.lower() == ".xml" else \
            _mtl_txt(mtl_path.read_text(errors="replace"))
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"{mtl_path} is not a readable MTL ({exc})") from None
    craft = mtl.get("SPACECRAFT_ID", "")
    family = LANDSAT_TM if craft.upper() in ("LANDSAT_4", "LANDSAT_5", "LANDSAT_7") \
        else LANDSAT_OLI
    plevel = mtl.get("PROCESSING_LEVEL", "")
    level = "L2" if plevel.startswith("L2") else "L1"
    sun = float(mtl.get("SUN_ELEVATION", "90") or 90)
    bands = []
    for n in range(1, 12):
        fname = mtl.get(f"FILE_NAME_BAND_{n}") or (
            mtl.get(f"FILE_NAME_BAND_ST_B{n}") if level == "L2" else None)
        if not fname:
            continue
        path = folder / fname
        if not path.is_file():
            raise InputError(f"{source}: band file {fname} named in {mtl_path.name} is missing")
        mult = mtl.get(f"REFLECTANCE_MULT_BAND_{n}")
        add = mtl.get(f"REFLECTANCE_ADD_BAND_{n}")
        if mult is not None and add is not None:
            scale, offset = float(mult), float(add)
            if level == "L1":  # TOA reflectance, sun-angle corrected (USGS)
                s = math.sin(math.radians(sun))
                scale, offset = scale / s, offset / s
            scale, offset = scale * REFLECTANCE_UNIT, offset * REFLECTANCE_UNIT
        elif mtl.get(f"TEMPERATURE_MULT_BAND_ST_B{n}") is not None:
            scale = float(mtl[f"TEMPERATURE_MULT_BAND_ST_B{n}"])
            offset = float(mtl.get(f"TEMPERATURE_ADD_BAND_ST_B{n}", "0"))
        elif n in (10, 11) or (family == LANDSAT_TM and n == 6):
            continue  # thermal radiance without a temperature scale: not a model input
        else:
            raise InputError(f"{source}: {mtl_path.name} has no REFLECTANCE_MULT_BAND_{n} / "
                             f"REFLECTANCE_ADD_BAND_{n} for {fname}")
        # L2 names say the sensor (SR_/ST_ are Landsat's): a model trained on them knows
        name = (f"ST_B{n}" if n >= 10 or (family == LANDSAT_TM and n == 6) else
                f"SR_B{n}") if level == "L2" else f"B{n}"
        bands.append(BandFile(name, str(path), scale=_round(scale), offset=_round(offset),
                              nodata=0.0))
    if not bands:
        raise InputError(f"{source}: {mtl_path.name} names no band file (FILE_NAME_BAND_n)")
    qa = mtl.get("FILE_NAME_QUALITY_L1_PIXEL")
    masks = (MaskLayer("qa_pixel", str(folder / qa)),) if qa and (folder / qa).is_file() else ()
    return Product(source=source, kind=f"Landsat {craft or '?'} Collection 2 {plevel or level}",
                   bands=tuple(bands), family=family, level=level, masks=masks)
