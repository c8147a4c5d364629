"""Raster input and output: lazy scenes, windowed reads, georeferenced class maps.

Reading honours GDAL sidecars (``.aux.xml`` PAM georeferencing), nodata values, alpha
bands and internal masks. Each thread keeps its own dataset handle: GDAL handles are not
thread-safe, and re-opening per window would cost more than the read.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from geoseg._raster import is_remote, open_raster
from geoseg.errors import BandMismatchError, GeosegWarning, InputError

__all__ = [
    "NODATA_CLASS",
    "Scene",
    "band_validity",
    "class_colormap",
    "count_nodata",
    "fill_nodata",
    "ground_sample_distance",
    "is_remote",
    "open_raster",
    "open_scene",
    "read_error",
    "read_window",
    "select_bands",
]

#: Value written for "no prediction" in class maps (class ids are 0..254).
NODATA_CLASS = 255

_local = threading.local()


@dataclass(frozen=True)
class Scene:
    """What geoseg needs to know about an input raster, read once from its header.

    Attributes
    ----------
    path : str
        Path or GDAL URL.
    height, width, count : int
        Size in pixels and number of bands.
    dtype : str
        Data type of the bands.
    crs : CRS or None
        Coordinate reference system (None for non-georeferenced images).
    transform : Affine
        Pixel to CRS coordinates.
    nodata : float or None
        Nodata value of the first band, if any (see ``nodatavals`` for every band).
    band_names : tuple of str
        Band descriptions, or ``B1..Bn`` when the file has none.
    has_mask : bool
        Whether some values may be invalid: a nodata value, alpha band or mask on any
        band, or a float type (NaN and +-inf are nodata too).
    nodatavals : tuple of (float or None)
        Nodata value of each data band.
    named : bool
        Whether ``band_names`` come from the source (descriptions, STAC ``eo:bands``,
        product file names) rather than being ``B1..Bn`` placeholders.
    family : str or None
        Sensor family of the band names (:mod:`geoseg.bands`), when the source says.
    level : str or None
        Product level (``L1C``, ``L2A``; Landsat ``L1``, ``L2``), when the source says.
    source : str
        What the user gave, when ``path`` is a virtual scene geoseg built from it (a
        ``.SAFE``, zip, STAC item, Landsat folder or band files: :mod:`geoseg.sources`).
    """

    path: str
    height: int
    width: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    band_names: tuple[str, ...]
    has_mask: bool
    tags: dict[str, str] = field(default_factory=dict)
    nodatavals: tuple[float | None, ...] = ()
    named: bool = False
    family: str | None = None
    level: str | None = None
    source: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return self.height, self.width

    @property
    def label(self) -> str:
        """The input as the user named it (the product, not its virtual raster)."""
        return self.source or self.path

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units."""
        return abs(self.transform.a), abs(self.transform.e)


def open_scene(path: str | os.PathLike[str], *, want: Sequence[str] = (),
               wanted_family: str | None = None, mask: str | None = None) -> Scene:
    """Read a raster's header and check that it is usable.

    ``path`` may also be a product (:mod:`geoseg.sources`): a Sentinel-2 ``.SAFE`` folder
    or zip, a STAC item (JSON file or URL), a Landsat Collection 2 folder, a folder of
    band files or ``a.tif,b.tif``. It is opened as one virtual scene (a VRT): named bands
    in model units on the grid of the finest band in ``want`` (the model's band names,
    read as bands of ``wanted_family``). ``mask="clouds"`` makes the product's cloud and
    shadow flags nodata.

    Raises
    ------
    InputError
        The file does not exist, is not a raster GDAL can read, or has no bands; a
        product with missing files or metadata; ``mask`` on a plain raster.
    """
    text = os.fspath(path)
    from geoseg.sources import open_product

    opened = open_product(text, want=want, wanted_family=wanted_family, mask=mask)
    if opened is not None:
        product, vrt = opened
        return replace(open_scene(vrt), named=True, family=product.family,
                       level=product.level, source=text)
    if mask is not None:
        raise InputError(f"--mask {mask} needs a product with cloud flags (a Sentinel-2 "
                         f".SAFE/zip/STAC item or a Landsat folder); {text} is a raster")
    if not is_remote(text) and not Path(text).exists():
        raise InputError(f"input not found: {text}")
    if not is_remote(text) and Path(text).is_dir():
        raise InputError(f"{text} is a directory, not a raster")
    with open_raster(text) as src:
        georef = not (src.crs is None and src.transform == Affine.identity())
        names = tuple(d or f"B{i + 1}" for i, d in enumerate(src.descriptions))
        alpha = [i for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha]
        if alpha and len(names) > 1:
            names = tuple(n for i, n in enumerate(names) if i not in alpha)
        keep = [i for i in range(src.count) if i not in alpha]
        has_mask = any(MaskFlags.all_valid not in f for f in src.mask_flag_enums) \
            or any(np.dtype(d).kind in "fc" for d in src.dtypes)
        scene = Scene(
            path=text, height=src.height, width=src.width,
            count=src.count - len(alpha), dtype=src.dtypes[0],
            crs=src.crs, transform=src.transform, nodata=src.nodata,
            band_names=names, has_mask=has_mask, tags=dict(src.tags()),
            nodatavals=tuple(src.nodatavals[i] for i in keep),
            named=any(src.descriptions[i] for i in keep))
    if scene.named:
        from geoseg.bands import family_of

        scene = replace(scene, family=family_of(scene.band_names))
    if scene.count < 1:
        raise InputError(f"{text} has no data bands")
    if not georef:
        from geoseg.xyz import xyz_georef  # an XYZ chip: georeferenced by its name

        tile = xyz_georef(text, scene.width, scene.height)
        if tile is not None:
            return replace(scene, crs=CRS.from_string(tile[0]), transform=tile[1])
        warnings.warn(f"{text} has no georeferencing; outputs will have none either",
                      GeosegWarning, stacklevel=2)
    return scene


def select_bands(scene: Scene, bands: Sequence[int | str] | None, expected: int,
                 expected_names: Sequence[str] = (), *,
                 model_family: str | None = None) -> tuple[int, ...]:
    """Resolve the 1-based bands to read, in model order, and check them against the model.

    Parameters
    ----------
    bands : sequence of int or str, or None
        1-based band indexes chosen by the user, or band names (``B04``, ``red``: matched
        with :func:`geoseg.bands.match_bands`). None: by name when the scene's bands are
        named and every model band is among them, else all bands in file order.
    expected : int
        Number of input bands the model takes.
    expected_names : sequence of str
        The model's band names.
    model_family : str, optional
        Sensor family of the model's names (:func:`geoseg.bands.model_family`).
    """
    from geoseg.bands import match_bands

    if bands is not None and any(isinstance(b, str) and not b.isdigit() for b in bands):
        chosen = match_bands([str(b) for b in bands], scene.band_names,
                             wanted_family=model_family, scene_family=scene.family,
                             scene=scene.label)
        if len(chosen) != expected:
            raise BandMismatchError(f"--bands selects {len(chosen)} bands; the model "
                                    f"expects {expected}")
        return chosen
    if bands is None and scene.named and len(expected_names) == expected:
        try:
            return match_bands(expected_names, scene.band_names, wanted_family=model_family,
                               scene_family=scene.family, scene=scene.label)
        except BandMismatchError:
            if scene.source or (scene.family is not None and scene.count != expected):
                raise  # a product, or sensor bands: say which bands are missing
    if bands is None:
        chosen = tuple(range(1, scene.count + 1))
        if len(chosen) != expected:
            names = f" ({','.join(expected_names)})" if expected_names else ""
            raise BandMismatchError(
                f"{scene.path} has {scene.count} bands; the model expects {expected}{names}. "
                f"Pass --bands to select {expected} of them")
        return chosen
    chosen = tuple(int(b) for b in bands)
    bad = [b for b in chosen if not 1 <= b <= scene.count]
    if bad:
        raise BandMismatchError(f"band {bad[0]} does not exist: {scene.path} has bands "
                                f"1..{scene.count}")
    if len(chosen) != expected:
        raise BandMismatchError(f"--bands selects {len(chosen)} bands; the model expects "
                                f"{expected}")
    return chosen


def _dataset(path: str) -> Any:
    """Return this thread's open handle on ``path`` (opened on first use, then kept)."""
    handles: dict[str, Any] | None = getattr(_local, "handles", None)
    if handles is None:
        handles = _local.handles = {}
    src = handles.get(path)
    if src is None or src.closed:
        src = handles[path] = open_raster(path)
    return src


def band_validity(src: Any, bands: Sequence[int], data: npt.NDArray[Any],
                  window: Window | None = None) -> npt.NDArray[np.bool_] | None:
    """Which values of ``data`` (read from ``bands`` of ``src``) hold data, band by band.

    A value is nodata where GDAL's mask of its band says so (that band's nodata value,
    an alpha band or a mask band) or where it is NaN or +-inf. This is the one rule for
    nodata in geoseg: reading, statistics, training and prediction all use it.

    Returns
    -------
    (len(bands), h, w) bool ndarray or None
        True where the value is data; None when every value is.
    """
    flags = [src.mask_flag_enums[b - 1] for b in bands]
    valid: npt.NDArray[np.bool_] | None = None
    if any(MaskFlags.all_valid not in f for f in flags):
        valid = src.read_masks(list(bands), window=window) > 0
    if data.dtype.kind in "fc":
        finite = np.isfinite(data)
        valid = finite if valid is None else valid & finite
    if valid is None or valid.all():
        return None
    return valid


def fill_nodata(data: npt.NDArray[Any], valid: npt.NDArray[np.bool_] | None,
                fill: Sequence[float]) -> tuple[npt.NDArray[np.float32],
                                                 npt.NDArray[np.bool_] | None]:
    """Model input from raw values: each band's nodata values replaced by ``fill[band]``.

    ``fill`` is the model's band mean, so a filled value is 0 after normalisation and
    does not disturb its neighbours. Prediction and training both feed the model
    through this function, so a model sees nodata the same way in both.

    Parameters
    ----------
    data : (bands, h, w) ndarray
        Raw values.
    valid : (bands, h, w) bool ndarray or None
        From :func:`band_validity` (None: every value is data).
    fill : sequence of float
        One value per band.

    Returns
    -------
    x : (bands, h, w) float32 ndarray
        A new array: the values, nodata filled.
    pixel_valid : (h, w) bool ndarray or None
        True where at least one band holds data (GDAL's dataset-mask rule: a pixel is
        nodata only where every band is); None when every value is data.
    """
    x = data.astype(np.float32)
    if valid is None:
        return x, None
    for b in range(x.shape[0]):
        x[b][~valid[b]] = np.float32(fill[b])
    pixel_valid: npt.NDArray[np.bool_] = np.asarray(valid.any(axis=0))
    return x, pixel_valid


def read_window(path: str, bands: Sequence[int], rows: tuple[int, int],
                cols: tuple[int, int], *, with_mask: bool
                ) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]:
    """Read ``bands`` over a pixel window, plus their validity if asked.

    Returns
    -------
    data : (len(bands), h, w) ndarray
        Raw pixel values in the file's dtype.
    valid : (len(bands), h, w) bool ndarray or None
        Per band, True where the value holds data (see :func:`band_validity`); None when
        every value does (or ``with_mask`` is False).
    """
    win = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
    try:
        src = _dataset(path)
        data = src.read(list(bands), window=win)
        valid = band_validity(src, bands, data, win) if with_mask else None
    except RasterioIOError as exc:
        raise read_error(path, win, exc) from None
    return data, valid


def count_nodata(path: str, bands: Sequence[int], *, block: int = 1024
                 ) -> tuple[int, int]:
    """Pixels where some but not all ``bands`` are nodata (filled), and where all are.

    One windowed pass over the scene (only the masks and, for float bands, the values):
    a small cost next to inference, and the same in every execution mode.
    """
    src = _dataset(path)
    partial = full = 0
    if all(MaskFlags.all_valid in src.mask_flag_enums[b - 1] for b in bands) \
            and all(np.dtype(src.dtypes[b - 1]).kind not in "fc" for b in bands):
        return 0, 0
    for r in range(0, src.height, block):
        for c in range(0, src.width, block):
            win = Window(c, r, min(block, src.width - c), min(block, src.height - r))
            data = src.read(list(bands), window=win)
            valid = band_validity(src, bands, data, win)
            if valid is None:
                continue
            n_valid = valid.sum(axis=0)
            full += int((n_valid == 0).sum())
            partial += int(((n_valid > 0) & (n_valid < len(bands))).sum())
    return partial, full


def read_error(path: str, window: Window, exc: BaseException) -> InputError:
    """Return the one-line error for a failed read (a truncated or corrupt file)."""
    detail = exc.__cause__ or exc  # rasterio's own text is "see previous exception"
    first = str(detail).strip().splitlines()[0] if str(detail).strip() else \
        type(detail).__name__
    r, c = int(window.row_off), int(window.col_off)
    return InputError(f"cannot read {path} at rows {r}..{r + int(window.height)}, columns "
                      f"{c}..{c + int(window.width)} (truncated or corrupt file?): {first}")


def class_colormap(colors: Sequence[tuple[int, int, int]]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table for a class map: class colours, then transparent nodata."""
    cmap = {i: (int(r), int(g), int(b), 255) for i, (r, g, b) in enumerate(colors)}
    cmap[NODATA_CLASS] = (0, 0, 0, 0)
    return cmap


def ground_sample_distance(crs: CRS | None, transform: Affine, width: int, height: int
                           ) -> float | None:
    """Pixel size on the ground in metres, or None when unknown (no CRS).

    Projected CRS: the pixel size in the CRS's linear unit, converted to metres; on a
    Mercator projection (web-mercator XYZ tiles) times the cosine of the grid centre's
    latitude, the projection's scale there (a pixel of a 256-px zoom-19 tile is 0.30 m in
    EPSG:3857 units, 0.26 m on the ground at 28 degrees north). Geographic CRS: the
    pixel's size in degrees measured on the CRS's ellipsoid at the grid's centre.
    Non-square pixels: the geometric mean of both sides. (The same rule as ``predict
    --resample``'s scene GSD.)

    Examples
    --------
    >>> ground_sample_distance(CRS.from_epsg(32633), Affine(0.5, 0, 0, 0, -0.5, 0), 9, 9)
    0.5
    """
    import math

    if crs is None:
        return None
    px, py = math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e)
    if not (px > 0 and py > 0):
        return None
    if crs.is_geographic:
        return _geographic_gsd(crs, transform, width, height, px, py)
    try:
        factor = float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - a CRS without a linear unit: GSD unknown
        return None
    return math.sqrt(px * py) * factor * _mercator_scale(crs, transform, width, height)


def _mercator_scale(crs: CRS, transform: Affine, width: int, height: int) -> float:
    """cos(latitude) at the grid's centre on a Mercator projection, else 1."""
    import math

    from pyproj import CRS as ProjCRS
    from pyproj import Transformer

    try:
        proj = ProjCRS.from_user_input(crs.to_wkt())
        op = proj.coordinate_operation
        name = "" if op is None else op.method_name.lower()
        if not (name.startswith("mercator") or "pseudo mercator" in name):
            return 1.0  # transverse/oblique Mercator (UTM...) are true scale near their axis
        x, y = transform * (width / 2, height / 2)
        _, lat = Transformer.from_crs(proj, proj.geodetic_crs, always_xy=True).transform(x, y)
    except Exception:  # noqa: BLE001 - no usable projection: the plain pixel size
        return 1.0
    return math.cos(math.radians(lat)) if math.isfinite(lat) else 1.0


def _geographic_gsd(crs: CRS, transform: Affine, width: int, height: int, px: float,
                    py: float) -> float | None:
    import math

    from pyproj import CRS as ProjCRS

    lon, lat = transform @ (width / 2, height / 2)
    if not -90 < lat < 90:
        return None
    geod = ProjCRS.from_wkt(crs.to_wkt()).get_geod()
    if geod is None:
        return None
    dx = geod.inv(lon - px / 2, lat, lon + px / 2, lat)[2]
    dy = geod.inv(lon, lat - py / 2, lon, lat + py / 2)[2]
    return math.sqrt(abs(dx * dy)) or None
