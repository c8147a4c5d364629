"""predict's outputs nobody can corrupt: two real runs, resume under the lock, full disks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import GeosegWarning, OutputLockedError
from geoseg.prediction.pipeline import predict
from geoseg.testing import make_class_map, make_geotiff, make_scene

from ..conftest import read

GEOSEG = [sys.executable, "-c", "from geoseg.cli.main import main; main()"]


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "the first run never took its lock"
        time.sleep(0.02)


def test_two_processes_to_one_output(tmp_path: Path, tiny_bundle: Path) -> None:
    cmap = make_class_map((640, 640), n_classes=3, block=24, seed=5)
    scene = make_geotiff(tmp_path / "big.tif", make_scene(cmap, seed=5), nodata=None)
    out = tmp_path / "out.tif"
    args = [*GEOSEG, "predict", str(scene), "-m", str(tiny_bundle), "-o", str(out),
            "--device", "cpu", "--precision", "fp32", "--threads", "1", "-q"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / ".out.tif.lock", first)
    second = subprocess.run([*args, "--overwrite"], capture_output=True, text=True,
                            timeout=300, check=False)
    assert second.returncode == 1, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"PID {first.pid}" in lines[0], second.stderr
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    alone = tmp_path / "alone.tif"
    predict(scene, alone, model=tiny_bundle, device="cpu", precision="fp32")
    assert np.array_equal(read(out), read(alone))  # one model's map, not a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.tif", "big.tif", "out.tif"]


HOLD = textwrap.dedent("""
    import sys, time
    from geoseg._atomic import destination_locks
    with destination_locks(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_resume_takes_the_same_lock(tmp_path: Path, scene_path: Path,
                                    tiny_bundle: Path) -> None:
    out = tmp_path / "out.tif"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=str(holder.pid)):
            predict(scene_path, out, model=tiny_bundle, device="cpu", resume=True)
    finally:
        holder.kill()
        holder.wait()


def test_resume_removes_stray_temporaries(tmp_path: Path, scene_path: Path,
                                          tiny_bundle: Path) -> None:
    out = tmp_path / "out.tif"
    stray = [".out.tif.0badf00d.partial.tif.ovr.tmp", ".out.tif.0badf00d.partial.tif",
             ".out.tif.partial.json"]
    for name in stray:
        (tmp_path / name).write_text("left by a killed run")
    (tmp_path / ".out.tif.0badf00d.partial.tails").mkdir()
    with pytest.warns(GeosegWarning, match="starting over"):  # the journal is not ours
        predict(scene_path, out, model=tiny_bundle, device="cpu", resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "scene.tif"]


def test_tile_is_capped_at_the_scene(tmp_path: Path, scene_path: Path,
                                     tiny_bundle: Path) -> None:
    r = predict(scene_path, tmp_path / "o.tif", model=tiny_bundle, device="cpu",
                tile_size=4096)
    assert r.tile == 544  # the scene's 517 px side, rounded up to a multiple of 32


FULL = textwrap.dedent("""
    import resource, signal, sys
    from geoseg.cli.main import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
    sys.argv = ["geoseg", *sys.argv[2:]]
    main()
""")


@pytest.mark.timeout(200)
@pytest.mark.parametrize("limit", [0, 150_000])
def test_full_disk_is_one_error_and_leaves_nothing(tmp_path: Path, scene_path: Path,
                                                   tiny_bundle: Path, limit: int) -> None:
    """0: no temporary can even be created; 150 kB: the disk fills during compute."""
    out = tmp_path / "out.tif"
    args = ["predict", str(scene_path), "-m", str(tiny_bundle), "-o", str(out), "--device",
            "cpu", "-q", "--resume"]
    run = subprocess.run([sys.executable, "-c", FULL, str(max(limit, 1)), *args],
                         capture_output=True, text=True, timeout=150, check=False)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: no space left on the device while writing"), run.stderr
    assert str(out) in last and "MB free" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_batch_into_an_existing_directory(tmp_path: Path, scene_path: Path,
                                          tiny_bundle: Path) -> None:
    from click.testing import CliRunner
    from geoseg.cli.main import cli

    maps = tmp_path / "maps"
    maps.mkdir()
    other = make_geotiff(tmp_path / "other.tif", read_scene(scene_path), nodata=0)
    result = CliRunner().invoke(cli, ["predict", str(scene_path), str(other), "-m",
                                      str(tiny_bundle), "-o", str(maps), "--device", "cpu",
                                      "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in maps.iterdir()) == ["other.tif", "scene.tif"]


def read_scene(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read()


def test_bundles_are_written_readable_by_all(tmp_path: Path, tiny_bundle: Path) -> None:
    from geoseg.models.bundle import load_bundle, save_bundle

    bundle = load_bundle(tiny_bundle)
    old = os.umask(0o022)
    try:
        path = save_bundle(tmp_path / "copy.safetensors", bundle.model, bundle.spec)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.timeout(300)
def test_workers_run_is_quiet_and_shuts_down_cleanly(tmp_path: Path, scene_path: Path,
                                                     tiny_bundle: Path) -> None:
    out = tmp_path / "o.tif"
    run = subprocess.run([*GEOSEG, "predict", str(scene_path), "-m", str(tiny_bundle), "-o",
                          str(out), "--workers", "1", "--progress", "none"],
                         capture_output=True, text=True, timeout=280, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote "), run.stderr  # the summary only
    assert "killed by signal" not in run.stderr


def test_write_after_discard_leaves_nothing(tmp_path: Path) -> None:
    """A cancelled run's worker that finishes a chunk after the cleanup writes nothing.

    Appending its journal line used to recreate ``.OUT.partial.json`` beside the output
    (seen as a flaky SIGTERM test in CI).
    """
    from geoseg.io import open_scene
    from geoseg.prediction.output import PartialOutput

    scene = open_scene(make_geotiff(tmp_path / "s.tif", shape=(3, 64, 64)))
    partial = PartialOutput(tmp_path / "o.tif", None, scene, 3, {"k": 1}, resume=False)
    block = np.zeros((1, 32, 32), np.uint8)
    assert partial.write(0, 0, (0, 32), (0, 32), block) == 32 * 32
    assert partial.journal.exists()
    partial.discard()
    assert partial.write(0, 1, (0, 32), (32, 64), block) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
