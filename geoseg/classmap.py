"""Class maps: the tag contract, opening one, naming its classes, choosing which to vectorize.

A class map is one band of unsigned class ids (nodata 255). :class:`ClassMapInfo` is the
one reader and writer of its class tags: ``class_ids`` (comma-separated ints),
``class_names`` (comma-separated, same count), ``class_colors`` (``r,g,b;r,g,b;...``,
optional) and ``CLASS_<id>=<name>`` (for GIS tools). ``geoseg predict`` writes them;
vectorize, score and preview read them with :meth:`ClassMapInfo.from_tags`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import GeosegWarning, InputError, UnknownNameError
from geoseg.io import NODATA_CLASS, Scene, open_scene

__all__ = [
    "ClassMapInfo",
    "ClassTable",
    "band_class_map",
    "building_classes",
    "class_table",
    "open_class_map",
    "road_classes",
    "selection",
]


@dataclass(frozen=True)
class ClassMapInfo:
    """The classes of a class map: ids (pixel values), names and colours, in order.

    Examples
    --------
    >>> info = ClassMapInfo((0, 3), ("water", "field"), ((0, 0, 255), (0, 128, 0)))
    >>> info.to_tags()["class_ids"], info.name_of(3)
    ('0,3', 'field')
    >>> ClassMapInfo.from_tags(info.to_tags()) == info
    True
    """

    ids: tuple[int, ...]
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self) -> None:
        problem = _info_problem(self.ids, self.names, self.colors)
        if problem:
            raise InputError(f"bad class map classes: {problem}")

    @classmethod
    def from_ids(cls, ids: Sequence[int]) -> ClassMapInfo:
        """Classes named by their ids (for maps without class names)."""
        return cls(tuple(int(i) for i in ids), tuple(str(int(i)) for i in ids))

    def name_of(self, cid: int) -> str:
        """Name of class id ``cid`` (``class_<id>`` for an id the map does not list)."""
        return dict(zip(self.ids, self.names, strict=True)).get(cid, f"class_{cid}")

    def to_tags(self) -> dict[str, str]:
        """GDAL metadata tags of a class map (see the module docstring)."""
        tags = {"class_names": ",".join(self.names),
                "class_ids": ",".join(map(str, self.ids))}
        if self.colors:
            tags["class_colors"] = ";".join("{},{},{}".format(*c) for c in self.colors)
        tags.update({f"CLASS_{i}": n for i, n in zip(self.ids, self.names, strict=True)})
        return tags

    @classmethod
    def from_tags(cls, dataset: Any, *, strict: bool = True) -> ClassMapInfo | None:
        """Read the class tags of a dataset, a :class:`~geoseg.io.Scene` or a tag dict.

        Returns None when the map has no ``class_names`` tag. Without ``class_ids`` the
        ids are ``0..n-1``. Malformed tags (ids that are not integers in 0..254, counts
        that differ, duplicates) raise :class:`InputError` with ``strict``; otherwise they
        warn and give None (colours alone that are malformed are dropped).
        """
        tags = _tags_of(dataset)
        where = _where(dataset)
        names_tag = tags.get("class_names", "").strip()
        if not names_tag:
            return None
        names = tuple(n.strip() for n in names_tag.split(","))
        try:
            ids = _parse_ids(tags.get("class_ids", ""), len(names))
            colors = _parse_colors(tags.get("class_colors", ""))
            if colors and len(colors) != len(ids):
                raise ValueError(f"{len(colors)} class_colors for {len(ids)} classes")
            problem = _info_problem(ids, names, colors)
            if problem:
                raise ValueError(problem)
        except ValueError as exc:
            msg = f"{where} has malformed class tags ({exc})"
            if strict:
                raise InputError(f"{msg}; fix them or pass the class names") from None
            warnings.warn(f"{msg}; ignoring them", GeosegWarning, stacklevel=2)
            return None
        return cls(ids, names, colors)


def _tags_of(dataset: Any) -> Mapping[str, str]:
    if isinstance(dataset, Mapping):
        return dataset
    tags = dataset.tags
    return dict(tags() if callable(tags) else tags)


def _where(dataset: Any) -> str:
    if isinstance(dataset, Mapping):
        return "the class map"
    return str(getattr(dataset, "path", None) or getattr(dataset, "name", "the map"))


def _parse_ids(text: str, n: int) -> tuple[int, ...]:
    if not text.strip():
        return tuple(range(n))
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"class_ids {text!r} are not integers") from None


def _parse_colors(text: str) -> tuple[tuple[int, int, int], ...]:
    if not text.strip():
        return ()
    out = []
    for item in text.split(";"):
        parts = item.split(",")
        if len(parts) != 3:
            raise ValueError(f"class_colors entry {item!r} is not r,g,b")
        try:
            r, g, b = (int(v) for v in parts)
        except ValueError:
            raise ValueError(f"class_colors entry {item!r} is not r,g,b") from None
        out.append((r, g, b))
    return tuple(out)


def _info_problem(ids: Sequence[int], names: Sequence[str],
                  colors: Sequence[tuple[int, int, int]]) -> str:
    """Say what is wrong with a class list ("" when it is consistent)."""
    text = ",".join(map(str, ids))
    checks = (
        (len(ids) != len(names), f"{len(ids)} class ids for {len(names)} class names"),
        (not ids, "no classes"),
        (len(set(ids)) != len(ids), f"duplicate class ids {text}"),
        (any(not 0 <= i < NODATA_CLASS for i in ids),
         f"class ids must be 0..{NODATA_CLASS - 1}, got {text}"),
        (any(not n or "," in n for n in names),
         f"empty class name in {','.join(names)!r}"),
        (bool(colors) and (len(colors) != len(ids)
                           or any(not 0 <= v <= 255 for c in colors for v in c)),
         "class colours must be one r,g,b in 0..255 per class"),
    )
    return next((msg for bad, msg in checks if bad), "")


@dataclass(frozen=True)
class ClassTable:
    """The classes a class map names (id -> name); ``named`` is False for a map without names."""

    names: dict[int, str]  # id -> name for the classes the map (or user) names
    named: bool  # False: the map has no class names; any id is allowed

    def name(self, cid: int) -> str:
        return self.names.get(cid, f"class_{cid}")

    def known(self) -> str:
        if not self.named:
            return "this map has no class names; use class ids or pass --class-names"
        return "known: " + ", ".join(
            f"{n} ({i})" for i, n in sorted(self.names.items())
        )


def class_table(scene: Scene, class_names: Sequence[str] | None) -> ClassTable:
    """Class names of a map: given explicitly, or from its ``class_names`` tag."""
    if class_names is not None:
        names = [str(n).strip() for n in class_names]
        if not names or any(not n for n in names):
            raise InputError(f"class names must be non-empty, got {','.join(names)!r}")
        return ClassTable(dict(enumerate(names)), True)
    info = ClassMapInfo.from_tags(scene, strict=True)
    if info is None:
        return ClassTable({}, False)
    return ClassTable(dict(zip(info.ids, info.names, strict=True)), True)


def resolve(table: ClassTable, items: Sequence[str | int]) -> list[int]:
    by_name = {n.lower(): i for i, n in table.names.items()}
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if text.lower() in by_name:
            out.append(by_name[text.lower()])
        elif (
            text.isdigit()
            and int(text) < NODATA_CLASS
            and (not table.named or int(text) in table.names)
        ):
            out.append(int(text))
        else:
            raise UnknownNameError(f"unknown class {text!r}; {table.known()}")
    return sorted(set(out))


def selection(
    table: ClassTable,
    classes: Sequence[str | int] | None,
    all_classes: bool,
    nodata: int | None,
    lut_size: int,
) -> npt.NDArray[np.bool_]:
    """Boolean lookup table of the class ids selected for vectorizing."""
    if classes is not None and all_classes:
        raise InputError(
            "give either classes (--classes) or all_classes (--all), not both"
        )
    selected = np.zeros(lut_size, bool)
    if classes is not None:
        ids = resolve(table, classes)
        if not ids:
            raise InputError("no class selected; name at least one with --classes")
        selected[[i for i in ids if i < lut_size]] = True
    elif table.named and not all_classes:
        # Default: every named class but "background" (--all includes it).
        selected[
            [
                i
                for i, n in table.names.items()
                if n.lower() != "background" and i < lut_size
            ]
        ] = True
    elif table.named:
        selected[[i for i in table.names if i < lut_size]] = True
    else:
        selected[:] = True
    if nodata is not None and 0 <= nodata < lut_size:
        selected[int(nodata)] = False
    return selected


def road_classes(
    table: ClassTable, centerlines: bool | Sequence[str | int]
) -> list[int]:
    """Class ids for centre lines: the named ones, or those called road/street."""
    if not isinstance(centerlines, bool):
        return resolve(table, centerlines)
    ids = [
        i for i, n in table.names.items() if n.lower().startswith(("road", "street"))
    ]
    if not ids:
        raise UnknownNameError(
            f"centre lines need a road class and none is named 'road'; {table.known()}"
        )
    return ids


def building_classes(table: ClassTable, selected: npt.NDArray[np.bool_]) -> list[int]:
    """Class ids to regularize: those called building, else all selected."""
    ids = [i for i, n in table.names.items() if n.lower().startswith("building")]
    return ids or [int(i) for i in np.flatnonzero(selected)]


def open_class_map(class_map: str | os.PathLike[str]) -> Scene:
    """Open a class map (unsigned integer, at most 16-bit) or raise InputError."""
    scene = open_scene(class_map)
    if (
        not np.issubdtype(np.dtype(scene.dtype), np.integer)
        or np.dtype(scene.dtype).itemsize > 2
        or np.dtype(scene.dtype).kind == "i"
    ):
        raise InputError(
            f"{scene.path} has dtype {scene.dtype}; a class map holds unsigned "
            "integer class ids (uint8, as geoseg predict writes); for a probability "
            "or logit raster pass --threshold (and --band)"
        )
    if scene.count != 1:
        warnings.warn(
            f"{scene.path} has {scene.count} bands; vectorizing band 1",
            GeosegWarning,
            stacklevel=3,
        )
    return scene


def band_class_map(
    source: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    band: int | None = None,
    threshold: float | None = None,
) -> str:
    """Write one band of a raster as a uint8/uint16 class map (``dst``, GeoTIFF).

    With ``threshold``, the band (a probability or logit raster, any dtype; its GDAL
    scale/offset or ``scale``/``offset`` tags applied, as ``geoseg predict
    --probabilities`` writes them) becomes class 1 where ``value >= threshold`` and
    class 0 ("background") elsewhere; class 1 is named after the band (its class tag,
    or its description without a ``p_`` prefix). Without it the band must hold class
    ids and keeps the raster's class tags. Nodata (and NaN) stays nodata (255).
    Written window by window: memory does not grow with the raster.
    """
    import rasterio
    from rasterio.windows import Window

    scene = open_scene(source)  # honours sidecars and XYZ names; warns once if bare
    with rasterio.open(scene.path) as src:
        count = src.count
        k = 1 if band is None else int(band)
        if not 1 <= k <= count:
            raise InputError(f"--band {k} does not exist: {scene.path} has bands 1..{count}")
        dtype = np.dtype(src.dtypes[k - 1])
        if threshold is None and (dtype.kind != "u" or dtype.itemsize > 2):
            raise InputError(
                f"band {k} of {scene.path} has dtype {dtype}; pass --threshold to turn "
                "a probability or logit band into a class map"
            )
        info = ClassMapInfo.from_tags(src, strict=False)
        scale, offset = _band_scale(src, k)
        nodata = src.nodatavals[k - 1]
        out_dtype = "uint8" if threshold is not None else dtype.name
        profile = {
            "driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
            "dtype": out_dtype, "nodata": NODATA_CLASS if threshold is not None else nodata,
            "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
            "transform": scene.transform,
        }
        if scene.crs is not None:
            profile["crs"] = scene.crs
        with rasterio.open(dst, "w", **profile) as out:
            for row in range(0, src.height, 512):
                win = Window(0, row, src.width, min(512, src.height - row))
                data = src.read(k, window=win)
                if threshold is not None:
                    data = _threshold(data, nodata, scale, offset, threshold)
                out.write(data, 1, window=win)
            if threshold is not None:
                name = _band_name(src.descriptions[k - 1], info, k)
                out.update_tags(**ClassMapInfo((0, 1), ("background", name)).to_tags())
            elif info is not None:
                out.update_tags(**info.to_tags())
    return os.fspath(dst)


def _band_scale(src: Any, k: int) -> tuple[float, float]:
    scale, offset = float(src.scales[k - 1] or 1.0), float(src.offsets[k - 1] or 0.0)
    if scale == 1.0 and offset == 0.0:
        tags = src.tags()
        try:
            scale = float(tags.get("scale", 1.0))
            offset = float(tags.get("offset", 0.0))
        except ValueError:
            scale, offset = 1.0, 0.0
    return scale, offset


def _threshold(data: npt.NDArray[Any], nodata: float | None, scale: float, offset: float,
               threshold: float) -> npt.NDArray[np.uint8]:
    values = data.astype(np.float64) * scale + offset
    out = (values >= threshold).astype(np.uint8)
    invalid = ~np.isfinite(values)
    if nodata is not None:
        invalid |= data == nodata
    out[invalid] = NODATA_CLASS
    return out


def _band_name(description: str | None, info: ClassMapInfo | None, k: int) -> str:
    if info is not None and k <= len(info.names):
        return info.names[k - 1]
    if description:
        name = description.removeprefix("p_").replace(",", " ").strip()
        if name:
            return name
    return f"band_{k}"
