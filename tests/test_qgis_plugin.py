"""The QGIS plugin: its runner (no QGIS needed) and, in a real headless QGIS, its algorithms.

QGIS is reached only through subprocesses (``qgis_process.bin`` and Debian's
``/usr/bin/python3`` with PyQGIS); this interpreter never imports ``qgis``, so it keeps its
own numpy, GDAL and torch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.testing import make_class_map, make_geotiff, make_scene

from .conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "qgis_plugin"
LANDSAT = SHARED_DATA / "landsat" / "RGB.byte.tif"
GEOSEG = Path(sys.executable).with_name("geoseg")
QGIS_PROCESS = shutil.which("qgis_process.bin")
QGIS_PYTHON = "/usr/bin/python3"


def _load_runner() -> ModuleType:
    """Import the plugin's runner.py by path (it has no QGIS imports)."""
    spec = importlib.util.spec_from_file_location(
        "geoseg_qgis_runner", PLUGIN_DIR / "geoseg_qgis" / "runner.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


def _has_pyqgis() -> bool:
    if not Path(QGIS_PYTHON).exists():
        return False
    env = {**runner.clean_env(), "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], env=env,
                          capture_output=True, check=False).returncode == 0


needs_qgis_process = pytest.mark.skipif(
    QGIS_PROCESS is None,
    reason="qgis_process.bin not installed (apt-get install --no-install-recommends qgis "
           "python3-qgis qgis-providers; .ci/run does it)")
needs_pyqgis = pytest.mark.skipif(
    not _has_pyqgis(), reason=f"{QGIS_PYTHON} cannot import qgis.core (apt python3-qgis)")


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 3-band, 3-class bundle (class0..class2): fast, and enough for I/O."""
    import torch

    from geoseg.models.architectures import build_model
    from geoseg.models.bundle import save_bundle
    from geoseg.models.spec import ClassInfo, ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(
        architecture="unet", backbone="resnet18", bands=("red", "green", "blue"),
        mean=(128.0,) * 3, std=(64.0,) * 3,
        classes=(ClassInfo(0, "water", (0, 90, 200)), ClassInfo(1, "field", (240, 200, 40)),
                 ClassInfo(2, "forest", (20, 140, 40))),
        tile_size=128, overlap=16, gsd_m=30.0,
        arch_params={"encoder_depth": 3, "decoder_channels": (32, 16, 8)})
    path = tmp_path_factory.mktemp("qgis_model") / "tiny.safetensors"
    save_bundle(path, build_model(spec).eval(), spec)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Landsat scene when ../shared is present, else a synthetic 3-band GeoTIFF."""
    if LANDSAT.exists():
        return LANDSAT.resolve()
    cmap = make_class_map((300, 340), n_classes=3, block=24, seed=1)
    return make_geotiff(tmp_path_factory.mktemp("qgis_scene") / "scene.tif",
                        make_scene(cmap, seed=1), nodata=0)


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic 3-band 150 x 170 GeoTIFF (EPSG:32633): seconds less per prediction."""
    cmap = make_class_map((150, 170), n_classes=3, block=24, seed=2)
    return make_geotiff(tmp_path_factory.mktemp("qgis_small") / "small.tif",
                        make_scene(cmap, seed=2), nodata=0)


@pytest.fixture(scope="module")
def qgis_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A private QGIS profile with the plugin enabled; geoseg from this very venv."""
    from geoseg.models import list_models

    root = tmp_path_factory.mktemp("qgis_profile")
    env = _qgis_env(root, enabled=True)
    # What the plugin would cache from ``geoseg models --json`` on its first start (that
    # spawn imports torch: seconds); the names are this install's real ones.
    runner.write_models_cache(
        root / "config" / "profiles" / "default" / "geoseg_qgis" / "models.json",
        str(GEOSEG), [m["name"] for m in list_models()])
    return env


def _qgis_env(root: Path, *, enabled: bool) -> dict[str, str]:
    xdg = root / "xdg"
    xdg.mkdir(mode=0o700, exist_ok=True)
    if enabled:
        ini = root / "config" / "profiles" / "default" / "QGIS" / "QGIS3.ini"
        ini.parent.mkdir(parents=True, exist_ok=True)
        ini.write_text("[PythonPlugins]\ngeoseg_qgis=true\n")
    env = runner.clean_env()
    env.pop("GEOSEG_EXECUTABLE", None)
    # QGIS's embedded Python takes its home from the first python3 on PATH (QGIS.md,
    # pitfall 4): with geoseg's venv activated (as in CI) it would load the venv's Python
    # and fail to import qgis. Debian's python3 first, and no VIRTUAL_ENV.
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(["/usr/bin", "/bin", env.get("PATH", "")])
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(root / "config"),
               XDG_RUNTIME_DIR=str(xdg), QGIS_PLUGINPATH=str(PLUGIN_DIR),
               GEOSEG_EXECUTABLE=str(GEOSEG))
    return env


def qgis_process(env: dict[str, str], *args: str, timeout: float = 120
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(QGIS_PROCESS), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


# ----------------------------------------------------------------- runner: no QGIS needed


def test_parse_event_json_and_text() -> None:
    assert runner.parse_event('{"event": "progress", "fraction": 0.42}\n') == {
        "event": "progress", "fraction": 0.42}
    assert runner.parse_event('{"event":"done","outputs":["a.tif"]}')["outputs"] == ["a.tif"]
    assert runner.parse_event("Error: model 'nope' not found\n") == {
        "event": "text", "message": "Error: model 'nope' not found"}
    # broken or foreign JSON is text, never an exception
    assert runner.parse_event('{"event": "progr')["event"] == "text"
    assert runner.parse_event('{"fraction": 1}')["event"] == "text"


def test_parse_class_tags() -> None:
    tags = {"class_names": "water,field", "class_ids": "0,3", "class_colors": "0,0,255;1,2,3"}
    assert runner.parse_class_tags(tags) == [(0, "water", (0, 0, 255)),
                                             (3, "field", (1, 2, 3))]
    assert runner.parse_class_tags({}) == []
    # mismatched ids/colours fall back to positions and grey
    assert runner.parse_class_tags({"class_names": "a,b", "class_ids": "7",
                                    "class_colors": "bad"}) == [
        (0, "a", (128, 128, 128)), (1, "b", (128, 128, 128))]


def test_clean_env_drops_qgis_python_gdal_proj() -> None:
    dirty = {"PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8",
             "PYTHONHOME": "/qgis", "PYTHONPATH": "/usr/share/qgis/python",
             "GDAL_DATA": "/qgis/gdal", "PROJ_LIB": "/qgis/proj", "PROJ_DATA": "/qgis/proj",
             "LD_LIBRARY_PATH": "/qgis/lib", "QGIS_PREFIX_PATH": "/usr",
             "QGIS_CUSTOM_CONFIG_PATH": "/p", "PYQGIS_STARTUP": "s.py"}
    env = runner.clean_env(dirty)
    assert {k for k in dirty if k in env} == {"PATH", "HOME", "LANG"}
    assert env["PYTHONUNBUFFERED"] == "1"
    assert dirty["PYTHONHOME"] == "/qgis"  # the caller's mapping is untouched


def test_find_executable_order(tmp_path: Path) -> None:
    def exe(name: str) -> Path:
        path = tmp_path / name / "geoseg"
        path.parent.mkdir()
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
        return path

    from_env, from_setting, on_path = exe("env"), exe("setting"), exe("path")
    env = {"PATH": str(on_path.parent), "GEOSEG_EXECUTABLE": str(from_env)}
    assert runner.find_executable(str(from_setting), env) == str(from_env)
    del env["GEOSEG_EXECUTABLE"]
    assert runner.find_executable(str(from_setting), env) == str(from_setting)
    assert runner.find_executable(None, env) == str(on_path)
    with pytest.raises(runner.GeosegNotFound, match="GEOSEG_EXECUTABLE is '/nope/geoseg'"):
        runner.find_executable(None, {**env, "GEOSEG_EXECUTABLE": "/nope/geoseg"})
    with pytest.raises(runner.GeosegNotFound, match="Processing > Options"):
        runner.find_executable(None, {"PATH": str(tmp_path)})


def test_list_models_cached(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    fake = tmp_path / "geoseg"
    fake.write_text(f"#!/bin/sh\necho x >> {calls}\n"
                    'echo \'{"models": [{"name": "a"}, {"name": "b"}]}\'\n')
    fake.chmod(0o755)
    cache = tmp_path / "cache" / "models.json"
    assert runner.list_models(str(fake), cache=cache) == ["a", "b"]
    runner._MODELS_MEMO.clear()  # a new QGIS process: only the disk cache is left
    assert runner.list_models(str(fake), cache=cache) == ["a", "b"]
    assert calls.read_text().count("x") == 1
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    assert runner.list_models(str(broken)) == list(runner.DEFAULT_MODELS)


def _stream(args: list[str]) -> tuple[list[float], list[str], object]:
    fractions: list[float] = []
    texts: list[str] = []
    result = runner.run_geoseg([*args, "--progress", "json"], executable=str(GEOSEG),
                               on_progress=fractions.append, on_text=texts.append)
    assert not [t for t in texts if t.startswith("{")], texts  # no unparsed JSON
    return fractions, texts, result


@pytest.fixture(scope="module")
def predicted(bundle: Path, small_scene: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, list[float], object]:
    """``geoseg predict --progress json`` run once through the runner."""
    out = tmp_path_factory.mktemp("predicted") / "map.tif"
    fractions, _, result = _stream(["predict", str(small_scene), "-o", str(out), "-m", str(bundle),
                                    "--device", "cpu"])
    return out, fractions, result


def _assert_contract(fractions: list[float], result: object, output: Path) -> None:
    assert fractions and fractions == sorted(fractions), fractions
    assert fractions.count(1.0) == 1 and fractions[-1] == 1.0, fractions
    assert output.resolve() in {Path(o).resolve() for o in result.outputs}  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", [
    "predict", "vectorize",
    "score"])
def test_json_progress_reaches_one_exactly_once(
        command: str, predicted: tuple[Path, list[float], object], tmp_path: Path) -> None:
    """The stream parses line by line, only grows, and reaches 1.0 exactly once, last."""
    class_map, fractions, result = predicted
    if command == "predict":
        _assert_contract(fractions, result, class_map)
    elif command == "vectorize":
        out = tmp_path / "map.gpkg"
        fractions, _, result = _stream(["vectorize", str(class_map), "-o", str(out)])
        _assert_contract(fractions, result, out)
    else:
        out = tmp_path / "r.json"
        fractions, _, result = _stream(["score", str(class_map), "--labels", str(class_map),
                                        "-o", str(out), "-q"])
        assert json.loads(out.read_text())["miou"] == 1.0
        _assert_contract(fractions, result, out)


def test_run_geoseg_failure_is_one_line(tmp_path: Path, scene: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not a bundle")
    with pytest.raises(runner.GeosegFailed) as info:
        runner.run_geoseg(["predict", str(scene), "-o", str(tmp_path / "o.tif"), "-m", str(bad),
                           "--progress", "json"], executable=str(GEOSEG))
    assert info.value.returncode == 1
    message = str(info.value)
    assert message.startswith("Error: ") and "\n" not in message
    assert "bad.safetensors" in message
    assert not (tmp_path / "o.tif").exists()


def test_cancel_stops_geoseg_and_leaves_no_file(bundle: Path, scene: Path, tmp_path: Path
                                                ) -> None:
    """Cancel at the first progress: geoseg exits (SIGTERM) within 3 s, no output left."""
    out = tmp_path / "map.tif"
    state: dict[str, float] = {}

    def on_progress(fraction: float) -> None:
        if fraction > 0 and "at" not in state:
            state["at"] = time.monotonic()

    with pytest.raises(runner.Cancelled):
        runner.run_geoseg(["predict", str(scene), "-o", str(out), "-m", str(bundle),
                           "--device", "cpu", "--progress", "json"], executable=str(GEOSEG),
                          on_progress=on_progress, is_canceled=lambda: "at" in state)
    assert time.monotonic() - state["at"] < 3.0
    assert list(tmp_path.iterdir()) == []  # no output, no .partial temporaries


def test_cancel_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = tmp_path / "geoseg"
    stubborn.write_text("#!/usr/bin/env python3\nimport signal, sys, time\n"
                        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                        "print('{\"event\": \"progress\", \"fraction\": 0.1}', "
                        "file=sys.stderr, flush=True)\ntime.sleep(60)\n")
    stubborn.chmod(0o755)
    started = time.monotonic()
    seen: list[float] = []
    with pytest.raises(runner.Cancelled):
        runner.run_geoseg([], executable=str(stubborn), on_progress=seen.append,
                          is_canceled=lambda: bool(seen), kill_after=0.5)
    assert seen == [0.1]
    assert time.monotonic() - started < 3.0


def test_cli_qgis_install_and_zip(tmp_path: Path) -> None:
    import zipfile

    profile = tmp_path / "profiles" / "default"
    result = CliRunner().invoke(cli, ["qgis", "install", "--profile-dir", str(profile),
                                      "--enable"])
    assert result.exit_code == 0, result.output
    link = profile / "python" / "plugins" / "geoseg_qgis"
    assert link.is_symlink() and link.resolve() == (PLUGIN_DIR / "geoseg_qgis").resolve()
    ini = (profile / "QGIS" / "QGIS3.ini").read_text()
    assert "[PythonPlugins]\ngeoseg_qgis=true" in ini
    assert "Configuration\\GEOSEG_EXECUTABLE=" in ini
    # again: the same link is fine; a copy over it needs --overwrite
    assert CliRunner().invoke(cli, ["qgis", "install", "--profile-dir", str(profile)]
                              ).exit_code == 0
    result = CliRunner().invoke(cli, ["qgis", "install", "--profile-dir", str(profile),
                                      "--copy"])
    assert result.exit_code == 1 and "--overwrite" in result.output
    result = CliRunner().invoke(cli, ["qgis", "install", "--profile-dir", str(profile),
                                      "--copy", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not link.is_symlink() and (link / "metadata.txt").is_file()

    zpath = tmp_path / "geoseg_qgis.zip"
    assert CliRunner().invoke(cli, ["qgis", "zip", "-o", str(zpath)]).exit_code == 0
    names = zipfile.ZipFile(zpath).namelist()
    assert {"geoseg_qgis/metadata.txt", "geoseg_qgis/__init__.py",
            "geoseg_qgis/runner.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n]
    assert CliRunner().invoke(cli, ["qgis", "zip", "-o", str(zpath)]).exit_code == 1


# --------------------------------------------------------------- real QGIS, headless


@pytest.mark.qgis
@needs_qgis_process
def test_algorithms_listed_only_once_enabled(tmp_path: Path, qgis_env: dict[str, str]
                                             ) -> None:
    off = qgis_process(_qgis_env(tmp_path, enabled=False), "list")
    assert off.returncode == 0, off.stderr
    assert "geoseg:segmentraster" not in off.stdout
    on = qgis_process(qgis_env, "list")
    assert on.returncode == 0, on.stderr
    for alg in ("geoseg:segmentraster", "geoseg:vectorize", "geoseg:score"):
        assert on.stdout.count(alg) == 1, alg


@pytest.mark.qgis
@needs_qgis_process
def test_qgis_process_segment(bundle: Path, small_scene: Path, tmp_path: Path,
                              qgis_env: dict[str, str]) -> None:
    import rasterio

    scene = small_scene
    out = tmp_path / "map.tif"
    proc = qgis_process(qgis_env, "--json", "run", "geoseg:segmentraster", "--",
                        f"INPUT={scene}", f"MODEL_FILE={bundle}", "DEVICE=cpu",
                        f"OUTPUT={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    assert Path(results["OUTPUT"]) == out
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert dst.shape == src.shape and dst.dtypes[0] == "uint8"
        assert dst.tags()["class_names"] == "water,field,forest"


@pytest.mark.qgis
@needs_qgis_process
def test_qgis_process_bad_model_fails_with_geoseg_message(
        tmp_path: Path, scene: Path, qgis_env: dict[str, str]) -> None:
    bad = tmp_path / "nope.safetensors"
    bad.write_text("not a model")
    out = tmp_path / "map.tif"
    proc = qgis_process(qgis_env, "run", "geoseg:segmentraster", "--", f"INPUT={scene}",
                        f"MODEL_FILE={bad}", f"OUTPUT={out}")
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines()
              if line.startswith("Error: ") and "nope.safetensors" in line]
    assert errors, proc.stdout + proc.stderr  # geoseg's own one-line message
    assert not out.exists()
    # a name outside the model list is refused before geoseg runs
    proc = qgis_process(qgis_env, "run", "geoseg:segmentraster", "--", f"INPUT={scene}",
                        "MODEL=nope", f"OUTPUT={out}")
    assert proc.returncode != 0 and not out.exists()


@pytest.mark.qgis
@needs_qgis_process
def test_installed_plugin_runs_without_env(
        tmp_path: Path, qgis_env: dict[str, str],
        predicted: tuple[Path, list[float], object]) -> None:
    """``geoseg qgis install --enable`` alone: no QGIS_PLUGINPATH, no GEOSEG_EXECUTABLE."""
    config = tmp_path / "config"
    result = CliRunner().invoke(cli, ["qgis", "install", "--enable", "--profile-dir",
                                      str(config / "profiles" / "default")])
    assert result.exit_code == 0, result.output
    env = {**qgis_env, "QGIS_CUSTOM_CONFIG_PATH": str(config), "PATH": "/usr/bin:/bin"}
    del env["QGIS_PLUGINPATH"], env["GEOSEG_EXECUTABLE"]
    out = tmp_path / "polygons.gpkg"
    args = ["run", "geoseg:vectorize", "--", f"INPUT={predicted[0]}", "ALL=true",
            f"OUTPUT={out}"]
    proc = qgis_process(env, *args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert out.stat().st_size > 0
    # the executable comes from the profile's setting: a wrong one is named in the error
    ini = config / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.write_text(ini.read_text().replace(str(GEOSEG.resolve()), "/missing/geoseg"))
    out.unlink()
    proc = qgis_process(env, *args)
    assert proc.returncode != 0
    assert "'geoseg executable' is '/missing/geoseg'" in proc.stdout + proc.stderr
    assert not out.exists()


STANDALONE = r'''
import gc, json, os, sys, time
from qgis.core import (QgsApplication, QgsProcessingFeedback, QgsProject, QgsRasterLayer,
                       QgsVectorLayer)
cfg = json.loads(sys.argv[1])
QgsApplication.setPrefixPath("/usr", True)
app = QgsApplication([], False)
app.initQgis()
sys.path.append("/usr/share/qgis/python/plugins")
sys.path.insert(0, cfg["plugins"])
import processing
from processing.core.Processing import Processing
Processing.initialize()
import geoseg_qgis
plugin = geoseg_qgis.classFactory(None)
plugin.initProcessing()
out = {}

class Feedback(QgsProcessingFeedback):
    def __init__(self, cancel_at=None):
        super().__init__()
        self.progress, self.infos, self.cancel_at = [], [], cancel_at
        self.progressChanged.connect(self.on_progress)
    def on_progress(self, p):
        self.progress.append(p)
        if self.cancel_at is not None and p >= self.cancel_at and not self.isCanceled():
            self.canceled_at = time.monotonic()
            self.cancel()
    def pushInfo(self, m):
        self.infos.append(m)

fb = Feedback()
res = processing.runAndLoadResults("geoseg:segmentraster", {
    "INPUT": cfg["scene"], "MODEL_FILE": cfg["bundle"], "DEVICE": "cpu",
    "OUTPUT": cfg["out"]}, feedback=fb)
src = QgsRasterLayer(cfg["scene"], "scene")
layer = QgsProject.instance().mapLayersByName("Class map")[0]
r = layer.renderer()
out["segment"] = {
    "result": res["OUTPUT"], "valid": layer.isValid(), "renderer": r.type(),
    "labels": [c.label for c in r.classes()], "values": [c.value for c in r.classes()],
    "colors": [c.color.name() for c in r.classes()],
    "crs_equal": layer.crs() == src.crs(), "crs": layer.crs().authid(),
    "extent_equal": layer.extent() == src.extent(),
    "progress_last": fb.progress[-1] if fb.progress else None}

fb = Feedback()
res = processing.run("geoseg:vectorize", {"INPUT": cfg["out"], "ALL": True,
                     "SIMPLIFY": 30.0, "OUTPUT": cfg["vec"]}, feedback=fb)
vec = QgsVectorLayer(res["OUTPUT"], "polygons", "ogr")
out["vectorize"] = {"valid": vec.isValid(), "count": vec.featureCount(),
                    "geometry": vec.geometryType(), "crs_equal": vec.crs() == src.crs(),
                    "fields": vec.fields().names()}
del vec

res = processing.run("geoseg:score", {"INPUT": cfg["out"], "LABELS": cfg["out"],
                     "OUTPUT": cfg["report"], "OUTPUT_HTML": cfg["report"] + ".html"})
out["score"] = {k: res[k] for k in ("MIOU", "ACCURACY", "OUTPUT", "OUTPUT_HTML")}

# Cancel at the first progress above 0 (geoseg is running), not after a fixed time: on a
# fast machine with a cached engine the run can finish before any timer fires.
fb = Feedback(cancel_at=1e-6)
t0 = time.monotonic()
try:
    processing.run("geoseg:segmentraster", {"INPUT": cfg["scene"], "MODEL_FILE": cfg["bundle"],
                   "DEVICE": "cpu", "OUTPUT": cfg["cancel_out"]}, feedback=fb)
    out["cancel"] = {"raised": False}
except Exception as exc:
    out["cancel"] = {"raised": True, "error": str(exc)}
out["cancel"].update(canceled=fb.isCanceled(),
                     after_cancel_s=time.monotonic() - getattr(fb, "canceled_at", t0),
                     exists=os.path.exists(cfg["cancel_out"]))

if cfg.get("png"):
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor
    layer.setOpacity(0.6)
    settings = QgsMapSettings()
    settings.setLayers([layer, src])
    settings.setDestinationCrs(src.crs())
    settings.setExtent(src.extent())
    settings.setBackgroundColor(QColor("white"))
    settings.setOutputSize(QSize(src.width(), src.height()))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    out["png"] = job.renderedImage().save(cfg["png"], "png")
    del job
del layer, src, r
QgsProject.instance().clear()   # pitfall 2: no layer may outlive exitQgis
gc.collect()
print("RESULT " + json.dumps(out), flush=True)
plugin.unload()
app.exitQgis()
'''


@pytest.mark.qgis
@needs_pyqgis
def test_pyqgis_segment_legend_vectorize_score_cancel(
        bundle: Path, scene: Path, tmp_path: Path, qgis_env: dict[str, str]) -> None:
    """Standalone PyQGIS (Debian's python): results load with the model's legend; Cancel."""
    script = tmp_path / "standalone.py"
    script.write_text(textwrap.dedent(STANDALONE))
    cfg = {"plugins": str(PLUGIN_DIR), "scene": str(scene), "bundle": str(bundle),
           "out": str(tmp_path / "map.tif"), "vec": str(tmp_path / "map.gpkg"),
           "report": str(tmp_path / "report.json"),
           "cancel_out": str(tmp_path / "cancelled.tif"),
           "png": os.environ.get("GEOSEG_QGIS_PNG", "")}
    proc = subprocess.run([QGIS_PYTHON, str(script), json.dumps(cfg)], env=qgis_env,
                          capture_output=True, text=True, timeout=240, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]  # no segfault at exit (pitfall 2)
    out = json.loads(lines[0][len("RESULT "):])

    seg = out["segment"]
    assert seg["valid"] and seg["renderer"] == "paletted"
    assert seg["labels"] == ["water", "field", "forest"]  # not 256 palette entries
    assert seg["values"] == [0, 1, 2]
    assert seg["colors"] == ["#005ac8", "#f0c828", "#148c28"]
    assert seg["crs_equal"] and seg["extent_equal"], seg
    assert seg["progress_last"] == 100.0

    vec = out["vectorize"]
    assert vec["valid"] and vec["count"] > 0 and vec["crs_equal"], vec
    assert vec["geometry"] == 2  # QgsWkbTypes.PolygonGeometry

    assert out["score"]["MIOU"] == 1.0 and out["score"]["ACCURACY"] == 1.0
    assert "<table" in Path(out["score"]["OUTPUT_HTML"]).read_text()

    cancel = out["cancel"]
    assert cancel["canceled"] and cancel["raised"], cancel
    assert cancel["after_cancel_s"] < 3.0, cancel
    assert not cancel["exists"]
    assert not list(tmp_path.glob(".cancelled.tif*")), list(tmp_path.iterdir())


def test_no_qgis_in_this_interpreter() -> None:
    assert "qgis" not in sys.modules and "qgis.core" not in sys.modules


def test_remove_partials_removes_a_killed_runs_tails_folder(tmp_path: Path) -> None:
    """After a SIGKILL (geoseg had no time to clean up) nothing of the run stays behind."""
    out = tmp_path / "map.tif"
    tails = tmp_path / ".map.tif.abc123.partial.tails"
    tails.mkdir()
    (tails / "0_0.npz").write_bytes(b"x")
    (tmp_path / ".map.tif.abc123.partial.tif").write_bytes(b"x")
    keep = tmp_path / "other.tif"
    keep.write_bytes(b"x")
    runner.remove_partials(str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.tif"]
