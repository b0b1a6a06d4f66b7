"""CoDA-Nets: the DAU layer, the head, the model's contribution maps and training."""

import math

import numpy as np
import pytest
import tensorflow as tf
from glasszoo.layers import ComplementEncoding, DAUConv2D, TemperatureSumPooling
from glasszoo.zoo.base import first_max_one_hot
from glasszoo.zoo.coda.model import ARCHITECTURES, CoDA
from glasszoo.zoo.losses import OneHotBinaryCrossentropy
from keras import ops
from dynamic_linear_checks import assert_export_matches_keras, assert_map_sums_to_the_logit

LAYER_CASES = [
    (1, "same", "sq", 9, 3),
    (2, "same", "l2", 9, 3),
    (2, "same", "sq", 8, 3),
    (2, "valid", "sq", 9, 3),
    (1, "valid", "l2", 7, 3),
    (1, "same", "sq", 6, 1),
    (3, "same", "l2", 10, 5),
    (2, "symmetric", "sq", 8, 3),  # the paper's padding: 1 on both sides at stride 2
    (2, "symmetric", "l2", 9, 5),
]


def materialised_forward(layer, inputs, detach=False):
    """The layer as the reference computes it: weights w_j per position from extracted patches."""
    padded = layer._pad(inputs)
    k, s = layer.kernel_size, layer.strides
    patches = tf.image.extract_patches(padded, [1, k, k, 1], [1, s, s, 1], [1, 1, 1, 1], "VALID")
    weights = layer.dynamic_weights(inputs)
    if detach:
        weights = tf.stop_gradient(weights)
    return tf.einsum("nhwjd,nhwd->nhwj", weights, patches)


@pytest.mark.parametrize("stride, padding, normalization, size, kernel", LAYER_CASES)
def test_dau_equals_the_materialised_reference(rng, stride, padding, normalization, size, kernel):
    layer = DAUConv2D(5, kernel, 4, strides=stride, padding=padding, normalization=normalization)
    x = rng.uniform(size=(2, size, size, 3)).astype("float32")
    out = ops.convert_to_numpy(layer(x))
    assert out.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(out, materialised_forward(layer, tf.constant(x)).numpy(), atol=2e-6)


def test_dau_output_is_bounded_by_the_patch_norm(rng):
    """|w_j| <= 1 for both normalisations, so |out_j| <= |p| (the bound behind the alignment pressure)."""
    for normalization in ("sq", "l2"):
        layer = DAUConv2D(7, 3, 5, padding="valid", normalization=normalization)
        x = rng.normal(size=(3, 6, 6, 2)).astype("float32") * 5
        weights = ops.convert_to_numpy(layer.dynamic_weights(x))
        norms = np.linalg.norm(weights, axis=-1)
        assert norms.max() <= 1.0 + 1e-5
        if normalization == "l2":
            np.testing.assert_allclose(norms, 1.0, atol=1e-5)


@pytest.mark.parametrize("stride, padding, normalization, size, kernel", LAYER_CASES)
def test_explain_backward_is_the_gradient_with_detached_weights(rng, stride, padding, normalization, size, kernel):
    layer = DAUConv2D(5, kernel, 4, strides=stride, padding=padding, normalization=normalization)
    x = tf.constant(rng.uniform(size=(2, size, size, 3)).astype("float32"))
    relevance = rng.normal(size=layer.compute_output_shape(x.shape)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(materialised_forward(layer, x, detach=True) * relevance)
    expected = tape.gradient(total, x).numpy()
    state = layer.dynamic_state(x)
    got = ops.convert_to_numpy(layer.explain_backward(state, relevance, x.shape))
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # dynamic linearity: input x input relevance sums to output x output relevance
    np.testing.assert_allclose((got * x.numpy()).sum(), (relevance * ops.convert_to_numpy(state["outputs"])).sum(), rtol=1e-4)


def test_dau_config_round_trip_and_bad_arguments():
    layer = DAUConv2D(4, 3, 2, strides=2, padding="valid", normalization="l2", name="dau")
    clone = DAUConv2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="normalization"):
        DAUConv2D(4, 3, 2, normalization="softmax")
    with pytest.raises(ValueError, match="padding"):
        DAUConv2D(4, 3, 2, padding="causal")
    with pytest.raises(ValueError, match="rank"):
        DAUConv2D(4, 3, 0)


def test_encoding_and_head():
    x = np.array([[[[0.25]], [[1.0]]]], "float32")  # (1, 2, 1, 1)
    np.testing.assert_allclose(ops.convert_to_numpy(ComplementEncoding()(x))[0, :, 0], [[0.25, 0.75], [1.0, 0.0]])
    maps = np.arange(24, dtype="float32").reshape(1, 2, 3, 4)
    logits = ops.convert_to_numpy(TemperatureSumPooling(temperature=4.0)(maps))
    np.testing.assert_allclose(logits[0], maps.sum(axis=(1, 2))[0] / 4.0 + math.log(0.1 / 0.9), rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        TemperatureSumPooling(temperature=0.0)


def test_one_hot_binary_cross_entropy_matches_numpy(rng):
    logits = rng.normal(size=(6, 4)).astype("float32") * 30  # large logits: the stable form must not overflow
    labels = rng.integers(0, 4, size=6)
    targets = np.eye(4)[labels]
    wide = logits.astype("float64")
    expected = targets * np.logaddexp(0.0, -wide) + (1 - targets) * np.logaddexp(0.0, wide)  # -log p, -log(1-p)
    loss = OneHotBinaryCrossentropy(num_classes=4)
    np.testing.assert_allclose(float(loss(labels, logits)), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(loss(targets.astype("float32"), logits)), expected.mean(), rtol=1e-5)


def test_first_max_one_hot_breaks_ties_to_the_first():
    scores = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]], "float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(first_max_one_hot(scores)), [[0, 1, 0], [1, 0, 0]])


def test_completeness_for_every_class(tiny_coda, samples):
    images = samples[0][:6]
    out = tiny_coda.explain(images)
    assert out["contributions"].shape == (6, 28, 28)
    bias = math.log(0.1 / 0.9)
    rows = np.arange(6)
    for target in (None, 0, 7, np.arange(6) % 10):
        explained = tiny_coda.explain(images, target=target)
        classes = explained["logits"].argmax(-1) if target is None else np.broadcast_to(target, (6,))
        logit = explained["logits"][rows, classes]
        total = explained["contributions"].sum(axis=(1, 2)) / tiny_coda.temperature + bias
        np.testing.assert_allclose(total, logit, rtol=1e-4, atol=1e-5)


def test_contributions_equal_input_times_gradient_with_detached_weights(tiny_coda, samples):
    images = tf.constant(samples[0][:3])
    encoded = tiny_coda.encoding(images)
    with tf.GradientTape() as tape:
        tape.watch(encoded)
        activations = encoded
        for layer in tiny_coda.dau_layers:
            activations = materialised_forward(layer, activations, detach=True)
        logits = tiny_coda.head(activations)
        predicted = tf.argmax(logits, axis=-1)
        chosen = tf.reduce_sum(tf.gather(logits, predicted, axis=1, batch_dims=1))
    gradient = tape.gradient(chosen, encoded)
    expected = tf.reduce_sum(encoded * gradient, axis=-1).numpy() * tiny_coda.temperature
    got = tiny_coda.explain(images.numpy())["contributions"]
    np.testing.assert_allclose(got, expected, atol=1e-5 * max(1.0, np.abs(expected).max()))


def test_fit_with_integer_labels_learns(tiny_coda, samples):
    images, labels = samples[0], samples[1]
    before = tiny_coda.evaluate(images, labels, verbose=0)[0]
    history = tiny_coda.fit(images, labels, epochs=6, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < before


def test_bad_inputs_and_targets(tiny_coda):
    with pytest.raises(ValueError, match="channels"):
        tiny_coda.explain(np.zeros((1, 28, 28, 3), "float32"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_coda.explain(np.full((1, 28, 28, 1), 2.0, "float32"))
    with pytest.raises(ValueError, match="target"):
        tiny_coda.explain(np.zeros((2, 28, 28, 1), "float32"), target=10)
    with pytest.raises(ValueError, match="one fewer"):
        CoDA(kernel_sizes=[3, 3], strides=[1, 1], filters=[4, 4], ranks=[2, 2])


def test_paper_architecture_builds_for_cifar_shapes():
    model = CoDA.from_architecture("s_coda", num_classes=10, input_shape=(32, 32, 3))
    assert len(model.dau_layers) == 9 and model.temperature == ARCHITECTURES["s_coda"]["temperature"]
    out = model.explain(np.full((1, 32, 32, 3), 0.5, "float32"))
    assert out["contributions"].shape == (1, 32, 32)
    with pytest.raises(ValueError, match="Unknown CoDA architecture"):
        CoDA.from_architecture("xl")



def test_symmetric_padding_is_the_papers():
    """S-CoDA pads 1 on both sides (PyTorch padding=1); TensorFlow's "same" pads (0, 1) at stride 2 on even sizes."""
    from glasszoo.layers.conv_padding import paddings

    assert paddings(28, 28, 3, 2, "symmetric") == ((1, 1), (1, 1))
    assert paddings(28, 28, 3, 2, "same") == ((0, 1), (0, 1))
    layer = DAUConv2D(4, 3, 2, strides=2, padding="symmetric")
    assert layer(np.zeros((1, 32, 32, 6), "float32")).shape == (1, 16, 16, 4)
    paper = CoDA.from_architecture("s_coda", num_classes=10, input_shape=(32, 32, 3))
    assert {layer.padding for layer in paper.dau_layers} == {"symmetric"}
    assert CoDA(num_classes=10).get_config()["padding"] == "same"  # the shipped preset's


def test_input_encoding_none_puts_no_evidence_on_black_pixels(rng):
    """With the image itself as input a black pixel contributes exactly 0; completeness still holds."""
    model = CoDA(num_classes=3, input_shape=(12, 12, 1), kernel_sizes=[3, 3], strides=[2, 1], filters=[4], ranks=[3, 3],
                 temperature=5.0, padding="symmetric", input_encoding="none")
    assert model.encoding.compute_output_shape((None, 12, 12, 1)) == (None, 12, 12, 1)
    images = rng.uniform(size=(4, 12, 12, 1)).astype("float32")
    images[:, :4] = 0.0  # a black band
    out = model.explain(images, target=1)
    assert np.all(out["contributions"][:, :4] == 0.0)
    total = out["contributions"].sum(axis=(1, 2)) / model.temperature + math.log(0.1 / 0.9)
    np.testing.assert_allclose(total, out["logits"][:, 1], rtol=1e-4, atol=1e-5)
    clone = CoDA.from_config(dict(model.get_config(), absent_evidence_weight=0.3))
    assert clone.get_config()["input_encoding"] == "none" and clone.absent_evidence_weight == 0.3
    # the paper's encoding gives the black band evidence of its own
    complement = CoDA(num_classes=3, input_shape=(12, 12, 1), kernel_sizes=[3, 3], strides=[2, 1], filters=[4], ranks=[3, 3])
    assert np.abs(complement.explain(images, target=1)["contributions"][:, :4]).max() > 0
    with pytest.raises(ValueError, match="input_encoding must be one of complement, none"):
        CoDA(num_classes=3, input_encoding="rgb")


@pytest.fixture(scope="module")
def softmax_coda():
    import keras

    keras.utils.set_random_seed(3)
    return CoDA(num_classes=10, input_shape=(28, 28, 1), kernel_sizes=[3, 3, 3], strides=[2, 2, 1], filters=[6, 8],
                ranks=[3, 4, 4], temperature=2.0, padding="symmetric", input_encoding="none",
                pooling="softmax", pooling_sharpness=0.05)


def test_softmax_pooling_keeps_the_contribution_map_exact(softmax_coda, samples):
    """Pooled by a softmax over positions, the map (its weights held fixed) still sums to the logit, for any class."""
    images = samples[0][:5]
    out = assert_map_sums_to_the_logit(softmax_coda, images, map_scale=softmax_coda.temperature)
    assert softmax_coda.self_check_errors(images, softmax_coda.explain(images)) == {}
    # the logit is the softmax-weighted mean of the class map over positions / T: between its mean and its maximum
    activations = softmax_coda.encoding(images)
    for layer in softmax_coda.dau_layers:
        activations = layer(activations)
    maps = ops.convert_to_numpy(activations).reshape(5, -1, 10).astype("float64")
    shares = np.exp((maps - maps.max(axis=1, keepdims=True)) / 0.05)
    shares /= shares.sum(axis=1, keepdims=True)
    pooled = out["logits"] - math.log(0.1 / 0.9)
    np.testing.assert_allclose(pooled, (shares * maps).sum(axis=1) / 2.0, rtol=1e-4, atol=1e-5)
    assert np.all(pooled >= maps.mean(axis=1) / 2.0 - 1e-6) and np.all(pooled <= maps.max(axis=1) / 2.0 + 1e-6)
    clone = CoDA.from_config(softmax_coda.get_config())
    assert (clone.pooling, clone.pooling_sharpness) == ("softmax", 0.05)
    with pytest.raises(ValueError, match="pooling must be one of sum, softmax"):
        CoDA(num_classes=3, pooling="max")


def test_softmax_pooled_coda_exports_with_every_output(softmax_coda, samples, tmp_path):
    assert_export_matches_keras(softmax_coda, samples[0][:3], tmp_path / "coda.onnx")


@pytest.mark.parametrize("pooling", ["sum", "softmax"])
def test_the_readout_head_is_the_last_layer_and_its_jacobian(samples, pooling):
    """Influence's view of the last DAU layer: the model's logits, and d logit / d weights by finite differences."""
    import keras

    keras.utils.set_random_seed(4)
    model = CoDA(num_classes=10, input_shape=(28, 28, 1), kernel_sizes=[3, 3], strides=[2, 2], filters=[4], ranks=[3, 3],
                 temperature=3.0, input_encoding="none", pooling=pooling, pooling_sharpness=0.5)
    images = samples[0][:4]
    head = model.readout_head(images)
    np.testing.assert_allclose(head.logits(head.parameters), ops.convert_to_numpy(model(images)), rtol=1e-4, atol=1e-4)
    features, offsets = head.expand(head.parameters)
    rng = np.random.default_rng(0)
    direction = rng.normal(size=head.parameters.shape)
    step = 1e-5
    numeric = (head.logits(head.parameters + step * direction) - head.logits(head.parameters - step * direction)) / (2 * step)
    np.testing.assert_allclose(np.einsum("bfk,fk->bk", features, direction), numeric, rtol=1e-4, atol=1e-6)
