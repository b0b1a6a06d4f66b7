"""Losses shared by zoo families."""

import keras
from keras import ops


def class_targets(labels, num_classes, dtype="float32"):
    """`(B, K)` targets: integer labels `(B,)` or `(B, 1)` one-hot encoded, `(B, K)` targets used as given.

    Example:
    >>> class_targets(keras.ops.array([2, 0]), 3).shape
    (2, 3)
    """
    if len(labels.shape) == 2 and labels.shape[-1] == num_classes and num_classes > 1:
        return ops.cast(labels, dtype)
    return ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), num_classes, dtype=dtype)


def absent_class_evidence(contributions, labels, num_classes):
    """Mean positive evidence an absent class gets, summed over positions, in logit units.

    A model whose logit is a pooled sum of per-position evidence (a dynamic
    linear network's class maps times its head's position weights) can
    classify well while a class keeps positive evidence on parts of images
    of other classes, as long as the sum stays negative; on an image that
    holds several objects that evidence then lies on the wrong object. This
    term is the part of each absent class's logit that comes from positions
    with positive evidence: `mean over images of sum_positions sum_{k absent}
    relu(contributions) / (K - 1)`. It is 0 exactly when no position speaks
    for a class the image does not show.

    Args:
        contributions: `(B, H, W, K)` each position's share of each class logit.
        labels: integer labels `(B,)` / `(B, 1)`, or targets `(B, K)` (a class
            counts as absent by `1 - target`).
        num_classes: int `K` > 1.

    Example:
    >>> maps = keras.ops.array([[[[2.0, -1.0, 3.0]]]])  # one image, one position
    >>> float(absent_class_evidence(maps, keras.ops.array([0]), 3))  # class 2's +3, over 2 absent classes
    1.5
    """
    absent = 1.0 - class_targets(labels, num_classes, contributions.dtype)
    positive = ops.sum(ops.relu(contributions), axis=(1, 2))
    return ops.mean(ops.sum(positive * absent, axis=-1)) / (num_classes - 1)


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
        targets = class_targets(y_true, self.num_classes, y_pred.dtype)
        # log(1 + exp(-|x|)) form of sigmoid cross-entropy, stable for large logits
        losses = ops.maximum(y_pred, 0.0) - y_pred * targets + ops.log1p(ops.exp(-ops.abs(y_pred)))
        return ops.mean(losses, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config
