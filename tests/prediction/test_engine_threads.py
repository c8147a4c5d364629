"""Engines under concurrency and signals: no deadlock, never deaf to SIGTERM / Ctrl-C (#21).

Each case runs in a fresh interpreter, so OpenVINO's Python bindings start uninitialised as
in a real ``geoseg predict``, and is bounded by its own short timeout: a regression fails
fast instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from geoseg.testing import make_class_map, make_geotiff, make_scene

from ..conftest import N_CLASSES

MANY_RUNNERS = textwrap.dedent("""
    import sys, threading
    import numpy as np
    from geoseg.models.bundle import load_bundle
    from geoseg.prediction import engines
    from geoseg.prediction.stitching import blend_window

    bundle = load_bundle(sys.argv[1])
    tile, n_threads = 64, int(sys.argv[2])
    window = blend_window(tile, 16, "cosine").astype(np.float32)
    head = engines.head_model(bundle, tile=tile, overlap=16, blend="cosine", window=window)
    x = np.random.default_rng(0).uniform(0, 255, (3, bundle.spec.n_bands, tile, tile))
    x = x.astype(np.float32)
    barrier = threading.Barrier(n_threads)
    results, errors = [None] * n_threads, []

    def work(i):
        try:
            barrier.wait()  # every thread builds its runner at once ...
            run = engines.build_runner("openvino", "fp32", head, threads=1, streams=2)
            barrier.wait()  # ... and makes its first call at once
            results[i] = [run(x) for _ in range(2)]
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ref = results[0][0]
    for first, second in results:
        assert np.abs(first - ref).max() < 1e-5 and np.abs(second - ref).max() < 1e-5
    print("ok", ref.shape)
""")


@pytest.mark.timeout(240)
def test_many_openvino_runners_on_many_threads_at_once(tiny_bundle: Path, tmp_path: Path) -> None:
    """Eight runners built and first called on eight threads at the same moment."""
    pytest.importorskip("openvino")
    env = os.environ | {"GEOSEG_CACHE": str(tmp_path / "cache")}
    for _ in range(2):  # fresh interpreters: the bindings' first use is the risky one
        run = subprocess.run([sys.executable, "-c", MANY_RUNNERS, str(tiny_bundle), "8"],
                             capture_output=True, text=True, timeout=100, env=env,
                             check=False)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.startswith("ok (3,"), run.stdout


# A predict whose engine call never returns (it waits, as a stuck native call would,
# without the GIL); the marker file says the call has started.
STUCK = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from geoseg.prediction import inference

    marker = Path(sys.argv[1])

    def stuck(self, x):
        marker.touch()
        threading.Event().wait()

    inference.Predictor._run_batch = stuck  # every engine's call goes through it
    from geoseg.cli.main import main
    sys.argv = ["geoseg", *sys.argv[2:]]
    main()
""")


def _wait_for_the_engine_call(proc: subprocess.Popen[str], marker: Path) -> None:
    """Wait until the stuck engine call has started (the marker exists), at most 150 s."""
    t0 = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() - t0 < 150, "the engine was never called"
        time.sleep(0.1)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("engine", "sig", "code"),
                         [("onnxruntime", signal.SIGTERM, 143), ("openvino", signal.SIGINT, 130),
                          ("eager", signal.SIGTERM, 143)])
def test_a_stuck_engine_call_does_not_make_predict_deaf(tiny_bundle: Path, tmp_path: Path,
                                                        engine: str, sig: int,
                                                        code: int) -> None:
    pytest.importorskip("onnxruntime" if engine == "onnxruntime" else "openvino")
    cmap = make_class_map((200, 200), n_classes=N_CLASSES, seed=3)
    scene = make_geotiff(tmp_path / "scene.tif", make_scene(cmap, seed=3), nodata=None)
    marker, out = tmp_path / "called", tmp_path / "out" / "map.tif"
    out.parent.mkdir()
    env = os.environ | {"GEOSEG_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK, str(marker), "predict", str(scene), "-m", str(tiny_bundle),
         "-o", str(out), "--engine", engine, "--device", "cpu", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_the_engine_call(proc, marker)
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err, err
    assert list(out.parent.iterdir()) == [], "partial outputs left behind"


def test_openvino_views_stay_valid_across_calls(tiny_bundle: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The request tensors' views taken at build time see every later call's output."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    from geoseg.models.bundle import load_bundle
    from geoseg.prediction import engines
    from geoseg.prediction.stitching import blend_window

    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache"))
    bundle = load_bundle(tiny_bundle)
    window = blend_window(64, 16, "cosine").astype(np.float32)
    head = engines.head_model(bundle, tile=64, overlap=16, blend="cosine", window=window)
    ov = engines.build_runner("openvino", "fp32", head, threads=1, streams=1)
    ort = engines.build_runner("onnxruntime", "fp32", head, threads=1)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.uniform(0, 255, (2, bundle.spec.n_bands, 64, 64)).astype(np.float32)
        assert np.abs(ov(x) - ort(x)).max() < 1e-4


@pytest.mark.timeout(240)
def test_a_stop_whose_clean_up_hangs_still_ends_the_process(tiny_bundle: Path,
                                                              tmp_path: Path) -> None:
    """Last line of defence: the clean-up itself blocks, the watchdog ends the run."""
    from geoseg.cli.main import STOP_GRACE_S

    cmap = make_class_map((200, 200), n_classes=N_CLASSES, seed=3)
    scene = make_geotiff(tmp_path / "scene.tif", make_scene(cmap, seed=3), nodata=None)
    marker = tmp_path / "called"
    hang_clean_up = STUCK.replace(
        "from geoseg.cli.main import main",
        "from geoseg.prediction.output import PartialOutput\n"
        "PartialOutput.discard = lambda self: threading.Event().wait()\n"
        "from geoseg.cli.main import main")
    proc = subprocess.Popen(
        [sys.executable, "-c", hang_clean_up, str(marker), "predict", str(scene), "-m",
         str(tiny_bundle), "-o", str(tmp_path / "map.tif"), "--engine", "eager", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ | {"GEOSEG_CACHE": str(tmp_path / "cache")})
    try:
        _wait_for_the_engine_call(proc, marker)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=STOP_GRACE_S + 30)
        assert time.monotonic() - stopped < STOP_GRACE_S + 15
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode not in (0, -signal.SIGKILL)


def test_a_command_gives_the_host_process_its_signal_handlers_back() -> None:
    """In-process runs (tests, notebooks) keep their own handlers: a Ctrl-C that reaches
    the host afterwards must not arm geoseg's stop watchdog (it ended a whole pytest run
    with status 1, 20 s after a later test raised SIGINT)."""
    from click.testing import CliRunner
    from geoseg.cli.main import cli

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert CliRunner().invoke(cli, ["models"]).exit_code == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
