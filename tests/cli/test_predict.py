"""geoseg predict / models / bundle through the CLI: contracts and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.errors import GeosegError
from geoseg.prediction.pipeline import predict
from geoseg.testing import assert_same_georef, make_geotiff

from ..conftest import read


def _cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def _lib(args: list[str]) -> tuple[int, str]:
    """Call the library with the CLI's arguments; return (1, message) on GeosegError."""
    scene, rest = args[1], args[2:]
    kw: dict = {"overwrite": "--overwrite" in rest}
    for flag, key in (("-o", "output"), ("-m", "model"), ("--bands", "bands")):
        if flag in rest:
            kw[key] = rest[rest.index(flag) + 1]
    if "bands" in kw:
        kw["bands"] = tuple(int(b) for b in kw["bands"].split(","))
    output = kw.pop("output")
    try:
        predict(scene, output, **kw)
    except GeosegError as exc:
        return 1, str(exc)
    return 0, ""


RUNNERS = [pytest.param(_cli, id="cli"), pytest.param(_lib, id="library")]


def test_cli_predict_end_to_end(tiny_bundle: Path, scene_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "map.tif"
    code, output = _cli(["predict", str(scene_path), "-o", str(out), "-m", str(tiny_bundle),
                         "--progress", "none", "--preview", str(tmp_path / "p.png")])
    assert code == 0, output
    # the precision is the machine's choice (bf16 on CPUs with native bf16, else fp32)
    assert "Mpx/s" in output and re.search(r"cpu (fp32|bf16) ", output), output
    assert_same_georef(scene_path, out)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_progress_json(tiny_bundle: Path, scene_path: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["predict", str(scene_path), "-o", str(tmp_path / "m.tif"),
                                      "-m", str(tiny_bundle), "--progress", "json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    assert lines[-1]["event"] == "done"
    assert any(e["event"] == "progress" and e["fraction"] == 1.0 for e in lines)


def _bad_cases(tmp: Path, bundle: Path, scene: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "notes.tif").write_text("not a raster")
    (tmp / "corrupt.safetensors").write_bytes(b"\x00" * 64)
    six = make_geotiff(tmp / "six.tif", shape=(6, 64, 64))
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    m = str(bundle)
    return {
        "not a raster": (["predict", str(tmp / "notes.tif"), "-o", str(tmp / "o.tif"), "-m", m],
                         "not a raster GDAL can read"),
        "missing file": (["predict", str(tmp / "none.tif"), "-o", str(tmp / "o.tif"), "-m", m],
                         "input not found"),
        "wrong bands": (["predict", str(six), "-o", str(tmp / "o.tif"), "-m", m],
                        "has 6 bands; the model expects 3"),
        "unknown model": (["predict", str(scene), "-o", str(tmp / "o.tif"), "-m", "unte"],
                          "did you mean 'unet'"),
        "corrupt bundle": (["predict", str(scene), "-o", str(tmp / "o.tif"), "-m",
                            str(tmp / "corrupt.safetensors")], "not a geoseg model bundle"),
        "unwritable": (["predict", str(scene), "-o", str(ro / "o.tif"), "-m", m],
                       "is not writable"),
        "no directory": (["predict", str(scene), "-o", str(tmp / "nodir" / "o.tif"), "-m", m],
                         "does not exist"),
        "exists": (["predict", str(scene), "-o", str(tmp / "existing.tif"), "-m", m],
                   "exists; pass --overwrite"),
    }


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize("case", ["not a raster", "missing file", "wrong bands", "unknown model",
                                  "corrupt bundle", "unwritable", "no directory", "exists"])
def test_bad_input_is_one_line(run: Callable[[list[str]], tuple[int, str]], case: str,
                               tiny_bundle: Path, scene_path: Path, tmp_path: Path) -> None:
    import os

    if case == "unwritable" and os.geteuid() == 0:
        pytest.skip("root can write into a read-only directory")
    existing = tmp_path / "existing.tif"
    existing.write_bytes(b"keep me")
    args, message = _bad_cases(tmp_path, tiny_bundle, scene_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, output = run(args)
    assert code != 0
    assert message in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert existing.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing new, nothing partial


def test_unwritable_directory_fails_before_compute(tiny_bundle: Path, scene_path: Path,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Even as root: the check runs before the model is loaded."""
    from geoseg import _atomic
    from geoseg.prediction import pipeline

    monkeypatch.setattr(_atomic, "_writable", lambda directory: False)
    monkeypatch.setattr(pipeline, "open_scene", lambda *a: pytest.fail("computed"))
    code, output = _cli(["predict", str(scene_path), "-o", str(tmp_path / "o.tif"),
                         "-m", str(tiny_bundle)])
    assert code == 1 and "is not writable" in output


def test_overwrite_replaces(tiny_bundle: Path, scene_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.tif"
    out.write_bytes(b"old")
    code, output = _cli(["predict", str(scene_path), "-o", str(out), "-m", str(tiny_bundle),
                         "--overwrite", "-q"])
    assert code == 0, output
    assert output == ""
    assert read(out).shape == (301, 517)


def test_models_and_bundle_inspect(tiny_bundle: Path) -> None:
    code, output = _cli(["models", "--json"])
    assert code == 0
    data = json.loads(output)
    models = {m["name"]: m for m in data["models"]}
    assert set(models) == {"deeplab", "unet", "dynamicworld"}
    assert models["dynamicworld"]["architecture"] == "dynamicworld"
    assert models["dynamicworld"]["gsd_m"] == 10.0 and models["deeplab"]["gsd_m"] == 1.0
    assert "deeplabv3plus" in data["architectures"] and data["aliases"]["deeplab"] == \
        "deeplabv3plus"
    code, output = _cli(["bundle", "inspect", str(tiny_bundle)])
    assert code == 0 and "architecture: unet" in output and "class2" in output
    code, output = _cli(["bundle", "inspect", str(tiny_bundle), "--json"])
    assert json.loads(output)["tile_size"] == 128


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_library_does_not_import_click() -> None:
    """No module of the library imports click (rasterio itself does, so check the source)."""
    import ast

    import geoseg

    root = Path(geoseg.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "click"]
    assert not offenders
    assert _run("import sys, geoseg.models, geoseg.prediction.tiling, geoseg.prediction.stitching, "
                "geoseg.prediction.inference; print('click' in sys.modules)") == "False"


def test_light_imports_do_not_load_torch() -> None:
    code = ("import sys; from geoseg.cli.main import cli; import geoseg, geoseg.io; "
            "print('torch' in sys.modules)")
    assert _run(code) == "False"


def test_version() -> None:
    from geoseg import __version__

    code, output = _cli(["--version"])
    assert code == 0 and __version__ in output


def test_predict_vectorize(tiny_bundle: Path, scene_path: Path, tmp_path: Path) -> None:
    """--vectorize writes polygons that rasterize back to the class map exactly."""
    import geopandas as gpd
    import numpy as np
    import rasterio
    from rasterio.features import rasterize

    out, vec = tmp_path / "m.tif", tmp_path / "m.gpkg"
    code, output = _cli(["predict", str(scene_path), "-o", str(out), "-m", str(tiny_bundle),
                         "--vectorize", str(vec), "--progress", "none"])
    assert code == 0, output
    gdf = gpd.read_file(vec)
    with rasterio.open(out) as src:
        classes, transform, shape = src.read(1), src.transform, src.shape
        assert gdf.crs == src.crs
    burned = rasterize(zip(gdf.geometry, gdf.class_id, strict=True), out_shape=shape,
                       transform=transform, fill=255, dtype="uint8")
    np.testing.assert_array_equal(burned, classes)
    assert set(gdf.class_name) <= {"class0", "class1", "class2"}
