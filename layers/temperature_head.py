"""The CoDA head: sum over positions, divided by a temperature, plus a fixed prior bias."""

import math

import keras
from keras import ops

PRIOR_BIAS = math.log(0.1 / 0.9)


@keras.saving.register_keras_serializable(package="glasszoo")
class TemperatureSumPooling(keras.layers.Layer):
    """Class logits `sum_{h,w} maps[:, h, w, k] / T + b0` of class maps `(B, H, W, K)`.

    `b0 = log(0.1 / 0.9)` is fixed (not trained), so an all-zero contribution
    gives each class a sigmoid probability of 0.1, the prior of ten balanced
    classes under binary cross-entropy (seed 002). The temperature `T` lowers
    the network's bounded output and so raises the alignment pressure.

    Args:
        temperature: float `T` > 0.
        bias: the fixed logit offset `b0`.

    Example:
    >>> TemperatureSumPooling(temperature=10.0)(keras.ops.ones((2, 4, 4, 3))).shape
    (2, 3)
    """

    def __init__(self, temperature, bias=PRIOR_BIAS, **kwargs):
        super().__init__(**kwargs)
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be positive; got {temperature!r}.")
        self.temperature = float(temperature)
        self.bias = float(bias)

    def position_weights(self, maps):
        """`(B, H, W, K)` weight of each position in each class logit: `1 / T` everywhere."""
        return ops.ones_like(maps) / self.temperature

    def pooled(self, maps, weights):
        """The logits of `maps` with the position weights `weights` (`position_weights(maps)`)."""
        return ops.sum(weights * maps, axis=(1, 2)) + self.bias

    def call(self, maps):
        return ops.sum(maps, axis=(1, 2)) / self.temperature + self.bias

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, bias=self.bias)
        return config
