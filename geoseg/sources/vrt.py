"""The virtual scene: one float32 GDAL VRT on the finest wanted band's grid."""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from geoseg.errors import BandMismatchError, InputError
from geoseg.sources.masks import _write_cloud_mask
from geoseg.sources.product import BandFile, Product


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
    from geoseg._raster import open_raster

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
    native = {b.name: _native_vrt(b, headers[b.name], folder / f"{i}.{b.name}.vrt")
              for i, b in enumerate(product.bands)
              if b.nodata is not None and not math.isclose(headers[b.name].res, g.res)}
    xml = _vrt_xml(product, headers, g, mask_file, native)
    tmp = folder / f".{stem}.{os.getpid()}.tmp"
    tmp.write_text(xml)
    os.replace(tmp, vrt)
    return str(vrt)


def _crs_text(crs: Any) -> str:
    if crs is None:
        return "none"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:40]


def _native_vrt(band: BandFile, h: _Header, out: Path) -> str:
    """Write a one-band VRT of ``band`` on its own grid that declares its nodata; return it.

    A band resampled onto the scene's grid is read through this file, so that GDAL's
    bilinear resampling knows the product's nodata (Sentinel-2 JP2s do not declare
    theirs) and leaves it out of the weights: a valid pixel next to the nodata ring of a
    tile edge stays within its valid neighbours' values instead of being pulled toward
    ``nodata * scale + offset`` (e.g. -1000). Pixels with no valid neighbour read as
    nodata.
    """
    t = h.transform
    root = ET.Element("VRTDataset", rasterXSize=str(h.width), rasterYSize=str(h.height))
    if h.crs is not None:
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = h.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    vb = ET.SubElement(root, "VRTRasterBand", dataType=_GDAL_TYPES.get(h.dtype, "Float64"),
                       band="1")
    ET.SubElement(vb, "NoDataValue").text = repr(float(band.nodata or 0.0))
    src = ET.SubElement(vb, "SimpleSource")
    ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = band.path
    ET.SubElement(src, "SourceBand").text = str(band.band)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(ET.tostring(root, encoding="unicode"))
    os.replace(tmp, out)
    return str(out)


_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "float32": "Float32",
               "float64": "Float64"}


def _vrt_xml(product: Product, headers: dict[str, _Header], g: _Header,
             mask_file: Path | None, native: dict[str, str] | None = None) -> str:
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
        ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = \
            (native or {}).get(band.name, band.path)
        ET.SubElement(src, "SourceBand").text = "1" if band.name in (native or {}) \
            else str(band.band)
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
