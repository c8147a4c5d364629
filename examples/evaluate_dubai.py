"""Score geoseg's default models on the held-out Dubai tiles 7-8 (the model-card figures).

Every held-out image is predicted with ``geoseg.prediction.pipeline.predict`` (the code behind
``geoseg predict``), compared with its mask, and the pixel counts are pooled. The figures
are printed as JSON and, with ``--record``, stored in the bundle's provenance under
``heldout`` (the weights are rewritten unchanged), where the test of the shipped models
reads them back.

usage: python examples/evaluate_dubai.py [--data DIR] [--record] deeplab unet
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from geoseg.models import default_model_path
from geoseg.models.bundle import load_bundle, save_bundle
from geoseg.training.data import find_pairs, read_class_table
from geoseg.training.evaluate import evaluate_bundle

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="default model names or bundle files")
    parser.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "dubai")
    parser.add_argument("--record", action="store_true", help="store the figures in the bundle")
    args = parser.parse_args()
    table = read_class_table(HERE / "dubai_classes.json")
    pairs = find_pairs(args.data / "tile_7") + find_pairs(args.data / "tile_8")
    for name in args.models:
        path = default_model_path(name) if not name.endswith(".safetensors") else Path(name)
        bundle = load_bundle(path)
        start = time.monotonic()
        result = evaluate_bundle(bundle, pairs, table, exclude=("unlabeled",))
        figures = {**result.to_dict(), "data": "dubai tiles 7-8 (held out)",
                   "seconds": round(time.monotonic() - start, 1)}
        print(json.dumps({"model": name, **figures}, indent=1))
        if args.record:
            spec = bundle.spec.with_(provenance={**bundle.spec.provenance, "heldout": figures})
            save_bundle(path, bundle.model, spec, half=True, overwrite=True)


if __name__ == "__main__":
    main()
