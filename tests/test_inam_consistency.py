import numpy as np
from glasszoo.zoo.inam.consistency import decision_image_consistency, positive_scaled


def test_positive_scaled():
    images = np.array([[[[-2.0], [1.0]], [[4.0], [0.0]]], [[[-1.0], [-3.0]], [[0.0], [-0.5]]]], "float32")
    out = positive_scaled(images)
    np.testing.assert_allclose(out[0, ..., 0], [[0.0, 0.25], [1.0, 0.0]])
    np.testing.assert_array_equal(out[1], 0.0)


class ConstructedModel:
    """Predicts the brighter half; the decision image is the input or its mirror."""

    def __init__(self, mirror):
        self.mirror = mirror

    def explain(self, images, batch_size=32):
        left = images[:, :, :2].sum(axis=(1, 2, 3))
        right = images[:, :, 2:].sum(axis=(1, 2, 3))
        logits = np.stack([left, right], axis=-1)
        shown = images[:, :, ::-1] if self.mirror else images
        return {"logits": logits, "decision_images": np.stack([shown, shown], axis=1)}


def test_consistency_on_constructed_models():
    rng = np.random.default_rng(0)
    images = rng.random((10, 4, 4, 1)).astype("float32") * 0.1
    images[:5, :, :2] += 0.8
    images[5:, :, 2:] += 0.8
    assert decision_image_consistency(ConstructedModel(mirror=False), images)["consistency"] == 1.0
    result = decision_image_consistency(ConstructedModel(mirror=True), images, batch_size=3)
    assert result["consistency"] == 0.0 and result["count"] == 10
    np.testing.assert_array_equal(result["predicted"], [0] * 5 + [1] * 5)
