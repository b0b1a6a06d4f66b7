"""The interpretable convolution of INAM: N bias-free kernels with TV and orthonormality penalties."""

import keras
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

    def place_kernels(self, weighted_maps):
        """Adjoint of `call`: puts each kernel, scaled, where `weighted_maps` says.

        Args:
            weighted_maps: tensor `(B, H', W', N)` in response-map coordinates.

        Returns:
            tensor `(B, H, W, c)` in input coordinates.
        """
        return ops.conv_transpose(weighted_maps, self.kernel, strides=1, padding=self.padding)

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
