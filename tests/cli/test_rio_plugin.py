"""geoseg as a ``rio`` plugin (entry point ``rasterio.rio_plugins``: ``rio geoseg ...``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.testing import make_class_map, make_geotiff, make_scene


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this venv (this one has torch loaded)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, check=False)


def test_rio_geoseg_help_lists_commands() -> None:
    from rasterio.rio.main import main_group

    result = CliRunner().invoke(main_group, ["geoseg", "--help"])
    assert result.exit_code == 0, result.output
    commands = result.output.split("Commands:")[1].split()
    for name in ("predict", "vectorize", "score", "models"):
        assert name in commands, result.output
    assert "geoseg" in CliRunner().invoke(main_group, ["--help"]).output


def test_rio_help_does_not_import_torch() -> None:
    """Loading the plugin costs nothing: ``rio --help`` and ``rio geoseg --help`` stay light."""
    proc = _python("""
        import sys, time
        t0 = time.perf_counter()
        from rasterio.rio.main import main_group
        for args in (["--help"], ["geoseg", "--help"], ["geoseg", "predict", "--help"]):
            try:
                main_group(args, standalone_mode=False)
            except SystemExit:
                pass
        heavy = sorted(m for m in ("torch", "torchvision", "segmentation_models_pytorch",
                                   "dask", "geopandas") if m in sys.modules)
        print("HEAVY", heavy, "SECONDS", round(time.perf_counter() - t0, 3))
    """)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY"))
    assert line.startswith("HEAVY [] "), line


def test_broken_geoseg_is_a_broken_command_not_a_broken_rio() -> None:
    """If geoseg cannot be imported, ``rio`` still works and marks the plugin as broken."""
    proc = _python("""
        import sys
        sys.modules["geoseg.cli.main"] = None   # importing it now raises ImportError
        from click.testing import CliRunner
        from rasterio.rio.main import main_group
        top = CliRunner().invoke(main_group, ["--help"])
        sub = CliRunner().invoke(main_group, ["geoseg", "--help"])
        info = CliRunner().invoke(main_group, ["--version"])
        print("TOP", top.exit_code, "SUB", sub.exit_code, "VERSION", info.exit_code)
        print(top.output)
        print("SUBOUT", sub.output)
    """)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("TOP 0 ") and "VERSION 0" in first, proc.stdout
    top = proc.stdout.split("SUBOUT")[0].splitlines()
    assert [ln for ln in top if ln.split()[:2] == ["geoseg", "\u2020"]], top  # "geoseg †"
    assert [ln for ln in top if ln.split()[:1] == ["warp"]]  # rio's own commands still there
    assert "Warning: entry point could not be loaded" in proc.stdout.split("SUBOUT")[1]


def test_rio_geoseg_predict_equals_geoseg_predict(tmp_path: Path) -> None:
    import rasterio
    import torch
    from rasterio.rio.main import main_group

    from geoseg.models.architectures import build_model
    from geoseg.models.bundle import save_bundle
    from geoseg.models.spec import ClassInfo, ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(
        architecture="unet", backbone="resnet18", bands=("r", "g", "b"), mean=(128.0,) * 3,
        std=(64.0,) * 3, classes=tuple(ClassInfo(i, f"c{i}", (40 * i, 90, 200 - 40 * i))
                                       for i in range(3)),
        tile_size=64, overlap=16, gsd_m=10.0,
        arch_params={"encoder_depth": 3, "decoder_channels": (32, 16, 8)})
    bundle = tmp_path / "tiny.safetensors"
    save_bundle(bundle, build_model(spec).eval(), spec)
    cmap = make_class_map((90, 110), n_classes=3, block=16, seed=4)
    scene = make_geotiff(tmp_path / "scene.tif", make_scene(cmap, seed=4), nodata=0)

    common = [str(scene), "-m", str(bundle), "--device", "cpu", "-q"]
    a, b = tmp_path / "geoseg.tif", tmp_path / "rio.tif"
    res = CliRunner().invoke(cli, ["predict", *common, "-o", str(a)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main_group, ["geoseg", "predict", *common, "-o", str(b)])
    assert res.exit_code == 0, res.output
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert np.array_equal(x.read(), y.read())
        assert x.profile == y.profile
        assert x.tags() == y.tags() and x.tags()["class_names"] == "c0,c1,c2"
    # rio's conventions: an existing output is refused without --overwrite, one line
    res = CliRunner().invoke(main_group, ["geoseg", "predict", *common, "-o", str(b)])
    assert res.exit_code == 1
    assert "--overwrite" in res.output and len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "expected"), [
    (["geoseg", "--version"], "geoseg, version"),
    (["geoseg", "models", "--json"], '"architectures"')])
def test_rio_geoseg_small_commands(args: list[str], expected: str) -> None:
    from rasterio.rio.main import main_group

    result = CliRunner().invoke(main_group, args)
    assert result.exit_code == 0, result.output
    assert expected in result.output
