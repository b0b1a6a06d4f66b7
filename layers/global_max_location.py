"""Global max-pooling that also reports where each maximum sits."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="glasszoo")
class GlobalMaxPoolingWithLocation(keras.layers.Layer):
    """Per-channel global maximum and its (row, column) location.

    Ties are broken towards the first position in row-major order. The
    location search uses only max/min/where reductions (no `argmax`), so it
    converts to ONNX on the TensorFlow backend.

    Args:
        location_offset: int, added to the map indices to give input pixels
            (the kernel half-width for a `"valid"` convolution, else 0).

    Returns:
        `(values, locations)`: `(B, N)` maxima and `(B, N, 2)` float32 (row,
        column) of each maximum, in input pixels.

    Example:
    >>> pool = GlobalMaxPoolingWithLocation()
    >>> values, locations = pool(keras.ops.zeros((2, 28, 28, 8)))
    >>> tuple(locations.shape)
    (2, 8, 2)
    """

    def __init__(self, location_offset=0, **kwargs):
        super().__init__(**kwargs)
        self.location_offset = int(location_offset)

    def call(self, maps):
        shape = ops.shape(maps)
        height, width, channels = shape[1], shape[2], shape[3]
        flat = ops.reshape(maps, (-1, height * width, channels))
        values = ops.max(flat, axis=1)
        positions = ops.cast(ops.arange(height * width), maps.dtype)[None, :, None]
        beyond = ops.cast(height * width, maps.dtype)
        index = ops.min(ops.where(flat >= values[:, None, :], positions, beyond), axis=1)
        # row and column of the first maximum read from per-position constants, not floor(index / width): a
        # converter may fold that division into a multiplication by 1 / width, whose rounding (in float16
        # certainly) puts a position at the end of a row into the next one
        flat_positions = ops.arange(height * width)
        rows = ops.cast(ops.floor_divide(flat_positions, width), maps.dtype)[None, :, None]
        cols = ops.cast(ops.mod(flat_positions, width), maps.dtype)[None, :, None]
        first = ops.equal(positions, index[:, None, :])
        zero = ops.zeros_like(flat)
        row = ops.sum(ops.where(first, rows + zero, zero), axis=1)
        col = ops.sum(ops.where(first, cols + zero, zero), axis=1)
        locations = ops.stack([row, col], axis=-1) + float(self.location_offset)
        return values, locations

    def compute_output_shape(self, input_shape):
        batch, channels = input_shape[0], input_shape[-1]
        return (batch, channels), (batch, channels, 2)

    def get_config(self):
        config = super().get_config()
        config.update(location_offset=self.location_offset)
        return config


def location_one_hot(locations, height, width, location_offset=0):
    """One-hot response maps `(B, height, width, N)` from `(B, N, 2)` locations.

    Args:
        locations: `(B, N, 2)` (row, column) in input pixels.
        height, width: size of the response map.
        location_offset: the same offset the pooling layer added.

    Example:
    >>> maps = location_one_hot(keras.ops.zeros((1, 3, 2)), 4, 4)
    >>> tuple(maps.shape)
    (1, 4, 4, 3)
    """
    rows = locations[..., 0] - float(location_offset)
    cols = locations[..., 1] - float(location_offset)
    row_grid = ops.cast(ops.arange(height), locations.dtype)[None, :, None, None]
    col_grid = ops.cast(ops.arange(width), locations.dtype)[None, None, :, None]
    on_row = ops.cast(ops.equal(row_grid, rows[:, None, None, :]), locations.dtype)
    on_col = ops.cast(ops.equal(col_grid, cols[:, None, None, :]), locations.dtype)
    return on_row * on_col
