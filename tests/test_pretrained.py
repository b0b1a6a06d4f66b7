"""The shipped presets against their model cards (full test splits)."""

import numpy as np
import pytest

import glasszoo
from glasszoo.explain.consistency import decision_image_consistency


@pytest.mark.slow
def test_inam_fashion_mnist_reaches_its_card(fashion_mnist):
    model = glasszoo.load("inam_fashion_mnist")
    card = model.preset_metadata
    assert card["data"]["dataset"] == "fashion_mnist" and card["data"]["test_images"] == 10000
    accuracy = float((model.predict_classes(fashion_mnist.x_test) == fashion_mnist.y_test).mean())
    assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=2e-3)
    assert accuracy >= 0.88


@pytest.mark.slow
def test_inam_fashion_mnist_decision_images_mostly_keep_the_class(fashion_mnist):
    model = glasszoo.load("inam_fashion_mnist")
    result = decision_image_consistency(model, fashion_mnist.x_test[:500])
    assert result["consistency"] > 0.3


def test_preset_centring_is_in_place(samples):
    model = glasszoo.load("inam_fashion_mnist")
    means = model.head.feature_means.numpy()
    assert np.abs(means).sum() > 0
    out = model.explain(samples[0][:8])
    np.testing.assert_allclose(out["contributions"].sum(1) + model.head.bias.numpy(), out["logits"], atol=1e-3)
    assert float((out["logits"].argmax(-1) == samples[1][:8]).mean()) >= 0.5


@pytest.mark.parametrize("name", ["inam_mnist"])
def test_second_preset_on_its_test_split(name):
    if name not in glasszoo.list_models():
        pytest.skip(f"{name} not shipped")
    from glasszoo.data import load_dataset

    model = glasszoo.load(name)
    card = model.preset_metadata
    data = load_dataset(card["data"]["dataset"])
    accuracy = float((model.predict_classes(data.x_test) == data.y_test).mean())
    assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=2e-3)
