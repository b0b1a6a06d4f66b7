"""Convolutional dynamic alignment units (CoDA-Nets, seed 002) without per-position weight vectors."""

import math

import keras
from glasszoo.layers import conv_padding
from keras import ops

NORMALIZATIONS = ("sq", "l2")


@keras.saving.register_keras_serializable(package="glasszoo")
class DAUConv2D(keras.layers.Layer):
    """Convolutional dynamic alignment unit layer (Böhle et al., seed 002).

    At every position with patch `p` (d = kernel_size² · channels values),
    output channel `j` is `w_j(p)^T p` with the dynamic weight
    `w_j(p) = g(A_j B p + b_j)`: `B` (rank x d) is shared by the layer, `A_j`
    (d x rank) and `b_j` (d) belong to the channel, and `g` rescales the
    norm: `"sq"` squashes `u` to `|u|/(1+|u|²) u`, `"l2"` to unit norm. The
    layer is dynamic linear: its output is a linear map of its input whose
    weights depend on the input.

    The weights are never materialised per position. With `z = B p`,
    `q_j = A_j^T p` and `c_j = b_j·p` (three convolutions),
    `u_j·p = z·q_j + c_j` and `|u_j|² = zᵀ(A_jᵀA_j)z + 2(A_jᵀb_j)·z + |b_j|²`,
    so a position holds `filters · rank` numbers instead of
    `filters · d`. `explain_backward` is the transposed linear map with the
    dynamic weights held fixed, one transposed convolution (ONNX
    ConvTranspose).

    Args:
        filters: int, output channels (DAUs per position).
        kernel_size: int, square kernel side.
        rank: int, rank `r` of `A_j B`.
        strides: int.
        padding: `"same"` (TensorFlow's), `"symmetric"` (`(k - 1) // 2` on both
            sides, the paper's) or `"valid"`; zero padding keeps the layer linear.
        normalization: `"sq"` (squashing) or `"l2"` (unit norm).
        epsilon: floor of `|u|²`, against division by zero.

    Example:
    >>> layer = DAUConv2D(filters=8, kernel_size=3, rank=4)
    >>> layer(keras.ops.ones((2, 10, 10, 2))).shape
    (2, 10, 10, 8)
    """

    def __init__(self, filters, kernel_size, rank, strides=1, padding="same", normalization="sq", epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        conv_padding.check_padding(padding)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}.")
        for label, value in (("filters", filters), ("kernel_size", kernel_size), ("rank", rank), ("strides", strides)):
            if int(value) < 1:
                raise ValueError(f"{label} must be a positive integer; got {value!r}.")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.rank = int(rank)
        self.strides = int(strides)
        self.padding = padding
        self.normalization = normalization
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        k, r = self.kernel_size, self.rank
        patch_size = k * k * channels
        # as the reference's layers initialise them: B a k x k convolution, A and b a 1 x 1
        # convolution (weights and bias) from r channels, all uniform(+-1/sqrt(fan_in))
        projection_limit = 1.0 / math.sqrt(patch_size)
        alignment_limit = 1.0 / math.sqrt(r)
        self.projection = self.add_weight(
            name="projection", shape=(k, k, channels, r),
            initializer=keras.initializers.RandomUniform(-projection_limit, projection_limit),
        )
        self.alignment = self.add_weight(
            name="alignment", shape=(k, k, channels, self.filters * r),
            initializer=keras.initializers.RandomUniform(-alignment_limit, alignment_limit),
        )
        self.offset = self.add_weight(
            name="offset", shape=(k, k, channels, self.filters),
            initializer=keras.initializers.RandomUniform(-alignment_limit, alignment_limit),
        )

    # -- shapes and padding ----------------------------------------------------
    def _paddings(self, height, width):
        return conv_padding.paddings(height, width, self.kernel_size, self.strides, self.padding)

    def _pad(self, inputs):
        return conv_padding.pad(inputs, *self._paddings(inputs.shape[1], inputs.shape[2]))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape

        def size(n):
            return conv_padding.output_size(n, self.kernel_size, self.strides, self.padding)

        return (batch, size(height), size(width), self.filters)

    def _ensure_built(self, inputs):
        if not self.built:
            self.build(inputs.shape)
            self.built = True

    # -- forward -------------------------------------------------------------------
    def _conv(self, padded, kernel):
        return ops.conv(padded, kernel, strides=self.strides, padding="valid")

    def dynamic_state(self, inputs):
        """Forward pass that also returns what the explanation pass needs.

        Returns:
            dict with `outputs` `(B, H', W', filters)`, `projected` (`z = B p`,
            `(B, H', W', rank)`) and `scale` (`alpha(|u_j|)`, `(B, H', W', filters)`).
        """
        self._ensure_built(inputs)
        padded = self._pad(inputs)
        rank, filters = self.rank, self.filters
        projected = self._conv(padded, self.projection)  # z
        aligned = self._conv(padded, self.alignment)  # q_j = A_j^T p, channel j * rank + a
        offset_response = self._conv(padded, self.offset)  # c_j = b_j . p
        height, width = aligned.shape[1], aligned.shape[2]
        aligned = ops.reshape(aligned, (-1, height, width, filters, rank))
        linear = ops.einsum("nhwja,nhwa->nhwj", aligned, projected) + offset_response  # u_j . p

        alignment = ops.reshape(self.alignment, (-1, filters, rank))  # (d, filters, rank)
        offset = ops.reshape(self.offset, (-1, filters))  # (d, filters)
        gram = ops.einsum("dja,djb->jab", alignment, alignment)
        cross = ops.einsum("dja,dj->ja", alignment, offset)
        offset_norm = ops.sum(offset * offset, axis=0)
        quadratic = ops.einsum("nhwjb,nhwb->nhwj", ops.einsum("nhwa,jab->nhwjb", projected, gram), projected)
        squared_norm = quadratic + 2.0 * ops.einsum("nhwa,ja->nhwj", projected, cross) + offset_norm
        squared_norm = ops.maximum(squared_norm, self.epsilon)
        if self.normalization == "l2":
            scale = ops.rsqrt(squared_norm)
        else:
            scale = ops.sqrt(squared_norm) / (1.0 + squared_norm)
        return {"outputs": scale * linear, "projected": projected, "scale": scale}

    def call(self, inputs):
        return self.dynamic_state(inputs)["outputs"]

    # -- explanation -------------------------------------------------------------
    def explain_backward(self, state, relevance, input_shape):
        """Transposed dynamic linear map: output relevance to input relevance.

        With the dynamic weights `w_j` held fixed, the layer is
        `out_j = w_j · p`; this returns `sum_j R_j w_j` placed back on the
        patches (the gradient of `sum(R * out)` with detached weights), so
        `sum(result * inputs) == sum(relevance * outputs)`.

        Args:
            state: `dynamic_state(inputs)` of the same inputs.
            relevance: `(B, H', W', filters)`.
            input_shape: shape of `inputs` (height and width are used).

        Returns:
            `(B, H, W, channels)`.
        """
        beta = relevance * ops.stop_gradient(state["scale"])
        z = ops.stop_gradient(state["projected"])
        height, width = beta.shape[1], beta.shape[2]
        weighted = ops.reshape(beta[..., :, None] * z[..., None, :], (-1, height, width, self.filters * self.rank))
        stacked = ops.concatenate([weighted, beta], axis=-1)
        kernel = ops.concatenate([self.alignment, self.offset], axis=-1)
        placed = ops.conv_transpose(stacked, kernel, strides=self.strides, padding="valid")
        return conv_padding.place_back(placed, input_shape, *self._paddings(input_shape[1], input_shape[2]))

    def dynamic_weights(self, inputs):
        """The materialised weights `w_j` per position `(B, H', W', filters, d)` (tests and plots; memory-hungry)."""
        self._ensure_built(inputs)
        padded = self._pad(inputs)
        z = self._conv(padded, self.projection)
        alignment = ops.reshape(self.alignment, (-1, self.filters, self.rank))
        offset = ops.reshape(self.offset, (-1, self.filters))
        u = ops.einsum("nhwa,dja->nhwjd", z, alignment) + ops.transpose(offset)
        norm = ops.sqrt(ops.maximum(ops.sum(u * u, axis=-1, keepdims=True), self.epsilon))
        scale = 1.0 / norm if self.normalization == "l2" else norm / (1.0 + norm * norm)
        return u * scale

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            rank=self.rank,
            strides=self.strides,
            padding=self.padding,
            normalization=self.normalization,
            epsilon=self.epsilon,
        )
        return config
