"""The interpretable convolution of INAM: N bias-free kernels with TV and orthonormality penalties."""

import keras
from glasszoo.layers.single_node_ops import scatter_sum
from glasszoo.layers.regularizers import (
    Orthonormality,
    SumOfRegularizers,
    TotalVariation,
)
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

        The work is that of the placed kernels themselves, `B x N x k x k x c`
        additions into the images (one scatter-add), not a transposed
        convolution over one response map per group.

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
        kernels = ops.transpose(self.kernel, (3, 0, 1, 2))  # (N, k, k, c)
        channels = kernels.shape[-1]
        # the images with a border of k // 2 pixels, so that every kernel pixel lands inside; cut afterwards
        padded_height, padded_width = height + size - 1, width + size - 1
        centres = ops.cast(locations, "int32")
        batch = ops.shape(centres)[0]
        image = ops.arange(batch, dtype="int32")[:, None] * num_groups + ops.cast(groups, "int32")  # (B, N)
        top_left = (image * padded_height + centres[..., 0]) * padded_width + centres[..., 1]  # (B, N), in padded pixels
        offsets = ops.arange(size, dtype="int32")[:, None] * padded_width + ops.arange(size, dtype="int32")[None, :]  # (k, k)
        indices = top_left[:, :, None, None] + offsets[None, None]  # (B, N, k, k)
        updates = weights[:, :, None, None, None] * kernels[None]  # (B, N, k, k, c)
        images = scatter_sum(
            ops.reshape(indices, (-1, 1)),
            ops.reshape(updates, (-1, channels)),
            (batch * num_groups * padded_height * padded_width, channels),
        )
        images = ops.reshape(images, (-1, num_groups, padded_height, padded_width, channels))
        half = size // 2
        return images[:, :, half : half + height, half : half + width, :]

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

