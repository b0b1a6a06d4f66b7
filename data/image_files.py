"""Reads image files (PNG, JPEG, TIFF, ... or .npy) into the float32 NHWC [0, 1] batches models take."""

import pathlib

import numpy as np

from glasszoo.data.image_reader import ConversionNotes, read_image


def read_image_files(paths, input_shape, strict=False, notes=None):
    """Loads image files, converted to the model's channels and size.

    Every file goes through `glasszoo.data.image_reader.read_image` (the
    reader training uses too: 8/16-bit, float, palette, alpha, EXIF
    orientation), then `conform_image`. What was converted is printed once,
    to stderr, at the end.

    Args:
        paths: image files (anything Pillow reads) or `.npy` arrays already
            shaped `(H, W, C)` / `(B, H, W, C)` in [0, 1].
        input_shape: `(H, W, C)` of the model.
        strict: refuse (a `ValueError` naming the file) any image that would
            need a conversion, instead of converting it.
        notes: a `ConversionNotes` to gather the conversions in (the caller
            reports them); by default they are reported here.

    Returns:
        float32 array `(B, H, W, C)` in [0, 1].

    Example:
    >>> batch = read_image_files(["shoe.png"], (28, 28, 1))  # doctest: +SKIP
    """
    from glasszoo.zoo.inputs import check_image_size

    check_image_size(input_shape, "The model's input")
    own_notes = notes is None
    notes = ConversionNotes(strict=strict, target=f"the model's input {tuple(input_shape)}") if own_notes else notes
    batch = []
    for path in map(pathlib.Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"No image file at {path}.")
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            batch.extend(array if array.ndim == 4 else array[None])
            continue
        batch.append(notes.conform(read_image(path), input_shape, str(path)))
    if own_notes:
        notes.report()
    return np.stack(batch).astype("float32")
