"""The input encoding of dynamic-linear models: every channel x becomes [x, 1 - x], or x stays alone."""

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


INPUT_ENCODINGS = ("complement", "none")


def input_encoding_layer(encoding):
    """The layer of input encoding `encoding`: `"complement"` (`[x, 1 - x]`) or `"none"` (the image itself).

    With `"none"` a black pixel contributes exactly 0 to a dynamic-linear
    model's logit, so its contribution map cannot put evidence on a black
    background; with `"complement"` dark pixels carry signal too.

    Args:
        encoding: one of `INPUT_ENCODINGS`.

    Example:
    >>> input_encoding_layer("none")(keras.ops.ones((1, 4, 4, 1))).shape
    (1, 4, 4, 1)
    """
    if encoding not in INPUT_ENCODINGS:
        raise ValueError(f"input_encoding must be one of {', '.join(INPUT_ENCODINGS)}; got {encoding!r}.")
    if encoding == "complement":
        return ComplementEncoding(name="complement_encoding")
    return keras.layers.Identity(name="identity_encoding")
