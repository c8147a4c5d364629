"""Convert Google's Dynamic World SavedModel into geoseg's ``dynamicworld`` bundle.

Dynamic World's repository (github.com/google/dynamicworld, Apache-2.0) publishes two
SavedModels: ``model/forward`` maps normalised Sentinel-2 L1C reflectance to nine land-cover
logits, ``model/backward`` maps class probabilities back to synthetic reflectance (the
notebook uses it to "reverse the probabilities back to reflectance"). Predictions come from
the forward model, so that is the one converted here.

TensorFlow is needed only by this script, and only in its own environment: the script runs
itself under ``--tf-python`` to read the SavedModel's variables and to compute the
SavedModel's logits on the check inputs, then builds geoseg's torch port
(:mod:`geoseg.models.dynamicworld`), loads the weights (every TensorFlow variable used once,
every shape checked), refuses to write unless the torch logits match TensorFlow's within
1e-4, and writes the bundle with geoseg's own writer. With ``--fixture`` it also writes the
parity fixture the tests use (raw inputs and the SavedModel's logits; no TensorFlow needed
to test).

usage:
  git clone https://github.com/google/dynamicworld
  python3 -m venv tfvenv && tfvenv/bin/pip install tensorflow-cpu numpy
  python examples/dynamicworld_convert.py dynamicworld/model/forward \\
      --tf-python tfvenv/bin/python -o dynamicworld.safetensors \\
      [--fixture tests/data/dynamicworld_parity.npz --scenes S2_L1C_*.tif]

``--scenes`` are 13-band Sentinel-2 L1C GeoTIFFs (uint16, band descriptions B01..B12): one
64 x 64 crop of each is the check input. Without them a generated input is used.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SOURCE_REPO = "https://github.com/google/dynamicworld"
PAPER = "https://doi.org/10.1038/s41597-022-01307-4"
LICENSE = "Apache-2.0"
PARITY_TOLERANCE = 1e-4
CROP = 64

# TensorFlow layer -> geoseg module, in the order of the Keras graph (forward model config).
_BLOCKS = {
    "block1": (["conv2d_2", "depthwise_conv2d_1", "conv2d_3", "depthwise_conv2d_2", "conv2d_4",
                "depthwise_conv2d_3"], [3, 4, 5, 6, 7, 8], "conv2d_5", 9),
    "block2": (["conv2d_6", "depthwise_conv2d_4", "conv2d_7", "depthwise_conv2d_5", "conv2d_8",
                "depthwise_conv2d_6"], [10, 11, 12, 13, 14, 15], "conv2d_9", 16),
    "block3": (["conv2d_10", "depthwise_conv2d_7", "conv2d_11", "depthwise_conv2d_8",
                "conv2d_12", "depthwise_conv2d_9"], [17, 18, 19, 20, 21, 22], "conv2d_13", 23),
}


def layer_map() -> list[tuple[str, str, str]]:
    """(torch prefix, TensorFlow conv layer, TensorFlow BatchNorm layer or '') triples."""
    out = [("stem.0", "conv2d", ""), ("stem.1", "", "batch_normalization"),
           ("side.0.0", "conv2d_1", ""), ("side.0.1", "", "batch_normalization_1"),
           ("side.1.0", "depthwise_conv2d", ""), ("side.1.1", "", "batch_normalization_2"),
           ("head", "conv2d_14", "")]
    for block, (convs, bns, short, short_bn) in _BLOCKS.items():
        for i, (conv, bn) in enumerate(zip(convs, bns, strict=True)):
            out += [(f"{block}.main.{i}.0", conv, ""),
                    (f"{block}.main.{i}.1", "", f"batch_normalization_{bn}")]
        out += [(f"{block}.shortcut.0", short, ""),
                (f"{block}.shortcut.1", "", f"batch_normalization_{short_bn}")]
    return out


def notebook_normalise(raw: np.ndarray) -> np.ndarray:
    """single_image_runner.ipynb's normalisation, verbatim, of (N, 9, H, W) raw values."""
    from geoseg.models.dynamicworld import NORM_PERCENTILES

    pct = np.array(NORM_PERCENTILES)
    image = np.moveaxis(raw.astype(np.float64), 1, -1)  # NHWC, as the notebook's arrays
    image = np.log(image * 0.005 + 1)
    image = (image - pct[:, 0]) / pct[:, 1]
    image = np.exp(image * 5 - 1)
    image = image / (image + 1)
    return image.astype(np.float32)


# ---------------------------------------------------------------- TensorFlow side ---------
def tf_dump(saved_model: str, inputs: str, output: str) -> None:
    """Run under TensorFlow: the forward model's variables and logits on ``inputs``."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    model = tf.saved_model.load(saved_model)
    weights = {v.name.removesuffix(":0"): v.numpy() for v in model.variables}
    normalised = np.load(inputs)["normalised"]  # NHWC float32
    logits = model(tf.constant(normalised)).numpy()
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(saved_model) / "saved_model.pb").read_bytes())
    config = proto.meta_graphs[0].object_graph_def.nodes[0].user_object.metadata
    np.savez(output, logits=np.moveaxis(logits, -1, 1), keras_config=np.array(config),
             tf_version=np.array(tf.__version__), **{"w/" + k: v for k, v in weights.items()})


# ---------------------------------------------------------------- geoseg side -------------
def crops(scenes: list[Path]) -> np.ndarray:
    """One 64 x 64 crop of the nine Dynamic World bands of each 13-band L1C scene."""
    import rasterio

    from geoseg.models.dynamicworld import BANDS

    out = []
    for i, path in enumerate(scenes):
        with rasterio.open(path) as src:
            names = [(d or "").upper().replace("B0", "B") for d in src.descriptions]
            missing = [b for b in BANDS if b not in names]
            if missing:
                raise SystemExit(f"{path}: no band described as {', '.join(missing)} "
                                 f"(descriptions: {src.descriptions})")
            if src.height < CROP or src.width < CROP:
                raise SystemExit(f"{path}: smaller than {CROP} x {CROP}")
            # a different corner of the scene for each date
            r = (src.height - CROP) * (i % 3) // 2
            c = (src.width - CROP) * ((i + 1) % 3) // 2
            window = ((r, r + CROP), (c, c + CROP))
            out.append(np.stack([src.read(names.index(b) + 1, window=window)
                                 for b in BANDS]).astype(np.uint16))
    return np.stack(out)


def generated_input() -> np.ndarray:
    """Smooth, plausible L1C values when no scene is given (the conversion check only)."""
    rng = np.random.default_rng(0)
    base = np.array([900, 800, 700, 1100, 1800, 2100, 2300, 1800, 1100], np.float64)
    field = rng.normal(size=(2, 9, CROP // 8, CROP // 8)).repeat(8, -2).repeat(8, -1)
    return np.clip(base[None, :, None, None] * (1 + 0.4 * field), 0, 10000).astype(np.uint16)


def state_from_tf(weights: dict[str, np.ndarray], target: dict[str, Any]) -> dict[str, Any]:
    """The torch state dict of :class:`DynamicWorld` from TensorFlow variables by name."""
    import torch

    state: dict[str, Any] = {}
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in weights:
            raise SystemExit(f"the SavedModel has no variable {name!r}: not Dynamic World's "
                             "forward model?")
        used.add(name)
        return weights[name]

    for prefix, conv, bn in layer_map():
        if conv:
            if conv.startswith("depthwise"):  # (kh, kw, C, 1) -> (C, 1, kh, kw)
                kernel = take(f"{conv}/depthwise_kernel").transpose(2, 3, 0, 1)
            else:  # (kh, kw, Cin, Cout) -> (Cout, Cin, kh, kw)
                kernel = take(f"{conv}/kernel").transpose(3, 2, 0, 1)
            state[f"{prefix}.weight"] = kernel
            state[f"{prefix}.bias"] = take(f"{conv}/bias")
        else:
            for tf_key, key in (("gamma", "weight"), ("beta", "bias"),
                                ("moving_mean", "running_mean"),
                                ("moving_variance", "running_var")):
                state[f"{prefix}.{key}"] = take(f"{bn}/{tf_key}")
            state[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)
    unused = sorted(set(weights) - used)
    if unused:
        raise SystemExit(f"TensorFlow variables not mapped to the torch port: {unused}")
    out = {}
    for key, ref in target.items():
        value = torch.from_numpy(np.array(state.pop(key), order="C"))
        if tuple(value.shape) != tuple(ref.shape):
            raise SystemExit(f"{key}: TensorFlow shape {tuple(value.shape)}, torch port "
                             f"{tuple(ref.shape)}")
        out[key] = value.to(ref.dtype)
    if state:
        raise SystemExit(f"torch port has no parameter for {sorted(state)}")
    return out


def extrapolated_range() -> tuple[tuple[float, float], ...]:
    """Per band 1st/99th percentiles from the published 30th/70th (normal in log space)."""
    from geoseg.models.dynamicworld import NORM_PERCENTILES

    z30, z99 = 0.5244005127080407, 2.3263478740408408
    out = []
    for p30, p70 in NORM_PERCENTILES:
        mu, sigma = (p30 + p70) / 2, (p70 - p30) / (2 * z30)
        lo, hi = (max(0.0, (math.exp(mu + s * z99 * sigma) - 1) / 0.005) for s in (-1, 1))
        out.append((round(lo, 1), round(hi, 1)))
    return tuple(out)


def make_spec(commit: str, notice: str, tf_version: str) -> Any:
    from geoseg.models.dynamicworld import BANDS, CLASSES
    from geoseg.models.pixel import NO_BACKBONE
    from geoseg.models.spec import ClassInfo, ModelSpec

    classes = tuple(ClassInfo(i, name, (int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)))
                    for i, (name, h) in enumerate(CLASSES))
    return ModelSpec(
        architecture="dynamicworld", backbone=NO_BACKBONE, bands=BANDS,
        mean=(0.0,) * len(BANDS), std=(1.0,) * len(BANDS), classes=classes,
        tile_size=512, overlap=64, gsd_m=10.0, input_dtype="uint16",
        input_range=extrapolated_range(),
        input_kind="Sentinel-2 L1C top-of-atmosphere reflectance x 10000 (0-10000)",
        provenance={
            "model": "Dynamic World forward model (land use / land cover, 9 classes)",
            "source": SOURCE_REPO, "source_commit": commit, "source_path": "model/forward",
            "paper": PAPER, "license": LICENSE,
            "attribution": "Dynamic World: produced by Google in partnership with National "
                           "Geographic and the World Resources Institute",
            "notice": notice,
            "normalisation": "inside the network, as single_image_runner.ipynb: "
                             "sigmoid(5 (log(1 + 0.005 x) - p30) / p70 - 1) per band; spec "
                             "mean/std are the identity",
            "palette": "Earth Engine catalogue GOOGLE/DYNAMICWORLD/V1 label palette",
            "input_range": "1st/99th percentiles extrapolated from the published 30th/70th "
                           "percentiles of log(1 + 0.005 x), normal in log space",
            "converted_with": f"examples/dynamicworld_convert.py (TensorFlow {tf_version})",
        })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("saved_model", type=Path, help="the model/forward SavedModel folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="bundle to write")
    parser.add_argument("--tf-python", required=True,
                        help="a Python interpreter with TensorFlow installed")
    parser.add_argument("--commit", help="the dynamicworld commit the SavedModel is from "
                        "(default: git rev-parse HEAD in its checkout)")
    parser.add_argument("--notice", type=Path,
                        help="the repository's NOTICE file (default: beside model/)")
    parser.add_argument("--scenes", type=Path, nargs="*", default=[],
                        help="13-band Sentinel-2 L1C GeoTIFFs for the check inputs")
    parser.add_argument("--fixture", type=Path, help="also write the parity fixture (.npz)")
    args = parser.parse_args()
    if not (args.saved_model / "saved_model.pb").is_file():
        print(f"{args.saved_model}: not a SavedModel folder (no saved_model.pb)",
              file=sys.stderr)
        return 1
    root = args.saved_model.resolve().parents[1]
    notice_path = args.notice or root / "NOTICE"
    if not notice_path.is_file():
        print(f"NOTICE not found at {notice_path}: pass --notice", file=sys.stderr)
        return 1
    notice = notice_path.read_text(encoding="utf-8").strip()
    commit = args.commit or subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
        check=False).stdout.strip()
    if not commit:
        print("cannot tell the dynamicworld commit: pass --commit", file=sys.stderr)
        return 1

    raw = crops(args.scenes) if args.scenes else generated_input()
    tf_logits, tf_version, weights = run_savedmodel(args.saved_model, args.tf_python, raw)
    return convert(args, raw, tf_logits, tf_version, weights, commit, notice)


def run_savedmodel(saved_model: Path, tf_python: str, raw: np.ndarray
                   ) -> tuple[np.ndarray, str, dict[str, np.ndarray]]:
    """The SavedModel's logits on ``raw``, TensorFlow's version and the variables."""
    with tempfile.TemporaryDirectory(prefix="dynamicworld-") as tmp:
        np.savez(Path(tmp) / "in.npz", normalised=notebook_normalise(raw))
        try:
            run = subprocess.run([tf_python, __file__, "--tf-dump", str(saved_model),
                                  str(Path(tmp) / "in.npz"), str(Path(tmp) / "out.npz")],
                                 capture_output=True, text=True, check=False)
        except OSError as exc:
            raise SystemExit(f"--tf-python {tf_python}: {exc.strerror}") from None
        if run.returncode:
            last = (run.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"TensorFlow could not run {saved_model}: {last}")
        with np.load(Path(tmp) / "out.npz") as dump:
            tf_logits = dump["logits"]
            tf_version = str(dump["tf_version"])
            config = json.loads(str(dump["keras_config"]))
            weights = {k[2:]: dump[k] for k in dump.files if k.startswith("w/")}
    inner = [layer for layer in config["config"]["layers"] if layer["class_name"] == "Functional"]
    print(f"SavedModel: TensorFlow {tf_version}, {len(weights)} variables, "
          f"{len(inner[0]['config']['layers']) if inner else '?'} Keras layers", file=sys.stderr)
    return tf_logits, tf_version, weights


def convert(args: argparse.Namespace, raw: np.ndarray, tf_logits: np.ndarray, tf_version: str,
            weights: dict[str, np.ndarray], commit: str, notice: str) -> int:
    """Load the weights into the torch port, check parity, write the bundle and fixture."""
    import torch

    from geoseg.models.bundle import load_bundle, save_bundle
    from geoseg.models.dynamicworld import DynamicWorld

    model = DynamicWorld()
    model.load_state_dict(state_from_tf(weights, model.state_dict()), strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(raw.astype(np.float32))).numpy()
    diff = float(np.abs(logits - tf_logits).max())
    agree = float((logits.argmax(1) == tf_logits.argmax(1)).mean())
    print(f"parity on {raw.shape[0]} x {raw.shape[2]}x{raw.shape[3]} px: max |logit diff| "
          f"{diff:.3g}, class agreement {agree:.2%}", file=sys.stderr)
    if not diff <= PARITY_TOLERANCE:
        print(f"torch port differs from the SavedModel by {diff:.3g} > {PARITY_TOLERANCE}: "
              "not written", file=sys.stderr)
        return 1

    spec = make_spec(commit, notice, tf_version)
    save_bundle(args.output, model, spec)
    check = load_bundle(args.output)
    assert check.model is not None
    with torch.no_grad():
        again = check.model(torch.from_numpy(raw.astype(np.float32))).numpy()
    if not np.array_equal(again, logits):
        print(f"{args.output}: the written bundle does not reproduce the logits", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    if args.fixture:
        args.fixture.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            args.fixture, inputs=raw, logits=tf_logits.astype(np.float32),
            sources=np.array([p.name for p in args.scenes] or ["generated"]),
            note=np.array(f"Dynamic World forward SavedModel ({SOURCE_REPO} @ {commit}, "
                          f"TensorFlow {tf_version}) logits on raw L1C inputs (N, 9, H, W), "
                          "normalised as single_image_runner.ipynb; written by "
                          "examples/dynamicworld_convert.py"))
        print(f"wrote {args.fixture} ({args.fixture.stat().st_size / 1e3:.0f} kB)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--tf-dump":
        tf_dump(*sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
