"""Bad input and hostile destinations, one table per command, all through the CLI.

Every case must give a non-zero exit, exactly one line of output, no traceback, and leave
every file it names byte-for-byte as it was (no destination or input replaced, no
temporaries left behind).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.testing import make_class_map, make_geotiff, make_scene

Case = Callable[[Path, dict[str, Path]], list[str]]


def _truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a GeoTIFF's data off (its header stays readable)."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(int(size * keep))
    return path


def _snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root``: bytes of regular files, kind of the others."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[str(p)] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[str(p)] = p.read_bytes()
            else:
                out[str(p)] = stat.S_IFMT(st.st_mode)
    return out


@pytest.fixture
def files(tmp_path: Path, tiny_bundle: Path) -> dict[str, Path]:
    """Inputs and pre-existing destinations every case may use (all inside tmp_path)."""
    cmap = make_class_map((96, 128), n_classes=3, block=16, seed=1)
    f: dict[str, Path] = {
        "scene": make_geotiff(tmp_path / "scene.tif", make_scene(cmap, seed=1), nodata=None),
        "map": make_geotiff(tmp_path / "map.tif", cmap, nodata=255),
        "labels": make_geotiff(tmp_path / "labels.tif", cmap, nodata=255),
    }
    big = make_class_map((512, 512), n_classes=3, block=16, seed=2)
    f["truncated"] = _truncate(make_geotiff(tmp_path / "cut.tif", make_scene(big, seed=2),
                                            nodata=None, tiled=True, blockxsize=64,
                                            blockysize=64))
    f["truncated_map"] = _truncate(make_geotiff(tmp_path / "cutmap.tif", big, nodata=255,
                                                tiled=True, blockxsize=64, blockysize=64))
    f["bundle"] = tmp_path / "model.safetensors"
    f["bundle"].write_bytes(tiny_bundle.read_bytes())
    f["existing"] = tmp_path / "existing.tif"
    f["existing"].write_bytes(b"keep me")
    f["fifo"] = tmp_path / "fifo.tif"
    os.mkfifo(f["fifo"])
    f["null"] = tmp_path / "null.tif"
    f["null"].symlink_to("/dev/null")
    f["link"] = tmp_path / "link.tif"
    f["link"].symlink_to(f["scene"])
    (tmp_path / "sub").mkdir()
    f["chips"] = tmp_path / "chips"
    for sub, arr in (("images", make_scene(cmap, seed=1)), ("masks", cmap)):
        (f["chips"] / "t0" / sub).mkdir(parents=True)
        (f["chips"] / "t1" / sub).mkdir(parents=True)
        make_geotiff(f["chips"] / "t0" / sub / "a.tif", arr, nodata=None)
        make_geotiff(f["chips"] / "t1" / sub / "a.tif", arr, nodata=None)
    return f


def _p(f: dict[str, Path], *rest: str) -> list[str]:
    return ["predict", str(f["scene"]), "-m", str(f["bundle"]), "--device", "cpu", "-q",
            *rest]


T = str
PREDICT: dict[str, Case] = {
    "dotdot is the input": lambda t, f: _p(f, "-o", T(t / "sub/../scene.tif"), "--overwrite"),
    "symlink to the input": lambda t, f: _p(f, "-o", T(f["link"]), "--overwrite"),
    "preview is the input": lambda t, f: _p(f, "-o", T(t / "o.tif"), "--preview",
                                            T(f["scene"]), "--overwrite"),
    "preview is the map": lambda t, f: _p(f, "-o", T(t / "o.tif"), "--preview", T(t / "o.tif")),
    "probabilities is the map": lambda t, f: _p(f, "-o", T(t / "o.tif"), "--probabilities",
                                                T(t / "sub/../o.tif")),
    "fifo": lambda t, f: _p(f, "-o", T(f["fifo"]), "--overwrite"),
    "device": lambda t, f: _p(f, "-o", T(f["null"]), "--overwrite"),
    "exists": lambda t, f: _p(f, "-o", T(f["existing"])),
    "jpg": lambda t, f: _p(f, "-o", T(t / "o.jpg")),
    "vectorize format": lambda t, f: _p(f, "-o", T(t / "o.tif"), "--vectorize", T(t / "v.xyz")),
    "preview format": lambda t, f: _p(f, "-o", T(t / "o.tif"), "--preview", T(t / "p.gif")),
    "tile too big": lambda t, f: _p(f, "-o", T(t / "o.tif"), "--tile-size", "100000"),
    "tile not x32": lambda t, f: _p(f, "-o", T(t / "o.tif"), "--tile-size", "100"),
    "bands": lambda t, f: _p(f, "-o", T(t / "o.tif"), "--bands", "1,2"),
    "memory": lambda t, f: _p(f, "-o", T(t / "o.tif"), "--tile-size", "4096",
                              "--batch-size", "100000"),
    "cuda device": lambda t, f: _p(f, "-o", T(t / "o.tif"), "--devices", "cuda:99"),
    "truncated scene": lambda t, f: ["predict", T(f["truncated"]), "-m", T(f["bundle"]),
                                     "--device", "cpu", "-q", "-o", T(t / "o.tif")],
    "batch into a file": lambda t, f: ["predict", T(f["scene"]), T(f["map"]), "-m",
                                       T(f["bundle"]), "-o", T(f["existing"]) + "/", "-q"],
    "batch onto its input": lambda t, f: ["predict", T(f["scene"]), T(f["map"]), "-m",
                                          T(f["bundle"]), "-o", T(t), "--overwrite", "-q"],
    "json progress": lambda t, f: _p(f, "-o", T(f["existing"]), "--progress", "json"),
}

VECTORIZE: dict[str, Case] = {
    "symlink to the input": lambda t, f: ["vectorize", T(f["map"]), "-o", T(_link(t, f)),
                                          "--overwrite", "-q"],
    "format": lambda t, f: ["vectorize", T(f["map"]), "-o", T(t / "v.xyz")],
    "fifo": lambda t, f: ["vectorize", T(f["map"]), "-o", T(_fifo(t, "v.gpkg")),
                          "--overwrite"],
    "exists": lambda t, f: ["vectorize", T(f["map"]), "-o", T(_keep(t, "v.gpkg"))],
    "truncated map": lambda t, f: ["vectorize", T(f["truncated_map"]), "-o", T(t / "v.gpkg"),
                                   "-q"],
}

SCORE: dict[str, Case] = {
    "report is the prediction": lambda t, f: ["score", T(f["map"]), "-l", T(f["labels"]),
                                              "-o", T(t / "sub/../map.tif"), "--overwrite"],
    "csv is the labels": lambda t, f: ["score", T(f["map"]), "-l", T(f["labels"]),
                                       "--csv", T(f["labels"]), "--overwrite"],
    "plot format": lambda t, f: ["score", T(f["map"]), "-l", T(f["labels"]),
                                 "--plot", T(t / "cm.xyz")],
    "report and csv": lambda t, f: ["score", T(f["map"]), "-l", T(f["labels"]),
                                    "-o", T(t / "r.json"), "--csv", T(t / "r.json")],
    "fifo": lambda t, f: ["score", T(f["map"]), "-l", T(f["labels"]), "-o", T(f["fifo"]),
                          "--overwrite"],
}

TILE: dict[str, Case] = {
    "truncated scene": lambda t, f: ["tile", T(f["truncated"]), "--labels",
                                     T(f["truncated_map"]), "-o", T(t / "out"), "--size", "64",
                                     "-q"],
    "output is a file": lambda t, f: ["tile", T(f["scene"]), "--labels", T(f["labels"]),
                                      "-o", T(f["existing"]), "-q"],
}

TRAIN: dict[str, Case] = {
    "output is the init bundle": lambda t, f: [
        "train", T(f["chips"] / "t0"), "--val", T(f["chips"] / "t1"), "--init",
        T(f["bundle"]), "-o", T(t / "sub/../model.safetensors"), "--overwrite", "-q"],
    "fifo": lambda t, f: ["train", T(f["chips"] / "t0"), "--val", T(f["chips"] / "t1"),
                          "-o", T(_fifo(t, "m.safetensors")), "--overwrite", "-q"],
    "exists": lambda t, f: ["train", T(f["chips"] / "t0"), "--val", T(f["chips"] / "t1"),
                            "-o", T(_keep(t, "m.safetensors")), "-q"],
}


def _link(t: Path, f: dict[str, Path]) -> Path:
    link = t / "v.gpkg"
    link.symlink_to(f["map"])
    return link


def _fifo(t: Path, name: str) -> Path:
    os.mkfifo(t / name)
    return t / name


def _keep(t: Path, name: str) -> Path:
    (t / name).write_bytes(b"keep me")
    return t / name


CASES = [pytest.param(table, case, id=f"{cmd}: {name}")
         for cmd, table in (("predict", PREDICT), ("vectorize", VECTORIZE), ("score", SCORE),
                            ("tile", TILE), ("train", TRAIN))
         for name, case in table.items()]


@pytest.mark.parametrize(("table", "case"), CASES)
def test_bad_input_is_one_line_and_destroys_nothing(tmp_path: Path, files: dict[str, Path],
                                                    table: dict[str, Case], case: Case
                                                    ) -> None:
    args = case(tmp_path, files)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    if "--progress" in args:
        assert lines[0].startswith('{"event": "error"'), lines[0]
    after = _snapshot(tmp_path)
    added = sorted(set(after) - set(before))
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert not changed and not added, (changed, added, result.output)


def test_truncated_scene_error_names_file_and_window(tmp_path: Path,
                                                     files: dict[str, Path]) -> None:
    result = CliRunner().invoke(cli, ["vectorize", str(files["truncated_map"]), "-o",
                                      str(tmp_path / "v.gpkg"), "-q"])
    assert result.exit_code == 1
    assert str(files["truncated_map"]) in result.output
    assert "rows" in result.output and "columns" in result.output


def test_band_mismatch_found_before_the_model_loads(tmp_path: Path,
                                                    files: dict[str, Path]) -> None:
    """The spec is read without torch: the error comes before any model is built."""
    import subprocess
    import sys
    import time

    scene4 = make_geotiff(tmp_path / "five.tif", shape=(5, 64, 64))
    code = ("import sys\nfrom geoseg.cli.main import cli\n"
            "try:\n    cli(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    assert 'torch' not in sys.modules, 'torch was imported'\n    raise\n")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, "predict", str(scene4), "-m",
                          str(files["bundle"]), "-o", str(tmp_path / "o.tif")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 1, out.stderr
    assert "5 bands; the model expects 3" in out.stderr
    assert time.perf_counter() - t0 < 60
    assert np.all([not p.name.startswith(".o.tif") for p in tmp_path.iterdir()])
