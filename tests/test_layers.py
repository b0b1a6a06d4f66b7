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
)
from glasszoo.layers import interpretable_conv
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


def numpy_placement_by_group(kernel, locations, groups, weights, num_groups, height, width):
    """Each kernel copied pixel by pixel to its centre, weighted, into its group's image."""
    size, channels, filters = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    out = np.zeros((len(weights), num_groups, height, width, channels), "float64")
    for b in range(len(weights)):
        for n in range(filters):
            row, col = locations[b, n].astype(int)
            for i in range(size):
                for j in range(size):
                    y, x = row + i - size // 2, col + j - size // 2
                    if 0 <= y < height and 0 <= x < width:
                        out[b, groups[b, n], y, x] += weights[b, n] * kernel[i, j, :, n]
    return out


@pytest.mark.parametrize("route", ["table", "shift"])
@pytest.mark.parametrize("channels", [1, 3])
def test_placement_by_group_puts_each_kernel_centred_on_its_location(rng, channels, route, monkeypatch):
    if route == "shift":  # no placement table: kernel rows moved by shift matrices
        monkeypatch.setattr(interpretable_conv, "PLACEMENT_TABLE_LIMIT", 0)
    conv = InterpretableConv2D(filters=5, kernel_size=5)
    conv.build((None, 9, 8, channels))
    # corners, an edge, and two kernels of one group overlapping at the same place
    locations = np.array([[[0, 0], [4, 3], [8, 7], [4, 3], [0, 7]], [[2, 6], [1, 1], [6, 0], [8, 0], [4, 4]]], "float32")
    groups = np.array([[0, 2, 1, 2, 2], [1, 1, 1, 0, 2]], "int32")
    weights = rng.normal(size=(2, 5)).astype("float32")
    placed = conv.placement_by_group(locations, groups, weights, 3, 9, 8)
    expected = numpy_placement_by_group(conv.kernel.numpy(), locations, groups, weights, 3, 9, 8)
    assert tuple(placed.shape) == (2, 3, 9, 8, channels)
    np.testing.assert_allclose(ops.convert_to_numpy(placed), expected, atol=1e-5)


@pytest.mark.parametrize("route", ["table", "shift"])
def test_placement_at_every_response_is_the_adjoint_of_the_convolution(rng, route, monkeypatch):
    """Kernels placed at every response position and weighted by it give the transposed convolution."""
    if route == "shift":
        monkeypatch.setattr(interpretable_conv, "PLACEMENT_TABLE_LIMIT", 0)
    conv = InterpretableConv2D(filters=2, kernel_size=3, padding="valid")
    x = rng.random((1, 6, 5, 2)).astype("float32")
    responses = conv(x).numpy()  # (1, 4, 3, 2)
    r = rng.normal(size=responses.shape).astype("float32")
    rows, cols = np.meshgrid(np.arange(4), np.arange(3), indexing="ij")
    positions = np.stack([rows.ravel(), cols.ravel()], -1).astype("float32") + conv.location_offset  # 12 positions
    locations = np.repeat(positions[:, None, :], 2, axis=1)  # a batch of 12: both kernels at one position each
    placed = conv.placement_by_group(locations, np.zeros((12, 2), "int32"), r[0].reshape(12, 2), 1, 6, 5)
    back = ops.convert_to_numpy(placed).sum(axis=0)[0]  # (6, 5, 2)
    assert np.sum(responses * r) == pytest.approx(np.sum(x[0] * back), rel=1e-4)


def test_max_pool_with_location_matches_numpy(rng):
    maps = rng.normal(size=(3, 6, 5, 4)).astype("float32")
    maps[0, :, :, 1] = 0.0  # ties: first position in row-major order wins
    maps[1, 4, 1, 0] = maps[1, 2, 3, 0] = 10.0  # the maximum in two rows: the upper row wins, not the left column
    maps[2, 3, 4, 2] = maps[2, 3, 1, 2] = 10.0  # twice in one row: the left one
    values, locations = GlobalMaxPoolingWithLocation(location_offset=2)(maps)
    flat = maps.reshape(3, 30, 4)
    index = flat.argmax(axis=1)
    np.testing.assert_allclose(values.numpy(), flat.max(axis=1))
    np.testing.assert_array_equal(locations.numpy()[..., 0], index // 5 + 2)
    np.testing.assert_array_equal(locations.numpy()[..., 1], index % 5 + 2)
    assert tuple(locations.numpy()[0, 1]) == (2.0, 2.0)


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
