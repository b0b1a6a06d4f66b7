"""Global max-pooling that also reports where each maximum sits."""

import keras
from glasszoo.layers.single_node_ops import first_argmax
from keras import ops


@keras.saving.register_keras_serializable(package="glasszoo")
class GlobalMaxPoolingWithLocation(keras.layers.Layer):
    """Per-channel global maximum and its (row, column) location.

    Ties are broken towards the first position in row-major order
    (`first_argmax`).

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
        index = first_argmax(flat, axis=1)  # (B, N) int32
        # row and column by integer division: exact in every precision (a converter may fold a float
        # floor(index / width) into index * (1 / width), whose float16 rounding moves a position to the next row)
        row = ops.cast(ops.floor_divide(index, width), maps.dtype)
        col = ops.cast(ops.mod(index, width), maps.dtype)
        locations = ops.stack([row, col], axis=-1) + float(self.location_offset)
        return values, locations

    def compute_output_shape(self, input_shape):
        batch, channels = input_shape[0], input_shape[-1]
        return (batch, channels), (batch, channels, 2)

    def get_config(self):
        config = super().get_config()
        config.update(location_offset=self.location_offset)
        return config


