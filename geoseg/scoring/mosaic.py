"""Many prediction chips scored as one map: a GDAL VRT mosaic and its footprint.

``score pred_dir/`` (or a glob such as ``"preds/*.tif"``) scores every georeferenced
class-map chip at once. The chips become one virtual mosaic, a GDAL VRT written next to
nothing (in a temporary directory) and read like any raster; the confusion matrix is
the same as the sum over chips, except where chips overlap (there the first chip in
name order wins, as for label tiles; ``gdalbuildvrt`` lets the last win). The VRT XML
is written here because rasterio has no ``BuildVRT`` and GDAL's Python bindings are
not a dependency.

Chips must share CRS, data type and class tags; their pixel sizes may differ (GDAL
resamples with nearest neighbour onto the first chip's). XYZ chips without
georeferencing are placed by their names (:mod:`geoseg.xyz`).
"""

from __future__ import annotations

import glob
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from geoseg.classmap import ClassMapInfo
from geoseg.errors import InputError
from geoseg.io import Scene, open_scene

__all__ = ["PredictionMosaic", "chip_paths", "prediction_mosaic"]

#: Raster chip suffixes a prediction folder is searched for.
CHIP_SUFFIXES = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img"})

_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32"}


def chip_paths(pred: str | os.PathLike[str]) -> list[str] | None:
    """Chip paths of a folder or glob, in name order; None for a single file."""
    text = os.fspath(pred)
    if Path(text).is_dir():
        paths = sorted(str(p) for p in Path(text).rglob("*")
                       if p.is_file() and p.suffix.lower() in CHIP_SUFFIXES)
        where = f"folder {text}"
    elif glob.has_magic(text) and not Path(text).exists():
        paths = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
        where = f"pattern {text!r}"
    else:
        return None
    if not paths:
        raise InputError(f"{where} matches no prediction chips "
                         f"({', '.join(sorted(CHIP_SUFFIXES))})")
    return paths


@dataclass(frozen=True)
class PredictionMosaic:
    """A VRT over prediction chips: its path, what to call it, and the chips' boxes."""

    path: str
    description: str
    crs: Any
    boxes: tuple[tuple[float, float, float, float], ...]

    def footprint(self) -> Any:
        """Union of the chips' boxes (shapely), in :attr:`crs`."""
        import shapely

        return shapely.union_all([shapely.box(*b) for b in self.boxes])


@contextmanager
def prediction_mosaic(paths: Sequence[str], name: str) -> Iterator[PredictionMosaic]:
    """Yield a :class:`PredictionMosaic` of chips (:func:`chip_paths`) called ``name``.

    The VRT lives in a temporary directory removed on exit.
    """
    chips = [open_scene(p) for p in paths]
    _check_chips(chips)
    with tempfile.TemporaryDirectory(prefix="geoseg-mosaic-") as tmp:
        vrt = Path(tmp) / "predictions.vrt"
        vrt.write_text(_vrt_xml(chips))
        boxes = tuple(_bounds(c) for c in chips)
        yield PredictionMosaic(str(vrt), f"{len(chips)} chips in {name}",
                               chips[0].crs, boxes)


def _check_chips(chips: list[Scene]) -> None:
    first = chips[0]
    info = ClassMapInfo.from_tags(first)
    for c in chips:
        if c.crs is None:
            raise InputError(f"prediction chip {c.path} has no georeferencing; chips "
                             f"are placed by it (or by an XYZ name, see --xyz-pattern)")
        if c.count != 1:
            raise InputError(f"prediction chip {c.path} has {c.count} bands; a class "
                             f"map has 1")
        if c.crs != first.crs:
            raise InputError(f"prediction chips {first.path} and {c.path} have "
                             f"different CRSs; reproject them to one CRS first")
        if c.dtype != first.dtype or c.nodata != first.nodata:
            raise InputError(f"prediction chips {first.path} and {c.path} differ in "
                             f"data type or nodata ({first.dtype}/{first.nodata} vs "
                             f"{c.dtype}/{c.nodata})")
        if ClassMapInfo.from_tags(c) != info:
            raise InputError(f"prediction chips {first.path} and {c.path} have "
                             f"different classes (class tags); score them separately")
        if c.transform.b or c.transform.d:
            raise InputError(f"prediction chip {c.path} is rotated; only north-up "
                             f"chips can be mosaicked")
    if first.dtype not in _GDAL_TYPES:
        raise InputError(f"prediction chips have dtype {first.dtype}; a class map holds "
                         f"integer class ids")


def _bounds(scene: Scene) -> tuple[float, float, float, float]:
    t = scene.transform
    xs = (t.c, t.c + t.a * scene.width)
    ys = (t.f, t.f + t.e * scene.height)
    return min(xs), min(ys), max(xs), max(ys)


def _vrt_xml(chips: list[Scene]) -> str:
    """Write the VRT document: the union of the chips on the first chip's pixel size."""
    first = chips[0]
    res_x, res_y = abs(first.transform.a), abs(first.transform.e)
    boxes = [_bounds(c) for c in chips]
    left, top = min(b[0] for b in boxes), max(b[3] for b in boxes)
    width = math.ceil(round((max(b[2] for b in boxes) - left) / res_x, 6))
    height = math.ceil(round((top - min(b[1] for b in boxes)) / res_y, 6))
    nodata = first.nodata
    info = ClassMapInfo.from_tags(first)
    tags = {**first.tags, **(info.to_tags() if info else {})}
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"  <SRS>{escape(first.crs.to_wkt())}</SRS>",  # type: ignore[union-attr]
             f"  <GeoTransform>{left!r}, {res_x!r}, 0, {top!r}, 0, {-res_y!r}"
             f"</GeoTransform>",
             "  <Metadata>",
             *(f"    <MDI key={quoteattr(k)}>{escape(v)}</MDI>" for k, v in tags.items()),
             "  </Metadata>",
             f'  <VRTRasterBand dataType="{_GDAL_TYPES[first.dtype]}" band="1">']
    if nodata is not None:
        lines.append(f"    <NoDataValue>{nodata!r}</NoDataValue>")
    for chip, box in reversed(list(zip(chips, boxes, strict=True))):
        lines += _source(chip, box, left, top, res_x, res_y)
    lines += ["  </VRTRasterBand>", "</VRTDataset>", ""]
    return "\n".join(lines)


def _source(chip: Scene, box: tuple[float, float, float, float], left: float,
            top: float, res_x: float, res_y: float) -> list[str]:
    # A ComplexSource with NODATA: a chip's nodata never covers a neighbour's data.
    # Sources are drawn in order, later over earlier: the caller passes them in
    # reversed name order, so the first chip wins where chips overlap.
    x_off, y_off = (box[0] - left) / res_x, (top - box[3]) / res_y
    x_size, y_size = (box[2] - box[0]) / res_x, (box[3] - box[1]) / res_y
    nodata = (f"      <NODATA>{chip.nodata!r}</NODATA>" if chip.nodata is not None
              else "")
    return [
        "    <ComplexSource>",
        f'      <SourceFilename relativeToVRT="0">'
        f"{escape(str(Path(chip.path).resolve()))}</SourceFilename>",
        "      <SourceBand>1</SourceBand>",
        f'      <SrcRect xOff="0" yOff="0" xSize="{chip.width}" ySize="{chip.height}"/>',
        f'      <DstRect xOff="{x_off!r}" yOff="{y_off!r}" xSize="{x_size!r}" '
        f'ySize="{y_size!r}"/>',
        *([nodata] if nodata else []),
        "    </ComplexSource>",
    ]
