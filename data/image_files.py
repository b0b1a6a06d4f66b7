"""Reads image files (PNG, JPEG, ... or .npy) into the float32 NHWC [0, 1] batches models take."""

import pathlib

import numpy as np


def read_image_files(paths, input_shape):
    """Loads image files, converted to the model's channels and size.

    Args:
        paths: image files (anything Pillow reads) or `.npy` arrays already
            shaped `(H, W, C)` / `(B, H, W, C)` in [0, 1].
        input_shape: `(H, W, C)` of the model; colour images are converted
            to grayscale for C = 1 and vice versa, then resized.

    Returns:
        float32 array `(B, H, W, C)` in [0, 1].

    Example:
    >>> batch = read_image_files(["shoe.png"], (28, 28, 1))  # doctest: +SKIP
    """
    from PIL import Image

    from glasszoo.zoo.inputs import check_image_size

    check_image_size(input_shape, "The model's input")
    batch = []
    for path in map(pathlib.Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"No image file at {path}.")
        if path.suffix == ".npy":
            array = np.load(path)
            batch.extend(array if array.ndim == 4 else array[None])
            continue
        try:
            image = Image.open(path)  # reads the header only
        except Exception as error:
            raise ValueError(f"Cannot read {path} as an image ({error}).") from error
        check_image_size((image.height, image.width, len(image.getbands())), f"Image file {path}")
        try:
            batch.append(image_to_array(image, input_shape))
        except Exception as error:
            raise ValueError(f"Cannot read {path} as an image ({error}).") from error
    return np.stack(batch).astype("float32")


def image_to_array(image, input_shape):
    """A Pillow image as the float32 `(H, W, C)` array in [0, 1] a model of `input_shape` takes.

    Args:
        image: an opened `PIL.Image.Image`.
        input_shape: `(H, W, C)`; colour becomes grayscale for C = 1 and vice
            versa, then the image is resized (bilinear) to H x W.

    Example:
    >>> from PIL import Image
    >>> image_to_array(Image.new("RGB", (64, 32)), (28, 28, 1)).shape
    (28, 28, 1)
    """
    from PIL import Image

    height, width, channels = input_shape
    image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype="float32") / 255.0
    return array[..., None] if channels == 1 else array
