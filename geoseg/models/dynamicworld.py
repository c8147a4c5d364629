"""``dynamicworld``: Google's Dynamic World land-cover network, ported to torch.

Dynamic World (Brown et al., 2022, https://doi.org/10.1038/s41597-022-01307-4; Google with
the World Resources Institute and National Geographic; Apache-2.0) classifies Sentinel-2 L1C
top-of-atmosphere reflectance into nine land-cover classes. Its published model is a
TensorFlow SavedModel (``model/forward`` in github.com/google/dynamicworld); this module is
the same network, layer for layer, read from that SavedModel's Keras config:

- the published input normalisation of ``single_image_runner.ipynb``, inside ``forward``:
  ``v = log(1 + 0.005 x)``, ``v = (v - p[:, 0]) / p[:, 1]``, ``sigmoid(5 v - 1)`` (the
  notebook writes the sigmoid as ``e / (e + 1)`` with ``e = exp(5 v - 1)``), so the model
  takes raw L1C values 0-10000 in the band order B2, B3, B4, B5, B6, B7, B8, B11, B12 and
  its bundle's ``mean``/``std`` are the identity. Negative inputs, impossible in L1C, are
  clamped to 0 so they cannot make a NaN;
- a 3x3 convolution at full resolution, then a 2x downsampling by TensorFlow's
  antialiased bilinear resize (``tf.image.resize(..., antialias=True)``: the separable
  kernel ``[1, 3, 3, 1] / 8`` with weights renormalised at the borders), written here as a
  fixed stride-2 convolution so it exports to ONNX;
- three residual blocks of pointwise/depthwise convolutions (64 -> 96 -> 144 channels, a
  48-channel side branch concatenated before the third), BatchNorm (epsilon 1e-3, Keras'
  momentum 0.99) and Mish activations;
- bilinear upsampling back to the input size (half-pixel centres), L2 normalisation over
  the channels, and a 1x1 convolution to the nine class logits.

It is fully convolutional; any even tile side works (geoseg's tiles are multiples of 32).
It has no encoder: its backbone is ``none``. ``examples/dynamicworld_convert.py`` converts
the published weights into the bundle geoseg ships.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.errors import BundleError
from geoseg.models.pixel import NO_BACKBONE
from geoseg.models.spec import ModelSpec

__all__ = ["BANDS", "CLASSES", "NORM_PERCENTILES", "DynamicWorld", "build_dynamicworld"]

#: Input bands, in the model's channel order (Sentinel-2 band names).
BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12")
#: Classes in output-channel order with the published palette (Earth Engine catalogue).
CLASSES = (
    ("water", "#419bdf"),
    ("trees", "#397d49"),
    ("grass", "#88b053"),
    ("flooded_vegetation", "#7a87c6"),
    ("crops", "#e49635"),
    ("shrub_and_scrub", "#dfc35a"),
    ("built", "#c4281b"),
    ("bare", "#a59b8f"),
    ("snow_and_ice", "#b39fe1"),
)
#: ``NORM_PERCENTILES`` of single_image_runner.ipynb, per band: the 30th and 70th
#: percentiles of ``log(1 + 0.005 x)`` "measured across a diverse set of surface conditions".
NORM_PERCENTILES = (
    (1.7417268007636313, 2.023298706048351),
    (1.7261204997060209, 2.038905204308012),
    (1.6798346251414997, 2.179592821212937),
    (1.7734969472909623, 2.2890068333026603),
    (2.289154079164943, 2.6171674549378166),
    (2.382939712192371, 2.773418590375327),
    (2.3828939530384052, 2.7578332604178284),
    (2.1952484264967844, 2.789092484314204),
    (1.554812948247501, 2.4140534947492487),
)
_BN_EPS = 1e-3  # Keras' BatchNormalization epsilon
_BN_MOMENTUM = 0.01  # Keras' momentum 0.99 in torch's convention


def _pw(cin: int, cout: int) -> nn.Sequential:
    """1x1 convolution (with bias, as in Keras), BatchNorm, Mish."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1),
                         nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM), nn.Mish())


def _dw(channels: int) -> nn.Sequential:
    """3x3 depthwise convolution ('same' zero padding), BatchNorm, Mish."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
                         nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM),
                         nn.Mish())


class _Block(nn.Module):
    """Three (pointwise, depthwise) pairs plus a pointwise shortcut, summed."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.main = nn.Sequential(_pw(cin, cout), _dw(cout), _pw(cout, cout), _dw(cout),
                                  _pw(cout, cout), _dw(cout))
        self.shortcut = _pw(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.main(x) + self.shortcut(x)
        return out


class _AntialiasHalf(nn.Module):
    """``tf.image.resize(x, (H // 2, W // 2), antialias=True)`` (bilinear) for even H, W.

    The triangle filter stretched to the output spacing samples the four inputs around each
    output centre with weights ``[1, 3, 3, 1] / 8`` per axis; TensorFlow renormalises the
    weights that fall inside the image, which dividing by the same filter applied to ones
    reproduces.
    """

    def __init__(self) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8.0
        self.register_buffer("kernel", (taps[:, None] * taps[None, :])[None, None],
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        kernel: torch.Tensor = self.kernel  # type: ignore[assignment]
        summed = F.conv2d(x, kernel.expand(c, 1, 4, 4), stride=2, padding=1, groups=c)
        weight = F.conv2d(torch.ones_like(x[:1, :1]), kernel, stride=2, padding=1)
        return summed / weight


class DynamicWorld(nn.Module):
    """The Dynamic World forward network: raw L1C reflectance (0-10000) in, logits out."""

    def __init__(self, n_classes: int = len(CLASSES)) -> None:
        super().__init__()
        p = torch.tensor(NORM_PERCENTILES, dtype=torch.float32)
        self.register_buffer("norm_offset", p[:, 0].reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("norm_scale", p[:, 1].reshape(1, -1, 1, 1), persistent=False)
        self.stem = nn.Sequential(nn.Conv2d(len(BANDS), 64, 3, padding=1),
                                  nn.BatchNorm2d(64, eps=_BN_EPS, momentum=_BN_MOMENTUM),
                                  nn.Mish())
        self.down = _AntialiasHalf()
        self.block1 = _Block(64, 96)
        self.block2 = _Block(96, 144)
        self.side = nn.Sequential(_pw(64, 48), _dw(48))
        self.block3 = _Block(144 + 48, 144)
        self.head = nn.Conv2d(144, n_classes, 1)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the published normalisation: raw L1C reflectance x 10000 -> (0, 1)."""
        v = torch.log1p(x.clamp(min=0.0) * 0.005)
        offset: torch.Tensor = self.norm_offset  # type: ignore[assignment]
        scale: torch.Tensor = self.norm_scale  # type: ignore[assignment]
        return torch.sigmoid((v - offset) / scale * 5.0 - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(self.normalise(x))
        half = self.down(stem)
        deep = self.block2(self.block1(half))
        features = self.block3(torch.cat([deep, self.side(half)], dim=1))
        up = F.interpolate(features, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out: torch.Tensor = self.head(F.normalize(up, dim=1, eps=1e-6))
        return out


def build_dynamicworld(spec: ModelSpec) -> nn.Module:
    """Dynamic World for a spec with its nine bands (any class count, for fine-tuning)."""
    if spec.backbone != NO_BACKBONE:
        raise BundleError(f"dynamicworld has no encoder: its backbone is {NO_BACKBONE!r}, "
                          f"not {spec.backbone!r}")
    if spec.arch_params:
        raise BundleError(f"dynamicworld takes no architecture parameters, not "
                          f"{sorted(spec.arch_params)}")
    if spec.n_bands != len(BANDS):
        raise BundleError(f"dynamicworld reads {len(BANDS)} bands ({', '.join(BANDS)}), "
                          f"not {spec.n_bands}")
    return DynamicWorld(spec.n_classes)
