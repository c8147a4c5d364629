"""Architectures and backbones by name.

Architectures are segmentation_models_pytorch models (all of them), registered under
lower-case names with friendly aliases (``deeplab`` -> ``deeplabv3plus``), plus the classic
FCN-8s/16s/32s and SegNet (:mod:`geoseg.models.classic`) and the per-pixel network for
multispectral data (:mod:`geoseg.models.pixel`). Third parties
add their own through the ``geoseg.architectures`` entry-point group: the entry point is a
callable ``build(spec: ModelSpec) -> torch.nn.Module``.

Backbones are smp encoder names (``resnet18``, ``mobilenet_v2``, ``efficientnet-b0``) or
timm encoders with smp's ``tu-`` prefix (``tu-convnext_tiny``). Pretrained weights are
never downloaded: see :func:`geoseg.models.weights.load_backbone_weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geoseg.errors import BundleError
from geoseg.models.classic import build_fcn, build_segnet
from geoseg.models.pixel import NO_BACKBONE, build_pixel
from geoseg.models.registry import Registry, suggest

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.spec import ModelSpec

__all__ = ["ARCHITECTURES", "ENCODER_FREE", "NO_BACKBONE", "ArchBuilder", "backbone_names",
           "build_model", "check_backbone"]

ArchBuilder = Callable[["ModelSpec"], "nn.Module"]

ARCHITECTURES: Registry[ArchBuilder] = Registry("architecture", "geoseg.architectures")

# smp's architecture keys (segmentation_models_pytorch 0.4-0.6) and the aliases users type.
_SMP_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "unet": (),
    "unetplusplus": ("unet++",),
    "manet": (),
    "linknet": (),
    "fpn": (),
    "pspnet": (),
    "deeplabv3": (),
    "deeplabv3plus": ("deeplab", "deeplabv3+"),
    "pan": (),
    "upernet": (),
    "segformer": (),
    "dpt": (),
}


def _smp_builder(arch: str) -> ArchBuilder:
    def build(spec: ModelSpec) -> nn.Module:
        import segmentation_models_pytorch as smp

        check_backbone(spec.backbone)
        if arch not in smp.MODEL_ARCHITECTURES_MAPPING:
            raise BundleError(f"architecture {arch!r} needs a newer segmentation_models_pytorch "
                              f"than {smp.__version__}")
        model: nn.Module = smp.create_model(
            arch, encoder_name=spec.backbone, encoder_weights=None,
            in_channels=spec.n_bands, classes=spec.n_classes, **spec.arch_params)
        return model

    build.__doc__ = f"segmentation_models_pytorch {arch!r} with any smp/timm encoder."
    return build


for _name, _aliases in _SMP_ARCHITECTURES.items():
    ARCHITECTURES.register(_name, aliases=_aliases)(_smp_builder(_name))

# the classic architectures smp does not have (geoseg.models.classic)
ARCHITECTURES.register("fcn", aliases=("fcn8s",))(build_fcn(8))
ARCHITECTURES.register("fcn16s")(build_fcn(16))
ARCHITECTURES.register("fcn32s")(build_fcn(32))
ARCHITECTURES.register("segnet")(build_segnet)
# per-pixel networks for multispectral data (geoseg.models.pixel): no encoder, no backbone
ARCHITECTURES.register("pixel")(build_pixel)


@ARCHITECTURES.register("dynamicworld")
def _build_dynamicworld(spec: ModelSpec) -> nn.Module:
    """Google's Dynamic World Sentinel-2 land-cover network (geoseg.models.dynamicworld)."""
    from geoseg.models.dynamicworld import build_dynamicworld  # imports torch: lazily

    return build_dynamicworld(spec)


#: Architectures without an encoder: their backbone is recorded as ``NO_BACKBONE``.
ENCODER_FREE = frozenset({"pixel", "dynamicworld"})


def backbone_names() -> list[str]:
    """Smp encoder names; any timm model is also accepted with the ``tu-`` prefix."""
    import segmentation_models_pytorch as smp

    return sorted(smp.encoders.get_encoder_names())


def check_backbone(name: str) -> str:
    """Return ``name`` if it is a known backbone, else raise ``UnknownNameError``."""
    if name.startswith("tu-"):
        import timm

        if not timm.is_model(name[3:]):
            raise suggest(name[3:], timm.list_models(), "timm backbone (after 'tu-')")
        return name
    known = backbone_names()
    if name not in known:
        raise suggest(name, known, "backbone")
    return name


def build_model(spec: ModelSpec, **overrides: Any) -> nn.Module:
    """Build the (randomly initialised) network described by ``spec``."""
    builder = ARCHITECTURES.get(spec.architecture)
    return builder(spec.with_(**overrides) if overrides else spec)
