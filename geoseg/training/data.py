"""Training data: class tables, colour-coded masks, image/mask pairs and chip datasets.

A *pair* is an image raster and a mask raster of the same size (GeoTIFF, PNG, JPEG; any
format GDAL reads). Masks hold class ids, or RGB colours decoded with a class table
(``--class-colors``); palette masks are expanded through their colour table first.
Internally a mask holds the model's *channel index* per pixel and ``IGNORE`` (255) where
a pixel takes no part in the loss or the metrics.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import InputError
from geoseg.io import band_validity, fill_nodata, open_raster
from geoseg.models.spec import ClassInfo

if TYPE_CHECKING:
    import torch

__all__ = [
    "IGNORE",
    "IMAGE_SUFFIXES",
    "ChipDataset",
    "LabeledImage",
    "MaskClasses",
    "Pair",
    "band_stats",
    "class_counts",
    "decode_colors",
    "find_pairs",
    "load_pairs",
    "read_class_table",
    "read_pair",
]

#: Mask value for "no label": excluded from the loss and the metrics.
IGNORE = 255
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt")
_COLOR_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                  (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128)]


@dataclass(frozen=True, slots=True)
class MaskClasses:
    """The classes a model learns, and how mask values / colours map onto them.

    Attributes
    ----------
    classes : tuple of ClassInfo
        Output classes in model-channel order.
    colors : dict
        ``(r, g, b) -> class id``, for colour-coded masks (empty for id masks).
    ignore_colors : frozenset
        Colours that mean "no label" (ignored), e.g. a black border.
    """

    classes: tuple[ClassInfo, ...]
    colors: dict[tuple[int, int, int], int] = field(default_factory=dict)
    ignore_colors: frozenset[tuple[int, int, int]] = frozenset()
    #: Ids whose colour is the fixed palette's, not one given (an ``--init`` may set it).
    palette_ids: frozenset[int] = frozenset()

    @property
    def ids(self) -> list[int]:
        """Class ids in channel order."""
        return [c.id for c in self.classes]

    def id_lut(self, ignore_index: int | None = None) -> npt.NDArray[np.uint8]:
        """Lookup table: mask class id (0..255) -> channel index, ``IGNORE`` otherwise."""
        lut = np.full(256, IGNORE, np.uint8)
        for k, c in enumerate(self.classes):
            lut[c.id] = k
        if ignore_index is not None and 0 <= ignore_index <= 255:
            lut[ignore_index] = IGNORE
        return lut

    @classmethod
    def from_ids(cls, ids: Sequence[int], names: Sequence[str] | None = None) -> MaskClasses:
        """Classes for id masks: ``class_<id>`` names and a fixed palette unless given."""
        if names is not None and len(names) != len(ids):
            raise InputError(f"{len(names)} class names given for {len(ids)} classes ({ids})")
        infos = tuple(ClassInfo(int(i), names[k] if names else f"class_{i}",
                                _COLOR_PALETTE[k % len(_COLOR_PALETTE)])
                      for k, i in enumerate(ids))
        return cls(infos, palette_ids=frozenset(int(i) for i in ids))


def names_for_ids(ids: Sequence[int], class_names: Sequence[str]) -> list[str]:
    """Names of the classes found: ``class_names`` in id order, or one per class found."""
    if len(class_names) == len(ids):
        return list(class_names)
    if max(ids) < len(class_names):
        return [class_names[i] for i in ids]
    raise InputError(f"{len(class_names)} class names given, but the labels hold class "
                     f"ids {ids}; give one name per id 0..{max(ids)}")


def _rgb(value: Any, where: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            try:
                return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
            except ValueError:
                pass
    elif isinstance(value, (list, tuple)) and len(value) == 3:
        try:
            rgb = (int(value[0]), int(value[1]), int(value[2]))
        except (TypeError, ValueError):
            pass
        else:
            if all(0 <= v <= 255 for v in rgb):
                return rgb
    raise InputError(f"{where}: colour {value!r} is not RGB (use [r, g, b] 0..255 or '#rrggbb')")


def read_class_table(path: str | os.PathLike[str]) -> MaskClasses:
    """Read a class-colour file (JSON or CSV) mapping RGB mask colours to classes.

    JSON: a list (or ``{"classes": [...]}``) of ``{"id": 0, "name": "building",
    "color": [60, 16, 152]}``; an entry with ``"id": null`` (or ``"ignore": true``) marks
    a colour that is ignored. CSV: header ``id,name,r,g,b`` (or ``id,name,color`` with
    ``#rrggbb``); an empty id or ``ignore`` marks an ignored colour.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"class-colour file not found: {p}")
    return _table_of_rows(_color_rows(p), p)


def _color_rows(p: Path) -> list[dict[str, Any]]:
    """Entries of a class-colour file as ``{"id", "name", "color"}`` dicts."""
    if p.suffix.lower() == ".csv":
        with p.open(newline="") as f:
            rows = []
            for row in csv.DictReader(f):
                r = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
                color: Any = r.get("color") or [r.get("r"), r.get("g"), r.get("b")]
                ident = r.get("id", "")
                rows.append({"id": None if ident in ("", "ignore", "none") else ident,
                             "name": r.get("name", ""), "color": color})
        return rows
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("classes")
    if not isinstance(data, list):
        raise InputError(f"{p}: expected a list of classes (or {{'classes': [...]}})")
    return [dict(d) if isinstance(d, dict) else {"bad": d} for d in data]


def _table_of_rows(rows: Sequence[dict[str, Any]], p: Path) -> MaskClasses:
    """Check class-colour entries and build the classes, colours and ignored colours."""
    classes: list[ClassInfo] = []
    colors: dict[tuple[int, int, int], int] = {}
    ignore: set[tuple[int, int, int]] = set()
    for n, row in enumerate(rows, 1):
        where = f"{p.name} entry {n}"
        if "color" not in row:
            raise InputError(f"{where} has no 'color': {row}")
        rgb = _rgb(row["color"], where)
        if rgb in colors or rgb in ignore:
            raise InputError(f"{where}: colour {rgb} is listed twice")
        if row.get("id") is None or row.get("ignore"):
            ignore.add(rgb)
            continue
        try:
            ident = int(row["id"])
        except (TypeError, ValueError):
            raise InputError(f"{where}: id {row['id']!r} is not an integer") from None
        name = str(row.get("name") or f"class_{ident}")
        if ident not in [c.id for c in classes]:
            try:
                classes.append(ClassInfo(ident, name, rgb))
            except Exception as exc:  # noqa: BLE001 - BundleError from validation
                raise InputError(f"{where}: {exc}") from None
        colors[rgb] = ident
    if not classes:
        raise InputError(f"{p} defines no class")
    classes.sort(key=lambda c: c.id)
    return MaskClasses(tuple(classes), colors, frozenset(ignore))


def decode_colors(rgb: npt.NDArray[Any], table: MaskClasses, *,
                  source: str = "mask") -> npt.NDArray[np.uint8]:
    """Map an RGB mask ``(3, H, W)`` to channel indices (``IGNORE`` for ignored colours).

    Raises
    ------
    InputError
        A colour that is neither a class nor an ignored colour; names ``source``.
    """
    if rgb.ndim != 3 or rgb.shape[0] < 3:
        raise InputError(f"{source}: a colour-coded mask needs 3 bands (RGB), got shape "
                         f"{rgb.shape}")
    code = ((rgb[0].astype(np.uint32) << 16) | (rgb[1].astype(np.uint32) << 8)
            | rgb[2].astype(np.uint32))
    uniq, inverse = np.unique(code, return_inverse=True)
    lut = np.full(len(uniq), IGNORE, np.uint8)
    channel = {c.id: k for k, c in enumerate(table.classes)}
    for u, value in enumerate(uniq.tolist()):
        color = ((value >> 16) & 255, (value >> 8) & 255, value & 255)
        if color in table.colors:
            lut[u] = channel[table.colors[color]]
        elif color not in table.ignore_colors:
            count = int((inverse == u).sum())
            raise InputError(f"{source}: colour {color} ({count} px) is not in the class "
                             "table; add it to --class-colors (with \"id\": null to ignore it)")
    return lut[inverse].reshape(code.shape)


@dataclass(frozen=True, slots=True)
class Pair:
    """An image file and its mask file."""

    image: Path
    mask: Path


def _stems(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            out.setdefault(f.stem, f)
    return out


def find_pairs(root: str | os.PathLike[str], *, images: str = "images",
               masks: str = "masks") -> list[Pair]:
    """Pair ``<dir>/images/NAME.*`` with ``<dir>/masks/NAME.*`` anywhere under ``root``.

    ``root`` may itself hold the two folders, or any number of sub-folders that do
    (e.g. ``tile_1/images``, ``tile_1/masks`` ...). A pair is matched by file stem.

    Raises
    ------
    InputError
        ``root`` missing, no image folder under it, or an image without a mask.
    """
    base = Path(root)
    if not base.is_dir():
        raise InputError(f"training data folder not found: {base}")
    image_dirs = sorted(d for d in [base, *base.rglob("*")]
                        if d.is_dir() and d.name == images)
    if not image_dirs:
        raise InputError(f"no '{images}/' folder under {base}: expected {images}/ and "
                         f"{masks}/ folders holding files with the same names")
    pairs: list[Pair] = []
    for d in image_dirs:
        mdir = d.parent / masks
        imgs = _stems(d)
        msks = _stems(mdir) if mdir.is_dir() else {}
        for stem, img in imgs.items():
            if stem not in msks:
                raise InputError(f"image {img} has no mask: expected {mdir / stem}.* "
                                 "(same file name in the masks folder)")
            pairs.append(Pair(img, msks[stem]))
    if not pairs:
        raise InputError(f"no image files in {', '.join(str(d) for d in image_dirs)}")
    return pairs


@dataclass(frozen=True, slots=True)
class LabeledImage:
    """An image in memory with its mask of channel indices."""

    image: npt.NDArray[Any]  # (bands, H, W), raw values
    mask: npt.NDArray[np.uint8]  # (H, W), channel index or IGNORE
    name: str
    #: (bands, H, W): True where a band's value holds data (None: every value does);
    #: see :func:`geoseg.io.band_validity`. Where no band does, ``mask`` is ``IGNORE``.
    valid: npt.NDArray[np.bool_] | None = None
    #: ``(row, col, height, width)`` in the scene, for blocks cut from one scene.
    window: tuple[int, int, int, int] | None = None
    #: (H, W) footprint id per pixel (0: none), e.g. one per vector polygon, for the
    #: instance target (:mod:`geoseg.training.instances`); None: not known.
    instances: npt.NDArray[Any] | None = None

    def model_input(self, mean: Sequence[float], rows: slice = slice(None),
                    cols: slice = slice(None)) -> npt.NDArray[np.float32]:
        """Raw values of a window with nodata filled as prediction fills them (float32)."""
        valid = None if self.valid is None else self.valid[:, rows, cols]
        return fill_nodata(self.image[:, rows, cols], valid, mean)[0]


def _read(path: Path) -> tuple[npt.NDArray[Any], Any, npt.NDArray[np.bool_] | None,
                               dict[int, str]]:
    """Values, colour table (single band), per-band validity and class names of a raster.

    Class names come from a ``class_names_by_id`` tag (``0=land;1=building``), as
    ``geoseg tile`` writes them into its masks.
    """
    with open_raster(path) as ds:
        data = ds.read()
        try:
            cmap = ds.colormap(1) if ds.count == 1 else None
        except ValueError:
            cmap = None
        names: dict[int, str] = {}
        for item in ds.tags().get("class_names_by_id", "").split(";"):
            key, sep, name = item.partition("=")
            if sep and key.strip().isdigit() and name.strip():
                names[int(key)] = name.strip()
        return data, cmap, band_validity(ds, range(1, ds.count + 1), data), names


def read_pair(pair: Pair, table: MaskClasses | None, *, ignore_index: int | None = None,
              bands: Sequence[int] | None = None) -> tuple[LabeledImage, MaskClasses]:
    """Read an image and its mask; decode the mask to channel indices.

    With ``table=None`` the mask holds class ids and the classes are the ids found
    (a table is built; callers merge tables over all pairs with :func:`load_pairs`).
    """
    image, _, valid, _ = _read(pair.image)
    if bands is not None:
        if max(bands) > image.shape[0] or min(bands) < 1:
            raise InputError(f"{pair.image} has {image.shape[0]} bands; --bands "
                             f"{','.join(map(str, bands))} asks for others")
        image = image[[b - 1 for b in bands]]
        valid = None if valid is None or valid[[b - 1 for b in bands]].all() \
            else valid[[b - 1 for b in bands]]
    mask, cmap, _, names = _read(pair.mask)
    if mask.shape[1:] != image.shape[1:]:
        raise InputError(f"mask {pair.mask} is {mask.shape[2]}x{mask.shape[1]} px but image "
                         f"{pair.image} is {image.shape[2]}x{image.shape[1]}; they must match")
    if table is not None and table.colors:
        decoded, out_table = _decode_color_mask(mask, cmap, table, pair.mask), table
    else:
        decoded, out_table = _decode_id_mask(mask, names, table, ignore_index, pair.mask)
    if valid is not None:  # no band holds data: no label either
        decoded = np.where(valid.any(axis=0), decoded, IGNORE).astype(np.uint8)
    return LabeledImage(image, decoded, pair.image.name, valid), out_table


def _decode_color_mask(mask: npt.NDArray[Any], cmap: Any, table: MaskClasses,
                       path: Path) -> npt.NDArray[np.uint8]:
    """Channel indices of a colour-coded mask (RGB, or a palette raster)."""
    if mask.shape[0] == 1 and cmap:
        lut = np.zeros((256, 3), np.uint8)
        for k, rgba in cmap.items():
            if 0 <= k < 256:
                lut[k] = rgba[:3]
        mask = lut[mask[0]].transpose(2, 0, 1)
    return decode_colors(mask[:3], table, source=str(path))


def _decode_id_mask(mask: npt.NDArray[Any], names: dict[int, str],
                    table: MaskClasses | None, ignore_index: int | None, path: Path
                    ) -> tuple[npt.NDArray[np.uint8], MaskClasses]:
    """Channel indices of a class-id mask, and its classes (the ids found, or ``table``)."""
    if mask.shape[0] != 1:
        raise InputError(f"mask {path} has {mask.shape[0]} bands; a class-id mask "
                         "has one (colour-coded masks need --class-colors FILE)")
    ids = mask[0]
    if not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() > 255:
        raise InputError(f"mask {path} holds values outside 0..255 ({ids.dtype}); "
                         "class ids must be integers 0..254")
    ids = ids.astype(np.uint8)
    present = [int(v) for v in np.unique(ids) if v not in (IGNORE, ignore_index)]
    if table is None:
        return ids, MaskClasses.from_ids(present, [names.get(i, f"class_{i}")
                                                   for i in present])
    known = set(table.ids)
    extra = [v for v in present if v not in known]
    if extra:
        raise InputError(f"mask {path} holds value {extra[0]}, which is no class "
                         f"(classes: {sorted(known)}); fix the mask or pass "
                         "--ignore-index")
    return table.id_lut(ignore_index)[ids], table


def load_pairs(pairs: Sequence[Pair], table: MaskClasses | None, *,
               ignore_index: int | None = None, bands: Sequence[int] | None = None
               ) -> tuple[list[LabeledImage], MaskClasses]:
    """Read all pairs into memory with one class table (built from the ids if ``None``)."""
    if not pairs:
        raise InputError("the dataset is empty: no image/mask pair found")
    if table is None:
        names: dict[int, str] = {}
        for pair in pairs:
            _, t = read_pair(pair, None, ignore_index=ignore_index, bands=bands)
            names.update((c.id, c.name) for c in t.classes)
        if not names:
            raise InputError(f"no labelled pixel in {len(pairs)} masks (all ignore)")
        table = MaskClasses.from_ids(sorted(names), [names[i] for i in sorted(names)])
    out = [read_pair(p, table, ignore_index=ignore_index, bands=bands)[0] for p in pairs]
    n_bands = {im.image.shape[0] for im in out}
    if len(n_bands) > 1:
        first = out[0]
        odd = next(im for im in out if im.image.shape[0] != first.image.shape[0])
        raise InputError(f"{odd.name} has {odd.image.shape[0]} bands but {first.name} has "
                         f"{first.image.shape[0]}; all images need the same bands")
    return out, table


def band_stats(images: Sequence[LabeledImage]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and standard deviation over the values that hold data.

    Each band is counted over its own valid values (its nodata values, NaN and +-inf
    are left out), so a nodata ring on one band does not skew that band or the others.
    """
    n_bands = images[0].image.shape[0]
    total = np.zeros(n_bands)
    total_sq = np.zeros(n_bands)
    count = np.zeros(n_bands)
    for im in images:
        for b in range(n_bands):
            data = im.image[b].astype(np.float64)
            if im.valid is not None:
                data = data[im.valid[b]]
            total[b] += data.sum()
            total_sq[b] += (data ** 2).sum()
            count[b] += data.size
    if (count == 0).any():
        band = int(np.argmin(count)) + 1
        raise InputError(f"band {band} holds no valid value in the training images (all "
                         "nodata): no normalisation statistics; drop it with --bands")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-6)) for s in std)


def class_counts(images: Sequence[LabeledImage], n_classes: int) -> npt.NDArray[np.int64]:
    """Labelled pixels per channel index."""
    counts = np.zeros(n_classes, np.int64)
    for im in images:
        counts += np.bincount(im.mask.reshape(-1), minlength=256)[:n_classes]
    return counts


class ChipDataset:
    """Random chips from in-memory images, augmented and normalised (a torch Dataset).

    ``len()`` is the number of chips per epoch. Chips are drawn with probability
    proportional to image area; item ``i`` of epoch ``e`` is reproducible from
    ``(seed, e, i)``. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, images: Sequence[LabeledImage], *, size: int, length: int,
                 mean: Sequence[float], std: Sequence[float], seed: int = 0,
                 augment: Any = None) -> None:
        self.images = list(images)
        self.size = size
        self.length = length
        self.fill = tuple(float(m) for m in mean)
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.seed = seed
        self.epoch = 0
        self.augment = augment
        area = np.array([im.mask.size for im in self.images], np.float64)
        self._p = area / area.sum()

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from geoseg.training.augment import random_chip

        rng = np.random.default_rng([self.seed, self.epoch, index])
        im = self.images[int(rng.choice(len(self.images), p=self._p))]
        image, mask = random_chip(im.image, im.mask, self.size, rng, self.augment,
                                  valid=im.valid, fill=self.fill)
        image = (image - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(image)), \
            torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
