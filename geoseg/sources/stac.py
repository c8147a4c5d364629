"""STAC items (a JSON file or URL): one band file per single-band asset."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg.bands import (
    COMMON_NAMES,
    LANDSAT_OLI,
    LANDSAT_TM,
    SENTINEL2,
    band_key,
    canonical_name,
    family_of,
)
from geoseg.errors import InputError
from geoseg.sources.product import (
    _RASTER_EXT,
    REFLECTANCE_UNIT,
    BandFile,
    MaskLayer,
    Product,
    _round,
)


def _read_json(text: str) -> tuple[dict[str, Any], str]:
    """Return the item and its base location (a URL or a folder) for relative hrefs."""
    url = text[len("/vsicurl/"):] if text.startswith("/vsicurl/") else text
    if url.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                raw = resp.read()
        except OSError as exc:
            raise InputError(f"cannot read STAC item {url} ({exc})") from None
        base = url
    else:
        p = Path(text)
        if not p.is_file():
            raise InputError(f"input not found: {text}")
        raw, base = p.read_bytes(), str(p.resolve())
    try:
        item = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{text} is not JSON ({exc})") from None
    if not isinstance(item, dict) or item.get("type") != "Feature" or \
            not isinstance(item.get("assets"), dict):
        raise InputError(f"{text} is not a STAC item (a JSON Feature with assets)")
    return item, base


def _href(href: str, base: str) -> str:
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith(("s3://", "gs://")):
        return "/vs" + href[:2] + "/" + href[5:]
    if href.startswith("/vsi") or os.path.isabs(href):
        return href
    if base.startswith(("http://", "https://")):
        from urllib.parse import urljoin

        return "/vsicurl/" + urljoin(base, href)
    return str((Path(base).parent / href).resolve())


def _stac_family(props: dict[str, Any], names: Sequence[str]) -> str | None:
    text = " ".join(str(props.get(k, "")) for k in ("constellation", "platform")).lower()
    if "sentinel-2" in text or "sentinel2" in text:
        return SENTINEL2
    if "landsat" in text:
        return LANDSAT_TM if any(f"landsat-{n}" in text for n in (4, 5, 7)) else LANDSAT_OLI
    return family_of(names)


def _stac_level(props: dict[str, Any], item_id: str) -> str | None:
    text = " ".join(str(props.get(k, "")) for k in
                    ("processing:level", "s2:product_type", "landsat:correction")).upper()
    text += " " + item_id.upper()
    for key, level in (("L2A", "L2A"), ("L1C", "L1C"), ("L2SP", "L2"), ("L1TP", "L1")):
        if key in text:
            return level
    return None


def _asset_name(key: str, asset: dict[str, Any]) -> str | None:
    eo = asset.get("eo:bands") or asset.get("bands") or []
    if isinstance(eo, list) and len(eo) > 1:
        return None  # a multi-band asset (a TCI, a stack): not a band file
    info = eo[0] if isinstance(eo, list) and eo and isinstance(eo[0], dict) else {}
    for cand in (info.get("name"), info.get("common_name"), info.get("eo:common_name"), key):
        if isinstance(cand, str) and _known(cand):
            return cand
    return None


def _known(name: str) -> bool:
    """Whether ``name`` is a band name of some sensor or a common name."""
    return any(band_key(name, f) in COMMON_NAMES for f in (None, SENTINEL2, LANDSAT_OLI))


def _stac_band(name: str, path: str, asset: dict[str, Any], family: str | None,
               pb: float) -> tuple[BandFile, bool]:
    """One band asset in model units; True when ESA's default offset was assumed."""
    rb = asset.get("raster:bands")
    rb = rb[0] if isinstance(rb, list) and rb and isinstance(rb[0], dict) else {}
    info = asset.get("bands")
    info = info[0] if isinstance(info, list) and info and isinstance(info[0], dict) else {}
    scale = rb.get("scale", info.get("raster:scale"))
    offset = rb.get("offset", info.get("raster:offset"))
    nodata = rb.get("nodata", info.get("nodata", asset.get("nodata")))
    assumed = False
    if scale is not None or offset is not None:
        s, o = float(scale if scale is not None else 1), float(offset or 0)
        if family is not None and not band_key(name, family).startswith("lwir"):
            s, o = s * REFLECTANCE_UNIT, o * REFLECTANCE_UNIT  # reflectance -> x 10000
    elif family == SENTINEL2 and pb >= 4.0:
        s, o, assumed = 1.0, -1000.0, True
    else:
        s, o = 1.0, 0.0
    canon = canonical_name(name, family) if family else name
    return BandFile(canon, path, scale=_round(s), offset=_round(o),
                    nodata=0.0 if nodata is None else float(nodata)), assumed


def _stac_item(text: str) -> Product:
    item, base = _read_json(text)
    props = item.get("properties") or {}
    raw: list[tuple[str, str, dict[str, Any]]] = []
    for key, asset in item["assets"].items():
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            continue
        media = str(asset.get("type", "")).lower()
        href = asset["href"]
        if not ("tiff" in media or "jp2" in media or href.split("?")[0].endswith(_RASTER_EXT)):
            continue
        roles = asset.get("roles") or ["data"]
        if "data" not in roles and "reflectance" not in roles:
            continue
        name = _asset_name(key, asset)
        if name is not None:
            raw.append((name, _href(href, base), asset))
    # one asset per band: items often hold a band twice (a COG and its JP2): keep a COG
    raw.sort(key=lambda r: r[1].lower().endswith(".jp2"))
    fam = _stac_family(props, [r[0] for r in raw])
    unique: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for r in raw:
        unique.setdefault(band_key(r[0], fam), r)
    raw = list(unique.values())
    if not raw:
        raise InputError(f"{text}: STAC item {item.get('id', '?')} has no usable band asset "
                         "(single-band GeoTIFF/JP2 assets named by eo:bands or a band key)")
    family = _stac_family(props, [r[0] for r in raw])
    level = _stac_level(props, str(item.get("id", "")))
    pb_text = str(props.get("s2:processing_baseline", "") or "")
    try:
        pb = float(pb_text) if pb_text else 0.0
    except ValueError:
        pb = 0.0
    bands: list[BandFile] = []
    notes: list[str] = []
    for name, path, asset in raw:
        band, note = _stac_band(name, path, asset, family, pb)
        bands.append(band)
        if note and not notes:
            notes.append(f"{text}: Sentinel-2 baseline {pb_text} item without "
                         "raster:bands offsets; applying ESA's -1000")
    masks: tuple[MaskLayer, ...] = ()
    scl = item["assets"].get("scl") or item["assets"].get("SCL")
    if isinstance(scl, dict) and isinstance(scl.get("href"), str):
        masks = (MaskLayer("scl", _href(scl["href"], base)),)
    qa = item["assets"].get("qa_pixel") or item["assets"].get("QA_PIXEL")
    if isinstance(qa, dict) and isinstance(qa.get("href"), str):
        masks = (MaskLayer("qa_pixel", _href(qa["href"], base)),)
    kind = f"STAC item {item.get('id', '?')}" + (f" ({level})" if level else "")
    return Product(source=text, kind=kind, bands=tuple(bands), family=family, level=level,
                   masks=masks, notes=tuple(notes))
