import keras
import numpy as np
import pytest
from glasszoo.explain.posthoc import (
    METHODS,
    attribute,
    cam,
    grad_cam,
    input_x_gradient,
    integrated_gradients,
    occlusion,
    predict_logits,
    saliency,
)


def linear_model(shape=(28, 28, 1), classes=10, seed=0):
    """`logits = flatten(x) @ W` (no bias), with its weights `(H, W, C, K)`."""
    inputs = keras.Input(shape)
    dense = keras.layers.Dense(classes, use_bias=False)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    weights = np.random.default_rng(seed).normal(size=shape + (classes,)).astype("float32")
    dense.kernel.assign(weights.reshape(-1, classes))
    return model, weights


@pytest.fixture(scope="module")
def gap_cnn(samples):
    """Conv(stride 2)-ReLU-Conv-ReLU-GAP-Dense, briefly fitted on the samples; feature map 14 x 14 x 12."""
    images, labels, _ = samples
    keras.utils.set_random_seed(3)
    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    hidden = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="last_conv")(hidden)
    logits = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(hidden))
    model = keras.Model(inputs, logits)
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, epochs=6, batch_size=8, verbose=0)
    return model


class ProtocolCNN(keras.Model):
    """A subclassed model exposing `feature_maps_and_logits` (the zoo protocol) over a graph CNN's layers."""

    def __init__(self, graph_model):
        super().__init__()
        self.body = keras.Model(graph_model.inputs, graph_model.get_layer("last_conv").output)
        self.pool, self.dense = graph_model.layers[-2], graph_model.layers[-1]

    def feature_maps_and_logits(self, images):
        feature_map = self.body(images)
        return feature_map, self.dense(self.pool(feature_map))

    def call(self, images):
        return self.feature_maps_and_logits(images)[1]


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.flatten, self.dense = keras.layers.Flatten(), keras.layers.Dense(10)

    def call(self, images):
        return self.dense(self.flatten(images))


# -- known answers on linear models ---------------------------------------------------------
def test_gradient_methods_on_a_linear_model_are_exact(samples):
    images, labels, _ = samples
    model, weights = linear_model()
    targets = labels[:6]
    expected = (images[:6] * np.moveaxis(weights[..., targets], -1, 0)).sum(axis=-1)  # x * w_t
    np.testing.assert_allclose(input_x_gradient(model, images[:6], targets, batch_size=4), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(integrated_gradients(model, images[:6], targets, steps=3), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(saliency(model, images[:6], targets), np.abs(weights[..., 0, targets]).transpose(2, 0, 1))
    shifted = integrated_gradients(model, images[:6], targets, steps=2, baseline=0.5)
    np.testing.assert_allclose(shifted, ((images[:6] - 0.5) * np.moveaxis(weights[..., targets], -1, 0)).sum(-1), atol=1e-5)


def test_channels_are_reduced_by_max_abs_and_sum():
    model, weights = linear_model(shape=(5, 6, 3), classes=4)
    images = np.random.default_rng(1).random((3, 5, 6, 3)).astype("float32")
    np.testing.assert_allclose(saliency(model, images, targets=2), np.broadcast_to(np.abs(weights[..., 2]).max(-1), (3, 5, 6)))
    np.testing.assert_allclose(input_x_gradient(model, images, 2), (images * weights[..., 2]).sum(-1), rtol=1e-5, atol=1e-6)


def test_occlusion_on_a_linear_model_equals_the_analytic_drop(samples):
    images = samples[0][:3]
    model, weights = linear_model()
    share = images[..., 0] * weights[..., 0, 4]  # each pixel's part of logit 4
    # one pixel per patch: the drop is the pixel's share
    np.testing.assert_allclose(occlusion(model, images, 4, patch=1, stride=1, batch_size=200), share, rtol=1e-4, atol=1e-4)
    # 2 x 2 tiles: every pixel gets the sum of its tile
    tiles = share.reshape(3, 14, 2, 14, 2).sum(axis=(2, 4))
    np.testing.assert_allclose(occlusion(model, images, 4, patch=2, stride=2), np.kron(tiles, np.ones((2, 2))), atol=1e-4)
    # overlapping patches with a grey baseline: the mean drop over the patches covering each pixel, by definition
    small_model, small_weights = linear_model(shape=(7, 7, 1), classes=3)
    image = np.random.default_rng(2).random((1, 7, 7, 1)).astype("float32")
    drop = (image[0, ..., 0] - 0.5) * small_weights[..., 0, 1]
    total, count = np.zeros((7, 7)), np.zeros((7, 7))
    for top in (0, 2, 4):  # patch 3, stride 2 on 7 pixels: 0, 2, 4 reach the border
        for left in (0, 2, 4):
            total[top : top + 3, left : left + 3] += drop[top : top + 3, left : left + 3].sum()
            count[top : top + 3, left : left + 3] += 1
    np.testing.assert_allclose(occlusion(small_model, image, 1, patch=3, stride=2, baseline=0.5)[0], total / count, atol=1e-5)



def test_occlusion_of_one_image_for_several_targets_shares_its_passes(samples):
    """A localisation grid is explained once per cell: the same image with other targets. The shared passes give
    exactly what one call per target gives."""
    model, weights = linear_model()
    image = samples[0][:1]
    repeated = np.concatenate([image, image, image, samples[0][1:2]])
    targets = np.array([4, 1, 7, 4])
    together = occlusion(model, repeated, targets, patch=4, stride=2)
    for row, target in enumerate(targets):
        alone = occlusion(model, repeated[row : row + 1], int(target), patch=4, stride=2)[0]
        np.testing.assert_allclose(together[row], alone, atol=1e-4)  # float32 sums in other batches
    assert not np.allclose(together[0], together[1])

# -- the small CNN ------------------------------------------------------------------------
def test_integrated_gradients_completeness(gap_cnn, samples):
    images = samples[0][::5]  # 8 images, one per class pair
    maps = integrated_gradients(gap_cnn, images, steps=64, batch_size=65)
    logits = predict_logits(gap_cnn, images)
    targets = logits.argmax(-1)
    rows = np.arange(len(images))
    change = logits[rows, targets] - predict_logits(gap_cnn, np.zeros_like(images))[rows, targets]
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), change, rtol=0.03, atol=0.01 * np.abs(change).max())


def test_cam_is_grad_cam_up_to_scale_on_gap_dense(gap_cnn, samples):
    images, labels, _ = samples
    class_maps = cam(gap_cnn, images[:8], labels[:8], upsample=False)
    gradient_maps = grad_cam(gap_cnn, images[:8], labels[:8], upsample=False)
    assert class_maps.shape == gradient_maps.shape == (8, 14, 14)
    np.testing.assert_allclose(gradient_maps * 14 * 14, np.maximum(class_maps, 0), rtol=1e-4, atol=1e-5)
    # the mean of CAM over the feature map is the logit without its bias
    bias = keras.ops.convert_to_numpy(gap_cnn.layers[-1].bias)[labels[:8]]
    logits = predict_logits(gap_cnn, images[:8])[np.arange(8), labels[:8]]
    np.testing.assert_allclose(class_maps.mean(axis=(1, 2)), logits - bias, rtol=1e-4, atol=1e-5)


def test_grad_cam_through_the_protocol_and_by_layer_name(gap_cnn, samples):
    images = samples[0][:4]
    reference = grad_cam(gap_cnn, images, targets=2)
    np.testing.assert_allclose(grad_cam(ProtocolCNN(gap_cnn), images, targets=2), reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_cam(gap_cnn, images, targets=2, layer="last_conv"), reference)
    first = grad_cam(gap_cnn, images, targets=2, layer=gap_cnn.layers[1].name, upsample=False)
    assert first.shape == (4, 14, 14) and first.min() >= 0


@pytest.mark.parametrize("method", sorted(METHODS))
def test_shapes_for_every_target_form(gap_cnn, samples, method):
    images = samples[0][:3]
    options = {"steps": 4} if method == "integrated_gradients" else {"patch": 7, "stride": 7} if method == "occlusion" else {}
    for targets in (None, 5, np.array([0, 1, 9])):
        maps = attribute(method, gap_cnn, images, targets=targets, batch_size=2, **options)
        assert maps.shape == (3, 28, 28) and maps.dtype == np.float32 and np.all(np.isfinite(maps))
    predicted = predict_logits(gap_cnn, images).argmax(-1)
    np.testing.assert_array_equal(attribute(method, gap_cnn, images, **options), attribute(method, gap_cnn, images, predicted, **options))


def test_zoo_models_get_gradient_maps_and_grad_cam_through_the_protocol(tiny_inam, tiny_coda, samples):
    images = samples[0][:2]
    for model in (tiny_inam, tiny_coda):
        maps = integrated_gradients(model, images, targets=1, steps=4)
        assert maps.shape == (2, 28, 28) and np.all(np.isfinite(maps))
        cams = grad_cam(model, images, targets=[1, 2])
        assert cams.shape == (2, 28, 28) and cams.min() >= 0
    with pytest.raises(ValueError, match="not a graph model"):
        cam(tiny_inam, images)
    with pytest.raises(ValueError, match="height is 32"):
        saliency(tiny_coda, np.zeros((1, 32, 28, 1), "float32"))


# -- errors -------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(gap_cnn, samples):
    images = samples[0][:2]
    with pytest.raises(ValueError, match="rank 4"):
        saliency(gap_cnn, images[0])
    with pytest.raises(ValueError, match="height is 20"):
        saliency(gap_cnn, np.zeros((2, 20, 28, 1), "float32"))
    with pytest.raises(ValueError, match="empty batch"):
        saliency(gap_cnn, images[:0])
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\)"):
        input_x_gradient(gap_cnn, images, targets=10)
    with pytest.raises(ValueError, match="one int per image"):
        input_x_gradient(gap_cnn, images, targets=[1, 2, 3])
    with pytest.raises(ValueError, match="dtype float"):
        input_x_gradient(gap_cnn, images, targets=1.0)
    with pytest.raises(ValueError, match="baseline"):
        integrated_gradients(gap_cnn, images, baseline=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="patch"):
        occlusion(gap_cnn, images, patch=40)
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients(gap_cnn, images, steps=0)
    with pytest.raises(ValueError, match="Unknown attribution method 'lime'"):
        attribute("lime", gap_cnn, images)


def test_models_without_the_needed_structure_are_refused(gap_cnn, samples):
    images = samples[0][:2]
    flat, _ = linear_model()
    with pytest.raises(ValueError, match="no layer with a 4-D"):
        grad_cam(flat, images)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        grad_cam(gap_cnn, images, layer="nope")
    with pytest.raises(ValueError, match="feature_maps_and_logits"):
        grad_cam(Subclassed(), images)
    with pytest.raises(ValueError, match="fed by Flatten, not by GlobalAveragePooling2D"):
        cam(flat, images)
    with pytest.raises(ValueError, match="not a graph model"):
        cam(ProtocolCNN(gap_cnn), images)
    inputs = keras.Input((28, 28, 1))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    softmax = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(features))
    with pytest.raises(ValueError, match="applies softmax"):
        cam(softmax, images)
    with pytest.raises(ValueError, match=r"returning logits \(B, K\)"):
        saliency(keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs)), images)
