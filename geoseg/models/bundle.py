"""Model bundles: ONE ``.safetensors`` file with the weights and a JSON :class:`ModelSpec`.

safetensors stores only tensors and a ``str -> str`` metadata map, so loading a bundle
executes nothing from the file. The spec sits in the metadata under ``geoseg.spec``; the
architecture it names is resolved only through geoseg's registry.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg._atomic import atomic_path
from geoseg.errors import BundleError
from geoseg.models.spec import ModelSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["Bundle", "file_sha256", "load_bundle", "read_spec", "rewrite_spec", "save_bundle"]

SPEC_KEY = "geoseg.spec"
FORMAT_KEY = "geoseg.format"


@dataclass(frozen=True)
class Bundle:
    """A loaded model: the network (eval mode, on CPU) and its spec.

    A bundle imported from an ONNX file has no torch network (``model`` is None) and
    carries the ONNX bytes in ``onnx`` instead; it runs with the ONNX engines. A
    *deferred* bundle (``load_bundle(..., network=False)``) holds only the spec and the
    sha256: :meth:`with_network` builds its torch network when something needs it (an ONNX
    engine whose export is cached never does).
    """

    model: nn.Module | None
    spec: ModelSpec
    name: str
    sha256: str
    path: Path | None = None
    onnx: bytes | None = None
    deferred: bool = False

    @property
    def has_network(self) -> bool:
        """Whether a torch network is (or can be built) for this bundle."""
        return self.model is not None or self.deferred

    def with_network(self) -> Bundle:
        """Return this bundle with its torch network built (a deferred one loads it now).

        The spec (possibly rescaled by ``--scale``) and the name are kept.
        """
        if not self.deferred or self.path is None:
            return self
        return replace(load_bundle(self.path, name=self.name), spec=self.spec)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """Read only the spec of a bundle (no tensors are loaded)."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise BundleError(f"model bundle not found: {p}")
    try:
        with safe_open(str(p), framework="numpy") as f:  # numpy: no torch import
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds
        raise BundleError(f"{p} is not a geoseg model bundle (not safetensors: {exc})") from None
    if SPEC_KEY not in meta:
        raise BundleError(f"{p} is a safetensors file without a geoseg spec; it holds bare "
                          "weights, not a model bundle")
    return ModelSpec.from_json(meta[SPEC_KEY])


def save_bundle(path: str | os.PathLike[str], model: nn.Module, spec: ModelSpec, *,
                half: bool = False, overwrite: bool = True) -> Path:
    """Write ``model``'s weights and ``spec`` atomically to one safetensors file.

    Parameters
    ----------
    half : bool
        Store floating-point weights as float16 (half the size; they load back as float32).
    """
    import torch
    from safetensors.torch import save_file

    state: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        t = value.detach().to("cpu")
        if half and t.is_floating_point():
            t = t.to(torch.float16)
        state[key] = t.contiguous().clone()
    meta = {SPEC_KEY: spec.to_json(), FORMAT_KEY: str(spec.format_version)}
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def rewrite_spec(path: str | os.PathLike[str], spec: ModelSpec) -> Path:
    """Replace the spec of the bundle at ``path``, its tensors kept bit for bit (atomic).

    For metadata found after training (a re-measured GSD, the zoom range): the weights,
    their dtypes and names are unchanged, the file's sha256 changes.
    """
    from safetensors.torch import save_file

    p = Path(path)
    old = read_spec(p)
    if (old.architecture, old.bands, old.classes) != (spec.architecture, spec.bands,
                                                      spec.classes):
        raise BundleError(f"{p}: the new spec describes another model (architecture, bands "
                          "or classes differ); only metadata can be rewritten")
    state = _load_state(p)
    meta = {SPEC_KEY: spec.to_json(), FORMAT_KEY: str(spec.format_version)}
    with atomic_path(p, overwrite=True) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return p


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise BundleError(f"{path} is corrupt: cannot read its tensors ({exc})") from None


def load_bundle(path: str | os.PathLike[str], *, name: str | None = None,
                network: bool = True) -> Bundle:
    """Load a bundle: validated spec -> registry build -> ``load_state_dict(strict=True)``.

    With ``network=False`` only the spec and the file's sha256 are read (milliseconds, no
    torch): the returned bundle is *deferred* (see :meth:`Bundle.with_network`).

    Raises
    ------
    BundleError
        Not a bundle, corrupt, unknown format version, or weights that do not fit the spec.
    """
    p = Path(path)
    spec = read_spec(p)
    from geoseg.models.onnx_bundle import ONNX_ARCHITECTURE, load_onnx_bytes

    if spec.architecture == ONNX_ARCHITECTURE:
        return Bundle(model=None, spec=spec, name=name or p.stem, sha256=file_sha256(p),
                      path=p.absolute(), onnx=load_onnx_bytes(p))
    if not network:
        return Bundle(model=None, spec=spec, name=name or p.stem, sha256=file_sha256(p),
                      path=p.absolute(), deferred=True)
    from geoseg.models.architectures import build_model

    model = build_model(spec)
    state = _load_state(p)
    target = model.state_dict()
    for key, value in state.items():
        if key in target and value.dtype != target[key].dtype and value.is_floating_point():
            state[key] = value.to(target[key].dtype)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BundleError(f"{p}: weights do not match its spec ({first})") from None
    model.eval()
    return Bundle(model=model, spec=spec, name=name or p.stem, sha256=file_sha256(p),
                  path=p.absolute())


def spec_summary(spec: ModelSpec) -> str:
    """Human-readable multi-line description of a spec."""
    lines = [
        f"architecture: {spec.architecture}  backbone: {spec.backbone}",
        f"bands ({spec.n_bands}): {', '.join(spec.bands)}",
        f"mean: {list(spec.mean)}",
        f"std: {list(spec.std)}",
        f"tile size: {spec.tile_size}  overlap: {spec.overlap}  gsd: "
        + ("unknown" if math.isnan(spec.gsd_m) else f"{spec.gsd_m} m"),
        *([] if spec.scale_range is None else [
            f"trained zoom: {spec.scale_range[0]:g}-{spec.scale_range[1]:g}"
            + ("" if (seen := spec.seen_gsd()) is None
               else f" (GSDs seen: {seen[0]:.3g}-{seen[1]:.3g} m)")]),
        *([f"input: {spec.input_kind}"] if spec.input_kind else []),
        "classes:",
        *(f"  {c.id:>3}  {c.name:<20} #{c.color[0]:02x}{c.color[1]:02x}{c.color[2]:02x}"
          for c in spec.classes),
    ]
    if spec.provenance:
        lines += ["provenance:", *_indented(spec.provenance, "  ")]
    return "\n".join(lines)


def _indented(value: Any, indent: str) -> list[str]:
    """``key: value`` lines of a JSON-like dict, nested dicts and lists indented below."""
    lines: list[str] = []
    items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    for key, item in items:
        head = f"{indent}{key}:" if key is not None else f"{indent}-"
        nested = bool(item) if isinstance(item, dict) else isinstance(item, list) and any(
            isinstance(v, (dict, list)) for v in item)
        if nested:
            lines += [head, *_indented(item, indent + "  ")]
        elif isinstance(item, list):
            lines.append(f"{head} {', '.join(_scalar(v) for v in item)}")
        else:
            lines.append(f"{head} {_scalar(item)}")
    return lines


def _scalar(value: Any) -> str:
    return json.dumps(value) if value is None or isinstance(value, (bool, dict)) else \
        str(value)
