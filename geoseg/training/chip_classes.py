"""Class names and colours that travel with chips: ``tile`` -> ``classes.json`` -> ``train``.

``geoseg tile`` writes ``classes.json`` beside ``images/`` and ``masks/`` whenever it knows
what the class ids mean: from ``--class-colors``, from ``--class-names`` (in id order),
from a vector label field's names, or from the label raster's own tags (a geoseg class
map's ``class_names``/``class_colors``, or ``class_names_by_id``) and colour table::

    {"masks": "class ids", "classes": [{"id": 0, "name": "background"},
                                       {"id": 1, "name": "building", "color": [230, 25, 75]}]}

``geoseg train`` on that folder reads it (unless ``--class-colors``/``--class-names`` say
otherwise): the model's classes are these, with these names and colours. Trained on a
scene and a label raster, it reads the raster's tags alike (:func:`tagged_classes`). A
class whose colour is not known gets the fixed palette's, or the ``--init`` bundle's colour
where the init has the same class (:func:`inherit_classes`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg._atomic import atomic_path
from geoseg.errors import InputError
from geoseg.models.spec import ClassInfo
from geoseg.training.data import _COLOR_PALETTE, MaskClasses

__all__ = ["CLASSES_FILE", "ChipClass", "folder_classes", "inherit_classes",
           "known_classes", "label_raster_classes", "merged_classes", "tagged_classes",
           "write_chip_classes"]

#: The file beside a chip folder's images/ and masks/.
CLASSES_FILE = "classes.json"

#: ``(id, name, colour or None)``: what is known about one class of the masks.
ChipClass = tuple[int, str, tuple[int, int, int] | None]


def label_raster_classes(path: str | os.PathLike[str]) -> list[ChipClass]:
    """Classes a label raster names in its tags, with its colour table's colours."""
    from rasterio.errors import RasterioIOError

    from geoseg.classmap import ClassMapInfo
    from geoseg.io import open_raster

    try:
        src = open_raster(path)
    except (InputError, RasterioIOError):  # a folder of label tiles, a vector file
        return []
    with src:
        tags = src.tags()
        try:
            cmap = src.colormap(1) if src.count == 1 else {}
        except ValueError:  # no colour table
            cmap = {}
    info = ClassMapInfo.from_tags(tags, strict=False)
    if info is not None:
        colors: Sequence[tuple[int, int, int] | None] = info.colors or [
            _rgb(cmap.get(i)) for i in info.ids]
        return list(zip(info.ids, info.names, colors, strict=True))
    named: list[ChipClass] = []
    for item in tags.get("class_names_by_id", "").split(";"):
        key, _, name = item.partition("=")
        if key.strip().isdigit() and name.strip():
            named.append((int(key), name.strip(), _rgb(cmap.get(int(key)))))
    return named


def tagged_classes(labels: str | os.PathLike[str], ids: Sequence[int]
                   ) -> MaskClasses | None:
    """Classes ``ids`` as the label raster's tags name them (None: it names not all)."""
    known = {i: (n, c) for i, n, c in label_raster_classes(labels)}
    if not ids or any(i not in known for i in ids):
        return None
    return _classes({i: known[i] for i in ids}, str(labels))


def _classes(found: dict[int, tuple[str, tuple[int, int, int] | None]], where: str
             ) -> MaskClasses:
    """Id-mask classes of ``{id: (name, colour or None)}``; no colour: the palette's."""
    ids = sorted(found)
    try:
        infos = tuple(ClassInfo(i, found[i][0], found[i][1] or
                                _COLOR_PALETTE[k % len(_COLOR_PALETTE)])
                      for k, i in enumerate(ids))
    except Exception as exc:  # noqa: BLE001 - BundleError from ClassInfo's checks
        raise InputError(f"{where}: {exc}") from None
    return MaskClasses(infos, palette_ids=frozenset(i for i in ids if found[i][1] is None))


def _rgb(entry: Any) -> tuple[int, int, int] | None:
    return None if entry is None else (int(entry[0]), int(entry[1]), int(entry[2]))


def known_classes(labels: str | os.PathLike[str], *, table: MaskClasses | None,
                  class_names: Sequence[str] | None, found_names: dict[int, str]
                  ) -> list[ChipClass]:
    """Return what ``tile`` knows the mask ids mean, most explicit source first.

    ``table`` (``--class-colors``), the names a vector label field held, ``--class-names``
    in id order, else the label raster's tags and colour table.
    """
    if table is not None:
        return [(c.id, c.name, c.color) for c in table.classes]
    if found_names:
        return [(i, n, None) for i, n in sorted(found_names.items())]
    if class_names:
        return [(i, n, None) for i, n in enumerate(class_names)]
    return label_raster_classes(labels)


def merged_classes(folder: str | os.PathLike[str], classes: Sequence[ChipClass]
                   ) -> list[ChipClass]:
    """Return ``classes`` with those of the folder's existing ``classes.json``.

    That file holds the classes of chips an earlier run wrote there; an id the two name
    differently is refused (before any chip is written).
    """
    path = Path(folder) / CLASSES_FILE
    old = {i: (n, c) for i, n, c in _read(path)} if path.is_file() else {}
    out = dict(old)
    for ident, name, color in classes:
        if ident in old and old[ident][0] != name:
            raise InputError(f"{path} names class {ident} {old[ident][0]!r}, these labels "
                             f"name it {name!r}; write the chips to another folder")
        out[ident] = (name, color if color is not None else old.get(ident, (name, None))[1])
    return [(i, n, c) for i, (n, c) in sorted(out.items())]


def write_chip_classes(folder: str | os.PathLike[str], classes: Sequence[ChipClass]) -> Path:
    """Write ``classes.json`` into the chip folder (replacing an earlier one)."""
    rows = [{"id": i, "name": n, **({} if c is None else {"color": list(c)})}
            for i, n, c in sorted(classes)]
    path = Path(folder) / CLASSES_FILE
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"masks": "class ids", "classes": rows}, indent=1) + "\n")
    return path


def _read(path: Path) -> list[ChipClass]:
    try:
        data = json.loads(path.read_text())
        rows = data["classes"]
        out: list[ChipClass] = []
        for row in rows:
            color = row.get("color")
            out.append((int(row["id"]), str(row["name"]),
                        None if color is None else _rgb(color)))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InputError(f"{path} is not a geoseg classes file ({type(exc).__name__}: "
                         f"{exc}); fix or remove it") from None
    return out


def folder_classes(folders: Sequence[Path]) -> MaskClasses | None:
    """Return the classes the folders' ``classes.json`` files name (None: no such file).

    Each folder and its parent are looked in (``tiles/classes.json`` serves
    ``tiles/tile_1/images``). Files that give one id two names are refused.
    """
    found: dict[int, tuple[str, tuple[int, int, int] | None]] = {}
    where: dict[int, Path] = {}
    seen: set[Path] = set()
    for folder in folders:
        for candidate in (folder / CLASSES_FILE, folder.parent / CLASSES_FILE):
            path = candidate.resolve()
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            for ident, name, color in _read(path):
                if ident in found and found[ident][0] != name:
                    raise InputError(f"{path} names class {ident} {name!r} but "
                                     f"{where[ident]} names it {found[ident][0]!r}")
                if ident not in found or found[ident][1] is None:
                    found[ident], where[ident] = (name, color), path
    if not found:
        return None
    return _classes(found, f"{CLASSES_FILE} in {folders[0]}")


def inherit_classes(classes: Sequence[ClassInfo], init: Sequence[ClassInfo],
                    palette_ids: frozenset[int]) -> tuple[ClassInfo, ...]:
    """Classes of a fine-tuned model: its init's names and colours where classes match.

    A class matches an init class of the same name; a class only known by its id
    (``class_<id>``) matches the init's class of that id and takes its name. A matched
    class keeps a colour that was given (``--class-colors``, ``classes.json``, the label
    raster's) and takes the init's colour where its own is the fixed palette's.
    """
    by_name = {c.name: c for c in init}
    by_id = {c.id: c for c in init}
    out = []
    for c in classes:
        generic = c.name == f"class_{c.id}"
        base = by_id.get(c.id) if generic else by_name.get(c.name)
        if base is None:
            out.append(c)
            continue
        color = base.color if generic or c.id in palette_ids else c.color
        out.append(ClassInfo(c.id, base.name if generic else c.name, color))
    return tuple(out)
