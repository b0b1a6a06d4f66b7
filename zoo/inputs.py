"""Checks on the images a user hands to a model: clear errors, nothing silently fixed.

The size of one image is bounded before a model runs on it (or before a file
is decoded into it): `max_image_values()` values (height x width x
channels), 2**25 by default (a 4096 x 4096 x 2 image; about 134 MB in
float32), set by the environment variable `GLASSZOO_MAX_IMAGE_VALUES`. A
fully convolutional model's activations grow with the image, and a
10000 x 10000 image once crashed TensorFlow instead of raising an error.
"""

import os

import numpy as np

MAX_IMAGE_VALUES_VARIABLE = "GLASSZOO_MAX_IMAGE_VALUES"
DEFAULT_MAX_IMAGE_VALUES = 2**25


def max_image_values():
    """The most values (height x width x channels) one image may hold: `$GLASSZOO_MAX_IMAGE_VALUES` or 2**25."""
    text = os.environ.get(MAX_IMAGE_VALUES_VARIABLE)
    if not text:
        return DEFAULT_MAX_IMAGE_VALUES
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{MAX_IMAGE_VALUES_VARIABLE}={text!r} is not a whole number of values.") from None
    if value < 1:
        raise ValueError(f"{MAX_IMAGE_VALUES_VARIABLE} must be at least 1; got {value}.")
    return value


def check_image_size(shape, source="the image"):
    """Raises a `ValueError` naming `source` and the limit when one image of `shape` `(H, W, C)` exceeds `max_image_values()`.

    Example:
    >>> check_image_size((28, 28, 1))
    """
    if any(d is None for d in shape):  # a size chosen per image: checked on the image itself
        return
    limit = max_image_values()
    values = int(np.prod([int(d) for d in shape], dtype=np.float64))
    if values > limit:
        raise ValueError(
            f"{source} has {' x '.join(str(int(d)) for d in shape)} = {values} values, over the limit of {limit} per image "
            f"(set {MAX_IMAGE_VALUES_VARIABLE} to allow more)."
        )


def validate_images(images, input_shape, allow_single=True):
    """Returns `images` as a float32 NHWC batch or raises a `ValueError` naming the problem.

    Args:
        images: array-like, `(B, H, W, C)` (or `(H, W, C)` when
            `allow_single`), float, values in [0, 1]. float16 and float64
            are converted to float32; integer and bool images are refused
            (is uint8 0..255 or 0..1?): divide 8-bit images by 255.
        input_shape: `(H, W, C)` the model expects; `None` entries accept any size.
        allow_single: accept one image without the batch axis.

    Example:
    >>> validate_images(np.zeros((2, 28, 28, 1)), (28, 28, 1)).shape
    (2, 28, 28, 1)
    """
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        images = np.asarray(images)
    images = np.asarray(images)
    original_shape = images.shape
    expected = tuple(input_shape)
    if allow_single and images.ndim == len(expected):
        images = images[None]
    if images.ndim != len(expected) + 1:
        hint = ""
        if len(original_shape) == len(expected) - 1 and all(w is None or w == g for w, g in zip(expected, original_shape)):
            hint = f" Is the channel axis missing? Use image[..., None] for one image of shape {original_shape + (1,)}."
        raise ValueError(
            f"Expected images of rank {len(expected) + 1} (batch, height, width, channels) = "
            f"(B, {', '.join(str(d) for d in expected)}); got shape {original_shape} (rank {len(original_shape)}).{hint}"
        )
    for axis, (want, got) in enumerate(zip(expected, images.shape[1:])):
        if want is not None and want != got:
            name = ("height", "width", "channels")[axis] if axis < 3 else f"axis {axis + 1}"
            hint = ""
            if len(original_shape) == len(expected) and tuple(original_shape[1:]) == expected[:-1]:
                hint = f" Is the channel axis missing? Use images[..., None] for a batch of shape {original_shape + (1,)}."
            raise ValueError(
                f"Expected images of shape (B, {', '.join(str(d) for d in expected)}) or one image "
                f"({', '.join(str(d) for d in expected)}); got shape {original_shape}: {name} is {got}, "
                f"the model takes {want}.{hint}"
            )
    check_image_size(images.shape[1:], "One image")
    if images.dtype == np.bool_ or not (np.issubdtype(images.dtype, np.floating)):
        hint = " Divide 8-bit images by 255." if images.dtype == np.uint8 else ""
        raise ValueError(f"Expected float images with values in [0, 1]; got dtype {images.dtype}.{hint}")
    # checked in the caller's dtype: a float64 1e300 would become inf in float32 and be misreported
    if images.size and not np.all(np.isfinite(images)):
        bad = int(np.sum(~np.isfinite(images)))
        raise ValueError(f"Images contain {bad} NaN or infinite values.")
    if images.size:
        low, high = float(images.min()), float(images.max())
        if low < -1e-6 or high > 1 + 1e-6:
            outside = (images < -1e-6) | (images > 1 + 1e-6)
            first = tuple(int(i) for i in np.argwhere(outside)[0])
            raise ValueError(
                f"Expected pixel values in [0, 1]; got range [{low:.10g}, {high:.10g}]: {int(outside.sum())} value(s) "
                f"outside, the first at index {first} ({float(images[first]):.10g})."
            )
    images = images.astype(np.float32, copy=False)
    return images
