"""Scale-out contracts: dask.distributed, resume after SIGKILL, remote input, many scenes."""

from __future__ import annotations

import http.server
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from geoseg.cli.main import cli

from geoseg.errors import InputError
from geoseg.prediction.batch import dask_client, expand_inputs, predict_many
from geoseg.prediction.pipeline import predict
from geoseg.testing import make_class_map, make_geotiff, make_scene

from ..conftest import N_CLASSES, read


def _scene(path: Path, shape: tuple[int, int], seed: int) -> Path:
    cmap = make_class_map(shape, n_classes=N_CLASSES, block=24, seed=seed)
    return make_geotiff(path, make_scene(cmap, seed=seed), nodata=None)


@pytest.mark.timeout(300)
def test_local_cluster_is_byte_identical(tiny_bundle: Path, tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s.tif", (520, 700), 21)
    predict(scene, tmp_path / "threads.tif", model=tiny_bundle, chunk_tiles=2)
    with dask_client(workers=2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        r = predict(scene, tmp_path / "dist.tif", model=tiny_bundle, chunk_tiles=2,
                    client=client)
        # every worker built the model once, through the plugin
        built = client.run(
            lambda: len(__import__("geoseg.prediction.graph").prediction.graph.PREDICTORS))
        assert set(built.values()) == {1}
    assert "dask.distributed, 2 workers" in r.path
    assert (tmp_path / "threads.tif").read_bytes() == (tmp_path / "dist.tif").read_bytes()


def _journal_lines(journal: Path) -> int:
    try:
        return max(0, len(journal.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


@pytest.mark.timeout(300)
def test_resume_after_sigkill(tiny_bundle: Path, tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s.tif", (1100, 1100), 22)
    reference = tmp_path / "ref.tif"
    predict(scene, reference, model=tiny_bundle, chunk_tiles=1)

    out = tmp_path / "out.tif"
    journal = tmp_path / ".out.tif.partial.json"
    cmd = [sys.executable, "-m", "geoseg.cli.main", "predict", str(scene), "-o", str(out),
           "-m", str(tiny_bundle), "--chunk-tiles", "1", "--batch-size", "1", "--threads", "1",
           "--progress", "none", "--resume"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _journal_lines(journal) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _journal_lines(journal)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists()
    assert 3 <= done_before < 121  # 11 x 11 chunks

    result = predict(scene, out, model=tiny_bundle, chunk_tiles=1, resume=True)
    assert result.chunks_total == 121
    assert result.chunks_computed == 121 - done_before
    assert out.read_bytes() == reference.read_bytes()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_stale_partial_is_cleaned_without_resume(tiny_bundle: Path, tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s.tif", (300, 300), 23)
    stale = [tmp_path / ".o.tif.partial.tif", tmp_path / ".o.tif.partial.json"]
    for p in stale:
        p.write_bytes(b"stale")
    r = predict(scene, tmp_path / "o.tif", model=tiny_bundle, resume=False)
    assert r.chunks_computed == r.chunks_total
    assert not any(p.exists() for p in stale)
    assert read(tmp_path / "o.tif").shape == (300, 300)


def test_resume_with_other_settings_starts_over(tiny_bundle: Path, tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s.tif", (300, 300), 24)
    out = tmp_path / "o.tif"
    with pytest.raises(RuntimeError, match="boom"):
        _interrupt_after_first_chunk(scene, out, tiny_bundle)
    assert (tmp_path / ".o.tif.partial.json").exists()
    with pytest.warns(UserWarning, match="other settings; starting over"):
        r = predict(scene, out, model=tiny_bundle, resume=True, chunk_tiles=2)
    assert r.chunks_computed == r.chunks_total


def _interrupt_after_first_chunk(scene: Path, out: Path, bundle: Path) -> None:
    from geoseg.prediction import output as _output

    original = _output.PartialOutput.write
    calls = []

    def write(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return original(self, *args, **kwargs)

    _output.PartialOutput.write = write  # type: ignore[method-assign]
    try:
        predict(scene, out, model=bundle, resume=True, chunk_tiles=1, num_workers=1)
    finally:
        _output.PartialOutput.write = original  # type: ignore[method-assign]


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (what GDAL's /vsicurl/ uses)."""

    def log_message(self, *args: object) -> None:
        return None

    def send_head(self):  # type: ignore[no-untyped-def]
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start_s, end_s = rng.removeprefix("bytes=").split("-")
        start = int(start_s)
        end = min(int(end_s) if end_s else size - 1, size - 1)
        f = path.open("rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):  # type: ignore[no-untyped-def]
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(remaining))
        return None


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    def handler(*args: object, **kwargs: object) -> _RangeHandler:
        return _RangeHandler(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_remote_cog_via_vsicurl(tiny_bundle: Path, tmp_path: Path,
                                http_dir: tuple[str, Path]) -> None:
    url, root = http_dir
    local = _scene(tmp_path / "s.tif", (300, 420), 25)
    import rasterio.shutil

    rasterio.shutil.copy(local, root / "scene.tif", driver="COG")
    predict(local, tmp_path / "local.tif", model=tiny_bundle)
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        predict(f"/vsicurl/{url}/scene.tif", tmp_path / "remote.tif", model=tiny_bundle)
    np.testing.assert_array_equal(read(tmp_path / "local.tif"), read(tmp_path / "remote.tif"))
    assert expand_inputs([f"{url}/scene.tif"]) == [f"/vsicurl/{url}/scene.tif"]


def test_many_scenes_with_a_corrupt_one(tiny_bundle: Path, tmp_path: Path) -> None:
    a = _scene(tmp_path / "a.tif", (200, 260), 26)
    b = _scene(tmp_path / "b.tif", (150, 130), 27)
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 100)  # a TIFF header and nothing else
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# my scenes\n{a}\n{bad}\n")
    result = CliRunner().invoke(cli, ["predict", f"@{listing}", str(b), "-o",
                                      str(tmp_path / "maps") + "/", "-m", str(tiny_bundle),
                                      "--progress", "none"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "broken.tif  FAILED" in result.output
    assert "2 of 3 scenes done, 1 failed" in result.output
    for name in ("a", "b"):
        with rasterio.open(tmp_path / "maps" / f"{name}.tif") as src:
            assert src.tags()["class_names"] == "class0,class1,class2"
    assert not (tmp_path / "maps" / "broken.tif").exists()
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["a.tif", "b.tif"]


def test_many_scenes_library_and_globs(tiny_bundle: Path, tmp_path: Path) -> None:
    for i in range(3):
        _scene(tmp_path / f"t{i}.tif", (140, 150), 30 + i)
    paths = expand_inputs([str(tmp_path / "t*.tif")])
    assert [Path(p).name for p in paths] == ["t0.tif", "t1.tif", "t2.tif"]
    res = predict_many(paths, tmp_path / "out", model=tiny_bundle)
    assert not res.failed and len(res.outcomes) == 3
    assert "3 of 3 scenes done, 0 failed" in res.table()
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(tmp_path / "nothing*.tif")])
    with pytest.raises(InputError, match="distinct"):
        predict_many([paths[0], paths[0]], tmp_path / "out2", model=tiny_bundle)


def test_unreachable_scheduler_is_one_line(tiny_bundle: Path, scene_path: Path,
                                          tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["predict", str(scene_path), "-o", str(tmp_path / "o.tif"),
                                      "-m", str(tiny_bundle), "--scheduler",
                                      "tcp://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the dask scheduler" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_sigterm_stops_promptly_and_cleans_up(tiny_bundle: Path, tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s.tif", (1200, 1200), 28)
    out = tmp_path / "o.tif"
    cmd = [sys.executable, "-m", "geoseg.cli.main", "predict", str(scene), "-o", str(out),
           "-m", str(tiny_bundle), "--chunk-tiles", "1", "--batch-size", "1", "--threads", "1",
           "--progress", "none"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    journal = tmp_path / ".o.tif.partial.json"
    deadline = time.monotonic() + 240
    while _journal_lines(journal) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "Terminated."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
