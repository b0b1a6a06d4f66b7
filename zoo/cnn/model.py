"""The black-box baseline: a plain CNN ending in global average pooling, so CAM applies."""

import keras
import numpy as np
from glasszoo.zoo.base import ZooModel, class_selection
from keras import layers, ops

EXPLANATION_OUTPUTS = {
    "logits": "(B, K) class scores (softmax)",
    "class_activation_map": "(B, H, W) CAM of the explained class (Zhou et al. 2016), bilinearly upsampled to the input; its mean at feature resolution is logit - bias",
}


def feature_network(input_shape, filters, name="features"):
    """Stages of two `3x3 Conv -> BatchNorm -> ReLU` blocks with 2x2 max-pooling between stages (a functional model)."""
    images = keras.Input(input_shape, name="image")
    x = images
    for stage, width in enumerate(filters):
        if stage:
            x = layers.MaxPooling2D(2, name=f"pool_{stage}")(x)
        for block in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv_{stage}_{block}")(x)
            x = layers.BatchNormalization(name=f"bn_{stage}_{block}")(x)
            x = layers.ReLU(name=f"relu_{stage}_{block}")(x)
    return keras.Model(images, x, name=name)


@keras.saving.register_keras_serializable(package="glasszoo")
class GapCNN(ZooModel):
    """A plain convolutional classifier: the black box the interpretable models are compared with.

    Stages of two `3x3 Conv -> BatchNorm -> ReLU` blocks (the functional
    model `features`), 2x2 max-pooling between stages, global average
    pooling, dropout and one linear `Dense` layer (`classifier`). Because
    the logits are a linear map of the pooled last feature map, the class
    activation map (CAM) is an exact forward-only explanation and is exported
    to ONNX with the logits; gradient methods (Grad-CAM, Integrated
    Gradients, ...) run in Keras through `glasszoo.explain.posthoc`.

    Args:
        num_classes: int `K`.
        input_shape: `(H, W, C)` of float images in [0, 1].
        filters: channels of each stage.
        dropout: dropout rate before the classifier.
        class_names: optional `K` names.

    Example:
    >>> model = GapCNN(num_classes=10, input_shape=(28, 28, 1), filters=(8, 16))
    >>> model.explain(np.zeros((2, 28, 28, 1), "float32"))["class_activation_map"].shape
    (2, 28, 28)
    """

    family = "cnn"
    explanation_outputs = EXPLANATION_OUTPUTS
    attribution_output = "class_activation_map"

    def __init__(self, num_classes=10, input_shape=(28, 28, 1), filters=(32, 64, 128), dropout=0.3, class_names=None, **kwargs):
        kwargs.setdefault("name", "gap_cnn")
        super().__init__(num_classes=num_classes, input_shape=input_shape, class_names=class_names, **kwargs)
        self.filters = [int(f) for f in filters]
        if not self.filters:
            raise ValueError("filters needs at least one stage.")
        self.dropout = float(dropout)
        self.features = feature_network(self.image_shape, self.filters)
        self.pooling = layers.GlobalAveragePooling2D(name="global_average")
        self.dropout_layer = layers.Dropout(self.dropout, name="dropout")
        self.classifier = layers.Dense(self.num_classes, name="classifier")
        self.build((None,) + self.image_shape)

    def build(self, input_shape):
        self.classifier.build((None, self.filters[-1]))
        self.built = True

    def call(self, images, training=None):
        pooled = self.pooling(self.features(images, training=training))
        return self.classifier(self.dropout_layer(pooled, training=training))

    def linear_readout(self, images):
        """The classifier on the pooled features (dropout is the identity at inference)."""
        pooled = self.pooling(self.features(images, training=False))
        return {"features": pooled, "kernel": self.classifier.kernel, "bias": self.classifier.bias, "offset": None}

    def feature_maps_and_logits(self, images):
        """`(last feature map (B, h, w, c), logits)` in one inference pass."""
        maps = self.features(images, training=False)
        return maps, self.classifier(ops.mean(maps, axis=(1, 2)))

    def explanation_graph(self, images, target=None):
        """Logits and the CAM of the explained class (the predicted one when `target` is None), forward ops only."""
        maps, logits = self.feature_maps_and_logits(images)
        weights = ops.matmul(class_selection(logits, target), ops.transpose(self.classifier.kernel))  # (B, c)
        cam = ops.sum(maps * weights[:, None, None, :], axis=-1, keepdims=True)
        height, width = self.image_shape[:2]
        upsampled = ops.image.resize(cam, (height, width), interpolation="bilinear")
        return {"logits": logits, "class_activation_map": upsampled[..., 0]}

    def self_checks(self, images, explanation):
        """Adds: the CAM's mean at feature resolution = the explained logit - its bias."""
        checks = super().self_checks(images, explanation)
        maps, _ = self.feature_maps_and_logits(ops.convert_to_tensor(np.asarray(images, "float32").reshape((-1,) + self.image_shape)))
        maps = ops.convert_to_numpy(maps).astype("float64")
        kernel = ops.convert_to_numpy(self.classifier.kernel).astype("float64")
        bias = ops.convert_to_numpy(self.classifier.bias).astype("float64")
        predicted = explanation["logits"].argmax(-1)
        cam_mean = np.einsum("bhwc,cb->b", maps, kernel[:, predicted]) / (maps.shape[1] * maps.shape[2])
        explained = explanation["logits"][np.arange(len(predicted)), predicted]
        checks["CAM mean = logit - bias"] = float(np.max(np.abs(cam_mean + bias[predicted] - explained)))
        return checks

    def get_config(self):
        config = super().get_config()
        config.update(filters=list(self.filters), dropout=self.dropout)
        return config
