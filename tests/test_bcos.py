"""B-cos networks (Böhle et al. 2022): the layer's transform and its exact explanation pass, the model's completeness."""

import glasszoo
import numpy as np
import pytest
import tensorflow as tf
from glasszoo.layers import BcosConv2D
from glasszoo.layers.conv_padding import pad
from glasszoo.layers.temperature_head import PRIOR_BIAS
from glasszoo.zoo.bcos.model import BcosNet
from glasszoo.zoo.bcos.views import linear_map_rgba
from keras import ops
from dynamic_linear_checks import assert_export_matches_keras, assert_map_sums_to_the_logit

LAYERS = [
    dict(b=2.0, max_out=2, strides=1, padding="symmetric"),
    dict(b=2.5, max_out=2, strides=2, padding="symmetric"),
    dict(b=1.0, max_out=1, strides=2, padding="same"),
    dict(b=1.75, max_out=3, strides=2, padding="valid"),
]


@pytest.mark.parametrize("options", LAYERS, ids=lambda o: f"B{o['b']}-m{o['max_out']}-s{o['strides']}-{o['padding']}")
def test_explanation_pass_is_the_gradient_with_the_dynamic_factors_detached(rng, options):
    layer = BcosConv2D(5, 3, **options)
    x = tf.constant(rng.uniform(size=(2, 9, 8, 3)).astype("float32"))
    state = layer.dynamic_state(x)
    relevance = tf.constant(rng.normal(size=state["outputs"].shape).astype("float32"))
    explained = layer.explain_backward(state, relevance, x.shape)
    with tf.GradientTape() as tape:
        tape.watch(x)
        linear = ops.conv(pad(x, *layer._paddings(9, 8)), layer.unit_kernel(), strides=options["strides"], padding="valid")
        units = tf.reshape(linear, tuple(linear.shape[:3]) + (5, options["max_out"]))
        selected = tf.reduce_sum(units * tf.stop_gradient(state["winner"]), axis=-1)
        total = tf.reduce_sum(relevance * selected * tf.stop_gradient(state["factor"]))
    np.testing.assert_allclose(explained.numpy(), tape.gradient(total, x).numpy(), atol=1e-5)
    np.testing.assert_allclose(float(tf.reduce_sum(explained * x)), float(tf.reduce_sum(relevance * state["outputs"])), rtol=1e-4)


def test_the_transform_is_cosine_weighted_and_bounded(rng):
    x = rng.uniform(size=(1, 5, 5, 2)).astype("float32")
    linear = BcosConv2D(4, 5, padding="valid", b=1.0, max_out=1)
    bcos = BcosConv2D(4, 5, padding="valid", b=2.0, max_out=1)
    bcos.build(x.shape)
    linear.build(x.shape)
    linear.kernel.assign(bcos.kernel)
    patch_norm = np.sqrt((x**2).sum())
    plain = ops.convert_to_numpy(linear(x))[0, 0, 0] * linear.scale  # ŵᵀp = |p| cos
    cosine = plain / patch_norm
    np.testing.assert_allclose(ops.convert_to_numpy(bcos(x))[0, 0, 0] * bcos.scale, plain * (np.abs(cosine) + 1e-6), rtol=1e-4)
    assert np.all(np.abs(ops.convert_to_numpy(bcos(x))) * bcos.scale <= patch_norm + 1e-5)  # |out| s <= |p|
    with pytest.raises(ValueError, match="b must be at least 1"):
        BcosConv2D(4, 3, b=0.5)
    with pytest.raises(ValueError, match="padding must be one of"):
        BcosConv2D(4, 3, padding="reflect")


@pytest.fixture(scope="module")
def tiny():
    import keras

    keras.utils.set_random_seed(0)
    return BcosNet(filters=[6, 8], kernel_sizes=[3, 3, 1], strides=[1, 2, 1], temperature=10.0)


def test_logit_is_the_sum_of_the_contribution_map_for_any_class(tiny, samples):
    images = samples[0][:5]
    for target in (None, 3, np.arange(5)):
        out = tiny.explain(images, target=target)
        classes = out["logits"].argmax(-1) if target is None else np.broadcast_to(target, (5,))
        np.testing.assert_allclose(out["contributions"].sum(axis=(1, 2)) + PRIOR_BIAS, out["logits"][np.arange(5), classes], rtol=1e-5, atol=1e-4)
        encoded = np.concatenate([images, 1.0 - images], axis=-1)
        np.testing.assert_allclose((encoded * out["linear_map"]).sum(-1), out["contributions"], atol=1e-5)


def test_without_the_complement_encoding_black_pixels_contribute_nothing(samples):
    model = BcosNet(filters=[6], kernel_sizes=[3, 1], strides=[2, 1], input_encoding="none")
    images = samples[0][:4]
    out = model.explain(images)
    assert out["linear_map"].shape == (4, 28, 28, 1)
    assert np.all(out["contributions"][images[..., 0] == 0.0] == 0.0)
    with pytest.raises(ValueError, match="input_encoding"):
        BcosNet(input_encoding="sobel")
    with pytest.raises(ValueError, match="one fewer"):
        BcosNet(filters=[4, 4], kernel_sizes=[3, 1], strides=[1, 1])


def test_rgb_linear_map_rendering(rng):
    weights = rng.normal(size=(6, 7, 6))
    contributions = rng.normal(size=(6, 7))
    rendered = linear_map_rgba(weights, contributions)
    assert rendered.shape == (6, 7, 4) and rendered.min() >= 0.0 and rendered.max() <= 1.0
    assert np.all(rendered[..., 3][contributions <= 0] == 0.0)  # only evidence for the class is opaque


PRESETS = glasszoo.list_models("bcos_*")  # every shipped B-cos preset


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_complete_and_its_maps_lie_on_the_garment(samples, name):
    if name not in glasszoo.list_models():
        pytest.skip(f"{name} not shipped")
    model = glasszoo.load(name)
    images, labels, _ = samples
    out = model.explain(images)
    assert float((out["logits"].argmax(-1) == labels).mean()) >= 0.85
    assert model.self_check_errors(images, out) == {}
    if model.input_encoding == "none":
        positive = np.maximum(out["contributions"], 0.0)
        background = images[..., 0] < 0.02
        assert (positive * background).sum() / positive.sum() < 0.01  # the evidence is on the object


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_bcos_preset_reaches_its_card(fashion_mnist, name):
    if name not in glasszoo.list_models():
        pytest.skip(f"{name} not shipped")
    model = glasszoo.load(name)
    accuracy = float((model.predict_classes(fashion_mnist.x_test) == fashion_mnist.y_test).mean())
    assert accuracy == pytest.approx(model.preset_metadata["metrics"]["test_accuracy"], abs=2e-3)


@pytest.fixture(scope="module")
def softmax_pooled():
    import keras

    keras.utils.set_random_seed(1)
    return BcosNet(filters=[6, 8], kernel_sizes=[3, 3, 1], strides=[1, 2, 1], temperature=2.0, input_encoding="none",
                   pooling="softmax", pooling_sharpness=0.05)


def test_softmax_pooling_keeps_the_map_complete_for_any_class(softmax_pooled, samples):
    assert_map_sums_to_the_logit(softmax_pooled, samples[0][:5])
    with pytest.raises(ValueError, match="pooling must be one of"):
        BcosNet(pooling="max")


def test_softmax_pooling_follows_the_strongest_evidence(rng):
    from glasszoo.layers import SoftmaxEvidencePooling

    maps = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    sharp = ops.convert_to_numpy(SoftmaxEvidencePooling(temperature=2.0, sharpness=1e-3, bias=0.0)(maps))
    smooth = ops.convert_to_numpy(SoftmaxEvidencePooling(temperature=2.0, sharpness=1e4, bias=0.0)(maps))
    np.testing.assert_allclose(sharp, maps.max(axis=(1, 2)) / 2.0, rtol=1e-4)  # tau -> 0: the maximum
    np.testing.assert_allclose(smooth, maps.mean(axis=(1, 2)) / 2.0, atol=3e-4)  # tau -> inf: the mean
    tiled = np.tile(maps, (1, 3, 3, 1))  # the same evidence on a 3x larger image: the same logits (a weighted mean)
    np.testing.assert_allclose(ops.convert_to_numpy(SoftmaxEvidencePooling(2.0, 1.0)(tiled)), ops.convert_to_numpy(SoftmaxEvidencePooling(2.0, 1.0)(maps)), rtol=1e-5)
    with pytest.raises(ValueError, match="sharpness must be positive"):
        SoftmaxEvidencePooling(1.0, 0.0)


def test_softmax_pooled_model_exports_with_every_output(softmax_pooled, samples, tmp_path):
    assert_export_matches_keras(softmax_pooled, samples[0][:3], tmp_path / "bcos.onnx")
    again = BcosNet.from_config(softmax_pooled.get_config())
    assert (again.pooling, again.pooling_sharpness) == ("softmax", 0.05)


def class_maps(model, images):
    """The last B-cos layer's class maps `(B, h, w, K)`, before the pooling head."""
    maps = model.encoding(images)
    for layer in model.stack():
        maps = layer(maps)
    return maps


def test_absent_class_evidence_counts_positive_evidence_of_absent_classes_only(rng):
    from glasszoo.zoo.losses import absent_class_evidence

    contributions = rng.normal(size=(4, 3, 5, 6)).astype("float32")
    labels = np.array([0, 5, 2, 2])
    expected = np.mean([np.maximum(contributions[i, ..., [k for k in range(6) if k != labels[i]]], 0).sum() for i in range(4)]) / 5
    assert float(absent_class_evidence(ops.convert_to_tensor(contributions), labels, 6)) == pytest.approx(expected, rel=1e-5)
    one_hot = np.eye(6, dtype="float32")[labels]
    assert float(absent_class_evidence(ops.convert_to_tensor(contributions), one_hot, 6)) == pytest.approx(expected, rel=1e-5)
    only_present = np.where(one_hot[:, None, None, :] > 0, np.abs(contributions), -np.abs(contributions))
    assert float(absent_class_evidence(ops.convert_to_tensor(only_present), labels, 6)) == 0.0


@pytest.mark.parametrize("pooling", ["sum", "softmax"])
def test_absent_evidence_penalty_joins_the_training_loss_only(samples, pooling):
    import keras
    from glasszoo.zoo.losses import OneHotBinaryCrossentropy, absent_class_evidence

    keras.utils.set_random_seed(2)
    model = BcosNet(filters=[6], kernel_sizes=[3, 1], strides=[2, 1], temperature=2.0, input_encoding="none",
                    pooling=pooling, pooling_sharpness=0.5, absent_evidence_weight=0.7)
    model.compile()
    images, labels = samples[0][:6], samples[1][:6]
    logits = model(images, training=True)
    loss = float(model.compute_loss(x=images, y=labels, y_pred=logits))
    maps = class_maps(model, images)
    contributions = model.head.position_weights(maps) * maps
    expected = float(OneHotBinaryCrossentropy(10)(labels, logits)) + 0.7 * float(absent_class_evidence(contributions, labels, 10))
    assert loss == pytest.approx(expected, rel=1e-5)
    assert float(model.compute_loss(x=images, y=labels, y_pred=logits)) == pytest.approx(float(OneHotBinaryCrossentropy(10)(labels, logits)))  # read once
    inference = float(model.compute_loss(x=images, y=labels, y_pred=model(images)))  # no training step: no penalty
    assert inference == pytest.approx(float(OneHotBinaryCrossentropy(10)(labels, logits)), rel=1e-5)
    assert BcosNet.from_config(model.get_config()).absent_evidence_weight == 0.7
    with pytest.raises(ValueError, match="absent_evidence_weight"):
        BcosNet(absent_evidence_weight=-1.0)


def test_absent_evidence_penalty_removes_evidence_for_absent_classes(samples):
    import keras
    from glasszoo.zoo.losses import absent_class_evidence

    images, labels = samples[0][:32], samples[1][:32]

    def trained(weight):
        keras.utils.set_random_seed(3)
        model = BcosNet(filters=[8], kernel_sizes=[3, 1], strides=[2, 1], temperature=2.0, input_encoding="none", absent_evidence_weight=weight)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        model.fit(images, labels, epochs=30, batch_size=16, verbose=0)
        maps = class_maps(model, images)
        return float(absent_class_evidence(model.head.position_weights(maps) * maps, labels, 10))

    plain, penalised = trained(0.0), trained(1.0)
    assert penalised < 0.5 * plain, (penalised, plain)
