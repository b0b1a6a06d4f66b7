"""The black-box baseline: a plain CNN ending in global average pooling, so CAM applies."""

import keras
from glasszoo.zoo.coda import first_max_one_hot
from glasszoo.zoo.model_api import ZooModelMethods
from keras import layers, ops

EXPLANATION_OUTPUTS = {
    "logits": "(B, K) class scores (softmax)",
    "class_activation_map": "(B, H, W) CAM of the predicted class (Zhou et al. 2016), bilinearly upsampled to the input; its mean at feature resolution is logit - bias",
}


@keras.saving.register_keras_serializable(package="glasszoo")
class GapCNN(ZooModelMethods, keras.Model):
    """A plain convolutional classifier: the black box the interpretable models are compared with.

    Stages of two `3x3 Conv -> BatchNorm -> ReLU` blocks, 2x2 max-pooling
    between stages, global average pooling, dropout and one linear `Dense`
    layer. Because the logits are a linear map of the pooled last feature map,
    the class activation map (CAM) is an exact forward-only explanation and
    is exported to ONNX with the logits; gradient methods (Grad-CAM,
    Integrated Gradients, ...) run in Keras through
    `glasszoo.explain.posthoc`. It is a functional model, so any Keras tool
    that walks layers works on it.

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

    def __init__(self, num_classes=10, input_shape=(28, 28, 1), filters=(32, 64, 128), dropout=0.3, class_names=None, name=None, **kwargs):
        num_classes, input_shape = int(num_classes), tuple(int(s) for s in input_shape)
        filters = [int(f) for f in filters]
        if not filters:
            raise ValueError("filters needs at least one stage.")
        images = keras.Input(input_shape, name="image")
        x = images
        for stage, width in enumerate(filters):
            if stage:
                x = layers.MaxPooling2D(2, name=f"pool_{stage}")(x)
            for block in range(2):
                x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv_{stage}_{block}")(x)
                x = layers.BatchNormalization(name=f"bn_{stage}_{block}")(x)
                x = layers.ReLU(name=f"relu_{stage}_{block}")(x)
        pooled = layers.GlobalAveragePooling2D(name="global_average")(x)
        pooled = layers.Dropout(float(dropout), name="dropout")(pooled)
        logits = layers.Dense(num_classes, name="classifier")(pooled)
        super().__init__(images, logits, name=name or "gap_cnn", **kwargs)
        self.num_classes, self.image_shape, self.filters, self.dropout = num_classes, input_shape, filters, float(dropout)
        self.class_names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for {num_classes} classes.")

    def feature_maps_and_logits(self, images):
        """`(last feature map (B, h, w, c), logits)` in one inference pass."""
        maps = images
        for layer in self.layers[1:]:
            if isinstance(layer, layers.GlobalAveragePooling2D):
                break
            maps = layer(maps, training=False) if isinstance(layer, layers.BatchNormalization) else layer(maps)
        classifier = self.get_layer("classifier")
        return maps, classifier(ops.mean(maps, axis=(1, 2)))

    def explanation_graph(self, images):
        """Logits and the CAM of the predicted class, forward ops only (exports)."""
        maps, logits = self.feature_maps_and_logits(images)
        selection = first_max_one_hot(logits)
        weights = ops.matmul(selection, ops.transpose(self.get_layer("classifier").kernel))  # (B, c)
        cam = ops.sum(maps * weights[:, None, None, :], axis=-1, keepdims=True)
        height, width = self.image_shape[:2]
        upsampled = ops.image.resize(cam, (height, width), interpolation="bilinear")
        return {"logits": logits, "class_activation_map": upsampled[..., 0]}

    def explain(self, images, batch_size=64):
        """Logits and the CAM of the predicted class as NumPy arrays (see `EXPLANATION_OUTPUTS`)."""
        return self.explain_in_batches(images, batch_size)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Keras `compile` with defaults: Adam, sparse softmax cross-entropy on logits, accuracy."""
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True) if loss is None else loss
        super().compile(optimizer=optimizer, loss=loss, metrics=["accuracy"] if metrics is None else metrics, **kwargs)

    def transfer_weights_from(self, source):
        """Copies every layer whose weights fit (a new class count re-initialises the classifier)."""
        for target_layer in self.layers:
            try:
                source_layer = source.get_layer(target_layer.name)
            except ValueError:
                continue
            if [w.shape for w in target_layer.weights] == [w.shape for w in source_layer.weights]:
                target_layer.set_weights(source_layer.get_weights())

    def get_config(self):
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_shape": list(self.image_shape),
            "filters": list(self.filters),
            "dropout": self.dropout,
            "class_names": list(self.class_names),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
