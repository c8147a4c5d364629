"""Which OpenVINO precision is faster on this CPU: measured once, cached.

A CPU with bf16 instructions is not always faster in bf16. On an AMD EPYC with AVX-512 BF16
OpenVINO runs the shipped ``deeplab`` 1.9x faster in bf16 than in fp32; on an Intel Xeon
with AVX-512 BF16 but no AMX (as a VM may expose it) bf16 is 23% *slower* (1.96 vs 2.54
Mpx/s, ``benchmarks/engines.py``). CPU flags cannot tell the two apart, so ``--precision
auto`` on OpenVINO times one batch in each precision, interleaved, and keeps bf16 only if it
is at least 5% faster (it also changes a fraction of a percent of the class map). The choice
is cached per CPU, head graph, batch and threads in ``cache_dir()/openvino/precision.json``:
it costs a few seconds on the first run only.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cpu_fingerprint", "faster_openvino_precision"]

#: bf16 must beat fp32 by this factor to be chosen.
BF16_MARGIN = 0.95
_ROUNDS = 3


def cpu_fingerprint() -> str:
    """Return the CPU model and a hash of its feature flags: what the choice depends on."""
    model, flags = "unknown", ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        text = f"model name: {platform.processor()}\nflags: {platform.machine()}"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = value.strip()
    return f"{model} [{hashlib.sha256(flags.encode()).hexdigest()[:12]}]"


def faster_openvino_precision(head: Path, *, batch: int, n_bands: int, tile: int,
                              mean: tuple[float, ...], std: tuple[float, ...],
                              threads: int) -> tuple[str, dict[str, Any]]:
    """Return the faster OpenVINO precision for ``head`` here and its timing record.

    ``batch`` is the run's batch size (a head with a static batch dimension uses its own).
    """
    from geoseg.prediction.engine_cache import _locked, _tmp_name, cache_dir
    from geoseg.prediction.engines import OPENVINO_TILE_BATCH

    path = cache_dir() / "openvino" / "precision.json"
    key = f"{cpu_fingerprint()}|{head.stem}|b{batch}|t{threads}|s{OPENVINO_TILE_BATCH}"
    record = _read(path).get(key)
    if record is not None:
        return str(record["choice"]), record
    seconds = _time_both(head, batch=batch, n_bands=n_bands, tile=tile, mean=mean, std=std,
                         threads=threads)
    choice = "bf16" if seconds["bf16"] < BF16_MARGIN * seconds["fp32"] else "fp32"
    record = {"choice": choice, **{f"{p}_s": round(s, 4) for p, s in seconds.items()}}
    with _locked(path):
        cache = _read(path)
        cache[key] = record
        tmp = _tmp_name(path)
        try:
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return choice, record


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _time_both(head: Path, *, batch: int, n_bands: int, tile: int, mean: tuple[float, ...],
               std: tuple[float, ...], threads: int) -> dict[str, float]:
    """Best-of-rounds seconds per batch in each precision, the two interleaved."""
    from geoseg.prediction.engines import compile_openvino

    requests, x, calls = {}, None, 1
    for name, hint in (("fp32", "f32"), ("bf16", "bf16")):
        compiled = compile_openvino(head, hint, threads)  # as the run compiles it
        if x is None:  # pixels around the model's mean, in its compiled batch size
            step = compiled.inputs[0].get_partial_shape()[0].get_length()
            calls = max(1, batch // step)  # a run's batch goes through in `calls` calls
            x = (np.asarray(mean, np.float32)[None, :, None, None]
                 + np.asarray(std, np.float32)[None, :, None, None]
                 * np.random.default_rng(0).standard_normal((step, n_bands, tile, tile),
                                                            dtype=np.float32))
        request = compiled.create_infer_request()
        request.infer({0: x})  # warm-up: first-call allocations
        requests[name] = request
    best = {name: float("inf") for name in requests}
    for _ in range(_ROUNDS):
        for name, request in requests.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                request.infer({0: x})
            best[name] = min(best[name], time.perf_counter() - t0)
    return best
