import keras
import numpy as np
import pytest
from glasszoo.layers import (
    GlobalMaxPoolingWithLocation,
    InterpretableConv2D,
    NeuralAdditiveHead,
    Orthonormality,
    SumOfRegularizers,
    TotalVariation,
    location_one_hot,
)
from keras import ops


def numpy_tv(kernel):
    n = kernel.shape[0]
    total = 0.0
    for l in range(kernel.shape[3]):
        for m in range(kernel.shape[2]):
            for i in range(n - 1):
                for j in range(n - 1):
                    total += (kernel[i + 1, j, m, l] - kernel[i, j, m, l]) ** 2
                    total += (kernel[i, j + 1, m, l] - kernel[i, j, m, l]) ** 2
    return total


def numpy_ortho(kernel):
    count = kernel.shape[3]
    total = 0.0
    for i in range(count):
        for j in range(count):
            inner = float(np.sum(kernel[..., i] * kernel[..., j]))
            total += (inner - (1.0 if i == j else 0.0)) ** 2
    return 0.5 * total


def test_total_variation_matches_equation_1(rng):
    kernel = rng.normal(size=(5, 5, 2, 3)).astype("float32")
    value = float(TotalVariation(0.3)(kernel))
    assert value == pytest.approx(0.3 * numpy_tv(kernel), rel=1e-5)


def test_orthonormality_matches_equation_2(rng):
    kernel = rng.normal(size=(3, 3, 2, 5)).astype("float32")
    value = float(Orthonormality(0.7)(kernel))
    assert value == pytest.approx(0.7 * numpy_ortho(kernel), rel=1e-5)


def test_regularisers_are_zero_on_their_minimisers():
    constant = np.ones((4, 4, 1, 2), "float32")
    assert float(TotalVariation(1.0)(constant)) == 0.0
    eye = np.eye(9, dtype="float32").reshape(3, 3, 1, 9)
    assert float(Orthonormality(1.0)(eye)) == pytest.approx(0.0, abs=1e-6)


def test_regularisers_serialise():
    combined = SumOfRegularizers([TotalVariation(0.1), Orthonormality(0.2)])
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(combined))
    kernel = np.random.default_rng(1).normal(size=(3, 3, 1, 4)).astype("float32")
    assert float(restored(kernel)) == pytest.approx(float(combined(kernel)), rel=1e-6)


def test_interpretable_conv_shapes_and_losses():
    conv = InterpretableConv2D(filters=7, kernel_size=5, tv_weight=0.1, ortho_weight=0.2)
    assert tuple(conv(np.zeros((2, 28, 28, 3), "float32")).shape) == (2, 28, 28, 7)
    kernel = conv.kernel.numpy()
    expected = 0.1 * numpy_tv(kernel) + 0.2 * numpy_ortho(kernel)
    assert float(sum(conv.losses)) == pytest.approx(expected, rel=1e-4)
    valid = InterpretableConv2D(filters=4, kernel_size=5, padding="valid")
    assert tuple(valid(np.zeros((1, 28, 28, 1), "float32")).shape) == (1, 24, 24, 4)
    with pytest.raises(ValueError, match="odd"):
        InterpretableConv2D(filters=4, kernel_size=4)


def test_place_kernels_is_the_adjoint_of_the_convolution(rng):
    for padding in ("same", "valid"):
        conv = InterpretableConv2D(filters=3, kernel_size=5, padding=padding)
        x = rng.random((2, 12, 12, 2)).astype("float32")
        y = conv(x).numpy()
        r = rng.normal(size=y.shape).astype("float32")
        back = conv.place_kernels(r).numpy()
        assert back.shape == x.shape
        assert np.sum(y * r) == pytest.approx(np.sum(x * back), rel=1e-4)


def test_max_pool_with_location_matches_numpy(rng):
    maps = rng.normal(size=(3, 6, 5, 4)).astype("float32")
    maps[0, :, :, 1] = 0.0  # ties: first position in row-major order wins
    values, locations = GlobalMaxPoolingWithLocation(location_offset=2)(maps)
    flat = maps.reshape(3, 30, 4)
    index = flat.argmax(axis=1)
    np.testing.assert_allclose(values.numpy(), flat.max(axis=1))
    np.testing.assert_array_equal(locations.numpy()[..., 0], index // 5 + 2)
    np.testing.assert_array_equal(locations.numpy()[..., 1], index % 5 + 2)
    assert tuple(locations.numpy()[0, 1]) == (2.0, 2.0)
    one_hot = location_one_hot(locations, 6, 5, location_offset=2).numpy()
    assert one_hot.shape == (3, 6, 5, 4)
    assert np.all(one_hot.sum(axis=(1, 2)) == 1)
    assert np.all(np.sum(one_hot * maps, axis=(1, 2)) == flat.max(axis=1))


def test_additive_head_equals_independent_subnets(rng):
    head = NeuralAdditiveHead(num_classes=3, hidden_units=(4, 5, 2))
    features = rng.normal(size=(6, 7)).astype("float32")
    out = head(features).numpy()
    assert out.shape == (6, 7, 3)
    for l in range(7):
        h = np.maximum(features[:, l : l + 1] * head.input_kernel.numpy()[l] + head.input_bias.numpy()[l], 0)
        for kernel, bias in zip(head.hidden_kernels, head.hidden_biases):
            h = np.maximum(h @ kernel.numpy()[l] + bias.numpy()[l], 0)
        np.testing.assert_allclose(out[:, l], h @ head.output_kernel.numpy()[l], rtol=1e-5, atol=1e-5)
    # a feature's contribution depends on that feature only
    changed = features.copy()
    changed[:, 3] += 1.0
    moved = head(changed).numpy()
    np.testing.assert_allclose(np.delete(moved, 3, axis=1), np.delete(out, 3, axis=1), atol=1e-6)


def test_centring_keeps_logits_and_centres_the_functions(rng):
    head = NeuralAdditiveHead(num_classes=4, hidden_units=(8, 8))
    features = rng.normal(size=(50, 5)).astype("float32")
    before = head.logits(head(features)).numpy()
    head.set_feature_means(ops.mean(head.shape_functions(features), axis=0))
    contributions = head(features).numpy()
    np.testing.assert_allclose(head.logits(contributions).numpy(), before, rtol=1e-5, atol=1e-5)
    means = contributions.mean(axis=0)  # every feature now has the same mean per class
    np.testing.assert_allclose(means, np.broadcast_to(means.mean(axis=0), means.shape), atol=1e-5)
    assert [w.name for w in head.non_trainable_weights] == ["feature_means"]


def test_layers_get_config_round_trip():
    for layer in (
        InterpretableConv2D(5, 3, padding="valid", tv_weight=0.3, ortho_weight=0.4),
        GlobalMaxPoolingWithLocation(location_offset=3),
        NeuralAdditiveHead(4, hidden_units=(8, 4), first_layer_stddev=0.5),
    ):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
