"""Sentinel-2 L1C/L2A products: a ``.SAFE`` folder or its zip, read from the MTD XML."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree as ET

from geoseg.bands import (
    SENTINEL2,
    canonical_name,
)
from geoseg.errors import InputError
from geoseg.sources.product import (
    REFLECTANCE_UNIT,
    BandFile,
    MaskLayer,
    Product,
    _first,
    _round,
    _texts,
)

_S2_FILE = re.compile(r"_(B\d[\dA])(?:_(\d{2})m)?$")


_S2_SCL = re.compile(r"_SCL_(\d{2})m$")


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
