"""Class maps: opening one, naming its classes, and choosing which to vectorize."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from geoseg.errors import GeosegWarning, InputError, UnknownNameError
from geoseg.io import NODATA_CLASS, Scene, open_scene

__all__ = [
    "ClassTable",
    "building_classes",
    "class_table",
    "open_class_map",
    "road_classes",
    "selection",
]


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
    tag_names = scene.tags.get("class_names", "")
    if not tag_names:
        return ClassTable({}, False)
    names = [n.strip() for n in tag_names.split(",")]
    tag_ids = scene.tags.get("class_ids", "")
    try:
        ids = (
            [int(i) for i in tag_ids.split(",")] if tag_ids else list(range(len(names)))
        )
    except ValueError:
        ids = list(range(len(names)))
    if len(ids) != len(names):
        ids = list(range(len(names)))
    return ClassTable(dict(zip(ids, names, strict=True)), True)


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
            "integer class ids (uint8, as geoseg predict writes)"
        )
    if scene.count != 1:
        warnings.warn(
            f"{scene.path} has {scene.count} bands; vectorizing band 1",
            GeosegWarning,
            stacklevel=3,
        )
    return scene
