"""``--precision auto`` on OpenVINO: bf16 only where this CPU runs it faster (measured, cached)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geoseg.prediction import inference, probe
from geoseg.prediction.pipeline import predict
from geoseg.testing import make_class_map, make_geotiff, make_scene

from ..conftest import N_CLASSES

pytest.importorskip("openvino")


def _scene(path: Path) -> Path:
    cmap = make_class_map((160, 200), n_classes=N_CLASSES, block=24, seed=3)
    return make_geotiff(path, make_scene(cmap, seed=3), nodata=None)


@pytest.mark.parametrize(("seconds", "expected"), [
    ({"fp32": 1.0, "bf16": 1.3}, "fp32"),    # bf16 slower (AVX-512 BF16 without AMX)
    ({"fp32": 1.0, "bf16": 0.97}, "fp32"),   # not 5% faster: fp32 (exact) wins
    ({"fp32": 1.0, "bf16": 0.5}, "bf16"),    # AMX / Zen 4: bf16 twice as fast
])
def test_auto_takes_the_measured_faster_precision_and_caches_it(
        tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        seconds: dict[str, float], expected: str) -> None:
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    calls: list[dict[str, object]] = []

    def timed(head: Path, **kw: object) -> dict[str, float]:
        calls.append(kw)
        return seconds

    monkeypatch.setattr(probe, "_time_both", timed)
    scene = _scene(tmp_path / "s.tif")
    r = predict(scene, tmp_path / "a.tif", model=tiny_bundle, engine="openvino",
                precision="auto", batch_size=2)
    assert f" {expected} openvino " in r.path
    assert len(calls) == 1 and calls[0]["batch"] == 2 and calls[0]["n_bands"] == 3
    record = json.loads((tmp_path / "cache" / "openvino" / "precision.json").read_text())
    (key, value), = record.items()
    assert value["choice"] == expected and key.startswith(probe.cpu_fingerprint())
    # the second run reads the cache: no measurement
    r2 = predict(scene, tmp_path / "b.tif", model=tiny_bundle, engine="openvino",
                 precision="auto", batch_size=2)
    assert f" {expected} openvino " in r2.path and len(calls) == 1


def test_explicit_precision_and_cpus_without_bf16_are_not_probed(
        tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache"))

    def never(*args: object, **kw: object) -> dict[str, float]:
        raise AssertionError("no measurement expected")

    monkeypatch.setattr(probe, "_time_both", never)
    scene = _scene(tmp_path / "s.tif")
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    r = predict(scene, tmp_path / "a.tif", model=tiny_bundle, engine="openvino",
                precision="bf16")
    assert " bf16 openvino " in r.path
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    r = predict(scene, tmp_path / "b.tif", model=tiny_bundle, engine="openvino",
                precision="auto")
    assert " fp32 openvino " in r.path


def test_the_measurement_runs_both_precisions(tiny_bundle: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from geoseg.models.bundle import load_bundle
    from geoseg.prediction.engines import head_model
    from geoseg.prediction.stitching import blend_window

    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache"))
    bundle = load_bundle(tiny_bundle)
    head = head_model(bundle, tile=64, overlap=16, blend="cosine",
                      window=blend_window(64, 16, "cosine").astype("float32"))
    seconds = probe._time_both(head, batch=1, n_bands=3, tile=64, mean=bundle.spec.mean,
                               std=bundle.spec.std, threads=1)
    assert set(seconds) == {"fp32", "bf16"} and all(0 < s < 60 for s in seconds.values())
