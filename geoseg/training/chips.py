"""A georeferenced scene plus labels, as training data.

Labels are a raster on any grid, a folder of label tiles or a vector file whose
``label_field`` holds class ids or names; :func:`geoseg.scoring.labels.grid_labels` (the
one label source, shared with ``score``) puts them on the scene's grid. Pixels where no
band of the scene holds data, or that no label covers, become ``IGNORE`` in the masks.

:func:`tile_scene` writes chip pairs (``images/`` + ``masks/`` GeoTIFFs) that
:func:`geoseg.training.data.find_pairs` reads back; :func:`scene_blocks` cuts the scene
into spatial blocks held in memory, so validation can hold out whole blocks (never random
chips that overlap the training area). torchgeo's ``RasterDataset``/``GridGeoSampler``
would also serve for the chipping, but they index by CRS bounds and resample on read; a
plain pixel grid on the scene's own raster is exact and simpler here.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg._atomic import atomic_path, check_distinct
from geoseg.errors import InputError, OutputExistsError
from geoseg.io import band_validity, open_raster
from geoseg.scoring.labels import GridLabels, grid_labels
from geoseg.training.data import (
    IGNORE,
    LabeledImage,
    MaskClasses,
    Pair,
    decode_colors,
    names_for_ids,
)

if TYPE_CHECKING:
    from geoseg.training.loop import TrainConfig, TrainResult

__all__ = ["ChipWindow", "scene_blocks", "tile_scene", "train_scene"]


@dataclass(frozen=True, slots=True)
class ChipWindow:
    """A chip's position in the scene, pixels."""

    row: int
    col: int
    height: int
    width: int


class _SceneReader:
    """The scene's bands, read window by window with their per-band validity."""

    def __init__(self, path: str | os.PathLike[str], bands: Sequence[int | str] | None
                 ) -> None:
        from geoseg.io import open_scene
        from geoseg.sources import is_product

        self.name = Path(path).name
        # a product (.SAFE, STAC item, Landsat folder, band files) reads through its VRT
        scene = open_scene(path) if is_product(path) else None
        self.ds = open_raster(path if scene is None else scene.path)
        self.crs, self.transform = self.ds.crs, self.ds.transform
        self.shape = (self.ds.height, self.ds.width)
        self.height, self.width = self.shape
        self.nodata = self.ds.nodata
        # an alpha band is the mask (GDAL's masks of the other bands), not data: as predict
        from rasterio.enums import ColorInterp

        data_bands = [i + 1 for i, ci in enumerate(self.ds.colorinterp)
                      if ci != ColorInterp.alpha] or [1]
        names = tuple(d or f"B{i + 1}" for i, d in enumerate(self.ds.descriptions))
        if bands and any(isinstance(b, str) for b in bands):
            from geoseg.bands import match_bands

            bands = match_bands([str(b) for b in bands], names, scene=str(path),
                                scene_family=None if scene is None else scene.family)
        self.bands = [int(b) for b in bands] if bands else data_bands
        if max(self.bands) > self.ds.count or min(self.bands) < 1:
            self.ds.close()
            raise InputError(f"{path} has {self.ds.count} bands; --bands asks for "
                             f"{','.join(map(str, self.bands))}")

    def read(self, win: ChipWindow
             ) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None, npt.NDArray[np.bool_]]:
        """Values, per-band validity (None: all valid) and pixel validity of ``win``."""
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        from geoseg.io import read_error

        w = Window(win.col, win.row, win.width, win.height)
        try:
            data = self.ds.read(self.bands, window=w)
        except RasterioIOError as exc:
            raise read_error(self.ds.name, w, exc) from None
        valid = band_validity(self.ds, self.bands, data, w)
        pixel = np.ones(data.shape[1:], bool) if valid is None else np.asarray(valid.any(0))
        return data, valid, pixel

    def labels(self, labels: str | os.PathLike[str], label_field: str | None,
               background: int, class_names: Sequence[str] | None,
               table: MaskClasses | None) -> GridLabels:
        """Put ``labels`` on this scene's grid (the one label source, shared with score)."""
        colors = None if table is None or not table.colors else _color_decoder(table)
        return grid_labels(labels, crs=self.crs, transform=self.transform,
                           height=self.height, width=self.width, label_field=label_field,
                           background=background, class_names=class_names, colors=colors)

    def close(self) -> None:
        """Release the scene."""
        self.ds.close()


def _color_decoder(table: MaskClasses) -> Any:
    """RGB ``(3, h, w)`` -> class ids (``IGNORE`` for ignored colours), via the table."""
    lut = np.full(256, IGNORE, np.uint8)
    lut[:len(table.classes)] = table.ids

    def decode(rgb: npt.NDArray[Any], source: str) -> npt.NDArray[np.uint8]:
        return lut[decode_colors(rgb[:3], table, source=f"labels {source}")]

    return decode


def _windows(shape: tuple[int, int], size: int, stride: int) -> Iterator[ChipWindow]:
    h, w = shape
    rows = range(0, max(h - size, 0) + 1, stride)
    cols = range(0, max(w - size, 0) + 1, stride)
    last_r, last_c = max(h - size, 0), max(w - size, 0)
    rows_l = list(rows) + ([last_r] if rows[-1] != last_r else [])
    cols_l = list(cols) + ([last_c] if cols[-1] != last_c else [])
    for r in rows_l:
        for c in cols_l:
            yield ChipWindow(r, c, min(size, h), min(size, w))


def tile_scene(scene: str | os.PathLike[str], labels: str | os.PathLike[str],
               output_dir: str | os.PathLike[str], *, size: int = 512,
               stride: int | None = None, label_field: str | None = None,
               bands: Sequence[int] | None = None, background: int = 0,
               class_names: Sequence[str] | None = None,
               class_colors: str | os.PathLike[str] | None = None,
               skip_nodata: bool = True, skip_background: bool = False,
               overwrite: bool = False) -> list[Pair]:
    """Write ``size`` x ``size`` chip pairs of ``scene`` and its labels to ``output_dir``.

    Chips go to ``output_dir/images/<scene>_r<row>_c<col>.tif`` and the masks (uint8
    class ids, ``IGNORE`` = 255 where no band of the scene has data or no label covers
    the pixel) to ``output_dir/masks/`` with the same name; both keep the chip's CRS and
    transform. Labels may lie on another grid (CRS, resolution, extent): they are put on
    the scene's grid by :func:`geoseg.scoring.labels.grid_labels`, as ``score`` does.

    Parameters
    ----------
    stride : int, optional
        Step between chips (default ``size``: no overlap).
    label_field : str, optional
        Vector labels: the attribute holding class ids or class names.
    class_names : sequence of str, optional
        Class names in id order (ids of the names a label field holds).
    class_colors : path, optional
        Class-colour file for colour-coded RGB label rasters (masks get class ids).
    skip_nodata : bool
        Skip chips whose scene pixels are all nodata.
    skip_background : bool
        Skip chips whose labels are all ``background`` (or unlabelled).
    """
    from geoseg.mosaic import chip_mosaic, is_chip_source

    if is_chip_source(scene):  # a folder or glob of chips: one virtual mosaic
        with chip_mosaic(scene) as vrt:
            return tile_scene(vrt, labels, output_dir, size=size, stride=stride,
                              label_field=label_field, bands=bands, background=background,
                              class_names=class_names, class_colors=class_colors,
                              skip_nodata=skip_nodata, skip_background=skip_background,
                              overwrite=overwrite)
    from geoseg.training.data import read_class_table

    step = _chip_step(size, stride)
    table = read_class_table(class_colors) if class_colors is not None else None
    reader = _SceneReader(scene, bands)
    try:
        source = reader.labels(labels, label_field, background, class_names, table)
    except BaseException:
        reader.close()
        raise
    out = Path(output_dir)
    classes = _chip_classes(out, labels, table, class_names, source, reader)
    made = [d for d in (out, out / "images", out / "masks") if not d.exists()]
    for d in (out / "images", out / "masks"):
        d.mkdir(parents=True, exist_ok=True)
    pairs: list[Pair] = []
    created: list[Path] = []  # removed again if the run fails: a correct chip set or none
    try:
        for win in _windows(reader.shape, size, step):
            data, _, valid = reader.read(win)
            if skip_nodata and not valid.any():
                continue
            mask = np.where(valid, source.read(*_span(win)), IGNORE).astype(np.uint8)
            if skip_background and not ((mask != background) & (mask != IGNORE)).any():
                continue
            pairs.append(_write_pair(out, f"{Path(scene).stem}_r{win.row:06d}_c{win.col:06d}"
                                     ".tif", reader, win, data, mask, overwrite=overwrite,
                                     names=source.names or _table_names(table),
                                     inputs=(scene, labels), created=created))
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        for d in reversed(made):  # folders this run made, if left empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    finally:
        source.close()
        reader.close()
    if not pairs:
        raise InputError(f"no chip of {scene} kept (all nodata or background); check the "
                         "labels overlap the scene, or drop --skip-background")
    if classes:
        from geoseg.training.chip_classes import write_chip_classes

        write_chip_classes(out, classes)
    return pairs


def _chip_classes(out: Path, labels: str | os.PathLike[str], table: MaskClasses | None,
                  class_names: Sequence[str] | None, source: Any, reader: _SceneReader
                  ) -> list[Any]:
    """Return what the mask ids mean (for classes.json); close the readers on failure."""
    from geoseg.training.chip_classes import known_classes, merged_classes

    try:
        classes = known_classes(labels, table=table, class_names=class_names,
                                found_names=source.names)
        return merged_classes(out, classes) if classes else []
    except BaseException:
        source.close()
        reader.close()
        raise


def _labelled_share(part: Sequence[LabeledImage], whole: Sequence[LabeledImage]) -> float:
    """Share of the labelled (not ``IGNORE``) pixels of ``whole`` that lie in ``part``."""
    def count(images: Sequence[LabeledImage]) -> int:
        return sum(int(np.count_nonzero(im.mask != IGNORE)) for im in images)

    return count(part) / max(count(whole), 1)


def _chip_step(size: int, stride: int | None) -> int:
    """Return the step between chips, checking it and the chip size."""
    if size < 8:
        raise InputError(f"chip size must be at least 8 px, got {size}")
    step = stride or size
    if step < 1:
        raise InputError(f"stride must be positive, got {step}")
    return step


def _span(win: ChipWindow) -> tuple[tuple[int, int], tuple[int, int]]:
    return (win.row, win.row + win.height), (win.col, win.col + win.width)


def _table_names(table: MaskClasses | None) -> dict[int, str]:
    return {} if table is None else {c.id: c.name for c in table.classes}


def _write_pair(out: Path, name: str, reader: _SceneReader, win: ChipWindow,
                data: npt.NDArray[Any], mask: npt.NDArray[np.uint8], *, overwrite: bool,
                names: dict[int, str], inputs: tuple[Any, Any], created: list[Path]) -> Pair:
    """Write one image chip and its mask (class names in its tags, when known)."""
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as win_transform

    transform = win_transform(Window(win.col, win.row, win.width, win.height),
                              reader.transform)
    common = {"driver": "GTiff", "height": win.height, "width": win.width,
              "crs": reader.crs, "transform": transform}
    targets = []
    for path, arr, nodata in ((out / "images" / name, data, reader.nodata),
                              (out / "masks" / name, mask[None], IGNORE)):
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
        check_distinct([("chip", path)], [("SCENE", inputs[0]), ("--labels", inputs[1])])
        if not path.exists():
            created.append(path)
        with atomic_path(path, overwrite=overwrite) as tmp, \
                rasterio.open(tmp, "w", count=arr.shape[0], dtype=arr.dtype.name,
                              nodata=nodata, **common) as dst:
            dst.write(arr)
            if names and arr is not data:
                dst.update_tags(class_names_by_id=";".join(
                    f"{k}={v}" for k, v in sorted(names.items())))
        targets.append(path)
    return Pair(targets[0], targets[1])


def _block_windows(shape: tuple[int, int], block: int) -> Iterator[ChipWindow]:
    """Disjoint blocks of at most ``block`` px covering the scene (equal sizes per axis)."""
    edges = []
    for n in shape:
        k = max(1, -(-n // block))  # ceil: no block larger than ``block``
        edges.append(np.linspace(0, n, k + 1).round().astype(int).tolist())
    rows, cols = edges
    for r0, r1 in itertools.pairwise(rows):
        for c0, c1 in itertools.pairwise(cols):
            yield ChipWindow(r0, c0, r1 - r0, c1 - c0)


def scene_blocks(scene: str | os.PathLike[str], labels: str | os.PathLike[str], *,
                 block: int, label_field: str | None = None,
                 bands: Sequence[int] | None = None, background: int = 0,
                 class_names: Sequence[str] | None = None, table: MaskClasses | None = None
                 ) -> tuple[list[LabeledImage], dict[int, str]]:
    """Cut a scene and its labels into disjoint blocks held in memory (raw class ids).

    Blocks never overlap (edge blocks are not shifted inwards), so holding some out
    for validation leaves no validation pixel inside a training crop. Returns the
    blocks and the class names the labels carry (vector names, colour table).
    """
    reader = _SceneReader(scene, bands)
    try:
        source = reader.labels(labels, label_field, background, class_names, table)
    except BaseException:
        reader.close()
        raise
    blocks: list[LabeledImage] = []
    try:
        for win in _block_windows(reader.shape, block):
            data, band_valid, valid = reader.read(win)
            if not valid.any():
                continue
            mask = np.where(valid, source.read(*_span(win)), IGNORE).astype(np.uint8)
            blocks.append(LabeledImage(data, mask, f"{reader.name}@r{win.row}c{win.col}",
                                       band_valid,
                                       window=(win.row, win.col, win.height, win.width)))
    finally:
        source.close()
        reader.close()
    if not blocks:
        raise InputError(f"{scene} holds no valid pixel")
    return blocks, source.names or _table_names(table)


def _to_channels(blocks: Sequence[LabeledImage], table: MaskClasses) -> list[LabeledImage]:
    lut = table.id_lut()
    return [replace(b, mask=lut[b.mask]) for b in blocks]


def _names_of(names: Sequence[str], bands: Sequence[int | str] | None) -> tuple[str, ...]:
    """Return the names of the bands a run reads (all, numbers or names) for the bundle."""
    if not bands:
        return tuple(names)
    return tuple(str(b) if isinstance(b, str) else names[b - 1] for b in bands
                 if isinstance(b, str) or 1 <= b <= len(names))


def train_scene(scene: str | os.PathLike[str], labels: str | os.PathLike[str],
                output: str | os.PathLike[str], *, label_field: str | None = None,
                class_names: Sequence[str] | None = None,
                class_colors: str | os.PathLike[str] | None = None,
                val: str | os.PathLike[str] | None = None, val_fraction: float = 0.2,
                bands: Sequence[int] | None = None, band_names: Sequence[str] | None = None,
                config: TrainConfig | None = None, block: int | None = None,
                **kwargs: Any) -> TrainResult:
    """Train on a georeferenced scene and its labels (raster, label tiles or vector).

    The scene is cut into disjoint spatial blocks (default: about 4 crops on a side);
    ``val_fraction`` of the blocks is held out for validation unless ``val`` (a folder of
    pairs) is given. Labels on another grid are aligned as ``score`` aligns them;
    colour-coded RGB label rasters need ``class_colors``.
    """
    from geoseg._atomic import check_output
    from geoseg.mosaic import chip_mosaic, is_chip_source

    if is_chip_source(scene):  # a folder or glob of chips: one virtual mosaic
        with chip_mosaic(scene) as vrt:
            return train_scene(vrt, labels, output, label_field=label_field,
                               class_names=class_names, class_colors=class_colors, val=val,
                               val_fraction=val_fraction, bands=bands, band_names=band_names,
                               config=config, block=block, **kwargs)
    from geoseg.sources import is_product

    if is_product(scene):  # a .SAFE, STAC item, Landsat folder, band files: its VRT
        from geoseg.io import open_scene

        product = open_scene(scene)
        return train_scene(product.path, labels, output, label_field=label_field,
                           class_names=class_names, class_colors=class_colors, val=val,
                           val_fraction=val_fraction, bands=bands,
                           band_names=band_names or _names_of(product.band_names, bands),
                           config=config, block=block, **kwargs)
    from geoseg.training.data import read_class_table
    from geoseg.training.gsd import with_gsd
    from geoseg.training.loop import TrainConfig, fit, split_blocks
    from geoseg.training.loop import _pairs as pairs_of

    cfg = config or TrainConfig()
    check_output(output, overwrite=bool(kwargs.get("overwrite") or kwargs.get("resume")))
    check_distinct([("-o", output)], [("SCENE", scene), ("--labels", labels),
                                      ("--class-colors", class_colors)])
    colors = read_class_table(class_colors) if class_colors is not None else None
    size = block or max(cfg.crop_size * 4, cfg.tile_size)
    blocks, names = scene_blocks(scene, labels, block=size, label_field=label_field,
                                 bands=bands, class_names=class_names, table=colors)
    if cfg.instances is not None:  # each vector feature is one footprint
        from geoseg.training.instances import with_vector_instances

        blocks = with_vector_instances(blocks, scene, labels)
    ids = sorted({int(v) for b in blocks for v in np.unique(b.mask) if v != IGNORE})
    if not ids:
        raise InputError(f"labels {labels} mark no pixel of {scene}")
    if colors is not None:
        table = colors
    elif class_names is None and names:
        table = MaskClasses.from_ids(ids, [names.get(i, f"class_{i}") for i in ids])
    else:
        from geoseg.training.chip_classes import tagged_classes

        table = (tagged_classes(labels, ids) if class_names is None else None) or \
            MaskClasses.from_ids(ids, class_names and names_for_ids(ids, class_names))
    images = _to_channels(blocks, table)
    if val is None:
        train_images, val_images = split_blocks(images, val_fraction, cfg.seed)
    else:
        from geoseg.training.data import load_pairs

        train_images = images
        val_images, _ = load_pairs(pairs_of(val), table, bands=bands)
    split = (f"validation given: {val}" if val is not None else
             f"{len(val_images)} of {len(images)} disjoint {size}-px blocks held out "
             f"({_labelled_share(val_images, images):.0%} of the labelled pixels: "
             f"--val-fraction {val_fraction:g} of the blocks, rounded to whole blocks), "
             f"seed {cfg.seed}")
    prov = {"train": f"{scene} + {labels}", "val": str(val) if val else
            f"{len(val_images)} held-out blocks of {size} px", "label_field": label_field,
            "split": split, "unit": "blocks", "val_unit": "images" if val else "blocks"}
    cfg, prov["gsd"] = with_gsd(cfg, [scene])
    return fit(train_images, val_images, table, output, config=cfg, bands=band_names,
               provenance=prov, **kwargs)
