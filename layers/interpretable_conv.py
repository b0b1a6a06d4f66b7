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

        The work is proportional to the placed kernels, not to a transposed
        convolution over one response map per group: (1) each kernel's rows
        are gathered into the image rows they cover (one gather from the
        kernel weights, `B x N x H` rows of `k + 1` values); (2) one matrix
        product sums, per (group, centre column), the row-placed kernels
        with that group and column, weighted; (3) a fixed 0/1 matrix moves
        each centre column's sums to the columns they cover. Only a gather
        and matrix products: deterministic in every runtime (onnxruntime's
        scatter-add is not) and exact in float16 up to the products' sums.

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
        dtype = weights.dtype
        # (1) each kernel's rows, plus a zero row (index `size`) read where an image row is outside the kernel
        kernels = ops.pad(ops.transpose(self.kernel, (3, 0, 1, 2)), ((0, 0), (0, 1), (0, 1), (0, 0)))  # (N, k+1, k+1, c)
        channels = kernels.shape[-1]
        kernel_rows = ops.reshape(kernels, (filters * (size + 1), (size + 1) * channels))
        centres = ops.cast(locations, "int32")
        row_in_kernel = ops.arange(height, dtype="int32")[None, None, :] - centres[..., 0:1] + size // 2  # (B, N, H)
        row_in_kernel = ops.where(ops.logical_and(row_in_kernel >= 0, row_in_kernel < size), row_in_kernel, size)
        first_row = (ops.arange(filters, dtype="int32") * (size + 1))[None, :, None]
        rows_placed = gather_rows(kernel_rows, row_in_kernel + first_row)  # (B, N, H, (k+1) c)
        rows_placed = ops.transpose(ops.reshape(rows_placed, (-1, height, size + 1, channels)), (0, 2, 1, 3))
        rows_placed = ops.reshape(rows_placed, (-1, filters, (size + 1) * height * channels))  # (B, N, (k+1) H c)
        # (2) per (group, centre column): the weighted sum of the row-placed kernels of that group centred on that column
        in_group = ops.cast(ops.equal(ops.arange(num_groups, dtype="int32")[None, None, :], ops.cast(groups, "int32")[..., None]), dtype)
        on_column = ops.cast(ops.equal(ops.arange(width, dtype="int32")[None, None, :], centres[..., 1:2]), dtype)  # (B, N, W)
        selection = (in_group * weights[..., None])[:, :, :, None] * on_column[:, :, None, :]  # (B, N, G, W)
        selection = ops.reshape(ops.transpose(selection, (0, 2, 3, 1)), (-1, num_groups * width, filters))
        sums = ops.matmul(selection, rows_placed)  # (B, G W, (k+1) H c)
        # (3) kernel column j of a sum centred on column x0 lands on column x0 + j - k // 2
        sums = ops.reshape(sums, (-1, width * (size + 1), height * channels))  # (B G, W (k+1), H c)
        shift = ops.transpose(ops.convert_to_tensor(column_shift_matrix(width, size), dtype))[None]  # (1, W, W (k+1))
        images = ops.reshape(ops.matmul(shift, sums), (-1, num_groups, width, height, channels))  # (B, G, W, H, c)
        return ops.transpose(images, (0, 1, 3, 2, 4))

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


def column_shift_matrix(width, kernel_size):
    """`(W (k + 1), W)` 0/1 matrix: row `(x0, j)` has its one at column `x0 + j - k // 2` (none if outside, or if `j == k`).

    Args:
        width: int, image width `W`.
        kernel_size: int, odd kernel side `k`.

    Example:
    >>> column_shift_matrix(4, 3).shape
    (16, 4)
    """
    shift = np.zeros((width, kernel_size + 1, width), "float32")
    for centre in range(width):
        for j in range(kernel_size):
            column = centre + j - kernel_size // 2
            if 0 <= column < width:
                shift[centre, j, column] = 1.0
    return shift.reshape(width * (kernel_size + 1), width)
