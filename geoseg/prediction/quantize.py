"""int8 models for the ONNX engines: nncf for OpenVINO, static QDQ for ONNX Runtime.

Both calibrate on tiles of the scene (or ``--calibration``) and are cached beside the head
graph they quantise, keyed also by the calibration source (:func:`engines.build_runner`).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from geoseg.prediction.engine_cache import _tmp_name, build_once, cache_dir

__all__ = ["quantize_onnxruntime", "quantize_openvino"]

Tiles = Callable[[], npt.NDArray[np.float32]]
#: Name of the head graph's input (raw pixels), as :mod:`geoseg.prediction.engines` builds it.
HEAD_INPUT = "pixels"

def _batches(tiles: npt.NDArray[np.float32], fixed: int | None) -> list[npt.NDArray[np.float32]]:
    k = fixed or 1
    return [tiles[i:i + k] for i in range(0, len(tiles) - k + 1, k)]


def quantize_openvino(head: Path, key: str, calibration: Tiles, fixed: int | None) -> Path:
    """Quantise ``head`` for OpenVINO with nncf on ``calibration()``, cached as ``key``."""
    out = cache_dir() / "openvino" / f"{key}-int8.xml"

    def build() -> None:
        import logging

        import nncf
        import openvino as ov

        nncf.set_log_level(logging.ERROR)
        tiles = calibration()
        model = ov.Core().read_model(str(head))
        data = nncf.Dataset(_batches(tiles, fixed))
        with contextlib.redirect_stdout(io.StringIO()):  # nncf draws progress bars
            quantized = nncf.quantize(model, data, subset_size=len(tiles),
                                      fast_bias_correction=True)
        tmp = _tmp_name(out)
        try:
            ov.save_model(quantized, str(tmp), compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_suffix(".bin").unlink(missing_ok=True)

    return build_once(out, build)


def quantize_onnxruntime(head: Path, key: str, calibration: Tiles, fixed: int | None) -> Path:
    """Quantise ``head`` to static QDQ int8 (ONNX Runtime) on ``calibration()``, as ``key``."""
    out = cache_dir() / "onnxruntime" / f"{key}-int8.onnx"

    def build() -> None:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        batches = iter(_batches(calibration(), fixed))

        class _Reader(CalibrationDataReader):  # type: ignore[misc]
            def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
                batch = next(batches, None)
                return None if batch is None else {HEAD_INPUT: batch}

        tmp = _tmp_name(out)
        prepared = tmp.with_name(tmp.stem + "-prep.onnx")
        try:
            # No quant_pre_process: its symbolic shape inference fails on deeplab and leaves
            # temporary files in the working directory; the head is quantised as exported.
            prepared.write_bytes(head.read_bytes())
            quantize_static(str(prepared), str(tmp), _Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            nodes_to_exclude=_head_nodes(prepared))
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
            prepared.unlink(missing_ok=True)

    return build_once(out, build)


def _head_nodes(head: Path) -> list[str]:
    """Names of the head's own nodes (normalisation, softmax, window): kept in float."""
    import onnx

    model = onnx.load(str(head))
    return [n.name for n in model.graph.node if n.name.startswith("geoseg_head_")]
