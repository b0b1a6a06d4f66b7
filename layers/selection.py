"""Selecting each row's maximum without ArgMax (TensorFlow's ArgMax lowering does not convert to ONNX)."""

from keras import ops


def first_max_one_hot(scores, axis=-1):
    """One-hot of the first maximum along `axis` (ties go to the first), as `scores`' dtype.

    Example:
    >>> first_max_one_hot(keras.ops.array([[1.0, 3.0, 3.0]]))  # doctest: +SKIP
    [[0., 1., 0.]]
    """
    is_max = ops.cast(scores >= ops.max(scores, axis=axis, keepdims=True), scores.dtype)
    return is_max * ops.cast(ops.cumsum(is_max, axis=axis) <= 1.0, scores.dtype)
