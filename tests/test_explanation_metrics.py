"""Pixel removal and cascading randomisation on constructed cases with known answers."""

import keras
import numpy as np
import pytest
from glasszoo.explain.pixel_removal import pixel_removal_curve, removal_order
from glasszoo.explain.randomisation import cascading_randomisation, rank_correlation


def one_pixel_model():
    """Two classes; class 1's logit is 10 x pixel (1, 2) of a 4x4 image, class 0's is 0."""
    inputs = keras.Input((4, 4, 1))
    flat = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(2, use_bias=False, name="readout")
    model = keras.Model(inputs, dense(flat))
    weights = np.zeros((16, 2), "float32")
    weights[1 * 4 + 2, 1] = 10.0
    dense.set_weights([weights])
    return model


def test_removal_order():
    maps = np.array([[[3.0, 1.0], [2.0, 1.0]]])
    np.testing.assert_array_equal(removal_order(maps, "least"), [[1, 3, 2, 0]])
    np.testing.assert_array_equal(removal_order(maps, "most"), [[0, 2, 1, 3]])
    with pytest.raises(ValueError, match="order"):
        removal_order(maps, "random")


def test_pixel_removal_with_a_faithful_and_an_inverted_attribution():
    model = one_pixel_model()
    images = np.ones((2, 4, 4, 1), "float32")
    faithful = np.zeros((2, 4, 4))
    faithful[:, 1, 2] = 1.0
    fractions = [0.0, 0.5, 15 / 16, 1.0]
    least = pixel_removal_curve(model, images, faithful, [1, 1], fractions=fractions, order="least")
    # the one pixel that matters goes last: p(class 1) = sigmoid(10) until everything is removed
    expected = 1 / (1 + np.exp(-10.0))
    np.testing.assert_allclose(least["curve"], [expected, expected, expected, 0.5], rtol=1e-6)
    most = pixel_removal_curve(model, images, faithful, [1, 1], fractions=fractions, order="most")
    np.testing.assert_allclose(most["curve"], [expected, 0.5, 0.5, 0.5], rtol=1e-6)
    assert least["area"] > most["area"]
    inverted = pixel_removal_curve(model, images, -faithful, [1, 1], fractions=fractions, order="least")
    np.testing.assert_allclose(inverted["curve"][1:], 0.5, rtol=1e-6)
    assert inverted["probabilities"].shape == (2, 4)


def test_pixel_removal_names_bad_arguments():
    model = one_pixel_model()
    images = np.ones((2, 4, 4, 1), "float32")
    with pytest.raises(ValueError, match="attributions"):
        pixel_removal_curve(model, images, np.zeros((2, 4, 3)), [1, 1])
    with pytest.raises(ValueError, match="targets"):
        pixel_removal_curve(model, images, np.zeros((2, 4, 4)), [1])
    with pytest.raises(ValueError, match="fractions"):
        pixel_removal_curve(model, images, np.zeros((2, 4, 4)), [1, 1], fractions=[0.5, 1.5])


def test_rank_correlation():
    assert rank_correlation(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)
    assert rank_correlation(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)
    assert rank_correlation(np.ones(5), np.arange(5.0)) == 0.0


def test_cascading_randomisation_separates_model_dependent_from_model_blind_explanations():
    model = one_pixel_model()
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).uniform(size=(3, 4, 4, 1)).astype("float32")

    def input_times_weight(m, x, targets):
        weights = m.get_layer("readout").get_weights()[0]
        return x[..., 0] * weights[:, targets].T.reshape(-1, 4, 4)

    def edge_detector(m, x, targets):  # ignores the model entirely
        return np.abs(np.diff(x[..., 0], axis=1, append=0))

    dependent = cascading_randomisation(model, input_times_weight, images, [1, 1, 1])
    blind = cascading_randomisation(model, edge_detector, images, [1, 1, 1])
    assert [s["layer"] for s in dependent] == ["none", "readout"]
    assert dependent[0]["rank_correlation"] == pytest.approx(1.0)
    assert dependent[-1]["rank_correlation"] < 0.5
    assert blind[-1]["rank_correlation"] == pytest.approx(1.0)  # fails the sanity check, as it should
    np.testing.assert_array_equal(model.get_layer("readout").get_weights()[0][6, 1], 10.0)  # original untouched


def test_cascading_randomisation_of_a_coda(tiny_coda, samples):
    images, labels = samples[0][:4], samples[1][:4]
    steps = cascading_randomisation(tiny_coda, lambda m, x, t: m.explain(x, target=t)["contributions"], images, labels)
    assert len(steps) == 1 + len(tiny_coda.dau_layers)
    assert steps[-1]["rank_correlation"] < steps[0]["rank_correlation"]
