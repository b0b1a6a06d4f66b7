"""Class probabilities from logits (NumPy only): softmax, or one sigmoid per class for models trained with binary cross-entropy."""

import numpy as np


def probabilities_of(logits, activation="softmax"):
    """Class probabilities `(B, K)` of logits `(B, K)`; `activation` is the model's `output_activation`.

    Example:
    >>> probabilities_of(np.zeros((1, 2)))
    array([[0.5, 0.5]])
    """
    logits = np.asarray(logits, dtype="float64")
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)
