"""``pixel``: a per-pixel network for multispectral and hyperspectral imagery.

At 10-30 m (Landsat, Sentinel-2, AVIRIS) with field-scale classes the spectrum carries most
of the signal, and an encoder's large receptive field mostly memorises the few training
fields it saw. ``pixel`` is the neural counterpart of the per-pixel random forest such data
is usually classified with: a small MLP applied at every pixel (1x1 convolutions with
BatchNorm), whose first layer may see a ``context`` x ``context`` neighbourhood. It has no
encoder, so it takes no backbone (recorded as ``none``) and no pretrained weights; it trains
in minutes on a CPU and predicts any tile size.

Architecture parameters (``--arch-param``): ``hidden`` (width, 64), ``layers`` (hidden
layers, 2), ``context`` (odd kernel size of the first layer, 1 = per pixel), ``dropout``
(channel dropout before the classifier, 0.0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.errors import BundleError

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.spec import ModelSpec

__all__ = ["NO_BACKBONE", "build_pixel"]

#: The backbone name recorded for architectures without an encoder.
NO_BACKBONE = "none"
_DEFAULTS = {"hidden": 64, "layers": 2, "context": 1, "dropout": 0.0}


def build_pixel(spec: ModelSpec) -> nn.Module:
    """Per-pixel MLP (1x1 convolutions), optionally with a small first-layer context."""
    from torch import nn

    if spec.backbone != NO_BACKBONE:
        raise BundleError(f"pixel has no encoder: its backbone is {NO_BACKBONE!r}, "
                          f"not {spec.backbone!r}")
    unknown = sorted(set(spec.arch_params) - set(_DEFAULTS))
    if unknown:
        raise BundleError(f"pixel takes {', '.join(_DEFAULTS)}, not {unknown}")
    p = {**_DEFAULTS, **spec.arch_params}
    hidden, layers, context = int(p["hidden"]), int(p["layers"]), int(p["context"])
    if hidden < 1 or layers < 1 or context < 1 or context % 2 == 0:
        raise BundleError(f"pixel needs hidden >= 1, layers >= 1 and an odd context >= 1, "
                          f"not hidden={hidden}, layers={layers}, context={context}")
    blocks: list[nn.Module] = []
    cin = spec.n_bands
    for i in range(layers):
        k = context if i == 0 else 1
        # reflect padding: a border pixel sees mirrored neighbours, not a made-up spectrum
        blocks += [nn.Conv2d(cin, hidden, k, padding=k // 2, padding_mode="reflect",
                             bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        cin = hidden
    if float(p["dropout"]) > 0:
        blocks.append(nn.Dropout2d(float(p["dropout"])))
    blocks.append(nn.Conv2d(cin, spec.n_classes, 1))
    return nn.Sequential(*blocks)
