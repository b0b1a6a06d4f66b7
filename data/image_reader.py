"""One image reader for training, explaining and serving: every common mode and bit depth read exactly.

`read_image(path)` returns a float32 `(H, W, C)` array in [0, 1] with
C = 1 (grey) or 3 (colour):

- 1-bit and 8-bit grey and colour are divided by 255 (1-bit: 0 or 1);
  16-bit grey (`I;16*`, the usual medical tile) by 65535; 32-bit integer
  images by 2**bits - 1 (bits from the TIFF tag, else 32);
- float images (`F`, e.g. a float TIFF) are taken as they are and must be
  finite and within [0, 1] (a float image in another range is refused,
  not guessed at);
- palette images become RGB (RGBA when the palette has a transparent colour);
  CMYK, YCbCr, LAB and HSV become RGB;
- alpha: the colour is composited onto black (value x alpha), so transparent
  pixels carry no signal, as the zoo's black backgrounds do;
- the EXIF orientation tag of a photograph is applied;
- the image's size is checked against `glasszoo.zoo.inputs.max_image_values()`
  from its header, before its pixels are decoded (a small file can hold a
  huge image);
- an unreadable or corrupt file raises `ImageReadError` naming it.

Pillow reads 16-bit-per-channel colour PNGs as 8-bit RGB; their values are
right, at 8-bit precision.

`conform_image(array, input_shape)` converts an image to a model's channels
and size and says what it did; `ConversionNotes` gathers those notes so a
command prints them once, or refuses them with `strict=True`.
"""

import io
import pathlib

import numpy as np

# colour modes Pillow converts to RGB exactly enough (no alpha, no bit depth beyond 8)
_COLOUR_MODES = ("RGB", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")
_LUMA = np.array([0.299, 0.587, 0.114], dtype="float32")  # ITU-R 601-2, as Pillow's "L" conversion


class ImageReadError(ValueError):
    """An image file that cannot be read, or whose values are not an image in [0, 1]; the message names the file."""


def open_image(source, name=None, check_size=True):
    """Opens an image lazily (header only) and checks its size before any pixel is decoded.

    Args:
        source: a path, or the file's bytes.
        name: what errors call the image (default: the path, or "the image").
        check_size: check the header's size against `max_image_values()`
            (a caller with its own budget checks it itself).

    Returns:
        an opened `PIL.Image.Image`.

    Raises:
        FileNotFoundError: no file at `source`.
        ImageReadError: not an image Pillow can read.
        ValueError: the image holds more than `max_image_values()` values.

    Example:
    >>> image = open_image("scan.png")  # doctest: +SKIP
    """
    from PIL import Image

    from glasszoo.zoo.inputs import check_image_size

    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "the image"
        label = f"Image {name}"
        handle = io.BytesIO(bytes(source))
    else:
        path = pathlib.Path(source)
        name = name or str(path)
        label = f"Image file {name}"
        if not path.exists():
            raise FileNotFoundError(f"No image file at {path}.")
        if path.is_dir():
            raise ImageReadError(f"{path} is a folder, not an image file.")
        handle = path
    try:
        image = Image.open(handle)
    except Exception as error:  # UnidentifiedImageError, DecompressionBombError, truncated headers
        raise ImageReadError(f"Cannot read {name} as an image ({type(error).__name__}: {_one_line(error)}).") from error
    if check_size:
        check_image_size((image.height, image.width, len(image.getbands())), label)
    return image


def decode_image(image, name="the image"):
    """The pixels of an opened image as float32 `(H, W, 1 or 3)` in [0, 1] (see the module's rules).

    Args:
        image: a `PIL.Image.Image` from `open_image`.
        name: what errors call the image.

    Raises:
        ImageReadError: a corrupt file, or a float image outside [0, 1].

    Example:
    >>> decode_image(open_image("scan.png")).dtype  # doctest: +SKIP
    dtype('float32')
    """
    from PIL import ImageOps

    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        array = _to_unit_range(image, name)
    except ImageReadError:
        raise
    except Exception as error:  # truncated or corrupt pixel data
        raise ImageReadError(f"Cannot decode {name} ({type(error).__name__}: {_one_line(error)}).") from error
    return array[..., None] if array.ndim == 2 else array


def read_image(path):
    """Reads one image file as float32 `(H, W, 1 or 3)` in [0, 1].

    Example:
    >>> read_image("tile_16bit.png").max() <= 1.0  # doctest: +SKIP
    True
    """
    return decode_image(open_image(path), str(path))


def _to_unit_range(image, name):
    mode = image.mode
    if mode == "P":
        mode, image = ("RGBA", image.convert("RGBA")) if "transparency" in image.info else ("RGB", image.convert("RGB"))
    elif mode in ("PA", "RGBa"):
        mode, image = "RGBA", image.convert("RGBA")
    elif mode == "La":
        mode, image = "LA", image.convert("LA")
    elif mode in _COLOUR_MODES and mode != "RGB":
        mode, image = "RGB", image.convert("RGB")
    if mode == "1":
        return np.asarray(image, dtype="float32")
    if mode in ("L", "RGB"):
        return np.asarray(image, dtype="float32") / 255.0
    if mode in ("LA", "RGBA"):
        values = np.asarray(image, dtype="float32") / 255.0
        return values[..., :-1] * values[..., -1:]
    if mode.startswith("I;16"):
        return np.asarray(image).astype("float32") / 65535.0
    if mode == "I":
        values = np.asarray(image).astype("int64")
        if values.size and values.min() < 0:
            raise ImageReadError(f"{name} is a signed integer image with negative values ({int(values.min())}); convert it to [0, 1] floats first.")
        bits = _bits_per_sample(image) or 32
        return (values / float(2**bits - 1)).astype("float32")
    if mode == "F":
        values = np.asarray(image, dtype="float32")
        finite = np.isfinite(values)
        if not finite.all():
            raise ImageReadError(f"{name} is a float image with {int((~finite).sum())} NaN or infinite values.")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            raise ImageReadError(
                f"{name} is a float image with values in [{low:.6g}, {high:.6g}]; float images are read as they are and must "
                "lie in [0, 1]: rescale it (or save it as 8- or 16-bit integers)."
            )
        return values
    try:  # any other mode Pillow knows: its RGB conversion
        return np.asarray(image.convert("RGB"), dtype="float32") / 255.0
    except Exception as error:
        raise ImageReadError(f"{name} has image mode {image.mode!r}, which glasszoo cannot convert ({_one_line(error)}).") from error


def _bits_per_sample(image):
    tags = getattr(image, "tag_v2", None)
    if not tags:
        return None
    bits = tags.get(258)
    if isinstance(bits, (tuple, list)):
        bits = bits[0] if bits else None
    return int(bits) if bits else None


def conform_image(array, input_shape):
    """An image converted to a model's channels and size, with a note of each change.

    Grey becomes colour by repeating the channel; colour becomes grey by
    ITU-R 601-2 luma (0.299 R + 0.587 G + 0.114 B). The size changes by
    bilinear resampling in float32 (antialiased when shrinking, as Pillow's
    `resize`), the aspect ratio not kept.

    Args:
        array: float32 `(H, W, C)` from `read_image`.
        input_shape: `(H, W, C)` of the model; None entries keep the image's.

    Returns:
        `(array, notes)`: the float32 `(H', W', C')` image and a list of
        strings such as `"resized 64x48 -> 28x28"`, empty when nothing changed.

    Example:
    >>> image, notes = conform_image(np.zeros((64, 48, 3), "float32"), (28, 28, 1))
    >>> image.shape, notes
    ((28, 28, 1), ['colour -> grey', 'resized 64x48 -> 28x28'])
    """
    from PIL import Image

    height, width, channels = (want if want is not None else have for want, have in zip(input_shape, array.shape))
    notes = []
    if array.shape[-1] != channels:
        if array.shape[-1] == 3 and channels == 1:
            array = (array @ _LUMA)[..., None]
            notes.append("colour -> grey")
        elif array.shape[-1] == 1 and channels == 3:
            array = np.repeat(array, 3, axis=-1)
            notes.append("grey -> colour")
        else:
            raise ValueError(f"Cannot convert an image with {array.shape[-1]} channels to the model's {channels}.")
    if array.shape[:2] != (height, width):
        notes.append(f"resized {array.shape[0]}x{array.shape[1]} -> {height}x{width}")
        planes = [
            np.asarray(Image.fromarray(np.ascontiguousarray(array[..., c]), mode="F").resize((width, height), Image.BILINEAR))
            for c in range(array.shape[-1])
        ]
        array = np.clip(np.stack(planes, axis=-1), 0.0, 1.0)
    return array.astype("float32", copy=False), notes


class ConversionNotes:
    """Gathers the conversions done to a command's images; prints one summary, or refuses them when strict.

    Args:
        strict: raise a `ValueError` naming the image at the first conversion
            instead of converting.
        target: what the images are converted for (e.g. "the model's input
            (28, 28, 1)"), used in messages.

    Example:
    >>> notes = ConversionNotes(target="the model's input (28, 28, 1)")
    >>> image = notes.conform(np.zeros((32, 32, 3), "float32"), (28, 28, 1), "a.png")
    >>> notes.summary()
    "1 of 1 image(s) converted for the model's input (28, 28, 1): 1 colour -> grey, 1 resized 32x32 -> 28x28 (e.g. a.png); pass --strict to refuse instead."
    """

    def __init__(self, strict=False, target="the model's input"):
        self.strict, self.target = bool(strict), target
        self.counts, self.examples, self.images, self.converted = {}, {}, 0, 0

    def conform(self, array, input_shape, name):
        """`conform_image(array, input_shape)`, noted under `name` (or refused when strict)."""
        converted, notes = conform_image(array, input_shape)
        self.images += 1
        if notes and self.strict:
            raise ValueError(f"{name} does not match {self.target}: {', '.join(notes)} would be needed (strict mode refuses conversions).")
        if notes:
            self.converted += 1
        for note in notes:
            self.counts[note] = self.counts.get(note, 0) + 1
            self.examples.setdefault(note, name)
        return converted

    def summary(self):
        """One sentence of what was converted, or None when nothing was."""
        if not self.converted:
            return None
        parts = ", ".join(f"{count} {note}" for note, count in self.counts.items())
        example = next(iter(self.examples.values()))
        return (
            f"{self.converted} of {self.images} image(s) converted for {self.target}: {parts} (e.g. {example}); "
            "pass --strict to refuse instead."
        )

    def report(self, stream=None):
        """Prints `summary()` once (to stderr by default) if anything was converted."""
        import sys

        text = self.summary()
        if text:
            print(text, file=stream or sys.stderr, flush=True)
        self.counts, self.examples, self.images, self.converted = {}, {}, 0, 0


def _one_line(error):
    return " ".join(str(error).split())
