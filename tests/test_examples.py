"""The real-data examples: their data preparation, and one line when their data is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def multispectral():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(EXAMPLES))
    try:
        import multispectral

        yield multispectral
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.mark.parametrize("script", ["multispectral.py", "onnx_cloudmask.py"])
def test_example_without_its_data_exits_with_one_line(script: str, tmp_path: Path) -> None:
    args = [tmp_path / "absent"] * (2 if script == "onnx_cloudmask.py" else 1)
    run = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args),
                          str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert len(run.stderr.strip().splitlines()) == 1 and "pip download" in run.stderr
    assert not (tmp_path / "out").exists()


def test_multispectral_nodata_rings_and_rasters(multispectral, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import rasterio

    m = multispectral
    cube = np.full((200, 40, 50), 1000, np.uint16)
    scene = m.apply_nodata(cube)
    assert (scene[:, : m.RING] == m.NODATA).all() and (scene[:, :, -m.RING:] == m.NODATA).all()
    inner = scene[:, m.BAND_RING:-m.BAND_RING, m.BAND_RING:-m.BAND_RING]
    assert (inner == 1000).all()
    ring_only = scene[:, m.RING, 20]  # inside the all-band ring, inside the wide one
    assert (ring_only[m.RING_BANDS] == m.NODATA).all() and (ring_only[:160] == 1000).all()
    assert (cube == 1000).all()  # the input is not modified
    assert set(np.array(m.BANDS) - 1) & set(range(200)[m.RING_BANDS])
    path = m.write(tmp_path / "s.tif", scene[:, :, 10:], m.NODATA, col0=10)
    with rasterio.open(path) as src:
        assert src.count == 200 and src.nodata == m.NODATA and src.crs is not None
        assert src.transform.c == m.X0 + 10 * m.PIXEL  # crops keep their place on the grid
