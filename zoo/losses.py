"""Losses shared by zoo families."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="glasszoo")
class OneHotBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy of every class logit against one-hot targets (the CoDA loss, seed 002).

    Integer labels `(B,)` (or `(B, 1)`) are one-hot encoded; targets that are
    already `(B, K)` are used as given. The mean runs over classes and images,
    like `keras.losses.BinaryCrossentropy(from_logits=True)`.

    Args:
        num_classes: int `K`.

    Example:
    >>> loss = OneHotBinaryCrossentropy(num_classes=3)
    >>> float(loss(keras.ops.array([2]), keras.ops.zeros((1, 3))))  # log 2
    0.6931...
    """

    def __init__(self, num_classes, name="one_hot_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)

    def call(self, y_true, y_pred):
        if len(y_true.shape) == 2 and y_true.shape[-1] == self.num_classes and self.num_classes > 1:
            targets = ops.cast(y_true, y_pred.dtype)
        else:
            targets = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.num_classes, dtype=y_pred.dtype)
        # log(1 + exp(-|x|)) form of sigmoid cross-entropy, stable for large logits
        losses = ops.maximum(y_pred, 0.0) - y_pred * targets + ops.log1p(ops.exp(-ops.abs(y_pred)))
        return ops.mean(losses, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config
