"""Slim a trained smp U-Net bundle's widest decoder block, for a fine-tune stage after it.

The shipped ``unet`` (EfficientNet-Lite0 encoder, decoder channels 256-128-64-32-16) is
10.5 MB in fp16; most of its decoder's weights sit in the first block (432 -> 256 -> 256
channels, 3x3). This keeps the ``--keep`` channels of that block whose BatchNorm scale
|gamma| is largest ("network slimming", Liu et al. 2017), for both of its convolutions,
cuts the matching input channels of the next block, and writes a bundle whose spec says
``decoder_channels=[keep, ...]`` so it loads like any other. Accuracy drops a little;
a short fine-tune stage (``train_dubai.sh`` with ``INIT=``) recovers it.

usage: python examples/prune_unet.py IN.safetensors OUT.safetensors [--keep 192]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("output")
    parser.add_argument("--keep", type=int, default=192)
    args = parser.parse_args()

    import torch

    from geoseg.models.architectures import build_model
    from geoseg.models.bundle import load_bundle, save_bundle

    bundle = load_bundle(args.bundle)
    spec, model = bundle.spec, bundle.model
    if model is None or spec.architecture != "unet":
        print(f"{args.bundle}: not a torch U-Net bundle", file=sys.stderr)
        return 1
    state = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    channels = list(spec.arch_params.get("decoder_channels", (256, 128, 64, 32, 16)))
    if not 0 < args.keep < channels[0]:
        print(f"--keep must be below the first block's {channels[0]} channels", file=sys.stderr)
        return 1

    def keep_idx(bn: str) -> torch.Tensor:
        return state[f"{bn}.weight"].abs().topk(args.keep).indices.sort().values

    b0 = "decoder.blocks.0"
    k1, k2 = keep_idx(f"{b0}.conv1.1"), keep_idx(f"{b0}.conv2.1")
    state[f"{b0}.conv1.0.weight"] = state[f"{b0}.conv1.0.weight"][k1]
    state[f"{b0}.conv2.0.weight"] = state[f"{b0}.conv2.0.weight"][k2][:, k1]
    for bn, idx in ((f"{b0}.conv1.1", k1), (f"{b0}.conv2.1", k2)):
        for name in ("weight", "bias", "running_mean", "running_var"):
            state[f"{bn}.{name}"] = state[f"{bn}.{name}"][idx]
    # block 1 sees cat([upsampled block-0 output, skip]): keep k2, then every skip channel
    w = state["decoder.blocks.1.conv1.0.weight"]
    skip = torch.arange(channels[0], w.shape[1])
    state["decoder.blocks.1.conv1.0.weight"] = w[:, torch.cat([k2, skip])]

    channels[0] = args.keep
    provenance = dict(spec.provenance)
    provenance.pop("heldout", None)  # the slimmed model has not been scored
    provenance["pruned"] = {"from_sha256": bundle.sha256, "block": b0,
                            "kept_channels": args.keep, "rule": "largest |BatchNorm gamma|"}
    new_spec = dataclasses.replace(
        spec, arch_params={**spec.arch_params, "decoder_channels": channels},
        provenance=provenance)
    slim = build_model(new_spec)
    slim.load_state_dict(state, strict=True)
    save_bundle(args.output, slim.eval(), new_spec, half=True)
    print(f"wrote {args.output}: decoder_channels={channels}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
