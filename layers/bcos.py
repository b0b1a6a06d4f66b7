"""B-cos convolutions (Böhle, Fritz and Schiele, CVPR 2022): alignment-weighted linear units whose explanation is exact."""

import math

import keras
from glasszoo.layers import conv_padding
from keras import ops


@keras.saving.register_keras_serializable(package="glasszoo")
class BcosConv2D(keras.layers.Layer):
    """B-cos convolution: `out_j = |cos(p, ŵ_j)|^(B - 1) · ŵ_jᵀ p / s` on every patch `p`.

    `ŵ_j` is the unit-norm kernel of output unit `j`, so `ŵ_jᵀ p = |p| cos`:
    an output is large only where the patch both is strong and points the
    way of the kernel, and `B > 1` suppresses misaligned patches (`B = 1` is
    a linear convolution without bias). With `max_out = m > 1` every output
    channel is the largest of `m` such units (MaxOut, the paper's v1). No
    bias, so the layer is dynamic linear: `out = W(x) x` with
    `W(x)_j = |cos|^(B - 1) ŵ_{j*} / s` (`j*` the MaxOut winner), and
    `explain_backward` applies `W(x)ᵀ` with those factors held fixed, one
    transposed convolution (ONNX ConvTranspose), so the input's contribution
    `x ⊙ W(x)ᵀ R` sums exactly to `R · out`.

    `s` is the paper's fixed output scale, `kernel_size · sqrt(in_channels) /
    scale_factor`, which keeps activations from shrinking layer by layer
    (|cos| < 1 and no normalisation layers).

    Args:
        filters: output channels (after MaxOut).
        kernel_size: square kernel side.
        strides: int.
        padding: `"symmetric"` (the paper's, `(k - 1) // 2` on both sides),
            `"same"` or `"valid"`; zero padding keeps the layer linear.
        b: the exponent `B` (>= 1).
        max_out: units per output channel (1: no MaxOut).
        scale_factor: the output is multiplied by `scale_factor / (k · sqrt(C))`.
        epsilon: added to the squared patch norm and to |cos|.

    Example:
    >>> layer = BcosConv2D(filters=8, kernel_size=3, strides=2)
    >>> layer(keras.ops.ones((2, 28, 28, 2))).shape
    (2, 14, 14, 8)
    """

    def __init__(self, filters, kernel_size, strides=1, padding="symmetric", b=2.0, max_out=2, scale_factor=100.0, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
        self.padding = conv_padding.check_padding(padding)
        self.b, self.max_out = float(b), int(max_out)
        self.scale_factor, self.epsilon = float(scale_factor), float(epsilon)
        if min(self.filters, self.kernel_size, self.strides, self.max_out) < 1:
            raise ValueError(f"filters, kernel_size, strides and max_out must be positive; got {filters}, {kernel_size}, {strides}, {max_out}.")
        if not self.b >= 1.0:
            raise ValueError(f"b must be at least 1 (1 is a linear layer); got {b!r}.")
        if not self.scale_factor > 0:
            raise ValueError(f"scale_factor must be positive; got {scale_factor!r}.")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(self.kernel_size, self.kernel_size, channels, self.filters * self.max_out),
            initializer=keras.initializers.GlorotUniform(),
        )
        self.scale = self.kernel_size * math.sqrt(channels) / self.scale_factor

    # -- shapes --------------------------------------------------------------------
    def _paddings(self, height, width):
        return conv_padding.paddings(height, width, self.kernel_size, self.strides, self.padding)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        size = lambda n: conv_padding.output_size(n, self.kernel_size, self.strides, self.padding)  # noqa: E731
        return (batch, size(height), size(width), self.filters)

    def unit_kernel(self):
        """The kernel with every unit scaled to unit norm over its `k x k x C` weights."""
        norm = ops.sqrt(ops.sum(ops.square(self.kernel), axis=(0, 1, 2), keepdims=True))
        return self.kernel / ops.maximum(norm, self.epsilon)

    # -- forward ---------------------------------------------------------------------
    def unit_major_kernel(self):
        """`unit_kernel()` with its output channels reordered unit-major: channel `k · filters + j` is unit `k` of filter `j`.

        The `max_out` candidates of the filters are then `max_out` contiguous
        blocks of `filters` channels, so MaxOut and its one-hot are
        elementwise operations between blocks rather than reductions over a
        trailing axis of `max_out` values (which onnxruntime broadcasts
        slowly).
        """
        kernel = ops.reshape(self.unit_kernel(), self.kernel.shape[:3] + (self.filters, self.max_out))
        return ops.reshape(ops.transpose(kernel, (0, 1, 2, 4, 3)), self.kernel.shape)

    def dynamic_state(self, inputs):
        """Forward pass that also returns what the explanation pass needs.

        MaxOut is an elementwise maximum of the units' blocks (the logits do
        not depend on the winners, so a graph cut to its logits leaves the
        selection out) and the winners are pairwise comparisons of the blocks
        (ties go to the first unit).

        Returns:
            dict: `outputs` `(B, H', W', filters)`; `factor`, the dynamic
            factor `|cos|^(B - 1) / s` of each output; `winner`, the MaxOut
            one-hot `(B, H', W', filters, max_out)`; `selection`, the same
            one-hot unit-major, `(B, H', W', max_out · filters)` (see
            `unit_major_kernel`).
        """
        if not self.built:
            self.build(inputs.shape)
            self.built = True
        padded = conv_padding.pad(inputs, *self._paddings(inputs.shape[1], inputs.shape[2]))
        linear = ops.conv(padded, self.unit_major_kernel(), strides=self.strides, padding="valid")  # |p| cos per unit
        filters = self.filters
        units = [linear[..., k * filters : (k + 1) * filters] for k in range(self.max_out)]
        selected = units[0]
        for unit in units[1:]:
            selected = ops.maximum(selected, unit)
        winners = []
        for k, unit in enumerate(units):  # unit k wins where it beats every earlier unit and ties no later one
            wins = [ops.cast(unit > other, unit.dtype) for other in units[:k]] + [ops.cast(unit >= other, unit.dtype) for other in units[k + 1 :]]
            won = wins[0] if wins else ops.ones_like(unit)
            for win in wins[1:]:
                won = won * win
            winners.append(won)
        factor = self._factor(padded, selected)
        selection = winners[0] if len(winners) == 1 else ops.concatenate(winners, axis=-1)
        return {"outputs": selected * factor, "factor": factor, "winner": ops.stack(winners, axis=-1), "selection": selection}

    def _factor(self, padded, selected):
        """The dynamic factor `|cos|^(B - 1) / s` of the selected outputs (`1 / s` for B = 1)."""
        if self.b == 1.0:
            return ops.ones_like(selected) / self.scale
        # |p|^2 of every patch: the channels' squares summed first, then a k x k window sum (a pooling, not a
        # convolution with one output channel)
        energy = ops.sum(ops.square(padded), axis=-1, keepdims=True)
        squared_norm = ops.average_pool(energy, self.kernel_size, strides=self.strides, padding="valid") * float(self.kernel_size**2)
        cosine = ops.abs(selected) / ops.sqrt(squared_norm + self.epsilon) + self.epsilon
        exponent = self.b - 1.0
        powered = ops.square(cosine) if exponent == 2.0 else cosine if exponent == 1.0 else ops.power(cosine, exponent)
        return powered / self.scale

    def call(self, inputs):
        """The forward pass alone: the same outputs as `dynamic_state`, with MaxOut as a plain maximum (cheaper to train)."""
        if not self.built:
            self.build(inputs.shape)
            self.built = True
        padded = conv_padding.pad(inputs, *self._paddings(inputs.shape[1], inputs.shape[2]))
        linear = ops.conv(padded, self.unit_kernel(), strides=self.strides, padding="valid")
        height, width = linear.shape[1], linear.shape[2]
        selected = ops.max(ops.reshape(linear, (-1, height, width, self.filters, self.max_out)), axis=-1)
        return selected * self._factor(padded, selected)

    # -- explanation -------------------------------------------------------------
    def explain_backward(self, state, relevance, input_shape):
        """`W(x)ᵀ relevance` with the dynamic factors and MaxOut winners of `state` held fixed.

        Args:
            state: `dynamic_state(inputs)` of the same inputs.
            relevance: `(B, H', W', filters)`.
            input_shape: shape of `inputs` (height and width are used).

        Returns:
            `(B, H, W, channels)`, with `sum(result * inputs) == sum(relevance * outputs)`.
        """
        weighted = relevance * ops.stop_gradient(state["factor"])
        per_unit = weighted  # max_out = 1: every unit wins
        if self.max_out > 1:  # unit-major, as `selection`
            per_unit = ops.concatenate([weighted] * self.max_out, axis=-1) * ops.stop_gradient(state["selection"])
        placed = ops.conv_transpose(per_unit, self.unit_major_kernel(), strides=self.strides, padding="valid")
        return conv_padding.place_back(placed, input_shape, *self._paddings(input_shape[1], input_shape[2]))

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            b=self.b,
            max_out=self.max_out,
            scale_factor=self.scale_factor,
            epsilon=self.epsilon,
        )
        return config
