"""The images of an HTTP request: a JSON array, one raw PNG/JPEG body, or multipart/form-data file uploads.

Every check runs before memory is committed to the image: the body is
bounded by the service (`read_limited`), an uploaded image's pixel count
is read from its header before it is decoded, and a batch's pixel count
is bounded as a whole. Problems are `RequestError`s with an HTTP status
and a message naming the upload.
"""

import email.parser
import email.policy
import json

import numpy as np

from glasszoo.zoo.inputs import check_image_size, validate_images


class RequestError(ValueError):
    """A request the service refuses: `status` (400, 413 or 415) and a message naming the problem."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


async def read_limited(chunks, declared_length, limit):
    """The body from an async iterator of byte `chunks`, refused (413) beyond `limit` bytes before it is all read.

    Args:
        chunks: the request's body stream.
        declared_length: the Content-Length header, or None.
        limit: most bytes accepted.
    """
    if declared_length is not None:
        try:
            declared = int(declared_length)
        except ValueError:
            raise RequestError(400, f"Content-Length {declared_length!r} is not a number of bytes.") from None
        if declared > limit:
            raise RequestError(413, f"The request body of {declared} bytes exceeds the service's limit of {limit} bytes (--max-body-mb).")
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"The request body exceeds the service's limit of {limit} bytes (--max-body-mb).")
        parts.append(chunk)
    return b"".join(parts)


def images_from_request(body, content_type, input_shape, max_pixels):
    """`(images, names)` from a request body: a validated float32 `(B, H, W, C)` batch and one name per image.

    Args:
        body: the request body (bytes).
        content_type: its Content-Type header: `application/json` (an array
            `(B, H, W, C)` or `(H, W, C)` of floats in [0, 1], bare or as
            `{"images": ...}`), `image/*` (one encoded image) or
            `multipart/form-data` (one or more image files).
        input_shape: the model's `(H, W, C)`; encoded images are converted
            and resized to it, arrays must match it.
        max_pixels: most values (B x H x W x C) a request may hold.

    Raises:
        RequestError: 400 (unreadable, wrong shape, range, NaN ...), 413
            (over the pixel budget) or 415 (another content type).

    Example:
    >>> body = json.dumps([[[[0.0]] * 28] * 28]).encode()
    >>> images, names = images_from_request(body, "application/json", (28, 28, 1), 10**6)
    >>> images.shape, names
    ((1, 28, 28, 1), ['image[0]'])
    """
    kind = (content_type or "").split(";")[0].strip().lower()
    if not body:
        raise RequestError(400, "The request has no body: send images as JSON, an image file or multipart/form-data uploads.")
    if kind == "application/json":
        images = _json_images(body, input_shape, max_pixels)
        return images, [f"image[{i}]" for i in range(len(images))]
    if kind.startswith("image/"):
        return _encoded_images([("image", body)], input_shape, max_pixels)
    if kind == "multipart/form-data":
        return _encoded_images(_uploads(body, content_type), input_shape, max_pixels)
    raise RequestError(
        415, f"Content-Type {content_type!r} is not served: use application/json, image/png, image/jpeg or multipart/form-data."
    )


def _json_images(body, input_shape, max_pixels):
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise RequestError(400, f"The JSON body cannot be parsed: {' '.join(str(error).split()) or type(error).__name__}.") from None
    if isinstance(data, dict):
        if "images" not in data:
            raise RequestError(400, f"The JSON object has no 'images' key (keys: {', '.join(map(str, data)) or 'none'}).")
        data = data["images"]
    try:
        images = np.asarray(data, dtype="float64")
    except (ValueError, TypeError) as error:
        raise RequestError(400, f"'images' is not a rectangular array of numbers: {' '.join(str(error).split())}.") from None
    if images.size > max_pixels:
        raise RequestError(413, f"The request holds {images.size} values, over the service's budget of {max_pixels} (--max-pixels).")
    try:
        return validate_images(images, input_shape)
    except ValueError as error:
        raise RequestError(400, str(error)) from None


def _uploads(body, content_type):
    """`[(filename, bytes)]` of the file parts of a multipart/form-data body (stdlib email parser)."""
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise RequestError(400, "The multipart/form-data body cannot be parsed (missing or wrong boundary?).")
    files = []
    for part in message.iter_parts():
        filename = part.get_filename()
        if filename is None:  # a plain form field: not an image
            continue
        files.append((filename, part.get_payload(decode=True) or b""))
    if not files:
        raise RequestError(400, "The multipart/form-data body holds no file: upload images as file fields.")
    return files


def _encoded_images(files, input_shape, max_pixels):
    from glasszoo.data.image_reader import conform_image, decode_image, open_image

    if len(input_shape) != 3 or any(d is None for d in input_shape):
        raise RequestError(400, f"Image files need a model with a fixed input size; this one's is {tuple(input_shape)}: send a JSON array.")
    height, width, channels = input_shape
    if len(files) * height * width * channels > max_pixels:
        raise RequestError(413, f"{len(files)} images of {height}x{width}x{channels} exceed the service's budget of {max_pixels} values (--max-pixels).")
    arrays, names = [], []
    for name, data in files:
        try:
            image = open_image(data, name=f"upload {name!r}", check_size=False)  # reads the header only
        except ValueError as error:
            raise RequestError(400, _sentence(error)) from None
        if image.width * image.height > max_pixels:
            raise RequestError(
                413, f"Upload {name!r} is {image.width}x{image.height} pixels, over the service's budget of {max_pixels} (--max-pixels)."
            )
        try:
            check_image_size((image.height, image.width, len(image.getbands())), f"Upload {name!r}")
        except ValueError as error:
            raise RequestError(413, _sentence(error)) from None
        try:  # the reader that training and `glasszoo predict` use
            arrays.append(conform_image(decode_image(image, f"upload {name!r}"), input_shape)[0])
        except ValueError as error:
            raise RequestError(400, _sentence(error)) from None
        names.append(name)
    return validate_images(np.stack(arrays), input_shape), names


def _sentence(error):
    text = " ".join(str(error).split())
    return text if text.endswith(".") else text + "."
