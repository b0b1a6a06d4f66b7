"""Every shipped preset: a complete, verified model card, explanations that keep their identities, ONNX parity.

Parametrised over `glasszoo.list_models()`, so a new preset is checked here
without editing this file; each family's test file checks its paper's claims.
"""

import json

import glasszoo
import numpy as np
import pytest

PRESETS = glasszoo.list_models()
CARD_KEYS = ("name", "family", "description", "class_names", "input", "data", "training", "config", "parameters", "metrics", "versions", "weights_sha256")


@pytest.fixture(scope="module", params=PRESETS)
def preset(request):
    return request.param, glasszoo.load(request.param)


def test_card_says_how_it_was_trained_and_what_it_scored(preset):
    name, model = preset
    card = model.preset_metadata
    for key in CARD_KEYS:
        assert key in card, f"{name}: the card lacks {key!r}"
    assert card["name"] == name and card["family"] == model.family
    assert card["training"]["command"].startswith(f"glasszoo train {name} ") and "seed" in card["training"]
    assert {"validation_accuracy", "test_accuracy"} <= set(card["metrics"])
    assert card["data"]["validation_images"] > 0 and card["data"]["test_images"] > 0
    assert sorted(card["explanation_outputs"]) == sorted(model.explanation_outputs)
    config, _ = glasszoo.model_info(name)
    assert config["family"] == model.family
    json.dumps(card)


def test_explanations_keep_their_identities_on_the_samples(preset):
    from glasszoo.data.samples import load_samples

    name, model = preset
    dataset = model.preset_metadata["data"]["dataset"]
    images, labels, names = load_samples("mnist" if dataset.startswith("mnist") else dataset)
    if model.preset_metadata["data"].get("held_out_classes"):  # trained on some classes: its own labels for those
        seen = np.array([names[k] in model.class_names for k in labels])
        images, labels = images[seen], np.array([model.class_names.index(names[k]) for k in labels[seen]])
    out = model.explain(images)
    assert model.self_check_errors(images, out) == {}
    assert float((out["logits"].argmax(-1) == labels).mean()) >= 0.7, name


def test_onnx_export_equals_keras(preset, tmp_path):
    from glasszoo.data.samples import load_samples
    from glasszoo.export import OnnxModel, to_onnx

    name, model = preset
    images = load_samples()[0][:5] if tuple(model.image_shape) == (28, 28, 1) else None
    if images is None:
        pytest.skip(f"{name} takes {model.image_shape} images")
    served = OnnxModel(to_onnx(model, tmp_path / f"{name}.onnx", model_name=name))
    expected, got = model.explain(images), served(images)
    assert sorted(got) == sorted(expected)
    for key in expected:
        scale = max(1.0, float(np.abs(expected[key]).max()))
        np.testing.assert_allclose(got[key], expected[key], atol=1e-4 * scale, rtol=1e-4, err_msg=f"{name}: {key}")
    assert served.metadata["model_name"] == name and json.loads(served.metadata["metrics"]) == model.preset_metadata["metrics"]
