"""Batched model inference on tiles: device, precision and engine selection.

A :class:`Predictor` wraps a bundle's network once per process (never per tile) with the
input normalisation, softmax and blend window folded in, so one call turns raw pixel
values into weighted class probabilities. Engines (:func:`resolve_engine`):

- ``openvino`` / ``onnxruntime`` (CPU; optional extras): the network exported once to ONNX
  and cached (:mod:`geoseg.prediction.engines`); fp32, bf16 (OpenVINO, where the CPU has
  native bf16; ``auto`` precision keeps it only where it measured faster than fp32, see
  :mod:`geoseg.prediction.probe`) or int8 (quantised on calibration tiles). ``auto`` prefers
  them on CPU, in that order: they run the shipped models 2-4x faster than torch eager there;
- ``eager`` torch: on ``cuda`` with fp16/bf16 autocast, pinned host buffers and
  non-blocking copies; on CPU in bf16 autocast only where the CPU computes bf16 natively
  (AMX / AVX512-BF16; elsewhere bf16 is emulated and slower than fp32), else fp32;
  channels_last, under ``torch.inference_mode``;
- ``compile``: ``torch.compile`` (inductor, frozen weights, static shapes), falling back to
  eager if compilation fails; ``auto`` (torch only) picks it for very large runs.

``auto`` precision never picks int8: it changes results more than bf16 does.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import numpy.typing as npt

from geoseg.errors import BundleError, GeosegError, GeosegWarning, InputError
from geoseg.prediction.config import Engine, InferenceConfig, Precision
from geoseg.progress import said_if_slow

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from geoseg.models.bundle import Bundle

__all__ = ["Engine", "Precision", "Predictor", "autocast", "cpu_has_native_bf16",
           "resolve_engine", "select_device", "select_precision"]

#: With ``engine="auto"`` and only torch available, compile only when a run feeds at least
#: this many megapixels of tiles to the model: the one-off compile (30-45 s on 2 cores, never
#: cached) must be repaid by the faster compiled model; on an AVX-512 BF16 CPU that takes
#: ~270 Mpx of tiles (issue #12; it was 64 on AVX2, fp32).
COMPILE_MIN_MPX = 256.0
ONNX_ENGINES = ("openvino", "onnxruntime")
_ENGINE_NAMES = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}


def select_device(device: str = "auto") -> torch.device:
    """Resolve ``auto|cpu|cuda|cuda:N|mps`` to an available ``torch.device``."""
    import torch

    name = device.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") \
            from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked for, but CUDA is not available here; "
                             "use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} does not exist: {torch.cuda.device_count()} "
                             "CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' asked for, but MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return dev


_ACCELERATOR_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def _cpu_only_machine() -> bool:
    """Whether no GPU torch could use is present (device nodes; no torch import)."""
    import os
    import sys

    return sys.platform == "linux" and not any(os.path.exists(p) for p in _ACCELERATOR_NODES)


class _CpuDevice:
    """``torch.device("cpu")`` for the ONNX engines, which run without importing torch.

    Replaced by the real ``torch.device`` as soon as torch runs the model.
    """

    type = "cpu"
    index = None

    def __str__(self) -> str:
        return "cpu"


def _device(config: InferenceConfig) -> torch.device:
    """Return the run's device; for an ONNX engine on a CPU-only machine, without torch."""
    if config.engine in ("auto", *ONNX_ENGINES) and config.device in ("auto", "cpu") and \
            (config.device == "cpu" or _cpu_only_machine()):
        from geoseg.prediction.engines import engine_available

        if any(engine_available(e) for e in ONNX_ENGINES):
            return cast("torch.device", _CpuDevice())  # only .type and str() are used
    return select_device(config.device)


def _cpu_flags() -> set[str] | None:
    """Return the CPU's feature flags from /proc/cpuinfo (Linux), else None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX512-BF16)."""
    flags = _cpu_flags()
    if flags is not None:  # no torch import (the ONNX engines' start-up)
        return bool(flags & {"amx_tile", "amx_bf16", "avx512_bf16"})
    import torch

    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return True
    return False


def select_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16", "fp16"]:
    """Resolve ``auto`` to the fastest precision that is accurate on ``device``."""
    import torch

    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise InputError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise InputError("fp16 is not supported on CPU; use bf16 or fp32")
        return precision  # type: ignore[return-value]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _make_head(model: Any, mean: Any, std: Any, window: Any) -> Any:
    import torch
    from torch import nn

    class _Head(nn.Module):
        """Normalise -> network -> softmax -> blend weight, in one module."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", mean.view(1, -1, 1, 1))
            self.register_buffer("inv_std", (1.0 / std).view(1, -1, 1, 1))
            self.register_buffer("window", window.view(1, 1, *window.shape))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean = cast("torch.Tensor", self.mean)
            inv_std = cast("torch.Tensor", self.inv_std)
            window = cast("torch.Tensor", self.window)
            logits = self.model((x - mean) * inv_std)
            return torch.softmax(logits.float(), dim=1) * window

    return _Head()



def autocast(device: torch.device, precision: str) -> Any:
    """Return the autocast context of ``precision`` on ``device`` (fp32: none).

    The one autocast helper of geoseg (inference and training).
    """
    import contextlib

    import torch

    if precision in ("fp32", "int8"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _onnx_precision(engine: str, precision: str, *, strict: bool) -> str | None:
    """Precision ``engine`` runs for ``precision``; None (or an error if strict) if it can't."""
    if precision == "auto":
        return "bf16" if engine == "openvino" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" or (precision == "bf16" and engine == "onnxruntime"):
        if strict:
            hint = "use --precision fp32 or int8" if engine == "onnxruntime" else \
                "use --precision bf16 or fp32"
            raise InputError(f"engine {engine!r} has no {precision} CPU kernels; {hint}")
        return None
    return precision


def resolve_engine(engine: str, precision: str, device: torch.device, *, run_mpx: float = 0.0,
                   torch_model: bool = True) -> tuple[str, str]:
    """Resolve ``(engine, precision)`` (``auto`` included) to what will run on ``device``.

    On CPU ``auto`` is the first installed of OpenVINO, ONNX Runtime, then torch (compiled
    when the run feeds at least ``COMPILE_MIN_MPX`` megapixels of tiles); elsewhere torch.
    ``run_mpx`` is the run's megapixels of tiles; ``torch_model`` is False for bundles that
    hold only an ONNX graph.
    """
    from geoseg.prediction.engines import EXTRAS, engine_available, require_engine

    if engine in ONNX_ENGINES:
        if device.type != "cpu":
            raise InputError(f"engine {engine!r} runs on the CPU here; use --device cpu or "
                             "--engine auto")
        require_engine(engine)
        return engine, cast("str", _onnx_precision(engine, precision, strict=True))
    if engine in ("eager", "compile") and precision == "int8":
        raise InputError("int8 runs with --engine openvino or onnxruntime, not torch "
                         "(pip install 'geoseg[openvino]')")
    if engine == "auto" and device.type == "cpu":
        for candidate in ONNX_ENGINES:
            if engine_available(candidate):
                chosen = _onnx_precision(candidate, precision, strict=False)
                if chosen is not None:
                    return candidate, chosen
    if not torch_model:
        extras = " or ".join(f"'geoseg[{e[1]}]'" for e in EXTRAS.values())
        raise InputError(f"this bundle holds an ONNX model: it runs with --engine openvino or "
                         f"onnxruntime on the CPU (pip install {extras})")
    if precision == "int8":
        raise InputError("int8 needs OpenVINO or ONNX Runtime: pip install 'geoseg[openvino]' "
                         "or 'geoseg[onnx]', and --device cpu")
    chosen_precision = select_precision(precision, device)
    if engine == "auto":
        engine = "compile" if run_mpx >= COMPILE_MIN_MPX and device.type != "mps" else "eager"
    return engine, chosen_precision


@dataclass(frozen=True, slots=True)
class PredictorInfo:
    """Which path actually runs."""

    device: str
    precision: str
    engine: str
    batch_size: int
    tile: int
    compile_s: float

    def describe(self) -> str:
        """One-line description, e.g. ``cpu bf16 openvino batch=4 tile=512``."""
        return (f"{self.device} {self.precision} {self.engine} batch={self.batch_size} "
                f"tile={self.tile}")


class Predictor:
    """A bundle's model ready for batched tile inference, built once per process.

    Parameters
    ----------
    bundle : Bundle
        The loaded model and its spec.
    config : InferenceConfig
        Tile, overlap, batch, device, precision, engine, blend (``None`` fields are filled
        from the spec).
    n_tiles : int
        Tiles the run will process, used by ``engine="auto"``.
    calibration : callable, optional
        int8 only: returns raw calibration tiles ``(n, B, t, t)`` float32.
    callers : int
        Threads that call the model at once (dask's worker threads): the ONNX engines run
        that many streams with ``cores // callers`` threads each (never more threads than
        cores). torch calls are serialised and use all cores.
    status : callable, optional
        Receives one line before each slow step of the build (the first ONNX export and
        compile of a model, int8 calibration, building the torch network, torch.compile).
    """

    def __init__(self, bundle: Bundle, config: InferenceConfig | None = None, *,
                 n_tiles: int = 0,
                 calibration: Callable[[], npt.NDArray[np.float32]] | None = None,
                 callers: int = 1, status: Callable[[str], None] | None = None) -> None:

        from geoseg.prediction.stitching import blend_window

        config = (config or InferenceConfig()).resolve(bundle.spec)
        self.config = config
        self.spec = bundle.spec
        self.tile = tile = config.tile_px
        self.batch_size = config.batch_size
        self.device = _device(config)
        self.n_classes = bundle.spec.n_classes
        self.callers = callers
        self._status = status or (lambda message: None)
        self._lock = threading.Lock()
        blend = cast("Any", config.blend)
        self.window_np = blend_window(tile, config.overlap_px, blend).astype(np.float32)
        self.engine, self.precision = resolve_engine(
            config.engine, config.precision, self.device,
            run_mpx=n_tiles * tile * tile / 1e6, torch_model=bundle.has_network)
        self._buffer: torch.Tensor | None = None
        self._runner: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]] | None = None
        t0 = time.perf_counter()
        if self.engine in ONNX_ENGINES:
            self._build_onnx(bundle, calibration)
        if self.engine not in ONNX_ENGINES:
            self._build_torch(bundle)
        self.info = PredictorInfo(str(self.device), self.precision, self.engine,
                                  self.batch_size, tile, time.perf_counter() - t0)

    def _build_onnx(self, bundle: Bundle,
                    calibration: Callable[[], npt.NDArray[np.float32]] | None) -> None:
        name = _ENGINE_NAMES.get(self.engine, self.engine)
        slow = (f"preparing the {name} int8 engine for {bundle.name}: export and calibration "
                "(once per calibration source, ~1 min)" if self.precision == "int8" else
                f"preparing the {name} engine for {bundle.name} (once, ~20 s)")
        try:
            with said_if_slow(self._status, slow):  # cached: well under a second
                self._build_onnx_runner(bundle, calibration)
        except GeosegError:
            if self.config.engine != "auto" or not bundle.has_network or \
                    self.precision == "int8":
                raise
            self._fall_back_to_torch("export")
        except Exception as exc:  # noqa: BLE001 - runtime compile failures come in many kinds
            if self.config.engine != "auto" or not bundle.has_network:
                raise BundleError(f"{self.engine} cannot compile {bundle.name}: "
                                  f"{type(exc).__name__}: {str(exc).strip()[:200]}") from None
            from geoseg.prediction.engines import cached_head

            head = cached_head(bundle, tile=self.tile, overlap=self.config.overlap_px,
                               blend=self.config.blend)  # name the file it could not run
            self._fall_back_to_torch(f"{type(exc).__name__} on {head}")

    def _build_onnx_runner(self, bundle: Bundle,
                           calibration: Callable[[], npt.NDArray[np.float32]] | None) -> None:
        from geoseg.prediction.engines import build_runner, engine_threads, head_model

        head = head_model(bundle, tile=self.tile, overlap=self.config.overlap_px,
                          blend=self.config.blend, window=self.window_np)
        streams, threads = engine_threads(self.callers)
        if self.engine == "openvino" and self.precision == "bf16" and \
                self.config.precision == "auto":  # bf16 is not faster on every CPU
            self.precision = self._faster_openvino_precision(bundle, head, streams * threads)
        self._runner = build_runner(self.engine, self.precision, head, threads=threads,
                                    streams=streams, calibration=calibration,
                                    calibration_source=self.config.calibration,
                                    bf16_native=cpu_has_native_bf16())

    def _faster_openvino_precision(self, bundle: Bundle, head: Path, threads: int) -> str:
        from geoseg.prediction.probe import faster_openvino_precision

        choice, _ = faster_openvino_precision(
            head, batch=self.batch_size, n_bands=bundle.spec.n_bands, tile=self.tile,
            mean=bundle.spec.mean, std=bundle.spec.std, threads=threads)
        return choice

    def _fall_back_to_torch(self, why: str) -> None:
        warnings.warn(f"{self.engine} could not run this model ({why}); running torch eager",
                      GeosegWarning, stacklevel=3)
        self.engine = "eager"
        self.precision = select_precision(
            self.config.precision if self.config.precision != "int8" else "auto", self.device)

    def _build_torch(self, bundle: Bundle) -> None:
        import torch

        with said_if_slow(self._status, f"loading {bundle.name} into torch"):
            bundle = bundle.with_network()  # a deferred bundle builds its network only here
        self.device = torch.device(str(self.device))  # the ONNX engines' stand-in, if any
        window = torch.from_numpy(self.window_np)
        mean = torch.tensor(bundle.spec.mean, dtype=torch.float32)
        std = torch.tensor(bundle.spec.std, dtype=torch.float32)
        head = _make_head(bundle.model, mean, std, window).eval()
        head = head.to(self.device, memory_format=torch.channels_last)
        self._head = head
        self._forward = head
        if self.engine == "compile":
            self._status(f"compiling {bundle.name} with torch.compile (~40 s, every run)")
            try:
                self._forward = self._compile(head)
            except Exception as exc:  # noqa: BLE001 - any inductor failure falls back
                warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); running "
                              "eager", GeosegWarning, stacklevel=3)
                self._forward = head
                self.engine = "eager"

    def _compile(self, head: Any) -> Any:
        import torch
        import torch._inductor.config as inductor_config

        compiled = torch.compile(head, dynamic=False)
        dummy = torch.zeros((self.batch_size, self.spec.n_bands, self.tile, self.tile),
                            device=self.device).contiguous(memory_format=torch.channels_last)
        # Freezing folds weights into constants (conv+bn fusion, prepacked weights); it
        # must be on while the graph compiles, i.e. during this first call.
        with inductor_config.patch(freezing=True), torch.inference_mode(), \
                autocast(self.device, self.precision):
            compiled(dummy)  # type: ignore[no-untyped-call]
        return compiled

    def release(self) -> None:
        """Drop the network and buffers (and cached CUDA blocks) now."""
        self._runner = None
        self._buffer = None
        for name in ("_head", "_forward"):
            if hasattr(self, name):
                delattr(self, name)
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _staging(self) -> torch.Tensor:
        import torch

        if self._buffer is None:
            shape = (self.batch_size, self.spec.n_bands, self.tile, self.tile)
            pin = self.device.type == "cuda"
            self._buffer = torch.empty(shape, dtype=torch.float32, pin_memory=pin)
        return self._buffer

    def forward_tiles(self, tiles: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Weighted class probabilities ``(n, C, t, t)`` for raw tiles ``(n, B, t, t)``."""
        n = tiles.shape[0]
        if n <= self.batch_size:  # the usual call (one batch): no extra copy
            return self._run_batch(tiles)
        out = np.empty((n, self.n_classes, self.tile, self.tile), np.float32)
        for start in range(0, n, self.batch_size):
            batch = tiles[start:start + self.batch_size]
            out[start:start + len(batch)] = self._run_batch(batch)
        return out

    def _run_batch(self, batch: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        if self._runner is not None:
            return self._runner(np.ascontiguousarray(batch, np.float32))
        import torch

        k = batch.shape[0]
        with self._lock:
            buf = self._staging()
            buf[:k].copy_(torch.from_numpy(np.ascontiguousarray(batch)))
            if k < self.batch_size:  # static shapes for the compiled graph
                buf[k:].zero_()
            x = buf.to(self.device, non_blocking=True).contiguous(
                memory_format=torch.channels_last)
            with torch.inference_mode(), autocast(self.device, self.precision):
                y = self._forward(x)
            result: npt.NDArray[np.float32] = y[:k].float().cpu().numpy()
            return result
