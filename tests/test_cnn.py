"""The black-box baseline: a GAP CNN whose CAM is exported with its logits."""

import glasszoo
import numpy as np
import pytest
from glasszoo.explain.posthoc import cam
from glasszoo.zoo.cnn.model import GapCNN
from glasszoo.zoo.presets import write_preset


@pytest.fixture
def tiny_cnn(samples):
    import keras

    keras.utils.set_random_seed(3)
    model = GapCNN(num_classes=10, input_shape=(28, 28, 1), filters=(6, 8))
    model.compile()
    model.fit(samples[0], samples[1], epochs=2, batch_size=20, verbose=0)
    return model


def as_graph_model(model):
    """The same network as a plain functional Keras model (what `posthoc.cam` reads)."""
    import keras

    pooled = keras.layers.GlobalAveragePooling2D()(model.features.output)
    return keras.Model(model.features.input, model.classifier(pooled))


def test_exported_cam_equals_the_post_hoc_cam(tiny_cnn, samples):
    images = samples[0][:5]
    out = tiny_cnn.explain(images)
    assert out["class_activation_map"].shape == (5, 28, 28)
    graph = as_graph_model(tiny_cnn)
    np.testing.assert_allclose(out["class_activation_map"], cam(graph, images), atol=1e-5)
    small = cam(graph, images, upsample=False)
    bias = tiny_cnn.classifier.bias.numpy()
    predicted = out["logits"].argmax(-1)
    np.testing.assert_allclose(small.mean(axis=(1, 2)), out["logits"][np.arange(5), predicted] - bias[predicted], atol=1e-4)


def test_preset_round_trip_and_new_classes(tiny_cnn, samples, tmp_path):
    weights = tmp_path / "cnn.weights.h5"
    tiny_cnn.save_weights(weights)
    folder = write_preset(tmp_path / "tiny_cnn", "cnn", tiny_cnn.get_config(), weights, {"name": "tiny_cnn"})
    loaded = glasszoo.load(folder)
    np.testing.assert_allclose(loaded.predict(samples[0][:3], verbose=0), tiny_cnn.predict(samples[0][:3], verbose=0), atol=1e-5)
    fine = glasszoo.load(folder, num_classes=4)
    conv = fine.features.get_layer("conv_1_1")
    np.testing.assert_array_equal(conv.kernel.numpy(), tiny_cnn.features.get_layer("conv_1_1").kernel.numpy())
    assert fine.classifier.kernel.shape == (8, 4)


def test_bad_arguments(tiny_cnn):
    with pytest.raises(ValueError, match="filters"):
        GapCNN(filters=())
    with pytest.raises(ValueError, match="channels"):
        tiny_cnn.explain(np.zeros((1, 28, 28, 3), "float32"))
