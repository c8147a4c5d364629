"""Model-only throughput of every engine/precision on a shipped model, interleaved rounds.

The machine may be busy, so the paths are run in turns (round-robin) and the median of each
is reported together with its ratio to torch eager fp32 and the share of argmax decisions
that agree with eager fp32 on the same tiles (real imagery when ``--tiles-from`` is given).

    python benchmarks/engines.py --model deeplab --rounds 3 --tiles 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

PATHS = [("eager", "fp32"), ("eager", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
         ("openvino", "bf16"), ("onnxruntime", "int8"), ("openvino", "int8")]


def _tiles(args: argparse.Namespace, spec: object) -> np.ndarray:
    if args.tiles_from:
        from geoseg.prediction.engines import calibration_tiles

        return calibration_tiles(args.tiles_from, (), spec, 512, n=args.tiles)
    rng = np.random.default_rng(0)
    coarse = rng.integers(20, 235, (args.tiles, 3, 8, 8)).astype(np.float32)
    return np.kron(coarse, np.ones((1, 1, 64, 64), np.float32))  # blocky, not noise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="deeplab")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tiles", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--tiles-from", help="raster to draw the tiles (and int8 calibration) from")
    args = ap.parse_args()
    from geoseg.models import resolve_model
    from geoseg.prediction.config import InferenceConfig
    from geoseg.prediction.inference import Predictor, cpu_has_native_bf16

    bundle = resolve_model(args.model)
    tiles = _tiles(args, bundle.spec)
    preds, setup = {}, {}
    for engine, precision in PATHS:
        t0 = time.perf_counter()
        try:
            preds[engine, precision] = Predictor(
                bundle, InferenceConfig(tile=512, overlap=64, batch_size=args.batch_size,
                                        engine=engine, precision=precision),
                calibration=lambda: tiles)
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"{engine} {precision}: skipped ({exc})")
            continue
        setup[engine, precision] = time.perf_counter() - t0
    times: dict[tuple[str, str], list[float]] = {k: [] for k in preds}
    classes = {}
    for _ in range(args.rounds):
        for key, pred in preds.items():
            t0 = time.perf_counter()
            out = pred.forward_tiles(tiles)
            times[key].append(time.perf_counter() - t0)
            classes[key] = out.argmax(1)
    mpx = len(tiles) * 512 * 512 / 1e6
    base = statistics.median(times["eager", "fp32"])
    print(f"model {args.model}, {len(tiles)} tiles 512², batch {args.batch_size}, "
          f"{args.rounds} interleaved rounds; CPU native bf16: {cpu_has_native_bf16()}")
    print("| engine | precision | Mpx/s | x eager fp32 | class = eager fp32 | setup s |")
    print("|---|---|---|---|---|---|")
    for key, ts in times.items():
        med = statistics.median(ts)
        agree = (classes[key] == classes["eager", "fp32"]).mean() * 100
        print(f"| {key[0]} | {key[1]} | {mpx / med:.2f} | {base / med:.2f} | {agree:.2f}% | "
              f"{setup[key]:.1f} |")


if __name__ == "__main__":
    main()
