"""A georeferenced scene plus labels, as training data.

Labels are a raster (any grid: it is warped onto the scene's grid with nearest-neighbour
resampling through a ``WarpedVRT``) or a vector file whose ``label_field`` holds class ids,
rasterized on the fly with ``rasterio.features.rasterize`` per window. Scene nodata pixels
become ``IGNORE`` in the masks.

:func:`tile_scene` writes chip pairs (``images/`` + ``masks/`` GeoTIFFs) that
:func:`geoseg.training.data.find_pairs` reads back; :func:`scene_blocks` cuts the scene
into spatial blocks held in memory, so validation can hold out whole blocks (never random
chips that overlap the training area). torchgeo's ``RasterDataset``/``GridGeoSampler``
would also serve for the chipping, but they index by CRS bounds and resample on read; a
plain pixel grid on the scene's own raster is exact and simpler here.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg._atomic import atomic_path, check_distinct
from geoseg.errors import InputError, NoOverlapError, OutputExistsError
from geoseg.training.data import IGNORE, ClassTable, LabeledImage, Pair

if TYPE_CHECKING:
    from geoseg.training.loop import TrainConfig, TrainResult

__all__ = ["ChipWindow", "LabelSource", "scene_blocks", "tile_scene", "train_scene"]

_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet", ".gml", ".kml")


@dataclass(frozen=True, slots=True)
class ChipWindow:
    """A chip's position in the scene, pixels."""

    row: int
    col: int
    height: int
    width: int


class LabelSource:
    """Labels on the scene's grid, read window by window (class ids, ``IGNORE`` = none)."""

    def __init__(self, scene: Any, labels: str | os.PathLike[str], *,
                 label_field: str | None = None, background: int = 0) -> None:
        self.scene = scene
        self.path = Path(labels)
        self.background = background
        self._gdf: Any = None
        self._vrt: Any = None
        self._src: Any = None
        if self.path.suffix.lower() in _VECTOR_SUFFIXES:
            self._open_vector(label_field)
        else:
            self._open_raster()

    def _open_vector(self, label_field: str | None) -> None:
        import geopandas as gpd

        try:
            gdf = gpd.read_file(self.path)
        except Exception as exc:  # noqa: BLE001 - pyogrio raises several kinds
            raise InputError(f"cannot read labels {self.path}: {exc}") from None
        if gdf.crs is None:
            raise InputError(f"labels {self.path} have no CRS; set one (e.g. ogr2ogr -a_srs)")
        if self.scene.crs is None:
            raise InputError(f"scene {self.scene.name} has no CRS; vector labels need one")
        if label_field is None:
            gdf["_class"] = 1
            label_field = "_class"
        elif label_field not in gdf.columns:
            raise InputError(f"labels {self.path} have no field {label_field!r}; fields: "
                             f"{', '.join(c for c in gdf.columns if c != 'geometry')}")
        values = gdf[label_field]
        try:
            ids = values.astype("int64")
        except (TypeError, ValueError):
            raise InputError(f"field {label_field!r} of {self.path} must hold integer class "
                             f"ids, got e.g. {values.iloc[0]!r}") from None
        bad = ids[(ids < 0) | (ids > 254)]
        if len(bad):
            raise InputError(f"field {label_field!r} of {self.path} holds class id "
                             f"{int(bad.iloc[0])}, outside 0..254")
        gdf = gdf.assign(_id=ids).to_crs(self.scene.crs)
        gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]
        left, bottom, right, top = self.scene.bounds
        if gdf.empty or not gdf.total_bounds[0] < right or not gdf.total_bounds[2] > left \
                or not gdf.total_bounds[1] < top or not gdf.total_bounds[3] > bottom:
            raise NoOverlapError(f"labels {self.path} do not overlap scene {self.scene.name}")
        self._gdf = gdf

    def _open_raster(self) -> None:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioIOError
        from rasterio.vrt import WarpedVRT

        try:
            src = rasterio.open(self.path)
        except RasterioIOError as exc:
            raise InputError(f"cannot read labels {self.path}: "
                             f"{str(exc).splitlines()[0]}") from None
        self._src = src
        same_grid = (src.crs == self.scene.crs and src.transform == self.scene.transform
                     and src.shape == self.scene.shape)
        if same_grid or src.crs is None or self.scene.crs is None:
            if src.shape != self.scene.shape:
                raise InputError(f"labels {self.path} are {src.width}x{src.height} px but "
                                 f"scene {self.scene.name} is {self.scene.width}x"
                                 f"{self.scene.height}, and they cannot be aligned (no CRS)")
            self._vrt = src
        else:
            self._vrt = WarpedVRT(src, crs=self.scene.crs, transform=self.scene.transform,
                                  width=self.scene.width, height=self.scene.height,
                                  resampling=Resampling.nearest, nodata=IGNORE)

    def read(self, win: ChipWindow) -> npt.NDArray[np.uint8]:
        """Class ids in ``win`` (``IGNORE`` where unlabelled)."""
        from rasterio.windows import Window
        from rasterio.windows import transform as win_transform

        if self._gdf is not None:
            from rasterio.features import rasterize
            from shapely.geometry import box

            transform = win_transform(Window(win.col, win.row, win.width, win.height),
                                      self.scene.transform)
            x0, y0 = transform @ (0, 0)
            x1, y1 = transform @ (win.width, win.height)
            hits = self._gdf.sindex.query(box(min(x0, x1), min(y0, y1), max(x0, x1),
                                              max(y0, y1)))
            part = self._gdf.iloc[hits]
            if part.empty:
                return np.full((win.height, win.width), self.background, np.uint8)
            burnt: npt.NDArray[np.uint8] = rasterize(
                zip(part.geometry, part["_id"], strict=True), out_shape=(win.height, win.width),
                transform=transform, fill=self.background, dtype="uint8")
            return burnt
        from rasterio.errors import RasterioIOError

        from geoseg.io import read_error

        window = Window(win.col, win.row, win.width, win.height)
        try:
            data: npt.NDArray[Any] = self._vrt.read(1, window=window, boundless=True,
                                                    fill_value=IGNORE)
        except RasterioIOError as exc:
            raise read_error(str(self.path), window, exc) from None
        nodata = self._vrt.nodata
        if nodata is not None and nodata != IGNORE:
            data = np.where(data == nodata, IGNORE, data)
        if data.min() < 0 or data.max() > 255:
            raise InputError(f"labels {self.path} hold values outside 0..254")
        return data.astype(np.uint8)

    def close(self) -> None:
        """Release the label raster."""
        for handle in (self._vrt, self._src):
            if handle is not None:
                handle.close()


class _SceneReader:
    def __init__(self, path: str | os.PathLike[str], bands: Sequence[int] | None) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        self.name = Path(path).name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self.ds = rasterio.open(path)
        except RasterioIOError as exc:
            raise InputError(f"{path} is not a raster GDAL can read "
                             f"({str(exc).splitlines()[0]})") from None
        self.crs, self.transform = self.ds.crs, self.ds.transform
        self.shape = (self.ds.height, self.ds.width)
        self.height, self.width = self.shape
        self.bounds = tuple(self.ds.bounds)
        self.nodata = self.ds.nodata
        self.bands = list(bands) if bands else list(range(1, self.ds.count + 1))
        if max(self.bands) > self.ds.count or min(self.bands) < 1:
            raise InputError(f"{path} has {self.ds.count} bands; --bands asks for "
                             f"{','.join(map(str, self.bands))}")

    def read(self, win: ChipWindow) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        from geoseg.io import read_error

        w = Window(win.col, win.row, win.width, win.height)
        try:
            data = self.ds.read(self.bands, window=w, boundless=True, fill_value=0)
            valid = self.ds.read_masks(self.bands[0], window=w, boundless=True) > 0
        except RasterioIOError as exc:
            raise read_error(self.ds.name, w, exc) from None
        return data, valid


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
               skip_nodata: bool = True, skip_background: bool = False,
               overwrite: bool = False) -> list[Pair]:
    """Write ``size`` x ``size`` chip pairs of ``scene`` and its labels to ``output_dir``.

    Chips go to ``output_dir/images/<scene>_r<row>_c<col>.tif`` and the masks (uint8
    class ids, ``IGNORE`` = 255 where the scene has no data or labels are missing) to
    ``output_dir/masks/`` with the same name; both keep the chip's CRS and transform.

    Parameters
    ----------
    stride : int, optional
        Step between chips (default ``size``: no overlap).
    skip_nodata : bool
        Skip chips whose scene pixels are all nodata.
    skip_background : bool
        Skip chips whose labels are all ``background`` (or unlabelled).
    """
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as win_transform

    if size < 8:
        raise InputError(f"chip size must be at least 8 px, got {size}")
    step = stride or size
    if step < 1:
        raise InputError(f"stride must be positive, got {step}")
    reader = _SceneReader(scene, bands)
    source = LabelSource(reader, labels, label_field=label_field, background=background)
    out = Path(output_dir)
    img_dir, msk_dir = out / "images", out / "masks"
    made = [d for d in (out, img_dir, msk_dir) if not d.exists()]
    for d in (img_dir, msk_dir):
        d.mkdir(parents=True, exist_ok=True)
    stem = Path(scene).stem
    pairs: list[Pair] = []
    created: list[Path] = []  # removed again if the run fails: a correct chip set or none
    try:
        for win in _windows(reader.shape, size, step):
            data, valid = reader.read(win)
            if skip_nodata and not valid.any():
                continue
            mask = source.read(win)
            mask = np.where(valid, mask, IGNORE).astype(np.uint8)
            if skip_background and not ((mask != background) & (mask != IGNORE)).any():
                continue
            name = f"{stem}_r{win.row:06d}_c{win.col:06d}.tif"
            transform = win_transform(Window(win.col, win.row, win.width, win.height),
                                      reader.transform)
            common = {"driver": "GTiff", "height": win.height, "width": win.width,
                      "crs": reader.crs, "transform": transform}
            targets = []
            for path, arr, nodata in ((img_dir / name, data, reader.nodata),
                                      (msk_dir / name, mask[None], IGNORE)):
                if path.exists() and not overwrite:
                    raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
                check_distinct([("chip", path)], [("SCENE", scene), ("--labels", labels)])
                if not path.exists():
                    created.append(path)
                with atomic_path(path, overwrite=overwrite) as tmp, \
                        rasterio.open(tmp, "w", count=arr.shape[0], dtype=arr.dtype.name,
                                      nodata=nodata, **common) as dst:
                    dst.write(arr)
                targets.append(path)
            pairs.append(Pair(targets[0], targets[1]))
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        for d in reversed(made):  # folders this run made, if left empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    finally:
        source.close()
        reader.ds.close()
    if not pairs:
        raise InputError(f"no chip of {scene} kept (all nodata or background); check the "
                         "labels overlap the scene, or drop --skip-background")
    return pairs


def scene_blocks(scene: str | os.PathLike[str], labels: str | os.PathLike[str], *,
                 block: int, label_field: str | None = None,
                 bands: Sequence[int] | None = None, background: int = 0
                 ) -> list[LabeledImage]:
    """Cut a scene and its labels into non-overlapping blocks held in memory (raw ids)."""
    reader = _SceneReader(scene, bands)
    source = LabelSource(reader, labels, label_field=label_field, background=background)
    blocks: list[LabeledImage] = []
    try:
        for win in _windows(reader.shape, block, block):
            h = min(block, reader.height - win.row)
            w = min(block, reader.width - win.col)
            win = ChipWindow(win.row, win.col, h, w)  # noqa: PLW2901 - trimmed edge block
            data, valid = reader.read(win)
            if not valid.any():
                continue
            mask = np.where(valid, source.read(win), IGNORE).astype(np.uint8)
            blocks.append(LabeledImage(data, mask, f"{reader.name}@r{win.row}c{win.col}",
                                       valid))
    finally:
        source.close()
        reader.ds.close()
    if not blocks:
        raise InputError(f"{scene} holds no valid pixel")
    return blocks


def _to_channels(blocks: Sequence[LabeledImage], table: ClassTable) -> list[LabeledImage]:
    lut = table.id_lut()
    return [LabeledImage(b.image, lut[b.mask], b.name, b.valid) for b in blocks]


def train_scene(scene: str | os.PathLike[str], labels: str | os.PathLike[str],
                output: str | os.PathLike[str], *, label_field: str | None = None,
                class_names: Sequence[str] | None = None,
                val: str | os.PathLike[str] | None = None, val_fraction: float = 0.2,
                bands: Sequence[int] | None = None, band_names: Sequence[str] | None = None,
                config: TrainConfig | None = None, block: int | None = None,
                **kwargs: Any) -> TrainResult:
    """Train on a georeferenced scene and its labels (raster or vector).

    The scene is cut into spatial blocks (default: 4 crops on a side); ``val_fraction`` of
    the blocks is held out for validation unless ``val`` (a folder of pairs) is given.
    """
    from geoseg._atomic import check_output
    from geoseg.training.loop import TrainConfig, fit, split_blocks
    from geoseg.training.loop import _pairs as pairs_of

    cfg = config or TrainConfig()
    check_output(output, overwrite=bool(kwargs.get("overwrite") or kwargs.get("resume")))
    size = block or max(cfg.crop_size * 4, cfg.tile_size)
    blocks = scene_blocks(scene, labels, block=size, label_field=label_field, bands=bands)
    ids = sorted({int(v) for b in blocks for v in np.unique(b.mask) if v != IGNORE})
    if not ids:
        raise InputError(f"labels {labels} mark no pixel of {scene}")
    table = ClassTable.from_ids(ids, class_names)
    images = _to_channels(blocks, table)
    if val is None:
        train_images, val_images = split_blocks(images, val_fraction, cfg.seed)
    else:
        from geoseg.training.data import load_pairs

        train_images = images
        val_images, _ = load_pairs(pairs_of(val), table, bands=bands)
    prov = {"train": f"{scene} + {labels}", "val": str(val) if val else
            f"{len(val_images)} held-out blocks of {size} px", "label_field": label_field}
    return fit(train_images, val_images, table, output, config=cfg, bands=band_names,
               provenance=prov, **kwargs)
