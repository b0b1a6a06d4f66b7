import keras
import numpy as np
import pytest
from glasszoo.zoo.inam.model import EXPLANATION_OUTPUTS, INAM, RESPONSE_FLOOR


def naive_decision_images(model, explanation):
    """Seed 000's definition, one kernel at a time, in NumPy."""
    kernel = model.conv.kernel.numpy()
    n = kernel.shape[0]
    half = n // 2
    batch, features, classes = explanation["contributions"].shape
    height, width, channels = model.image_shape
    out = np.zeros((batch, classes, height + 2 * half, width + 2 * half, channels), "float32")
    for b in range(batch):
        for l in range(features):
            g = explanation["contributions"][b, l]
            t = int(np.argmax(g))
            row, col = explanation["max_locations"][b, l].astype(int)
            out[b, t, row : row + n, col : col + n] += g[t] * kernel[:, :, :, l]
    return out[:, :, half : half + height, half : half + width]


def test_explain_outputs_shapes_and_additivity(tiny_inam, samples):
    images = samples[0][:5]
    out = tiny_inam.explain(images)
    assert sorted(out) == sorted(EXPLANATION_OUTPUTS)
    assert out["logits"].shape == (5, 10)
    assert out["max_responses"].shape == (5, 12)
    assert out["max_locations"].shape == (5, 12, 2)
    assert out["contributions"].shape == (5, 12, 10)
    assert out["decision_images"].shape == (5, 10, 28, 28, 1)
    assert out["pixel_evidence"].shape == (5, 10, 28, 28, 1)
    np.testing.assert_allclose(out["contributions"].sum(1) + tiny_inam.head.bias.numpy(), out["logits"], atol=1e-4)
    np.testing.assert_allclose(tiny_inam.predict(images, verbose=0), out["logits"], atol=1e-4)


def test_decision_images_match_the_seed_definition(tiny_inam, samples):
    out = tiny_inam.explain(samples[0][:4])
    np.testing.assert_allclose(out["decision_images"], naive_decision_images(tiny_inam, out), atol=1e-5)


def naive_pixel_evidence(model, images, explanation):
    """Each kernel's evidence against the black image, spread over its window by kernel x pixel / response (NumPy loop)."""
    kernel = model.conv.kernel.numpy().astype("float64")
    n = kernel.shape[0]
    half = n // 2
    at_black = model.head(np.zeros((1, kernel.shape[-1]), "float32")).numpy()[0].astype("float64")  # (N, K)
    batch, features, classes = explanation["contributions"].shape
    height, width, channels = model.image_shape
    padded = np.pad(np.asarray(images, "float64"), ((0, 0), (half, half), (half, half), (0, 0)))
    out = np.zeros((batch, classes, height + 2 * half, width + 2 * half, channels))
    for b in range(batch):
        for l in range(features):
            evidence = explanation["contributions"][b, l].astype("float64") - at_black[l]
            t = int(np.argmax(evidence))
            row, col = explanation["max_locations"][b, l].astype(int)
            window = padded[b, row : row + n, col : col + n]
            response = explanation["max_responses"][b, l]
            response = max(response, RESPONSE_FLOOR) if response >= 0 else min(response, -RESPONSE_FLOOR)
            out[b, t, row : row + n, col : col + n] += evidence[t] * kernel[:, :, :, l] * window / response
    return out[:, :, half : half + height, half : half + width]


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_pixel_evidence_spreads_each_kernels_evidence_over_its_window(samples, padding):
    keras.utils.set_random_seed(3)
    model = INAM(num_classes=10, num_kernels=8, kernel_size=7, padding=padding, hidden_units=(8,))
    images = samples[0][:4]
    out = model.explain(images)
    assert out["pixel_evidence"].shape == (4, 10, 28, 28, 1)
    np.testing.assert_allclose(out["pixel_evidence"], naive_pixel_evidence(model, images, out), atol=1e-5)


def test_pixel_evidence_sums_to_the_evidence_of_the_kernels_placed_in_each_class(tiny_inam, samples):
    images = samples[0][:6]
    out = tiny_inam.explain(images)
    at_black = tiny_inam.head(np.zeros((1, 12), "float32")).numpy()[0]
    evidence = out["contributions"] - at_black[None]  # (B, N, K)
    owner = evidence.argmax(-1)
    responses = out["max_responses"]
    evidence = evidence * (np.abs(responses) / np.maximum(np.abs(responses), RESPONSE_FLOOR))[..., None]  # a weak response's share
    expected = np.stack([np.where(owner == k, evidence[..., k], 0.0).sum(1) for k in range(10)], axis=1)
    np.testing.assert_allclose(out["pixel_evidence"].sum((2, 3, 4)), expected, atol=1e-4)
    # what the black image scores is the rest of each logit: logit = bias + sum_l g~(0) + sum_l d_l
    unscaled = out["contributions"] - at_black[None]
    np.testing.assert_allclose(at_black.sum(0) + unscaled.sum(1) + tiny_inam.head.bias.numpy(), out["logits"], atol=1e-4)
    # the map is zero wherever the image is black
    dark = images[..., 0] == 0
    assert np.all(out["pixel_evidence"][:, :, :, :, 0][np.broadcast_to(dark[:, None], (6, 10, 28, 28))] == 0)
    np.testing.assert_allclose(tiny_inam.attribution_map(images, targets=3), out["pixel_evidence"][:, 3, ..., 0], atol=1e-6)


def test_max_locations_point_at_the_responses(tiny_inam, samples):
    images = samples[0][:3]
    maps = tiny_inam.conv(images).numpy()
    out = tiny_inam.explain(images)
    rows, cols = out["max_locations"][..., 0].astype(int), out["max_locations"][..., 1].astype(int)
    for b in range(3):
        np.testing.assert_allclose(maps[b, rows[b], cols[b], np.arange(12)], out["max_responses"][b], rtol=1e-6)


def test_valid_padding_decision_images(samples):
    model = INAM(num_classes=10, num_kernels=6, kernel_size=7, padding="valid")
    out = model.explain(samples[0][:3])
    assert out["max_locations"].min() >= 3 and out["max_locations"].max() <= 24
    np.testing.assert_allclose(out["decision_images"], naive_decision_images(model, out), atol=1e-5)


def test_training_loss_is_cross_entropy_plus_both_penalties(tiny_inam, samples):
    from tests.test_layers import numpy_ortho, numpy_tv

    images, labels, _ = samples
    kernel = tiny_inam.conv.kernel.numpy()
    logits = tiny_inam.predict(images, verbose=0).astype("float64")
    shifted = logits - logits.max(1, keepdims=True)
    cross_entropy = -(shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))[np.arange(len(labels)), labels].mean()
    expected = cross_entropy + 0.01 * numpy_tv(kernel) + 0.02 * numpy_ortho(kernel)
    assert tiny_inam.evaluate(images, labels, batch_size=len(images), verbose=0)[0] == pytest.approx(expected, rel=1e-4)


def test_fit_on_real_data_raises_accuracy_and_centres():
    from glasszoo.data import load_mnist_5k

    data = load_mnist_5k()
    x, y = data.x_train[:2000], data.y_train[:2000]
    x_val, y_val = data.x_train[2000:2600], data.y_train[2000:2600]
    keras.utils.set_random_seed(1)
    model = INAM(num_classes=10, num_kernels=32, kernel_size=9, tv_weight=0.01, ortho_weight=0.01)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = model.evaluate(x_val, y_val, verbose=0)[1]
    model.fit(x, y, epochs=3, batch_size=64, verbose=0, center=False)
    logits_before_centring = model.predict(x_val, verbose=0)
    assert not np.any(model.head.feature_means.numpy())
    model.center_head(x)
    after = model.evaluate(x_val, y_val, verbose=0)[1]
    assert after > max(0.7, before + 0.4), (before, after)
    np.testing.assert_allclose(model.predict(x_val, verbose=0), logits_before_centring, atol=1e-3)
    assert np.abs(model.head.feature_means.numpy()).sum() > 0


def test_fit_centres_by_default(samples):
    images, labels, _ = samples
    model = INAM(num_classes=10, num_kernels=4, kernel_size=3)
    model.compile()
    model.fit(images, labels, epochs=1, batch_size=20, verbose=0)
    raw = keras.ops.convert_to_numpy(model.head.shape_functions(model.feature_values(images)))
    np.testing.assert_allclose(model.head.feature_means.numpy(), raw.mean(axis=0), atol=1e-5)


def test_keras_file_round_trip(tiny_inam, samples, tmp_path):
    images = samples[0][:4]
    tiny_inam.fit(samples[0], samples[1], epochs=1, batch_size=20, verbose=0, center=False)
    tiny_inam.head.set_feature_means(np.random.default_rng(0).normal(size=(12, 10)))
    path = tmp_path / "inam.keras"
    tiny_inam.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, INAM)
    a, b = tiny_inam.explain(images), restored.explain(images)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert restored.get_config() == tiny_inam.get_config()


def test_fit_on_a_dataset_centres_and_a_one_shot_generator_warns(samples):
    import tensorflow as tf

    images, labels, _ = samples
    model = INAM(num_classes=10, num_kernels=4, kernel_size=3)
    model.compile()
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    model.fit(dataset, epochs=1, verbose=0)
    raw = keras.ops.convert_to_numpy(model.head.shape_functions(model.feature_values(images)))
    np.testing.assert_allclose(model.head.feature_means.numpy(), raw.mean(axis=0), atol=1e-5)

    def one_shot():
        for start in range(0, 40, 20):
            yield images[start : start + 20], labels[start : start + 20]

    with pytest.warns(UserWarning, match="center_head"):
        model.fit(one_shot(), epochs=1, steps_per_epoch=2, verbose=0)
    endless = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16).repeat()
    model.head.set_feature_means(np.zeros((4, 10)))
    model.fit(endless, epochs=1, steps_per_epoch=2, verbose=0)  # centring reads 2 batches and stops
    raw = keras.ops.convert_to_numpy(model.head.shape_functions(model.feature_values(images[:32])))
    np.testing.assert_allclose(model.head.feature_means.numpy(), raw.mean(axis=0), atol=1e-5)
