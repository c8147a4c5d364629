"""Published ONNX segmentation models as geoseg bundles, and bundles back to ONNX.

:func:`import_onnx` wraps an ONNX model (one NCHW image input, logits NCHW out) with a
:class:`ModelSpec` (bands, normalisation, classes, tile) into an ordinary bundle: the ONNX
bytes are stored in the safetensors file as one uint8 tensor (``onnx.model``), the spec
says ``architecture: onnx``. Loading still executes nothing from the file (no pickle);
such a bundle runs with the ONNX engines (OpenVINO, ONNX Runtime).
:func:`export_onnx` does the reverse: the stored ONNX bytes, or a torch bundle's network
exported with ``torch.onnx.export`` (dynamic batch), logits out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._atomic import atomic_path, check_distinct, check_output
from geoseg.errors import BundleError, InputError
from geoseg.models.spec import ClassInfo, ModelSpec

__all__ = ["ONNX_ARCHITECTURE", "ONNX_TENSOR", "export_onnx", "import_onnx", "load_onnx_bytes"]

ONNX_ARCHITECTURE = "onnx"
ONNX_TENSOR = "onnx.model"

#: Colours of classes imported without ``class_colors`` (cycled).
_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def _io_shapes(model: Any) -> tuple[list[int | None], list[int | None]]:
    """Return the static input and first-output dims (None where symbolic)."""
    import contextlib

    import onnx

    # Shape inference is only a check here (the engines infer shapes again): best effort.
    with contextlib.suppress(Exception):
        model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise BundleError(f"the ONNX model must have exactly one image input; it has "
                          f"{[i.name for i in inputs]}")

    def dims(value: Any) -> list[int | None]:
        return [d.dim_value if d.HasField("dim_value") else None
                for d in value.type.tensor_type.shape.dim]

    return dims(inputs[0]), dims(graph.output[0])


def _check_model(data: bytes, n_bands: int, n_classes: int, tile: int | None) -> int:
    """Validate an ONNX model against the spec; return the tile size to use."""
    import onnx

    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - protobuf/checker errors come in many kinds
        raise BundleError(f"not a valid ONNX model ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0][:200]})") from None
    shape_in, shape_out = _io_shapes(model)
    if len(shape_in) != 4:
        raise BundleError(f"the ONNX model's input has {len(shape_in)} dimensions; geoseg needs "
                          "N x bands x H x W")
    if shape_in[1] not in (None, n_bands):
        raise BundleError(f"the ONNX model reads {shape_in[1]} bands; --bands names {n_bands}")
    if len(shape_out) == 4 and shape_out[1] not in (None, n_classes):
        raise BundleError(f"the ONNX model outputs {shape_out[1]} classes; --classes names "
                          f"{n_classes}")
    static = {d for d in shape_in[2:] if d}
    if len(static) > 1:
        raise BundleError(f"the ONNX model takes non-square tiles {shape_in[2:]}")
    if static:
        side = static.pop()
        if tile is not None and tile != side:
            raise BundleError(f"the ONNX model takes {side} px tiles, not --tile-size {tile}")
        return side
    return tile or 512


def import_onnx(model: str | os.PathLike[str], output: str | os.PathLike[str], *,
                bands: Sequence[str], mean: Sequence[float], std: Sequence[float],
                classes: Sequence[str], class_colors: Sequence[tuple[int, int, int]] = (),
                class_ids: Sequence[int] = (), tile_size: int | None = None,
                overlap: int | None = None, gsd_m: float = float("nan"),
                overwrite: bool = False) -> Path:
    """Wrap the ONNX segmentation model at ``model`` into a geoseg bundle at ``output``.

    Parameters
    ----------
    model : path
        ONNX file: one float input ``N x len(bands) x H x W``, first output logits (or
        scores) ``N x len(classes) x H x W``.
    bands, mean, std : sequences
        Input band names and the normalisation the model expects: it sees
        ``(pixel - mean) / std`` per band.
    classes : sequence of str
        Class names in output-channel order; ids are 0.. unless ``class_ids`` is given.
    class_colors : sequence of RGB, optional
        One colour per class (default: a fixed palette).
    tile_size, overlap : int, optional
        Tile side (default: the model's static input size, else 512) and overlap (default
        tile/8).
    """
    from geoseg.models.tiles import validate_tile

    src = Path(model)
    if not src.is_file():
        raise InputError(f"ONNX model not found: {src}")
    check_output(output, overwrite=overwrite)
    check_distinct([("-o", output)], [("MODEL", src)])
    if tile_size is not None:
        validate_tile(tile_size)
    ids = list(class_ids) or list(range(len(classes)))
    colors = list(class_colors) or [_PALETTE[i % len(_PALETTE)] for i in range(len(classes))]
    if len(ids) != len(classes) or len(colors) != len(classes):
        raise InputError(f"{len(classes)} classes but {len(ids)} ids and {len(colors)} colours")
    data = src.read_bytes()
    tile = _check_model(data, len(bands), len(classes), tile_size)
    spec = ModelSpec(
        architecture=ONNX_ARCHITECTURE, backbone=src.stem, bands=tuple(bands),
        mean=tuple(mean), std=tuple(std),
        classes=tuple(ClassInfo(i, n, (int(c[0]), int(c[1]), int(c[2])))
                      for i, n, c in zip(ids, classes, colors, strict=True)),
        tile_size=tile, overlap=tile // 8 if overlap is None else overlap, gsd_m=gsd_m,
        provenance={"imported_from": src.name, "onnx_bytes": len(data)})
    return _save(output, data, spec, overwrite=overwrite)


def _save(output: str | os.PathLike[str], data: bytes, spec: ModelSpec, *,
          overwrite: bool) -> Path:
    from safetensors.numpy import save_file

    from geoseg.models.bundle import FORMAT_KEY, SPEC_KEY

    tensor = np.frombuffer(data, dtype=np.uint8).copy()
    meta = {SPEC_KEY: spec.to_json(), FORMAT_KEY: str(spec.format_version)}
    with atomic_path(output, overwrite=overwrite) as tmp:
        save_file({ONNX_TENSOR: tensor}, str(tmp), metadata=meta)
    return Path(output)


def load_onnx_bytes(path: Path) -> bytes:
    """Return the ONNX model stored in an imported bundle."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            if ONNX_TENSOR not in f.keys():  # noqa: SIM118 - safe_open has no __contains__
                raise BundleError(f"{path} says architecture 'onnx' but holds no "
                                  f"{ONNX_TENSOR!r} tensor")
            tensor = f.get_tensor(ONNX_TENSOR)
    except BundleError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds
        raise BundleError(f"{path} is corrupt: cannot read its tensors ({exc})") from None
    if tensor.dtype != np.uint8 or tensor.ndim != 1:
        raise BundleError(f"{path}: {ONNX_TENSOR!r} must be a 1-D uint8 tensor")
    return bytes(tensor.tobytes())


def export_onnx(bundle: str | os.PathLike[str], output: str | os.PathLike[str], *,
                tile_size: int | None = None, overwrite: bool = False) -> Path:
    """Write the network of ``bundle`` (a file or default model name) as ONNX to ``output``.

    Logits NCHW, dynamic batch, ``tile_size`` px tiles (default: the spec's).
    The normalisation of the spec is *not* in the graph (as in a published model); an
    imported bundle gives back the bytes it was imported from.
    """
    from geoseg.models import resolve_model, resolve_model_path
    from geoseg.models.export import export_network
    from geoseg.models.tiles import validate_tile

    # Before the (slow) load: the output may not be the bundle itself, the tile must be
    # one predict accepts (a huge one made torch's allocator fail, 33 the exporter).
    check_output(output, overwrite=overwrite)
    check_distinct([("-o", output)], [("bundle", resolve_model_path(bundle))])
    if tile_size is not None:
        validate_tile(tile_size)
    loaded = resolve_model(bundle)
    data = loaded.onnx if loaded.onnx is not None else export_network(
        loaded, tile_size or loaded.spec.tile_size)
    with atomic_path(output, overwrite=overwrite) as tmp:
        Path(tmp).write_bytes(data)
    return Path(output)
