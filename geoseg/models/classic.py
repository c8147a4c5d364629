"""The classic segmentation architectures this field teaches: FCN and SegNet.

smp has U-Net, DeepLab (v3, v3+ with ASPP) and SegFormer but neither of these two, so they
are built here from plain torch modules:

- ``fcn`` / ``fcn16s`` / ``fcn32s`` (Long, Shelhamer & Darrell, 2015): a fully
  convolutional head on any smp/timm encoder, class scores at stride 32 upsampled by
  learned (bilinear-initialised) transposed convolutions and summed with scores of the
  stride-16 and stride-8 features ("skip fusion"), then upsampled to the input.
- ``segnet`` (Badrinarayanan, Kendall & Cipolla, 2017): a VGG-BN encoder whose max-pool
  *indices* are kept and used by the decoder's ``MaxUnpool2d``, so boundaries come back
  where the encoder saw them. The encoder's layers are laid out like torchvision's
  ``vgg*_bn().features``, so those weights load with ``--weights`` as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geoseg.errors import BundleError

if TYPE_CHECKING:
    from torch import nn

    from geoseg.models.spec import ModelSpec

__all__ = ["VGG_STAGES", "build_fcn", "build_segnet"]

#: Convolutions per stage of the VGG-BN encoders SegNet accepts as backbone.
VGG_STAGES: dict[str, tuple[int, ...]] = {
    "vgg11_bn": (1, 1, 2, 2, 2),
    "vgg13_bn": (2, 2, 2, 2, 2),
    "vgg16_bn": (2, 2, 3, 3, 3),
    "vgg19_bn": (2, 2, 4, 4, 4),
}
_VGG_WIDTHS = (64, 128, 256, 512, 512)


def _bilinear_kernel(channels: int, size: int) -> Any:
    """Weights of a transposed convolution that upsamples each channel bilinearly."""
    import torch

    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    filt = (1 - (og - center).abs() / factor)
    kernel = filt[:, None] * filt[None, :]
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = kernel
    return weight


def build_fcn(skips: int) -> Any:
    """Builder of FCN-``skips``s (8, 16 or 32) on any smp/timm encoder."""

    def build(spec: ModelSpec) -> nn.Module:
        import segmentation_models_pytorch as smp
        import torch
        import torch.nn.functional as F
        from torch import nn

        from geoseg.models.architectures import check_backbone

        check_backbone(spec.backbone)
        params = dict(spec.arch_params)
        head_channels = int(params.pop("head_channels", 512))
        dropout = float(params.pop("dropout", 0.1))
        if params:
            raise BundleError(f"fcn takes head_channels and dropout, not {sorted(params)}")
        encoder = smp.encoders.get_encoder(spec.backbone, in_channels=spec.n_bands, depth=5,
                                           weights=None)
        chans = list(encoder.out_channels)
        n = spec.n_classes

        class FCN(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder
                # fc6/fc7 of the paper as convolutions, narrower than VGG's 4096
                self.head = nn.Sequential(
                    nn.Conv2d(chans[5], head_channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(head_channels), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
                    nn.Conv2d(head_channels, head_channels, 1, bias=False),
                    nn.BatchNorm2d(head_channels), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
                    nn.Conv2d(head_channels, n, 1))
                self.score16 = nn.Conv2d(chans[4], n, 1) if skips <= 16 else None
                self.score8 = nn.Conv2d(chans[3], n, 1) if skips <= 8 else None
                self.up2a = nn.ConvTranspose2d(n, n, 4, stride=2, padding=1, bias=False)
                self.up2b = nn.ConvTranspose2d(n, n, 4, stride=2, padding=1, bias=False)
                for up in (self.up2a, self.up2b):
                    with torch.no_grad():
                        up.weight.copy_(_bilinear_kernel(n, 4))
                for score in (self.score16, self.score8):
                    if score is not None:  # skips start at zero: FCN-32s at step 0
                        nn.init.zeros_(score.weight)
                        if score.bias is not None:
                            nn.init.zeros_(score.bias)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                feats = self.encoder(x)
                out = self.head(feats[5])
                if self.score16 is not None:
                    out = _add(self.up2a(out), self.score16(feats[4]))
                    if self.score8 is not None:
                        out = _add(self.up2b(out), self.score8(feats[3]))
                return F.interpolate(out, size=x.shape[-2:], mode="bilinear",
                                     align_corners=False)

        def _add(up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
            if up.shape[-2:] != skip.shape[-2:]:
                up = F.interpolate(up, size=skip.shape[-2:], mode="bilinear",
                                   align_corners=False)
            return up + skip

        return FCN()

    build.__doc__ = f"FCN-{skips}s: fully convolutional, skip fusion, on any smp/timm encoder."
    return build


def build_segnet(spec: ModelSpec) -> nn.Module:
    """SegNet: VGG-BN encoder, decoder unpooling with the encoder's max-pool indices."""
    import torch
    from torch import nn

    stages = VGG_STAGES.get(spec.backbone)
    if stages is None:
        raise BundleError(f"segnet takes a VGG-BN backbone ({', '.join(VGG_STAGES)}), "
                          f"not {spec.backbone!r}")
    params = dict(spec.arch_params)
    width = float(params.pop("width", 1.0))
    if params:
        raise BundleError(f"segnet takes width, not {sorted(params)}")
    widths = [max(8, round(w * width)) for w in _VGG_WIDTHS]

    def conv(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    # torchvision's vgg*_bn().features layout: conv, bn, relu, ..., maxpool per stage
    layers: list[nn.Module] = []
    cin = spec.n_bands
    for n_conv, cout in zip(stages, widths, strict=True):
        for _ in range(n_conv):
            layers += conv(cin, cout)
            cin = cout
        layers.append(nn.MaxPool2d(2, 2, return_indices=True))
    decoder: list[nn.Sequential] = []
    for i in reversed(range(len(stages))):
        cout = widths[i - 1] if i else widths[0]
        block: list[nn.Module] = []
        for k in range(stages[i]):
            block += conv(widths[i], cout if k == stages[i] - 1 else widths[i])
        decoder.append(nn.Sequential(*block))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*layers)

    class SegNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = Encoder()
            self.unpool = nn.MaxUnpool2d(2, 2)
            self.decoder = nn.ModuleList(decoder)
            self.classifier = nn.Conv2d(widths[0], spec.n_classes, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled: list[tuple[torch.Tensor, torch.Size]] = []
            for layer in self.encoder.features:
                if isinstance(layer, nn.MaxPool2d):
                    size = x.shape
                    x, idx = layer(x)
                    pooled.append((idx, size))
                else:
                    x = layer(x)
            for block, (idx, size) in zip(self.decoder, reversed(pooled), strict=True):
                x = block(self.unpool(x, idx, output_size=size))
            out: torch.Tensor = self.classifier(x)
            return out

    return SegNet()
