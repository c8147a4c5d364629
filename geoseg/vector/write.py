"""Writing vector features atomically, in the format the file extension names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg._atomic import check_output, commit, partial_path
from geoseg.errors import InputError, OutputError

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["VECTOR_FORMATS", "vector_driver", "write_vectors"]

#: Output extension -> OGR driver (``.parquet``: GeoParquet, written by geopandas).
VECTOR_FORMATS: dict[str, str] = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".parquet": "GeoParquet",
    ".shp": "ESRI Shapefile",
}
_SHP_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix")


def vector_driver(path: Path) -> str:
    """Return the OGR driver for an output path's extension, or raise OutputError."""
    driver = VECTOR_FORMATS.get(path.suffix.lower())
    if driver is None:
        raise OutputError(
            f"cannot tell the vector format of {path.name}; use one of "
            f"{', '.join(sorted(set(VECTOR_FORMATS)))}"
        )
    return driver


def _targets(path: Path, gdf: gpd.GeoDataFrame) -> list[tuple[Path, str | None, Any]]:
    """(file, layer, frame) to write: lines go to a second layer or a sibling file."""
    if "feature" in gdf.columns:
        polys = gdf[gdf["feature"] != "centerline"]
        lines = gdf[gdf["feature"] == "centerline"]
    else:
        polys, lines = gdf, gdf.iloc[:0]
    polys = polys.drop(
        columns=[c for c in ("feature", "length_m") if c in polys.columns]
    )
    lines = lines.drop(
        columns=[
            c for c in ("feature", "area_m2", "area_px", "mean_confidence")
            if c in lines.columns
        ]
    )
    if not len(lines):
        return [(path, path.stem if vector_driver(path) == "GPKG" else None, polys)]
    # Lines always go to <name>_centerlines, even when no polygon remains (then the
    # polygon layer is written empty), so a layer's name never depends on the data.
    if vector_driver(path) == "GPKG":
        return [(path, path.stem, polys), (path, f"{path.stem}_centerlines", lines)]
    return [
        (path, None, polys),
        (path.with_name(f"{path.stem}_centerlines{path.suffix}"), None, lines),
    ]


def _sidecars(path: Path) -> list[Path]:
    if path.suffix.lower() != ".shp":
        return [path]
    return [path.with_suffix(ext) for ext in _SHP_SIDECARS]


def write_vectors(
    gdf: gpd.GeoDataFrame,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    dst_crs: Any = None,
) -> list[Path]:
    """Write features to a vector file, atomically; the format follows the extension.

    ``.gpkg`` (GeoPackage), ``.geojson``/``.json``, ``.fgb`` (FlatGeobuf), ``.parquet``
    (GeoParquet) and ``.shp`` (Shapefile, with its sidecar files). Centre lines (rows
    with ``feature == "centerline"``) next to polygons go to a second layer
    ``<name>_centerlines`` of a GeoPackage, or to a sibling file
    ``<name>_centerlines.<ext>``.

    Parameters
    ----------
    gdf : GeoDataFrame
        Features with a CRS (from :func:`vectorize`).
    path : path
        Destination.
    overwrite : bool
        Replace an existing destination.
    dst_crs : CRS-like, optional
        Reproject to this CRS (e.g. ``"EPSG:3857"``) before writing.

    Returns
    -------
    list of Path
        The files written.
    """
    from pyproj.exceptions import CRSError

    dst = check_output(path, overwrite=overwrite)
    driver = vector_driver(dst)
    if dst_crs is not None:
        try:
            gdf = gdf.to_crs(dst_crs)
        except (CRSError, ValueError, TypeError) as exc:
            raise InputError(f"cannot reproject to {dst_crs!r}: {exc}") from None
    targets = _targets(dst, gdf)
    for file, _, _ in targets[1:]:
        if file != dst:
            check_output(file, overwrite=overwrite)
    tmps: dict[Path, Path] = {}
    try:
        for file, layer, frame in targets:
            tmp = tmps.setdefault(file, partial_path(file))
            _write_frame(frame, tmp, file, layer, driver)
        _commit(tmps, overwrite=overwrite)
    finally:
        for tmp in tmps.values():
            for leftover in _sidecars(tmp):
                leftover.unlink(missing_ok=True)
    return list(tmps)


def _write_frame(frame: gpd.GeoDataFrame, tmp: Path, file: Path, layer: str | None,
                 driver: str) -> None:
    """Write one layer of ``file`` to its temporary path."""
    import pyogrio

    if driver == "GeoParquet":
        try:
            frame.to_parquet(tmp)
        except ImportError:
            raise OutputError(
                "writing GeoParquet needs pyarrow: pip install "
                "pyarrow, or choose .gpkg/.fgb"
            ) from None
        return
    # GeoJSON/FlatGeobuf store a layer name: the file's, not the temporary's.
    name = file.stem if driver in ("GeoJSON", "FlatGeobuf") else layer
    kw: dict[str, Any] = {"driver": driver, "layer": name}
    if driver in ("ESRI Shapefile", "FlatGeobuf"):
        kw["promote_to_multi"] = True
    if name is not None and tmp.exists():
        kw["append"] = False
    try:
        pyogrio.write_dataframe(frame, tmp, **kw)
    except (
        pyogrio.errors.DataSourceError,
        pyogrio.errors.DataLayerError,
        OSError,
    ) as exc:
        raise OutputError(f"cannot write {file}: {str(exc).splitlines()[0]}") from None


def _commit(tmps: dict[Path, Path], *, overwrite: bool) -> None:
    """Move the written temporaries (and shapefile sidecars) to their destinations."""
    for file, tmp in tmps.items():
        for src, final in zip(_sidecars(tmp), _sidecars(file), strict=True):
            if src.exists() and final == file:  # re-checks --overwrite now
                commit(src, final, overwrite=overwrite)
            elif src.exists():
                os.replace(src, final)
            elif final.exists() and final.suffix.lower() in (".cpg", ".prj", ".qix"):
                final.unlink()  # a stale sidecar of an overwritten shapefile
