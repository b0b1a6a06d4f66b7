"""Softmax-weighted pooling of class evidence maps: the class logit follows where its evidence is strongest."""

import keras
import numpy as np
from glasszoo.layers.temperature_head import PRIOR_BIAS, TemperatureSumPooling
from keras import ops

POOLINGS = ("sum", "softmax")


@keras.saving.register_keras_serializable(package="glasszoo")
class SoftmaxEvidencePooling(keras.layers.Layer):
    """Class logits `sum_s a[s, k] · maps[s, k] / T + b0` with `a[:, k] = softmax over positions of maps[:, k] / tau`.

    Each class pools its own evidence map with weights that favour the
    positions where that evidence is strongest (multiple-instance pooling
    between the mean, `tau -> inf`, and the maximum, `tau -> 0`). For a class
    that is absent, every position must then carry negative evidence, not
    only their sum, which is what keeps a class's positive evidence on the
    object of that class. The weights are a dynamic factor of the input: held
    fixed, the logit is a linear function of the maps (`position_weights`),
    so contribution maps of a dynamic linear network stay exact
    (completeness: logit = sum of the map + b0). The weighted mean does not
    grow with the image size, so a model trained on single images gives
    comparable logits on a grid of them.

    Args:
        temperature: float `T` > 0, divides the pooled evidence.
        sharpness: float `tau` > 0 of the position softmax (same units as the maps).
        bias: the fixed logit offset `b0` (default `log(0.1 / 0.9)`).

    Example:
    >>> pooling = SoftmaxEvidencePooling(temperature=1.0, sharpness=1.0)
    >>> pooling(keras.ops.zeros((2, 4, 4, 3))).shape
    (2, 3)
    """

    def __init__(self, temperature, sharpness, bias=PRIOR_BIAS, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("temperature", temperature), ("sharpness", sharpness)):
            if not float(value) > 0:
                raise ValueError(f"{name} must be positive; got {value!r}.")
        self.temperature, self.sharpness, self.bias = float(temperature), float(sharpness), float(bias)

    def position_weights(self, maps):
        """`(B, H, W, K)` weights `a / T` of each position in each class logit (they sum to `1 / T` per class)."""
        shape = ops.shape(maps)
        flat = ops.reshape(maps, (shape[0], -1, shape[-1]))
        weights = ops.softmax(flat / self.sharpness, axis=1)
        return ops.reshape(weights, shape) / self.temperature

    def pooled(self, maps, weights):
        """The logits of `maps` with the position weights `weights` (`position_weights(maps)`, computed once by the caller)."""
        return ops.sum(weights * maps, axis=(1, 2)) + self.bias

    def call(self, maps):
        return self.pooled(maps, self.position_weights(maps))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, sharpness=self.sharpness, bias=self.bias)
        return config


def evidence_pooling_head(pooling, temperature, sharpness=1.0, bias=PRIOR_BIAS):
    """The head that pools a dynamic linear network's class maps `(B, H, W, K)` into logits.

    Args:
        pooling: `"sum"` (`TemperatureSumPooling`: the sum over positions, as the
            CoDA and B-cos papers pool) or `"softmax"` (`SoftmaxEvidencePooling`).
        temperature: `T` > 0 of either head.
        sharpness: `tau` of the softmax pooling (ignored for `"sum"`).
        bias: the fixed logit offset `b0`.

    Example:
    >>> evidence_pooling_head("softmax", temperature=3.0, sharpness=5.0).name
    'softmax_evidence_pooling'
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}.")
    if pooling == "sum":
        return TemperatureSumPooling(temperature, bias, name="temperature_sum_pooling")
    return SoftmaxEvidencePooling(temperature, sharpness, bias, name="softmax_evidence_pooling")


def pooling_constants(head):
    """`(temperature, sharpness)` of a pooling head as floats, `sharpness` None for the sum (`pooling_weights_and_slopes`).

    Example:
    >>> pooling_constants(evidence_pooling_head("sum", temperature=10.0))
    (10.0, None)
    """
    sharpness = getattr(head, "sharpness", None)
    return float(head.temperature), None if sharpness is None else float(sharpness)


def pooling_weights_and_slopes(outputs, temperature, sharpness=None):
    """NumPy `(weights, slopes)` of a pooling head over axis 1 (the positions) of `outputs` `(n, P, K)`.

    `logits = sum_p weights[:, p] * outputs[:, p] + b0`, and `slopes` is
    `d logit / d outputs` (for a readout's Jacobian): `1 / T` everywhere for
    the sum (`sharpness` None), `a_p (1 + (out_p - sum_q a_q out_q) / tau) / T`
    for the softmax pooling with weights `a = softmax(outputs / tau)`.

    Args:
        outputs: float array `(n, P, K)`, the class maps with the positions flattened.
        temperature: `T` of the head.
        sharpness: `tau` of a softmax pooling, or None for the sum.

    Example:
    >>> weights, slopes = pooling_weights_and_slopes(np.zeros((1, 4, 2)), 2.0, sharpness=1.0)
    >>> float(weights[0, :, 0].sum())
    0.5
    """
    outputs = np.asarray(outputs, "float64")
    if sharpness is None:
        weights = np.full(outputs.shape, 1.0 / temperature)
        return weights, weights
    shifted = outputs / sharpness
    shifted = np.exp(shifted - shifted.max(axis=1, keepdims=True))
    share = shifted / shifted.sum(axis=1, keepdims=True)
    pooled = np.sum(share * outputs, axis=1, keepdims=True)
    return share / temperature, share * (1.0 + (outputs - pooled) / sharpness) / temperature
