"""Band names: one table of equivalents, and matching a model's bands to a scene's.

A model bundle names its input bands (``spec.bands``); a scene names its bands from its
band descriptions, a STAC item's ``eo:bands`` or a product's file names
(:mod:`geoseg.io`, :mod:`geoseg.sources`). Both sides are reduced to one *key* per band,
the STAC ``eo`` common name of the physical band, and matched key by key.

The table
---------
=============  =================  =====================  ======================
key            Sentinel-2 (MSI)   Landsat 8/9 (OLI/TIRS)  Landsat 4-7 (TM/ETM+)
=============  =================  =====================  ======================
coastal        B1 / B01           B1                      -
blue           B2 / B02           B2                      B1
green          B3 / B03           B3                      B2
red            B4 / B04           B4                      B3
rededge071     B5 / B05           -                       -
rededge075     B6 / B06           -                       -
rededge078     B7 / B07           -                       -
nir            B8 / B08           -                       B4
nir08          B8A / B08A         B5                      -
nir09          B9 / B09           -                       -
cirrus         B10                B9                      -
swir16         B11                B6                      B5
swir22         B12                B7                      B7
pan            -                  B8                      B8 (ETM+)
lwir11         -                  B10                     -
lwir12         -                  B11                     -
lwir           -                  -                       B6
=============  =================  =====================  ======================

Common names are keys themselves (``red``, ``nir08`` ...), with the aliases
``rededge1/2/3`` (= ``rededge071/075/078``), ``swir1``/``swir2`` and ``nir1``. ``SR_B4`` and
``ST_B10`` (Landsat Collection 2 file names) are Landsat's ``B4`` and ``B10``.

The sensor rule
---------------
``B4`` is red on both sensors, but ``B5`` is red edge on Sentinel-2 and near infrared on
Landsat 8, so a bare ``B<n>`` needs a sensor *family* to mean anything:

1. A scene's family comes from its product (a ``.SAFE`` is ``sentinel2``, an MTL names its
   Landsat), else from its names; a model's from ``spec.provenance["sensor"]`` when
   present, else from its names. Names decide when they can: a zero-padded ``B01``..
   ``B09``, ``B8A`` or ``B12`` is Sentinel-2 only; ``SR_``/``ST_`` prefixes are Landsat only.
2. A side whose family is unknown takes the other side's (a model named ``B2..B8,B11,B12``
   on a Sentinel-2 product is read as Sentinel-2).
3. Both unknown: ``B<n>`` matches ``B<n>`` (``B4`` = ``B04``) and nothing else.

A model key matches the scene band of the same key; a model's ``nir`` falls back to the
scene's ``nir08`` (and back) when the scene has only one near-infrared band. Any other
name (``band1``, ``ndvi``) matches the same name only, case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from geoseg.errors import BandMismatchError

__all__ = [
    "COMMON_NAMES",
    "FAMILIES",
    "band_key",
    "canonical_name",
    "family_of",
    "match_bands",
    "model_family",
]

SENTINEL2 = "sentinel2"
LANDSAT_OLI = "landsat-oli"
LANDSAT_TM = "landsat-tm"

#: Sensor family -> band number (``"8A"`` for Sentinel-2's narrow NIR) -> key.
FAMILIES: Mapping[str, Mapping[str, str]] = {
    SENTINEL2: {"1": "coastal", "2": "blue", "3": "green", "4": "red", "5": "rededge071",
                "6": "rededge075", "7": "rededge078", "8": "nir", "8A": "nir08",
                "9": "nir09", "10": "cirrus", "11": "swir16", "12": "swir22"},
    LANDSAT_OLI: {"1": "coastal", "2": "blue", "3": "green", "4": "red", "5": "nir08",
                  "6": "swir16", "7": "swir22", "8": "pan", "9": "cirrus", "10": "lwir11",
                  "11": "lwir12"},
    LANDSAT_TM: {"1": "blue", "2": "green", "3": "red", "4": "nir", "5": "swir16",
                 "6": "lwir", "7": "swir22", "8": "pan"},
}

#: Every key of the table, plus the generic common names ``rededge`` and ``yellow``.
COMMON_NAMES = frozenset({k for table in FAMILIES.values() for k in table.values()}
                         | {"rededge", "yellow"})
_ALIASES = {"rededge1": "rededge071", "rededge2": "rededge075", "rededge3": "rededge078",
            "swir1": "swir16", "swir2": "swir22", "nir1": "nir", "nir2": "nir08",
            "narrow_nir": "nir08", "lwir1": "lwir11", "lwir2": "lwir12"}
#: Keys that stand in for each other when a scene has only one of them.
_FALLBACK = {"nir": "nir08", "nir08": "nir"}

_NUMBERED = re.compile(r"(?P<prefix>SR_|ST_|TOA_)?B(?P<zero>0?)(?P<num>\d{1,2})(?P<a>A?)")


def _parse(name: str) -> tuple[str, str, str] | None:
    """``(prefix, number, zero)`` of a ``B<n>``-style name, else None."""
    m = _NUMBERED.fullmatch(name.strip().upper())
    if m is None:
        return None
    num = str(int(m.group("num"))) + m.group("a")
    return m.group("prefix") or "", num, m.group("zero")


def family_of(names: Sequence[str]) -> str | None:
    """Return the sensor family a set of band names can only belong to, else None.

    Examples
    --------
    >>> family_of(["B02", "B03", "B04"]), family_of(["SR_B4"]), family_of(["B4", "B3"])
    ('sentinel2', 'landsat-oli', None)
    """
    for name in names:
        parsed = _parse(name)
        if parsed is None:
            continue
        prefix, num, zero = parsed
        if prefix in ("SR_", "ST_"):
            return LANDSAT_OLI
        if zero or num in ("8A", "12"):
            return SENTINEL2
    return None


def model_family(bands: Sequence[str], provenance: Mapping[str, object] | None = None
                 ) -> str | None:
    """Return a model's sensor family: ``provenance["sensor"]``, else from its names."""
    sensor = str((provenance or {}).get("sensor", "")).lower().replace("_", "-")
    if "sentinel" in sensor or sensor.startswith("s2"):
        return SENTINEL2
    if "landsat" in sensor:
        return LANDSAT_TM if any(t in sensor for t in ("tm", "etm", "-4", "-5", "-7")) \
            and "oli" not in sensor else LANDSAT_OLI
    return family_of(bands)


def band_key(name: str, family: str | None = None) -> str:
    """Return the key (common name) of ``name`` read as a band of ``family``.

    Names that are not band names stay themselves, lower-cased; a ``B<n>`` name of an
    unknown family becomes ``B<n>`` (so ``B04`` = ``B4``).

    Examples
    --------
    >>> band_key("B04"), band_key("B5", "landsat-oli"), band_key("SR_B5")
    ('red', 'nir08', 'nir08')
    >>> band_key("B5"), band_key("Red"), band_key("band1")
    ('B5', 'red', 'band1')
    """
    low = name.strip().lower()
    if low in COMMON_NAMES:
        return low
    if low in _ALIASES:
        return _ALIASES[low]
    parsed = _parse(name)
    if parsed is None:
        return low
    prefix, num, zero = parsed
    fam = family
    if prefix in ("SR_", "ST_") and fam not in (LANDSAT_OLI, LANDSAT_TM):
        fam = LANDSAT_OLI
    elif (zero or num.endswith("A")) and fam != SENTINEL2:
        fam = SENTINEL2
    if fam is None:
        return f"B{num}"
    return FAMILIES[fam].get(num, f"{fam}:B{num}")


def canonical_name(name: str, family: str | None) -> str:
    """Return the name geoseg writes for a band: ``B02`` (Sentinel-2), ``B4`` (Landsat).

    Examples
    --------
    >>> canonical_name("B2", "sentinel2"), canonical_name("SR_B4", "landsat-oli")
    ('B02', 'B4')
    """
    parsed = _parse(name)
    if parsed is None:
        return name
    num = parsed[1]
    if family == SENTINEL2:
        return "B8A" if num == "8A" else f"B{int(num):02d}"
    return f"B{num}"


def match_bands(wanted: Sequence[str], names: Sequence[str], *,
                wanted_family: str | None = None, scene_family: str | None = None,
                scene: str = "the scene") -> tuple[int, ...]:
    """1-based indexes of the bands ``names`` that are ``wanted``, in ``wanted``'s order.

    Parameters
    ----------
    wanted : sequence of str
        Band names the model needs (or the user asked for), in model order.
    names : sequence of str
        The scene's band names, in file order.
    wanted_family, scene_family : str, optional
        Sensor families (see the module docstring); None: from the names, else the
        other side's.

    Raises
    ------
    BandMismatchError
        A wanted band the scene lacks (one line naming what is needed and what there is),
        or one that matches two scene bands.
    """
    wf = wanted_family or family_of(wanted)
    sf = scene_family or family_of(names)
    wf, sf = wf or sf, sf or wf
    keys = [band_key(n, sf) for n in names]
    chosen: list[int] = []
    missing: list[str] = []
    for want in wanted:
        key = band_key(want, wf)
        hits = [i for i, k in enumerate(keys) if k == key]
        if not hits and key in _FALLBACK:
            hits = [i for i, k in enumerate(keys) if k == _FALLBACK[key]]
        if len(hits) > 1:
            exact = [i for i in hits if names[i].strip().lower() == want.strip().lower()]
            hits = exact if len(exact) == 1 else hits
        if len(hits) != 1:
            if hits:
                dup = ", ".join(names[i] for i in hits)
                raise BandMismatchError(f"band {want} matches several bands of {scene} "
                                        f"({dup}); pass --bands to choose")
            missing.append(want)
            continue
        chosen.append(hits[0] + 1)
    if missing:
        raise BandMismatchError(
            f"{scene} lacks band{'s' if len(missing) > 1 else ''} {','.join(missing)}: the "
            f"model needs {','.join(wanted)}; {scene} has {','.join(names)}")
    return tuple(chosen)
