"""The ``dynamicworld`` default model: parity with Google's SavedModel, spec, engines.

``tests/data/dynamicworld_parity.npz`` holds three 64 x 64 crops of real Sentinel-2 L1C
pixels (the Slovenian eo-learn scenes, one per date, the nine Dynamic World bands as raw
uint16) and the logits the published TensorFlow SavedModel (``model/forward``) gives for
them, normalised as ``single_image_runner.ipynb`` does; ``examples/dynamicworld_convert.py``
wrote both. No TensorFlow is needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.errors import BundleError
from geoseg.models import DEFAULT_MODELS, resolve_model, resolve_spec
from geoseg.models.architectures import ENCODER_FREE, NO_BACKBONE, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "dynamicworld_parity.npz"
BANDS = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12"]
PALETTE = {"water": "#419bdf", "trees": "#397d49", "grass": "#88b053",
           "flooded_vegetation": "#7a87c6", "crops": "#e49635", "shrub_and_scrub": "#dfc35a",
           "built": "#c4281b", "bare": "#a59b8f", "snow_and_ice": "#b39fe1"}


def _hex(color: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in color)


def test_logits_match_the_savedmodel_on_real_sentinel2_pixels() -> None:
    with np.load(FIXTURE) as fx:
        inputs, expected = fx["inputs"], fx["logits"]
    assert inputs.dtype == np.uint16 and inputs.shape[1] == 9 and inputs.max() > 1000
    bundle = resolve_model("dynamicworld")
    assert bundle.model is not None
    with torch.inference_mode():
        got = bundle.model(torch.from_numpy(inputs.astype(np.float32))).numpy()
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= 1e-4
    # the logits are informative: the crops are not one class
    assert len(np.unique(expected.argmax(1))) >= 2


def test_spec_names_bands_classes_palette_input_and_licence() -> None:
    spec = resolve_spec("dynamicworld")
    assert spec.architecture == "dynamicworld" and spec.backbone == NO_BACKBONE
    assert list(spec.bands) == BANDS
    assert {c.name: _hex(c.color) for c in spec.classes} == PALETTE
    assert [c.name for c in spec.classes] == list(PALETTE)  # published channel order
    assert spec.mean == (0.0,) * 9 and spec.std == (1.0,) * 9  # normalisation is in the model
    assert spec.gsd_m == 10.0 and spec.input_dtype == "uint16"
    assert spec.input_kind is not None and "L1C" in spec.input_kind
    assert spec.input_range is not None
    assert all(0 <= lo < hi <= 10000 for lo, hi in spec.input_range)
    prov = spec.provenance
    assert prov["license"] == "Apache-2.0"
    assert "National Geographic" in prov["notice"] and "World Resources Institute" in prov["notice"]
    assert prov["source"] == "https://github.com/google/dynamicworld"
    assert len(prov["source_commit"]) == 40
    assert "dynamicworld" in DEFAULT_MODELS and "dynamicworld" in ENCODER_FREE


def test_fully_convolutional_for_geoseg_tiles() -> None:
    model = build_model(resolve_spec("dynamicworld")).eval()
    with torch.inference_mode():
        out = model(torch.full((2, 9, 96, 160), 1500.0))
    assert out.shape == (2, 9, 96, 160) and bool(torch.isfinite(out).all())


def test_negative_and_huge_values_stay_finite() -> None:
    model = build_model(resolve_spec("dynamicworld")).eval()
    x = torch.zeros(1, 9, 32, 32)
    x[..., :16, :] = -5000.0
    x[..., 16:, :] = 65535.0
    with torch.inference_mode():
        assert bool(torch.isfinite(model(x)).all())


@pytest.mark.parametrize(("change", "match"), [({"backbone": "resnet18"}, "no encoder"),
                                               ({"arch_params": {"width": 2}}, "no architecture"),
                                               ({"bands": ("B2", "B3", "B4"), "mean": (0,) * 3,
                                                 "std": (1,) * 3, "input_range": None},
                                                "9 bands")])
def test_bad_specs_are_refused(change: dict, match: str) -> None:
    spec = resolve_spec("dynamicworld").with_(**change)
    with pytest.raises(BundleError, match=match):
        build_model(spec)


def test_spec_without_input_kind_reads_as_before() -> None:
    from geoseg.models.spec import ModelSpec

    spec = resolve_spec("dynamicworld")
    d = json.loads(spec.to_json())
    del d["input_kind"]  # a bundle written before the field existed
    assert ModelSpec.from_dict(d).input_kind is None
    assert ModelSpec.from_json(spec.to_json()) == spec
