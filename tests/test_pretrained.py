"""The shipped presets against their model cards (full test splits)."""

import glasszoo
import numpy as np
import pytest
from glasszoo.zoo.inam.consistency import decision_image_consistency


@pytest.mark.slow
def test_inam_fashion_mnist_reaches_its_card(fashion_mnist):
    model = glasszoo.load("inam_fashion_mnist")
    card = model.preset_metadata
    assert card["data"]["dataset"] == "fashion_mnist" and card["data"]["test_images"] == 10000
    accuracy = float((model.predict_classes(fashion_mnist.x_test) == fashion_mnist.y_test).mean())
    assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=2e-3)
    assert accuracy >= 0.88


@pytest.mark.slow
def test_inam_fashion_mnist_decision_images_carry_class_evidence(fashion_mnist):
    from glasszoo.zoo.inam.consistency import positive_scaled

    model = glasszoo.load("inam_fashion_mnist")
    images = fashion_mnist.x_test[:500]
    result = decision_image_consistency(model, images)
    # control: the decision image of the runner-up class should rarely be read as the predicted class
    explanation = model.explain(images)
    runner_up = np.argsort(explanation["logits"], axis=-1)[:, -2]
    control = model.explain(positive_scaled(explanation["decision_images"][np.arange(len(images)), runner_up]))
    control_kept = float((control["logits"].argmax(-1) == result["predicted"]).mean())
    assert result["consistency"] > 0.2 and result["consistency"] > control_kept + 0.05, (result["consistency"], control_kept)


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


def _coda_or_skip():
    if "coda_fashion_mnist" not in glasszoo.list_models():
        pytest.skip("coda_fashion_mnist not shipped")
    return glasszoo.load("coda_fashion_mnist")


@pytest.mark.slow
def test_coda_fashion_mnist_reaches_its_card(fashion_mnist):
    model = _coda_or_skip()
    card = model.preset_metadata
    assert card["data"]["test_images"] == 10000
    accuracy = float((model.predict_classes(fashion_mnist.x_test) == fashion_mnist.y_test).mean())
    assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=2e-3)


def test_coda_preset_contributions_are_complete_and_localise(samples):
    import math

    from glasszoo.explain.localisation import localisation_scores

    model = _coda_or_skip()
    images, labels, _ = samples
    out = model.explain(images[:8])
    predicted = out["logits"].argmax(-1)
    rebuilt = out["contributions"].sum(axis=(1, 2)) / model.temperature + math.log(0.1 / 0.9)
    np.testing.assert_allclose(rebuilt, out["logits"][np.arange(8), predicted], rtol=1e-3, atol=1e-3)
    assert float((predicted == labels[:8]).mean()) >= 0.5
    cells = [int(np.flatnonzero(labels == c)[0]) for c in range(9)]
    scores = localisation_scores(model, images[cells], labels[cells], 3)["scores"]
    assert scores.mean() > 1.5 / 9, scores  # a random map scores 1/9 (this preset: 0.19)


@pytest.mark.slow
def test_cnn_baseline_reaches_its_card(fashion_mnist):
    if "cnn_fashion_mnist" not in glasszoo.list_models():
        pytest.skip("cnn_fashion_mnist not shipped")
    model = glasszoo.load("cnn_fashion_mnist")
    accuracy = float((model.predict_classes(fashion_mnist.x_test) == fashion_mnist.y_test).mean())
    assert accuracy == pytest.approx(model.preset_metadata["metrics"]["test_accuracy"], abs=2e-3)
    assert accuracy >= 0.92
