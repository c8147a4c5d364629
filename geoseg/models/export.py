"""ONNX export of a bundle's torch network (used by the ONNX engines and ``bundle export``)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.errors import BundleError

if TYPE_CHECKING:
    from geoseg.models.bundle import Bundle

__all__ = ["export_network"]


def export_network(bundle: Bundle, tile: int) -> bytes:
    """Export the bundle's torch network to ONNX bytes, dynamic batch, fixed tile."""
    import tempfile
    import warnings

    import torch

    if bundle.model is None:
        raise BundleError(f"bundle {bundle.name} holds neither a torch network nor ONNX")
    x = torch.zeros(2, bundle.spec.n_bands, tile, tile)
    batch = torch.export.Dim("batch", min=1, max=1024)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(bundle.model.eval(), (x,), dynamo=True,
                                        input_names=["x"], output_names=["logits"],
                                        dynamic_shapes={"x": {0: batch}}, optimize=True,
                                        verbose=False)
            if program is None:
                raise RuntimeError("torch.onnx.export returned no program")
            with tempfile.TemporaryDirectory(prefix="geoseg-export-") as tmp:
                target = Path(tmp) / "model.onnx"
                program.save(target, external_data=False)
                data = target.read_bytes()
    except Exception as exc:  # noqa: BLE001 - exporter failures come in many kinds
        raise BundleError(f"cannot export {bundle.name} to ONNX ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
                          ) from None
    return data
