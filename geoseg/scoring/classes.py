"""Which classes a score has, and which class each label value is.

The rules (the README's "class mapping" section says the same):

- The prediction's classes come from its tags (:class:`geoseg.classmap.ClassMapInfo`), or
  from ``classes`` (names in id order; with as many names as the tags list, they rename
  the tagged ids, otherwise they replace them as ids ``0..k-1``). A map with neither is
  scored with its classes *named by their ids*, and only the ids present in the labels
  or the prediction are reported.
- A label value means the class with that id, unless ``label_map`` says otherwise
  (``{"0": "land", "1": "building"}``: values to class names or ids), or the label raster
  names its classes (tags), in which case classes are matched by name.
- A label class that the prediction does not have (a name the model lacks) is reported
  as a class of its own, with IoU 0: its pixels are all missed.
- A label *id* that is not a class of a named prediction is an error, never a guess:
  pass ``label_map`` to say what it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from geoseg.classmap import ClassMapInfo
from geoseg.errors import InputError, UnknownNameError
from geoseg.io import NODATA_CLASS, Scene
from geoseg.metrics import ConfusionCounts, code_dtype

__all__ = ["ScoreClasses", "parse_label_map", "score_classes"]

#: Largest class count a map without class tags is scored with in one pass.
_UNTAGGED_IDS = NODATA_CLASS


@dataclass
class ScoreClasses:
    """The classes of a score, in confusion-matrix order: the model's, then extras.

    Attributes
    ----------
    ids, names : list
        Class ids and names. The first ``n_model`` are the prediction's classes.
    value_map : dict
        Label value (number, or a name for vector labels) -> class id, where a value
        does not simply mean the class with that id.
    named : bool
        False when the prediction has no class names (classes are named by their ids).
    notes : list of str
        What the report should say about how classes were matched.
    """

    ids: list[int]
    names: list[str]
    n_model: int
    named: bool
    value_map: dict[Any, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def index(self, cid: int) -> int:
        """Confusion-matrix index of class id ``cid``."""
        return self.ids.index(cid)

    def target(self, text: str, *, where: str) -> int:
        """Class id of a class given by name or id; a new (extra) class for an unknown name.

        Raises
        ------
        UnknownNameError
            A name, while the prediction has no class names to match it with.
        InputError
            An id that is not a class of the prediction.
        """
        text = text.strip()
        if text in self.names:  # an exact name first, then one differing only in case
            return self.ids[self.names.index(text)]
        by_name = {n.lower(): i for i, n in zip(self.ids, self.names, strict=True)}
        if text.lower() in by_name:
            return by_name[text.lower()]
        if text.lstrip("-").isdigit():
            cid = int(text)
            if cid in self.ids[:self.n_model]:
                return cid
            raise InputError(f"{where}: class id {cid} is not a class of the prediction "
                             f"({self.describe()})")
        if not self.named:
            raise UnknownNameError(
                f"{where}: class {text!r} cannot be matched: the prediction has no class "
                f"names; pass --classes name0,name1,... to name its ids")
        return self.add_extra(text)

    def add_extra(self, name: str) -> int:
        """Add a label class the prediction does not have; return its id."""
        cid = max(self.ids) + 1
        self.ids.append(cid)
        self.names.append(name)
        self.notes.append(f"label class {name!r} is not a class of the prediction; it "
                          f"is reported with IoU 0")
        return cid

    def check_some_match(self, indexes: npt.NDArray[Any], where: str) -> None:
        """Refuse labels whose classes are all new to the prediction (a wrong field)."""
        extra = self.names[self.n_model:]
        if extra and not ((indexes >= 0) & (indexes < self.n_model)).any():
            raise UnknownNameError(
                f"none of the classes of {where} ({', '.join(extra[:8])}) is a class "
                f"of the prediction ({self.describe()}); pass --label-map NAME=CLASS")

    def describe(self) -> str:
        """Describe the prediction's classes, for messages."""
        pairs = list(zip(self.ids, self.names, strict=True))[:self.n_model]
        if not self.named:
            return f"{len(pairs)} classes named by their ids"
        return ", ".join(f"{n} ({i})" for i, n in pairs[:20]) + (
            "..." if len(pairs) > 20 else "")

    def mapped(self, value: Any) -> int | None:
        """Class id ``value_map`` gives a label value (number or name), else None."""
        key: Any = value.strip() if isinstance(value, str) else value
        if isinstance(key, str) and key in self.value_map:
            return self.value_map[key]
        number = _number(str(key)) if isinstance(key, str) else key
        try:
            return self.value_map.get(float(number)) if number is not None else None
        except (TypeError, ValueError):
            return None

    def pred_code_lut(self, n_codes: int) -> npt.NDArray[Any]:
        """Map codes of the model's classes (``n_model + 3``) to codes of all classes."""
        n, m = len(self.ids), self.n_model
        lut = np.concatenate([np.arange(m), [n, n + 1, n + 2]]).astype(code_dtype(n))
        return lut[:n_codes]

    def numeric_map(self) -> dict[float, int]:
        """``value_map`` entries with numeric keys, as matrix indexes."""
        return {float(k): self.index(v) for k, v in self.value_map.items()
                if not isinstance(k, str)}


def parse_label_map(label_map: str | Mapping[Any, Any] | None) -> dict[str, str]:
    """``"0=land,1=building"`` (or a mapping) as ``{value: class}`` strings."""
    if label_map is None:
        return {}
    if isinstance(label_map, Mapping):
        return {str(k).strip(): str(v).strip() for k, v in label_map.items()}
    out: dict[str, str] = {}
    seen: dict[Any, str] = {}  # a value given twice ("0" and "0.0" too) would let the last win
    for item in label_map.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"--label-map entry {item.strip()!r} is not VALUE=CLASS "
                             f"(e.g. --label-map 0=land,1=building)")
        number = _number(key.strip())
        same = key.strip() if number is None else number
        if same in seen:
            raise InputError(f"--label-map gives label value {key.strip()} twice "
                             f"({seen[same]}, {item.strip()}); each value means one class")
        seen[same] = item.strip()
        out[key.strip()] = value.strip()
    if not out:
        raise InputError("--label-map is empty; give VALUE=CLASS pairs")
    return out


def _model_classes(scene: Scene, classes: Sequence[str] | None
                   ) -> tuple[ClassMapInfo | None, list[str]]:
    info = ClassMapInfo.from_tags(scene, strict=classes is None)
    if classes is None:
        return info, []
    given = tuple(c.strip() for c in classes if c.strip())
    if not given:
        raise InputError("--classes gives no class name")
    if info is not None and len(given) == len(info.ids):
        return ClassMapInfo(info.ids, given), []
    notes = []
    if info is not None:
        notes.append(f"--classes names {len(given)} classes, ids 0..{len(given) - 1}; "
                     f"they replace the {len(info.ids)} classes of {scene.path}'s tags")
    return ClassMapInfo(tuple(range(len(given))), given), notes


def score_classes(scene: Scene, *, classes: Sequence[str] | None,
                  label_map: str | Mapping[Any, Any] | None,
                  label_info: ClassMapInfo | None,
                  pred_values: Sequence[int] | None = None) -> ScoreClasses:
    """Classes of a score and the meaning of each label value (see the module rules).

    ``pred_values`` are the values present in a prediction without class tags that is
    not uint8 (found by the caller); a uint8 one is scored over every id 0..254.
    """
    info, notes = _model_classes(scene, classes)
    if info is not None:
        out = ScoreClasses(list(info.ids), list(info.names), len(info.ids), True,
                           notes=notes)
    else:
        out = _untagged(scene, label_info, pred_values)
    user = parse_label_map(label_map)
    if label_info is not None and out.named:
        known = {n.lower() for n in out.names}
        if not any(n.lower() in known for n in label_info.names) and not user:
            raise InputError(
                f"the label raster names classes {','.join(label_info.names)}, none of "
                f"which the prediction has ({out.describe()}); pass --label-map "
                f"VALUE=CLASS to match them")
        for lid, lname in zip(label_info.ids, label_info.names, strict=True):
            if str(lid) not in user:
                out.value_map[float(lid)] = out.target(lname, where="label class names")
    for key, target in user.items():
        cid = out.target(target, where=f"--label-map {key}={target}")
        number = _number(key)
        out.value_map[key if number is None else number] = cid
    return out


def _untagged(scene: Scene, label_info: ClassMapInfo | None,
              pred_values: Sequence[int] | None) -> ScoreClasses:
    nodata = scene.nodata if scene.nodata is not None else NODATA_CLASS
    if pred_values is None:
        ids = [i for i in range(_UNTAGGED_IDS) if i != nodata]
    else:
        ids = sorted({int(v) for v in pred_values if v >= 0} | set(
            label_info.ids if label_info else ()))
    names = [str(i) for i in ids]
    note = (f"{scene.path} has no class names: classes are named by their ids "
            f"(pass --classes to name them)")
    if label_info is not None:
        by_id = dict(zip(label_info.ids, label_info.names, strict=True))
        names = [by_id.get(i, n) for i, n in zip(ids, names, strict=True)]
        note = (f"{scene.path} has no class names: classes are the label raster's "
                f"ids and names")
    return ScoreClasses(ids, names, len(ids), False, notes=[note])


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def trim_absent(counts: ConfusionCounts, classes: ScoreClasses
                ) -> tuple[ConfusionCounts, list[int], list[str]]:
    """Drop classes without label or predicted pixels (for maps named by their ids)."""
    cm = counts.matrix
    keep = np.flatnonzero((cm.sum(axis=0) + cm.sum(axis=1)) > 0)
    if keep.size == 0:
        keep = np.arange(min(1, len(classes.ids)))
    sub = ConfusionCounts(
        matrix=np.ascontiguousarray(cm[np.ix_(keep, keep)]),
        nodata_labels=counts.nodata_labels, ignored=counts.ignored,
        nodata_pred=counts.nodata_pred, unknown_labels=counts.unknown_labels,
        unknown_pred=counts.unknown_pred)
    return (sub, [classes.ids[k] for k in keep], [classes.names[k] for k in keep])
