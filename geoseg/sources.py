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
  reads as NaN, the VRT's nodata; geoseg treats NaN as nodata everywhere.
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
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from xml.etree import ElementTree as ET

from geoseg.bands import (
    COMMON_NAMES,
    LANDSAT_OLI,
    LANDSAT_TM,
    SENTINEL2,
    band_key,
    canonical_name,
    family_of,
)
from geoseg.errors import BandMismatchError, GeosegWarning, InputError

__all__ = ["BandFile", "Product", "is_product", "open_product", "read_product"]

#: Reflectance unit of geoseg's satellite models (reflectance x 10000).
REFLECTANCE_UNIT = 10000.0

_RASTER_EXT = (".tif", ".tiff", ".jp2", ".TIF", ".TIFF", ".JP2", ".vrt")
_S2_FILE = re.compile(r"_(B\d[\dA])(?:_(\d{2})m)?$")
_S2_SCL = re.compile(r"_SCL_(\d{2})m$")


@dataclass(frozen=True)
class BandFile:
    """One band of a product: where it is and how its DNs become model units."""

    name: str
    path: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = 0.0
    band: int = 1


@dataclass(frozen=True)
class MaskLayer:
    """A flag raster of the product and how to read clouds from it."""

    kind: str  # "scl", "s2classi", "qa_pixel"
    path: str


@dataclass(frozen=True)
class Product:
    """A product's bands and metadata, read from its files (no pixels)."""

    source: str
    kind: str
    bands: tuple[BandFile, ...]
    family: str | None = None
    level: str | None = None
    masks: tuple[MaskLayer, ...] = ()
    notes: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------------------- detection

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


# ------------------------------------------------------------------------- Sentinel-2

class _Tree:
    """Files of a product, in a folder or a zip."""

    def names(self) -> list[str]:
        raise NotImplementedError

    def read_bytes(self, rel: str) -> bytes:
        raise NotImplementedError

    def gdal_path(self, rel: str) -> str:
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        return rel in set(self.names())


class _DirTree(_Tree):
    def __init__(self, root: Path) -> None:
        self.root = root
        self._names: list[str] | None = None

    def names(self) -> list[str]:
        if self._names is None:
            self._names = sorted(p.relative_to(self.root).as_posix()
                                 for p in self.root.rglob("*") if p.is_file())
        return self._names

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def read_bytes(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def gdal_path(self, rel: str) -> str:
        return str(self.root / rel)


class _ZipTree(_Tree):
    def __init__(self, path: Path, zf: zipfile.ZipFile, prefix: str) -> None:
        self.path, self.zf, self.prefix = path, zf, prefix
        self._names = sorted(n[len(prefix):] for n in zf.namelist()
                             if n.startswith(prefix) and not n.endswith("/"))

    def names(self) -> list[str]:
        return self._names

    def read_bytes(self, rel: str) -> bytes:
        return self.zf.read(self.prefix + rel)

    def gdal_path(self, rel: str) -> str:
        return f"/vsizip/{self.path.resolve()}/{self.prefix}{rel}"


def _find_mtd(tree: _Tree) -> str | None:
    for name in tree.names():
        if "/" not in name and re.fullmatch(r"MTD_MSIL(1C|2A)\.xml", name):
            return name
    return None


def _zip_product(path: Path) -> Product:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path} is not a zip archive ({exc})") from None
    with zf:
        for name in zf.namelist():
            m = re.fullmatch(r"(.*/)?MTD_MSIL(1C|2A)\.xml", name)
            if m and (m.group(1) or "").count("/") <= 1:
                return _safe(_ZipTree(path, zf, m.group(1) or ""), str(path))
    raise InputError(f"{path} is not a Sentinel-2 product zip (no <name>.SAFE/MTD_MSIL1C.xml "
                     "or MTD_MSIL2A.xml inside)")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _texts(root: ET.Element, tag: str) -> list[ET.Element]:
    return [e for e in root.iter() if _local(e.tag) == tag]


def _first(root: ET.Element, tag: str) -> str | None:
    found = _texts(root, tag)
    return None if not found or found[0].text is None else found[0].text.strip()


def _safe(tree: _Tree, source: str) -> Product:
    """Read a Sentinel-2 L1C/L2A product: MTD XML and GRANULE/*/IMG_DATA band files."""
    mtd = _find_mtd(tree)
    assert mtd is not None
    l2a = mtd == "MTD_MSIL2A.xml"
    level = "L2A" if l2a else "L1C"
    try:
        root = ET.fromstring(tree.read_bytes(mtd))
    except ET.ParseError as exc:
        raise InputError(f"{source}: {mtd} is not valid XML ({exc})") from None
    baseline = _first(root, "PROCESSING_BASELINE") or "00.00"
    try:
        pb = float(baseline)
    except ValueError:
        raise InputError(f"{source}: {mtd} has PROCESSING_BASELINE {baseline!r}, not a "
                         "number") from None
    q_tag = "BOA_QUANTIFICATION_VALUE" if l2a else "QUANTIFICATION_VALUE"
    q_text = _first(root, q_tag)
    quant = float(q_text) if q_text else REFLECTANCE_UNIT
    if not quant > 0:
        raise InputError(f"{source}: {mtd} has {q_tag} {q_text}")
    # band_id (0..12) -> physical band name (B1..B12, B8A)
    ids = {e.get("bandId"): e.get("physicalBand") for e in _texts(root, "Spectral_Information")}
    if not any(ids.values()):
        ids = {str(i): b for i, b in enumerate(
            ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"])}
    off_tag = "BOA_ADD_OFFSET" if l2a else "RADIO_ADD_OFFSET"
    offsets: dict[str, float] = {}
    for e in _texts(root, off_tag):
        name = ids.get(e.get("band_id"))
        if name and e.text:
            offsets[canonical_name(name, SENTINEL2)] = float(e.text)
    nodata = 0.0
    for sv in _texts(root, "Special_Values"):
        if (_first(sv, "SPECIAL_VALUE_TEXT") or "").upper() == "NODATA":
            nodata = float(_first(sv, "SPECIAL_VALUE_INDEX") or 0)
    files = _s2_band_files(tree, root, source, mtd)
    if not files:
        raise InputError(f"{source}: no band files under GRANULE/*/IMG_DATA")
    if pb >= 4.0 and not offsets:
        raise InputError(f"{source}: {level} processing baseline {baseline} stores reflectance "
                         f"with an offset, but {mtd} has no {off_tag} values: cannot convert "
                         "its DNs to reflectance")
    bands = []
    for name, rel in sorted(files.items(), key=lambda kv: _s2_order(kv[0])):
        off = offsets.get(name, 0.0)
        if pb >= 4.0 and name not in offsets:
            raise InputError(f"{source}: {mtd} has no {off_tag} for band {name}")
        k = REFLECTANCE_UNIT / quant
        bands.append(BandFile(name, tree.gdal_path(rel), scale=k, offset=_round(off * k),
                              nodata=nodata))
    masks = _s2_masks(tree, l2a, pb)
    return Product(source=source, kind=f"Sentinel-2 {level} product (baseline {baseline})",
                   bands=tuple(bands), family=SENTINEL2, level=level, masks=masks)


def _round(x: float) -> float:
    return float(f"{x:.10g}")


def _s2_order(name: str) -> tuple[int, str]:
    num = name[1:].lstrip("0")
    return (8 if num == "8A" else int(num.rstrip("A") or 0)) * 2 + (num == "8A"), name


def _s2_band_files(tree: _Tree, root: ET.Element, source: str, mtd: str) -> dict[str, str]:
    """Band name -> relative file of its finest resolution (IMAGE_FILE entries, else glob)."""
    listed = [e.text.strip() for e in _texts(root, "IMAGE_FILE") if e.text]
    granules = {n.split("/")[1] for n in tree.names() if n.startswith("GRANULE/")
                and n.count("/") >= 2}
    if len(granules) > 1:
        raise InputError(f"{source} has {len(granules)} granules; geoseg reads one-granule "
                         "products (all since 2016)")
    names = tree.names()
    best: dict[str, tuple[int, str]] = {}
    candidates: list[str] = []
    if listed:
        for stem in listed:
            if not _S2_FILE.search(stem):
                continue
            hit = next((stem + ext for ext in (".jp2", ".tif") if tree.exists(stem + ext)),
                       None)
            if hit is None:
                raise InputError(f"{source}: band file {stem}.jp2 listed in {mtd} is missing")
            candidates.append(hit)
    else:
        candidates = [n for n in names if n.startswith("GRANULE/") and "/IMG_DATA/" in n
                      and n.endswith((".jp2", ".tif"))]
    for rel in candidates:
        m = _S2_FILE.search(PurePosixPath(rel).stem)
        if m is None:
            continue
        name = canonical_name(m.group(1), SENTINEL2)
        res = int(m.group(2) or 0)
        if name not in best or res < best[name][0]:
            best[name] = (res, rel)
    return {k: v[1] for k, v in best.items()}


def _s2_masks(tree: _Tree, l2a: bool, pb: float) -> tuple[MaskLayer, ...]:
    names = tree.names()
    if l2a:
        scl = sorted((int(m.group(1)), n) for n in names
                     if (m := _S2_SCL.search(PurePosixPath(n).stem)) and "/IMG_DATA/" in n)
        return (MaskLayer("scl", tree.gdal_path(scl[0][1])),) if scl else ()
    if pb >= 4.0:
        classi = [n for n in names if n.endswith("MSK_CLASSI_B00.jp2") or
                  n.endswith("MSK_CLASSI_B00.tif")]
        return (MaskLayer("s2classi", tree.gdal_path(classi[0])),) if classi else ()
    return ()


# --------------------------------------------------------------------------- Landsat

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


# ------------------------------------------------------------------------------ STAC

def _read_json(text: str) -> tuple[dict[str, Any], str]:
    """Return the item and its base location (a URL or a folder) for relative hrefs."""
    url = text[len("/vsicurl/"):] if text.startswith("/vsicurl/") else text
    if url.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                raw = resp.read()
        except OSError as exc:
            raise InputError(f"cannot read STAC item {url} ({exc})") from None
        base = url
    else:
        p = Path(text)
        if not p.is_file():
            raise InputError(f"input not found: {text}")
        raw, base = p.read_bytes(), str(p.resolve())
    try:
        item = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{text} is not JSON ({exc})") from None
    if not isinstance(item, dict) or item.get("type") != "Feature" or \
            not isinstance(item.get("assets"), dict):
        raise InputError(f"{text} is not a STAC item (a JSON Feature with assets)")
    return item, base


def _href(href: str, base: str) -> str:
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith(("s3://", "gs://")):
        return "/vs" + href[:2] + "/" + href[5:]
    if href.startswith("/vsi") or os.path.isabs(href):
        return href
    if base.startswith(("http://", "https://")):
        from urllib.parse import urljoin

        return "/vsicurl/" + urljoin(base, href)
    return str((Path(base).parent / href).resolve())


def _stac_family(props: dict[str, Any], names: Sequence[str]) -> str | None:
    text = " ".join(str(props.get(k, "")) for k in ("constellation", "platform")).lower()
    if "sentinel-2" in text or "sentinel2" in text:
        return SENTINEL2
    if "landsat" in text:
        return LANDSAT_TM if any(f"landsat-{n}" in text for n in (4, 5, 7)) else LANDSAT_OLI
    return family_of(names)


def _stac_level(props: dict[str, Any], item_id: str) -> str | None:
    text = " ".join(str(props.get(k, "")) for k in
                    ("processing:level", "s2:product_type", "landsat:correction")).upper()
    text += " " + item_id.upper()
    for key, level in (("L2A", "L2A"), ("L1C", "L1C"), ("L2SP", "L2"), ("L1TP", "L1")):
        if key in text:
            return level
    return None


def _asset_name(key: str, asset: dict[str, Any]) -> str | None:
    eo = asset.get("eo:bands") or asset.get("bands") or []
    if isinstance(eo, list) and len(eo) > 1:
        return None  # a multi-band asset (a TCI, a stack): not a band file
    info = eo[0] if isinstance(eo, list) and eo and isinstance(eo[0], dict) else {}
    for cand in (info.get("name"), info.get("common_name"), info.get("eo:common_name"), key):
        if isinstance(cand, str) and _known(cand):
            return cand
    return None


def _known(name: str) -> bool:
    """Whether ``name`` is a band name of some sensor or a common name."""
    return any(band_key(name, f) in COMMON_NAMES for f in (None, SENTINEL2, LANDSAT_OLI))


def _stac_band(name: str, path: str, asset: dict[str, Any], family: str | None,
               pb: float) -> tuple[BandFile, bool]:
    """One band asset in model units; True when ESA's default offset was assumed."""
    rb = asset.get("raster:bands")
    rb = rb[0] if isinstance(rb, list) and rb and isinstance(rb[0], dict) else {}
    info = asset.get("bands")
    info = info[0] if isinstance(info, list) and info and isinstance(info[0], dict) else {}
    scale = rb.get("scale", info.get("raster:scale"))
    offset = rb.get("offset", info.get("raster:offset"))
    nodata = rb.get("nodata", info.get("nodata", asset.get("nodata")))
    assumed = False
    if scale is not None or offset is not None:
        s, o = float(scale if scale is not None else 1), float(offset or 0)
        if family is not None and not band_key(name, family).startswith("lwir"):
            s, o = s * REFLECTANCE_UNIT, o * REFLECTANCE_UNIT  # reflectance -> x 10000
    elif family == SENTINEL2 and pb >= 4.0:
        s, o, assumed = 1.0, -1000.0, True
    else:
        s, o = 1.0, 0.0
    canon = canonical_name(name, family) if family else name
    return BandFile(canon, path, scale=_round(s), offset=_round(o),
                    nodata=0.0 if nodata is None else float(nodata)), assumed


def _stac_item(text: str) -> Product:
    item, base = _read_json(text)
    props = item.get("properties") or {}
    raw: list[tuple[str, str, dict[str, Any]]] = []
    for key, asset in item["assets"].items():
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            continue
        media = str(asset.get("type", "")).lower()
        href = asset["href"]
        if not ("tiff" in media or "jp2" in media or href.split("?")[0].endswith(_RASTER_EXT)):
            continue
        roles = asset.get("roles") or ["data"]
        if "data" not in roles and "reflectance" not in roles:
            continue
        name = _asset_name(key, asset)
        if name is not None:
            raw.append((name, _href(href, base), asset))
    # one asset per band: items often hold a band twice (a COG and its JP2): keep a COG
    raw.sort(key=lambda r: r[1].lower().endswith(".jp2"))
    fam = _stac_family(props, [r[0] for r in raw])
    unique: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for r in raw:
        unique.setdefault(band_key(r[0], fam), r)
    raw = list(unique.values())
    if not raw:
        raise InputError(f"{text}: STAC item {item.get('id', '?')} has no usable band asset "
                         "(single-band GeoTIFF/JP2 assets named by eo:bands or a band key)")
    family = _stac_family(props, [r[0] for r in raw])
    level = _stac_level(props, str(item.get("id", "")))
    pb_text = str(props.get("s2:processing_baseline", "") or "")
    try:
        pb = float(pb_text) if pb_text else 0.0
    except ValueError:
        pb = 0.0
    bands: list[BandFile] = []
    notes: list[str] = []
    for name, path, asset in raw:
        band, note = _stac_band(name, path, asset, family, pb)
        bands.append(band)
        if note and not notes:
            notes.append(f"{text}: Sentinel-2 baseline {pb_text} item without "
                         "raster:bands offsets; applying ESA's -1000")
    masks: tuple[MaskLayer, ...] = ()
    scl = item["assets"].get("scl") or item["assets"].get("SCL")
    if isinstance(scl, dict) and isinstance(scl.get("href"), str):
        masks = (MaskLayer("scl", _href(scl["href"], base)),)
    qa = item["assets"].get("qa_pixel") or item["assets"].get("QA_PIXEL")
    if isinstance(qa, dict) and isinstance(qa.get("href"), str):
        masks = (MaskLayer("qa_pixel", _href(qa["href"], base)),)
    kind = f"STAC item {item.get('id', '?')}" + (f" ({level})" if level else "")
    return Product(source=text, kind=kind, bands=tuple(bands), family=family, level=level,
                   masks=masks, notes=tuple(notes))


# ------------------------------------------------------------------------ band files

_FILE_BAND = re.compile(r"(?:^|[_\-.])((?:SR_|ST_)?B\d{1,2}A?|coastal|blue|green|red|nir\d*|"
                        r"rededge\d*|swir\d*|cirrus|pan)$", re.IGNORECASE)


def _band_files(source: str, files: Sequence[str]) -> Product:
    """Single-band files, named by their descriptions or their file names."""
    import rasterio

    from geoseg.io import open_raster

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


# ------------------------------------------------------------------------------- VRT

@dataclass(frozen=True)
class _Header:
    crs: Any
    transform: Any
    width: int
    height: int
    dtype: str

    @property
    def res(self) -> float:
        return float(abs(self.transform.a))


def _header(band: BandFile, source: str) -> _Header:
    from geoseg.io import open_raster

    try:
        with open_raster(band.path) as src:
            return _Header(src.crs, src.transform, src.width, src.height, src.dtypes[0])
    except InputError as exc:
        raise InputError(f"{source}: band {band.name}: {exc}") from None


_TMP_LOCK = threading.Lock()
_TMP: list[Path] = []


def _tmpdir() -> Path:
    with _TMP_LOCK:
        if not _TMP:
            path = Path(tempfile.mkdtemp(prefix="geoseg-scenes-"))
            _TMP.append(path)
            atexit.register(shutil.rmtree, path, True)
        return _TMP[0]


def _grid_bands(product: Product, want: Sequence[str], wanted_family: str | None
                ) -> list[BandFile]:
    """Return the bands whose finest resolution sets the grid: the wanted ones, else all."""
    if not want:
        return list(product.bands)
    from geoseg.bands import match_bands

    try:
        idx = match_bands(want, [b.name for b in product.bands], wanted_family=wanted_family,
                          scene_family=product.family)
    except BandMismatchError:
        return list(product.bands)
    return [product.bands[i - 1] for i in idx]


def build_vrt(product: Product, *, want: Sequence[str] = (), wanted_family: str | None = None,
              mask: str | None = None,
              progress: Callable[[str], None] | None = None) -> str:
    """Write the product's virtual scene (see the module docstring); return its path."""
    headers = {b.name: _header(b, product.source) for b in product.bands}
    crss = {b.name: headers[b.name].crs for b in product.bands}
    first = product.bands[0].name
    other = next((n for n, c in crss.items() if c != crss[first]), None)
    if other is not None:
        raise InputError(f"{product.source}: bands are on different CRSs ({first}: "
                         f"{_crs_text(crss[first])}, {other}: {_crs_text(crss[other])}); "
                         "geoseg stacks bands of one CRS only")
    if crss[first] is None:
        raise InputError(f"{product.source}: band {first} has no CRS; bands of a product "
                         "are stacked by their georeferencing")
    grid_band = min(_grid_bands(product, want, wanted_family),
                    key=lambda b: headers[b.name].res)
    g = headers[grid_band.name]
    if mask is not None and mask != "clouds":
        raise InputError(f"unknown mask {mask!r} (known: clouds)")
    if mask == "clouds" and not product.masks:
        raise InputError(f"{product.source}: --mask clouds needs the product's cloud flags "
                         "(Sentinel-2 L2A SCL, L1C MSK_CLASSI_B00 from baseline 04.00, "
                         "Landsat QA_PIXEL); this product has none")
    spec = json.dumps([product.source, [b.__dict__ for b in product.bands], grid_band.name,
                       mask], sort_keys=True, default=str)
    digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
    folder = _tmpdir() / digest
    stem = Path(product.source.rstrip("/\\").split(",")[0]).name or "scene"
    vrt = folder / f"{stem}.vrt"
    if vrt.is_file():
        return str(vrt)
    folder.mkdir(parents=True, exist_ok=True)
    mask_file = None
    if mask == "clouds":
        mask_file = folder / "clouds.tif"
        if progress is not None:
            progress(f"cloud mask from {', '.join(m.kind for m in product.masks)}")
        _write_cloud_mask(product, g, mask_file)
    xml = _vrt_xml(product, headers, g, mask_file)
    tmp = folder / f".{stem}.{os.getpid()}.tmp"
    tmp.write_text(xml)
    os.replace(tmp, vrt)
    return str(vrt)


def _crs_text(crs: Any) -> str:
    if crs is None:
        return "none"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:40]


def _vrt_xml(product: Product, headers: dict[str, _Header], g: _Header,
             mask_file: Path | None) -> str:
    t = g.transform
    root = ET.Element("VRTDataset", rasterXSize=str(g.width), rasterYSize=str(g.height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = g.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    md = ET.SubElement(root, "Metadata")
    for key, value in (("GEOSEG_SOURCE", product.source), ("GEOSEG_PRODUCT", product.kind),
                       ("GEOSEG_SENSOR", product.family or ""),
                       ("GEOSEG_LEVEL", product.level or "")):
        ET.SubElement(md, "MDI", key=key).text = value
    inv = ~t
    for i, band in enumerate(product.bands, start=1):
        h = headers[band.name]
        vb = ET.SubElement(root, "VRTRasterBand", dataType="Float32", band=str(i))
        ET.SubElement(vb, "Description").text = band.name
        ET.SubElement(vb, "NoDataValue").text = "nan"
        ET.SubElement(vb, "Offset").text = "0"
        ET.SubElement(vb, "Scale").text = "1"
        x0, y0 = inv @ (h.transform.c, h.transform.f)
        x1, y1 = inv @ (h.transform @ (h.width, h.height))
        resampling = "nearest" if math.isclose(h.res, g.res) else "bilinear"
        src = ET.SubElement(vb, "ComplexSource", resampling=resampling)
        ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = band.path
        ET.SubElement(src, "SourceBand").text = str(band.band)
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(h.width),
                      ySize=str(h.height))
        ET.SubElement(src, "DstRect", xOff=_num(x0), yOff=_num(y0), xSize=_num(x1 - x0),
                      ySize=_num(y1 - y0))
        if band.nodata is not None:
            ET.SubElement(src, "NODATA").text = repr(float(band.nodata))
        ET.SubElement(src, "ScaleOffset").text = repr(band.offset)
        ET.SubElement(src, "ScaleRatio").text = repr(band.scale)
    if mask_file is not None:
        mb = ET.SubElement(ET.SubElement(root, "MaskBand"), "VRTRasterBand", dataType="Byte")
        ms = ET.SubElement(mb, "SimpleSource")
        ET.SubElement(ms, "SourceFilename", relativeToVRT="0").text = str(mask_file)
        ET.SubElement(ms, "SourceBand").text = "1"
    return ET.tostring(root, encoding="unicode")


def _num(x: float) -> str:
    r = round(x)
    return str(r) if abs(x - r) < 1e-6 else repr(float(x))


def _windows(height: int, width: int, block: int = 1024) -> Iterator[tuple[int, int, int, int]]:
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield r, c, min(block, height - r), min(block, width - c)


def _write_cloud_mask(product: Product, g: _Header, out: Path) -> None:
    """255 where no flag of the product marks cloud, shadow, cirrus or nodata; else 0."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window
    from rasterio.windows import transform as win_transform

    from geoseg.io import open_raster

    profile = {"driver": "GTiff", "width": g.width, "height": g.height, "count": 1,
               "dtype": "uint8", "crs": g.crs, "transform": g.transform, "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    sources = [(m, open_raster(m.path)) for m in product.masks]
    try:
        with rasterio.open(out, "w", **profile) as dst:
            for r, c, h, w in _windows(g.height, g.width):
                win = Window(c, r, w, h)
                wt = win_transform(win, g.transform)
                ok = np.ones((h, w), bool)
                for layer, src in sources:
                    n = 3 if layer.kind == "s2classi" else 1
                    buf = np.zeros((n, h, w), src.dtypes[0])
                    for b in range(n):
                        reproject(rasterio.band(src, min(b + 1, src.count)), buf[b],
                                  dst_transform=wt, dst_crs=g.crs,
                                  resampling=Resampling.nearest, src_nodata=None,
                                  dst_nodata=None)
                    ok &= _clear(layer.kind, buf)
                dst.write((ok * 255).astype("uint8"), 1, window=win)
    finally:
        for _, src in sources:
            src.close()


def _clear(kind: str, buf: Any) -> Any:
    import numpy as np

    if kind == "scl":  # 0 no data, 3 cloud shadow, 8/9 cloud, 10 cirrus
        return ~np.isin(buf[0], (0, 3, 8, 9, 10))
    if kind == "s2classi":  # band 1 opaque clouds, band 2 cirrus
        return (buf[0] == 0) & (buf[1] == 0)
    # QA_PIXEL: bit 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow
    return (buf[0].astype(np.uint32) & 0b11111) == 0


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
