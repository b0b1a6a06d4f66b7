"""Global max-pooling that also reports where each maximum sits."""

import keras
from glasszoo.layers.single_node_ops import first_argmax, gather_rows
from keras import ops


@keras.saving.register_keras_serializable(package="glasszoo")
class GlobalMaxPoolingWithLocation(keras.layers.Layer):
    """Per-channel global maximum and its (row, column) location.

    Ties are broken towards the first position in row-major order: the
    first row holding the maximum, then the first column of that row
    (`first_argmax` at each stage). The two stages read each map once for
    its row maxima and gather one row per map, instead of an argmax over
    all positions (slow in onnxruntime, and strided in channels-last).

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
        values = ops.max(maps, axis=(1, 2))  # from the maps as they are: a graph that needs no location (training) stops here
        # The first maximum in row-major order, in two stages that each read the maps once at most:
        # the first row holding the map's maximum, then the first column of that row holding it.
        # Channels first, so that both reductions run over contiguous memory in an exported graph
        # (whose convolution output is channels first) and a row is one gathered vector.
        by_channel = ops.transpose(maps, (0, 3, 1, 2))  # (B, N, H, W)
        row_maxima = ops.max(by_channel, axis=3)  # (B, N, H)
        row = first_argmax(row_maxima, axis=2)  # (B, N) int32
        map_index = ops.reshape(ops.arange(ops.shape(maps)[0] * channels, dtype="int32"), (-1, channels))
        row_values = gather_rows(ops.reshape(by_channel, (-1, width)), map_index * height + row)  # (B, N, W)
        col = first_argmax(row_values, axis=2)
        # whole numbers from integer arithmetic: exact in every precision (a converter may fold a float
        # floor(index / width) into index * (1 / width), whose float16 rounding moves a position)
        locations = ops.stack([ops.cast(row, maps.dtype), ops.cast(col, maps.dtype)], axis=-1) + float(self.location_offset)
        return values, locations

    def compute_output_shape(self, input_shape):
        batch, channels = input_shape[0], input_shape[-1]
        return (batch, channels), (batch, channels, 2)

    def get_config(self):
        config = super().get_config()
        config.update(location_offset=self.location_offset)
        return config


