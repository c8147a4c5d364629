"""What a product is to geoseg: its band files, their scale and offset, its flag layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

#: Reflectance unit of geoseg's satellite models (reflectance x 10000).
REFLECTANCE_UNIT = 10000.0


_RASTER_EXT = (".tif", ".tiff", ".jp2", ".TIF", ".TIFF", ".JP2", ".vrt")


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


def _round(x: float) -> float:
    return float(f"{x:.10g}")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _texts(root: ET.Element, tag: str) -> list[ET.Element]:
    return [e for e in root.iter() if _local(e.tag) == tag]


def _first(root: ET.Element, tag: str) -> str | None:
    found = _texts(root, tag)
    return None if not found or found[0].text is None else found[0].text.strip()
