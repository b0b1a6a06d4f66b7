"""The input encoding of dynamic-linear models: every channel x becomes [x, 1 - x]."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="glasszoo")
class ComplementEncoding(keras.layers.Layer):
    """Concatenates `1 - x` to images in [0, 1]: `(B, H, W, C) -> (B, H, W, 2C)`.

    A dynamic-linear network (CoDA, B-cos) maps its input linearly, so a black
    pixel (0) could never contribute; with `[x, 1 - x]` both dark and bright
    pixels carry signal and every colour has the same norm (seed 002).

    Example:
    >>> ComplementEncoding()(keras.ops.zeros((1, 4, 4, 3))).shape
    (1, 4, 4, 6)
    """

    def call(self, images):
        return ops.concatenate([images, 1.0 - images], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (None if input_shape[-1] is None else 2 * input_shape[-1],)
