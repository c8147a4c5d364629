"""Models: architecture registry, bundle format, pretrained weights and default models.

``resolve_model(name_or_path)`` is how every command finds a model: a path to a bundle
file, or the name of a default model shipped inside geoseg (``geoseg models``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import UnknownNameError, WeightsNotFoundError
from geoseg.models.architectures import ARCHITECTURES
from geoseg.models.registry import Registry, suggest
from geoseg.models.spec import FORMAT_VERSION, ClassInfo, ModelSpec

if TYPE_CHECKING:
    from geoseg.models.bundle import Bundle

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "DEFAULT_MODELS",
    "FORMAT_VERSION",
    "ClassInfo",
    "ModelSpec",
    "Registry",
    "default_model_path",
    "list_models",
    "resolve_model",
    "resolve_model_path",
    "resolve_spec",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: The model ``predict`` uses when none is named (library and CLI).
DEFAULT_MODEL = "deeplab"

#: Default models shipped with geoseg: name -> (bundle file, description).
DEFAULT_MODELS: dict[str, tuple[str, str]] = {
    "deeplab": ("deeplab.safetensors",
                "DeepLabV3+ land cover (6 classes), trained on the Dubai aerial tiles 1-6"),
    "unet": ("unet.safetensors",
             "U-Net land cover (6 classes), trained on the Dubai aerial tiles 1-6"),
    "dynamicworld": ("dynamicworld.safetensors",
                     "Dynamic World global land cover (9 classes), Sentinel-2 L1C at 10 m "
                     "(Google, WRI, National Geographic; Apache-2.0)"),
}


def default_model_path(name: str) -> Path:
    """Where the default model ``name`` lives inside the installed package."""
    return WEIGHTS_DIR / DEFAULT_MODELS[name][0]


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.endswith((".safetensors", ".st")) or Path(text).exists()


def resolve_model_path(model: str | os.PathLike[str]) -> Path:
    """Return the bundle file of a default-model name, or ``model`` itself as a path.

    Raises
    ------
    WeightsNotFoundError
        A default model whose file is missing from this installation.
    """
    text = os.fspath(model)
    key = text.lower()
    if key in DEFAULT_MODELS:
        path = default_model_path(key)
        if not path.is_file():
            raise WeightsNotFoundError(f"default model {key!r} is missing from this install: "
                                       f"expected {path} (reinstall geoseg, or train it with "
                                       "examples/train_dubai.sh)")
        return path
    return Path(text)


def resolve_model(model: str | os.PathLike[str], *, network: bool = True) -> Bundle:
    """Load a model by default-model name or bundle path.

    ``network=False`` reads only the spec and sha256 (a deferred bundle, see
    :func:`geoseg.models.bundle.load_bundle`).

    Raises
    ------
    UnknownNameError
        Neither a bundle file nor a default model name; the message lists the names.
    WeightsNotFoundError
        A default model whose file is missing from this installation.
    BundleError
        The file is not a valid bundle.
    """
    from geoseg.models.bundle import load_bundle

    text = os.fspath(model)
    key = text.lower()
    if key in DEFAULT_MODELS:
        return load_bundle(resolve_model_path(key), name=key, network=network)
    if _looks_like_path(text):
        return load_bundle(text, network=network)
    if key in ARCHITECTURES:
        raise UnknownNameError(
            f"{text!r} is an architecture, not a trained model: train one with `geoseg train "
            f"--model {key}` and pass the bundle file, or use a default model: "
            f"{', '.join(DEFAULT_MODELS)}")
    raise suggest(text, list(DEFAULT_MODELS), "model",
                  listing="pass a bundle file or a default model")


def list_models() -> list[dict[str, Any]]:
    """Default models with their specs (read without loading tensors)."""
    from geoseg.errors import BundleError
    from geoseg.models.bundle import read_spec

    out = []
    for name, (_, description) in DEFAULT_MODELS.items():
        path = default_model_path(name)
        entry: dict[str, Any] = {"name": name, "description": description, "path": str(path),
                                 "available": path.is_file()}
        if path.is_file():
            try:
                spec = read_spec(path)
            except BundleError as exc:
                entry["available"], entry["error"] = False, str(exc)
            else:
                entry.update(architecture=spec.architecture, backbone=spec.backbone,
                             bands=list(spec.bands), tile_size=spec.tile_size,
                             gsd_m=None if math.isnan(spec.gsd_m) else spec.gsd_m,
                             input_kind=spec.input_kind,
                             license=spec.provenance.get("license"),
                             attribution=spec.provenance.get("attribution"),
                             classes=[{"id": c.id, "name": c.name, "color": list(c.color)}
                                      for c in spec.classes])
        out.append(entry)
    return out


def resolve_spec(model: str | os.PathLike[str]) -> ModelSpec:
    """Read the spec of the model :func:`resolve_model` would load, without torch.

    Reading a bundle's spec takes milliseconds, so commands check bands, tile size and
    memory against it before loading the model (seconds, and torch).
    """
    from geoseg.models.bundle import read_spec

    text = os.fspath(model)
    key = text.lower()
    if key in DEFAULT_MODELS and default_model_path(key).is_file():
        return read_spec(default_model_path(key))
    if key not in DEFAULT_MODELS and _looks_like_path(text):
        return read_spec(text)
    return resolve_model(model).spec  # raises the error that explains the name
