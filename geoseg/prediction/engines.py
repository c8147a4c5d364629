"""ONNX engines: export a bundle once, cache it, run it with OpenVINO or ONNX Runtime.

The bundle's network is exported to ONNX once (``torch.onnx.export``, dynamic batch) — or
taken as stored, for bundles imported from an ONNX file — and wrapped in a *head* graph
that keeps the same contract as the torch engines: raw pixels in, normalisation inside,
softmax and the blend window applied, weighted class probabilities out. The head graph is
cached in the user's cache directory (:func:`cache_dir`) under the bundle's sha256 and the
tile/overlap/blend it was built for; int8 models (nncf for OpenVINO, static QDQ
quantisation for ONNX Runtime) are cached beside it, keyed also by the calibration source.
A second run therefore starts in about a second. Cache files are written to a temporary
name and renamed under a file lock, so concurrent workers never see a half-written model;
an entry that does not read (truncated, a disk error) is rebuilt the same way, and the lock
files are removed when done.

Both runtimes are optional extras (``geoseg[openvino]``, ``geoseg[onnx]``) and imported only
here, only when used. Their threads come from :func:`engine_threads`: one inference stream
per dask thread that calls the model, ``cores // streams`` threads each (the cores this
process may use, or ``OMP_NUM_THREADS`` as set for dask workers), no spinning threads, so
the engine and dask's reader/blender threads share the cores instead of oversubscribing them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import BundleError, InputError
from geoseg.models.export import export_network
from geoseg.prediction.calibration import CALIBRATION_TILES, calibration_tiles
from geoseg.prediction.engine_cache import _tmp_name, build_once, cache_dir

if TYPE_CHECKING:
    from geoseg.models.bundle import Bundle

__all__ = ["CALIBRATION_TILES", "EXTRAS", "OPENVINO_TILE_BATCH", "OnnxRunner", "build_runner",
           "cache_dir", "cached_head", "calibration_tiles", "compile_openvino", "compose_head",
           "engine_available", "engine_threads", "export_network", "head_model",
           "openvino_model", "require_engine"]

#: Engine -> (module to import, pip extra that installs it).
EXTRAS: dict[str, tuple[str, str]] = {"openvino": ("openvino", "openvino"),
                                      "onnxruntime": ("onnxruntime", "onnx")}
#: Name of the head graph's input (raw pixels); its output is ``probs``.
HEAD_INPUT = "pixels"

Tiles = Callable[[], npt.NDArray[np.float32]]


def engine_available(engine: str) -> bool:
    """Whether the runtime of ``engine`` (``openvino``/``onnxruntime``) is installed."""
    module = EXTRAS[engine][0]
    return importlib.util.find_spec(module) is not None and \
        importlib.util.find_spec("onnx") is not None


def require_engine(engine: str) -> None:
    """Raise a one-line :class:`InputError` naming the extra if ``engine`` is missing."""
    if not engine_available(engine):
        module, extra = EXTRAS[engine]
        raise InputError(f"engine {engine!r} is not installed: pip install 'geoseg[{extra}]' "
                         f"(needs the {module} and onnx packages)")


def engine_threads(callers: int = 1) -> tuple[int, int]:
    """``(streams, threads per stream)`` for ``callers`` dask threads calling the model.

    The cores are ``OMP_NUM_THREADS`` if set (dask workers), else this process's. Each of
    up to ``cores`` concurrent callers gets its own inference stream with ``cores //
    streams`` threads, so dask threads x engine threads never exceeds the cores: while one
    dask thread reads or blends, the others' model calls keep their threads.
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        cores = int(env)
    else:
        try:
            cores = max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            cores = max(1, os.cpu_count() or 1)
    streams = max(1, min(callers, cores))
    return streams, max(1, cores // streams)


# --- the head graph -------------------------------------------------------------------------

def compose_head(model_bytes: bytes, *, mean: tuple[float, ...], std: tuple[float, ...],
                 window: npt.NDArray[np.float32]) -> Any:
    """Wrap an ONNX segmentation network (logits NCHW) into geoseg's head graph.

    Input ``pixels`` (float32 raw pixels, ``N x B x t x t``) -> ``(x - mean) / std`` -> network ->
    softmax over classes -> times the blend ``window`` -> output ``probs``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or not graph.output:
        raise BundleError(f"the ONNX model must have one image input and a logits output; "
                          f"it has inputs {[i.name for i in inputs]}")
    old_in, old_out = inputs[0], graph.output[0]
    in_type = old_in.type.tensor_type.elem_type
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in old_in.type.tensor_type.shape.dim]
    batch_dim: Any = dims[0] if dims and dims[0] else "batch"
    t = int(window.shape[0])
    n_bands = len(mean)
    if len(dims) != 4 or (dims[1] and dims[1] != n_bands):
        raise BundleError(f"the ONNX model's input has shape {dims}; expected N x {n_bands} "
                          "x H x W (NCHW, one channel per band)")
    for side in dims[2:]:
        if side and side != t:
            raise BundleError(f"the ONNX model takes {side} px tiles; use --tile-size {side}")
    graph.input.remove(old_in)
    graph.input.insert(0, helper.make_tensor_value_info(HEAD_INPUT, TensorProto.FLOAT,
                                                        [batch_dim, n_bands, t, t]))
    consts = {
        "geoseg_mean": np.asarray(mean, np.float32).reshape(1, -1, 1, 1),
        "geoseg_inv_std": (1.0 / np.asarray(std, np.float32)).reshape(1, -1, 1, 1),
        "geoseg_window": np.asarray(window, np.float32).reshape(1, 1, t, t),
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    pre = [helper.make_node("Sub", [HEAD_INPUT, "geoseg_mean"], ["geoseg_centred"]),
           helper.make_node("Mul", ["geoseg_centred", "geoseg_inv_std"],
                            [old_in.name if in_type == TensorProto.FLOAT else "geoseg_norm"])]
    if in_type != TensorProto.FLOAT:
        pre.append(helper.make_node("Cast", ["geoseg_norm"], [old_in.name], to=in_type))
    post = _softmax_window(old_out.name, _opset(model))
    for k, node in enumerate(pre + post):
        node.name = f"geoseg_head_{k}"
    for node in reversed(pre):
        graph.node.insert(0, node)
    graph.node.extend(post)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT,
                                                      [batch_dim, None, t, t]))
    return model


def _opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
               default=13)


def _softmax_window(logits: str, opset: int) -> list[Any]:
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", [logits], ["geoseg_logits"], to=TensorProto.FLOAT)]
    if opset >= 13:
        nodes.append(helper.make_node("Softmax", ["geoseg_logits"], ["geoseg_p"], axis=1))
    else:  # before opset 13 Softmax flattens every axis after ``axis``: spell it out
        nodes += [
            helper.make_node("ReduceMax", ["geoseg_logits"], ["geoseg_max"], axes=[1]),
            helper.make_node("Sub", ["geoseg_logits", "geoseg_max"], ["geoseg_shift"]),
            helper.make_node("Exp", ["geoseg_shift"], ["geoseg_exp"]),
            helper.make_node("ReduceSum", ["geoseg_exp"], ["geoseg_sum"], axes=[1]),
            helper.make_node("Div", ["geoseg_exp", "geoseg_sum"], ["geoseg_p"]),
        ]
    nodes.append(helper.make_node("Mul", ["geoseg_p", "geoseg_window"], ["probs"]))
    return nodes


def _head_key(bundle: Bundle, tile: int, overlap: int, blend: str) -> str:
    """Weights, tiling and the normalisation the head folds in (``--scale`` changes it)."""
    norm = hashlib.sha256(repr((bundle.spec.mean, bundle.spec.std)).encode()).hexdigest()[:8]
    return f"{bundle.sha256[:24]}-t{tile}-o{overlap}-{blend}-n{norm}"


def cached_head(bundle: Bundle, *, tile: int, overlap: int, blend: str) -> Path:
    """Where the head graph of this bundle and tiling is cached (it may not exist yet)."""
    return cache_dir() / "onnx" / f"{_head_key(bundle, tile, overlap, blend)}.onnx"


def head_model(bundle: Bundle, *, tile: int, overlap: int, blend: str,
               window: npt.NDArray[np.float32]) -> Path:
    """Path of the cached head graph for this bundle and tiling, exported on first use.

    A cached head is only parsed (a corrupt one is exported again, with a warning naming
    it): a deferred bundle's torch network is built only to export it the first time.
    """
    path = cached_head(bundle, tile=tile, overlap=overlap, blend=blend)

    def build() -> None:
        raw = bundle.onnx if bundle.onnx is not None else \
            export_network(bundle.with_network(), tile)
        head = compose_head(raw, mean=bundle.spec.mean, std=bundle.spec.std, window=window)
        tmp = _tmp_name(path)
        try:
            tmp.write_bytes(head.SerializeToString())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    return build_once(path, build)  # another process may have exported it meanwhile


# --- runners --------------------------------------------------------------------------------

class OnnxRunner:
    """A compiled head graph: ``__call__(x (n, B, t, t) float32) -> (n, C, t, t) float32``.

    ``fixed_batch`` is the batch size the graph insists on (an imported model with a static
    batch dimension), else ``None``.
    """

    def __init__(self, run: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
                 fixed_batch: int | None, artefact: Path) -> None:
        self._run = run
        self.fixed_batch = fixed_batch
        self.artefact = artefact

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self.fixed_batch is None or len(x) == self.fixed_batch:
            return self._run(x)
        k = self.fixed_batch
        parts = []
        for start in range(0, len(x), k):
            part = x[start:start + k]
            if len(part) < k:
                pad = np.zeros((k - len(part), *part.shape[1:]), np.float32)
                parts.append(self._run(np.concatenate([part, pad]))[:len(part)])
            else:
                parts.append(self._run(part))
        return np.concatenate(parts)


def _fixed_batch(path: Path) -> int | None:
    """Return the static batch size of the graph at ``path`` (``None``: dynamic)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None


def _calibration_key(source: str | None) -> str:
    """Fingerprint of a calibration source: paths, sizes and modification times."""
    if source is None:
        return "none"
    p = Path(source)
    files = sorted(p.iterdir()) if p.is_dir() else [p]
    h = hashlib.sha256(source.encode())
    for f in files:
        with contextlib.suppress(OSError):
            st = f.stat()
            h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def build_runner(engine: str, precision: str, head: Path, *, threads: int, streams: int = 1,
                 calibration: Tiles | None = None, calibration_source: str | None = None,
                 bf16_native: bool = False) -> OnnxRunner:
    """Compile ``head`` for ``engine`` at ``precision`` (``fp32|bf16|int8``).

    ``streams`` callers may run the model at once, each on ``threads`` threads.

    int8 quantises the graph on ``calibration()`` tiles first (cached per
    ``calibration_source``); with ``bf16_native`` the int8 OpenVINO model runs its
    remaining float layers in bf16.
    """
    require_engine(engine)
    if precision == "int8":
        if calibration is None:
            raise InputError("int8 needs calibration tiles (the scene or --calibration DIR)")
        key = f"{head.stem}-{_calibration_key(calibration_source)}"
        from geoseg.prediction.quantize import quantize_onnxruntime, quantize_openvino

        head = (quantize_openvino if engine == "openvino" else quantize_onnxruntime)(
            head, key, calibration, _fixed_batch(head))
    if engine == "openvino":
        hint = "bf16" if precision == "bf16" or (precision == "int8" and bf16_native) \
            else "f32"
        return OnnxRunner(*_openvino_run(head, hint, threads, streams), head)
    if precision == "bf16":
        raise InputError("onnxruntime has no bf16 CPU kernels; use --engine openvino or "
                         "--precision fp32")
    return OnnxRunner(*_onnxruntime_run(head, threads), head)


#: Tiles per OpenVINO inference call. The head graph has a dynamic batch; OpenVINO runs a
#: static batch of one tile faster than the dynamic graph at batch 4 (shipped deeplab, fp32,
#: 2 streams x 1 thread: medians of 8 interleaved rounds 3.70 vs 3.30 Mpx/s, static batch 4
#: 3.20, batch 2 3.60): each call's activations stay in cache. A caller's batch runs tile by
#: tile, straight into and out of the request's own tensors.
OPENVINO_TILE_BATCH = 1


def openvino_model(path: Path) -> tuple[Any, bool]:
    """Read ``path`` for OpenVINO: ``(model, batch_was_dynamic)``.

    A dynamic batch dimension is fixed to :data:`OPENVINO_TILE_BATCH`; a graph with a static
    batch keeps its own.
    """
    import openvino as ov

    model = ov.Core().read_model(str(path))
    shape = model.inputs[0].get_partial_shape()
    dynamic = bool(shape.rank.is_static and shape[0].is_dynamic)
    if dynamic:
        shape[0] = OPENVINO_TILE_BATCH
        model.reshape({model.inputs[0]: shape})
    return model, dynamic


def compile_openvino(path: Path, hint: str, threads: int, streams: int = 1,
                     model: Any = None) -> Any:
    """Compile ``path`` for the CPU at ``hint`` (``f32|bf16``), the compiled blob cached.

    ``model`` is :func:`openvino_model`'s reading of ``path`` when the caller has it.
    """
    import openvino as ov

    blobs = cache_dir() / "openvino" / "compiled"
    blobs.mkdir(parents=True, exist_ok=True)
    return ov.Core().compile_model(openvino_model(path)[0] if model is None else model, "CPU", {
        "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads * streams,
        "NUM_STREAMS": streams, "CACHE_DIR": str(blobs),
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
    })


#: Serialises the first touches of OpenVINO's Python bindings (see :func:`_openvino_run`).
_OPENVINO_BINDINGS = threading.Lock()


def _openvino_run(path: Path, hint: str, threads: int, streams: int = 1
                  ) -> tuple[Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
                             int | None]:
    import queue

    model, dynamic = openvino_model(path)
    compiled = compile_openvino(path, hint, threads, streams, model)
    step = compiled.inputs[0].get_partial_shape()[0].get_length()
    out_shape = tuple(compiled.outputs[0].get_partial_shape().to_shape())[1:]
    # One infer request per stream, with numpy views of its input and output tensors; a
    # caller borrows one (waits while all are busy). The views are taken here, once, on this
    # thread and under a process-wide lock: the first ``Tensor.data`` runs a one-time
    # initialisation inside OpenVINO's Python bindings (C++ static type tables built from
    # numpy dtypes) that deadlocked when two dask threads reached it at once, one waiting on
    # the initialisation while holding the GIL and the other holding the initialisation
    # while waiting for the GIL (issue 21). ``run`` then never touches the bindings but for
    # ``infer()``, which releases the GIL. Static shapes: the plugin allocates each
    # request's tensors once, so the views stay valid for the request's life.
    requests: queue.SimpleQueue[tuple[Any, npt.NDArray[Any], npt.NDArray[Any]]] = \
        queue.SimpleQueue()
    with _OPENVINO_BINDINGS:
        for _ in range(streams):
            request = compiled.create_infer_request()
            requests.put((request, request.get_input_tensor(0).data,
                          request.get_output_tensor(0).data))

    def run(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        n = len(x)
        if n % step:
            raise ValueError(f"batch of {n} tiles for a model compiled for batches of {step}")
        out = np.empty((n, *out_shape), np.float32)
        slot = requests.get()
        request, inp, res = slot
        try:
            # static shapes: the request's tensors are reused, copied into and out of
            for start in range(0, n, step):
                inp[...] = x[start:start + step]
                request.infer()
                out[start:start + step] = res
        finally:
            requests.put(slot)
        return out

    return run, (None if dynamic else step)


def _onnxruntime_run(path: Path, threads: int
                     ) -> tuple[Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
                                int | None]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle engine threads must not spin on cores that dask's reader/blender threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]
        return np.asarray(out, np.float32)

    dim = session.get_inputs()[0].shape[0]
    return run, (dim if isinstance(dim, int) and dim > 0 else None)
