"""The interpretable convolution of INAM: N bias-free kernels with TV and orthonormality penalties."""

import keras
import numpy as np
from glasszoo.layers.regularizers import (
    Orthonormality,
    SumOfRegularizers,
    TotalVariation,
)
from glasszoo.layers.single_node_ops import gather_rows
from keras import ops

# Values of the placement table up to which `placement_by_group` places kernels by one gather from it.
PLACEMENT_TABLE_LIMIT = 1 << 23


@keras.saving.register_keras_serializable(package="glasszoo")
class InterpretableConv2D(keras.layers.Layer):
    """A single bias-free convolution whose kernels are the model's features.

    Each of the `filters` kernels `K^(l)` (shape `kernel_size x kernel_size x c`)
    is one detected feature of the image (seed 000). Training adds the total
    variation (eq. 1) and orthonormality (eq. 2) penalties of the kernels,
    weighted by `tv_weight` and `ortho_weight`, to the model's losses. Stride
    is always 1 so that every response has an input location.

    Args:
        filters: int, number of kernels `N`.
        kernel_size: int, odd side length `n` of the square kernels.
        padding: `"same"` (responses at every input pixel) or `"valid"`.
        tv_weight: float, `alpha_TV`.
        ortho_weight: float, `alpha_ortho`.
        kernel_initializer: initializer of the kernels (orthogonal by default,
            in line with the orthonormality penalty).

    Example:
    >>> conv = InterpretableConv2D(filters=8, kernel_size=5)
    >>> conv(keras.ops.zeros((2, 28, 28, 1))).shape
    (2, 28, 28, 8)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        padding="same",
        tv_weight=0.05,
        ortho_weight=0.05,
        kernel_initializer="orthogonal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(kernel_size) % 2 != 1:
            raise ValueError(f"kernel_size must be odd so that a kernel has a centre pixel; got {kernel_size}.")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid'; got {padding!r}.")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.padding = padding
        self.tv_weight = float(tv_weight)
        self.ortho_weight = float(ortho_weight)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @property
    def location_offset(self):
        """Pixels between a response's map index and the input pixel under the kernel centre."""
        return 0 if self.padding == "same" else self.kernel_size // 2

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=SumOfRegularizers(
                [TotalVariation(self.tv_weight), Orthonormality(self.ortho_weight)]
            ),
        )

    def call(self, images):
        return ops.conv(images, self.kernel, strides=1, padding=self.padding)

    def placement_by_group(self, locations, groups, weights, num_groups, height, width):
        """Kernels centred where they responded, weighted and summed into one image per group.

        Image `g` of batch item `b` is the sum, over the kernels `l` with
        `groups[b, l] == g`, of `weights[b, l]` times kernel `l` translated so
        that its centre sits on `locations[b, l]` in a `height x width`
        image (parts falling outside are cut). With the class each kernel
        contributes most to as its group and that contribution as its weight,
        these are INAM's decision images.

        The work is proportional to the placed kernels: each kernel is
        placed once (`B x N x H` gathered rows of `W c` values), then one
        matrix product per batch item sums the placed kernels of each group,
        weighted (`G x N` by `N x H W c`). A kernel row is placed on its
        columns by one of two routes, chosen by size:

        - a *placement table* (`N (k + 1) W` rows of `W c` values: every
          kernel row already shifted to every centre column, built from the
          kernel by one product with a fixed 0/1 matrix) when it holds at most `PLACEMENT_TABLE_LIMIT`
          values (2.8 M for 256 kernels of 13 x 13 on 28 x 28 images); the
          placement is then a single gather;
        - otherwise each gathered kernel row (`k + 1` values) is moved to
          its columns by a product with a 0/1 shift matrix picked by its
          centre column (`k + 1 x W`).

        Both are gathers and matrix products only: deterministic in every
        runtime (onnxruntime's scatter-add is not), with no layout
        transposes of the large tensors, and exact in float16 up to the
        products' sums.

        Args:
            locations: tensor `(B, N, 2)` of (row, column) input pixels, as
                `GlobalMaxPoolingWithLocation` reports them (whole numbers
                inside the image).
            groups: int tensor `(B, N)` in `[0, num_groups)`.
            weights: float tensor `(B, N)`.
            num_groups: int, the number of images per batch item.
            height, width: int, the size of the input image.

        Returns:
            tensor `(B, num_groups, H, W, c)`.

        Example:
        >>> conv = InterpretableConv2D(filters=2, kernel_size=3)
        >>> conv.build((None, 8, 8, 1))
        >>> images = conv.placement_by_group(keras.ops.ones((1, 2, 2)), keras.ops.zeros((1, 2), "int32"), keras.ops.ones((1, 2)), 4, 8, 8)
        >>> tuple(images.shape)
        (1, 4, 8, 8, 1)
        """
        size, filters = self.kernel_size, self.filters
        channels = self.kernel.shape[2]
        centres = ops.cast(locations, "int32")
        # the kernel row under each image row (index `size`: an all-zero row, outside the kernel)
        row_in_kernel = ops.arange(height, dtype="int32")[None, None, :] - centres[..., 0:1] + size // 2  # (B, N, H)
        row_in_kernel = ops.where(ops.logical_and(row_in_kernel >= 0, row_in_kernel < size), row_in_kernel, size)
        kernel_row = row_in_kernel + (ops.arange(filters, dtype="int32") * (size + 1))[None, :, None]  # into (N (k+1)) rows
        if filters * (size + 1) * width * width * channels <= PLACEMENT_TABLE_LIMIT:
            table = ops.reshape(self.placement_table(width), (filters * (size + 1) * width, width * channels))
            placed = gather_rows(table, kernel_row * width + centres[..., 1:2])  # (B, N, H, W c)
        else:
            placed = self.placed_by_shift(kernel_row, centres[..., 1], height, width, weights.dtype)
        placed = ops.reshape(placed, (-1, filters, height * width * channels))
        in_group = ops.equal(ops.arange(num_groups, dtype="int32")[None, :, None], ops.cast(groups, "int32")[:, None, :])
        selection = ops.cast(in_group, weights.dtype) * weights[:, None, :]  # (B, G, N)
        return ops.reshape(ops.matmul(selection, placed), (-1, num_groups, height, width, channels))

    def padded_kernel_rows(self):
        """The kernels as `(N, k + 1, c, k + 1)`: row, channel, then the row's columns last; an all-zero last row and column."""
        return ops.pad(ops.transpose(self.kernel, (3, 0, 2, 1)), ((0, 0), (0, 1), (0, 0), (0, 1)))

    def placement_table(self, width):
        """`(N, k + 1, W, W, c)`: kernel row `i` of kernel `n` placed on a `W`-wide row with its centre on column `x0`.

        Built as one product of the kernel rows with a fixed 0/1 matrix
        (`k + 1` kernel columns by `W x W` (centre, image column) pairs): a
        copy, exact, and cheaper than a gather on every backend.
        """
        size, filters = self.kernel_size, self.filters
        kernels = self.padded_kernel_rows()  # (N, k+1, c, k+1)
        channels = kernels.shape[2]
        rows = ops.reshape(kernels, (filters * (size + 1) * channels, size + 1))
        picks = column_placements(width, size).transpose(1, 0, 2).reshape(size + 1, width * width)  # (k+1, W W)
        table = ops.matmul(rows, ops.convert_to_tensor(picks, rows.dtype))
        table = ops.reshape(table, (filters, size + 1, channels, width, width))
        return ops.transpose(table, (0, 1, 3, 4, 2))

    def placed_by_shift(self, kernel_row, centre_column, height, width, dtype):
        """`(B, N, H, W c)`: the gathered kernel rows moved to their columns by 0/1 shift matrices."""
        size, filters = self.kernel_size, self.filters
        kernels = self.padded_kernel_rows()  # (N, k+1, c, k+1)
        channels = kernels.shape[2]
        rows = gather_rows(ops.reshape(kernels, (filters * (size + 1), channels * (size + 1))), kernel_row)
        rows = ops.reshape(rows, (-1, filters, height * channels, size + 1))
        shift = gather_rows(ops.convert_to_tensor(column_placements(width, size), dtype), centre_column)  # (B, N, k+1, W)
        placed = ops.reshape(ops.matmul(rows, shift), (-1, filters, height, channels, width))
        return ops.transpose(placed, (0, 1, 2, 4, 3)) if channels > 1 else placed

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if self.padding == "valid":
            height = None if height is None else height - self.kernel_size + 1
            width = None if width is None else width - self.kernel_size + 1
        return (batch, height, width, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            padding=self.padding,
            tv_weight=self.tv_weight,
            ortho_weight=self.ortho_weight,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


def column_placements(width, kernel_size):
    """`(W, k + 1, W)` 0/1 float32: entry `(x0, j, x)` is 1 where kernel column `j` of a kernel centred on column `x0` lands on `x`.

    Column `k` (the padded all-zero column) and columns falling outside the
    image land nowhere.

    Args:
        width: int, image width `W`.
        kernel_size: int, odd kernel side `k`.

    Example:
    >>> column_placements(4, 3)[0].argmax(axis=1).tolist()  # centre on column 0: kernel columns 1, 2 land on 0, 1
    [0, 0, 1, 0]
    """
    column = np.arange(width)[None, None, :] - np.arange(width)[:, None, None] + kernel_size // 2  # (x0, 1, x)
    placed = (column == np.arange(kernel_size + 1)[None, :, None]) & (column < kernel_size)
    return placed.astype("float32")
