"""Kernel regularisers of the INAM interpretable convolution (seed 000, eq. 1 and 2)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="glasszoo")
class TotalVariation(keras.regularizers.Regularizer):
    """Total variation of convolution kernels, weighted (seed 000, eq. 1).

    For kernels `K` of shape `(n, n, c, N)` the penalty is
    `weight * sum_{l,m} sum_{i,j=1}^{n-1} (K[i+1,j] - K[i,j])^2 + (K[i,j+1] - K[i,j])^2`.
    Both indices run to `n - 1`, exactly as the equation is written, so the
    last row and last column only enter as the "next" neighbour.

    Args:
        weight: float, the factor `alpha_TV` of the penalty.

    Example:
    >>> reg = TotalVariation(weight=0.05)
    >>> float(reg(keras.ops.ones((3, 3, 1, 2))))
    0.0
    """

    def __init__(self, weight=0.05):
        self.weight = float(weight)

    def __call__(self, kernel):
        if self.weight == 0.0:
            return ops.zeros(())
        corner = kernel[:-1, :-1]
        down = kernel[1:, :-1] - corner
        right = kernel[:-1, 1:] - corner
        return self.weight * (ops.sum(ops.square(down)) + ops.sum(ops.square(right)))

    def get_config(self):
        return {"weight": self.weight}


@keras.saving.register_keras_serializable(package="glasszoo")
class Orthonormality(keras.regularizers.Regularizer):
    """Distance of the kernels' Gram matrix to the identity (seed 000, eq. 2).

    With the `N` kernels flattened to columns of `F` (shape `(n*n*c, N)`) the
    penalty is `weight * 1/2 * sum_ij ((F^T F)_ij - delta_ij)^2`.

    Args:
        weight: float, the factor `alpha_ortho` of the penalty.

    Example:
    >>> import numpy as np
    >>> eye = np.eye(4, dtype="float32").reshape(2, 2, 1, 4)
    >>> float(Orthonormality(weight=0.5)(eye))
    0.0
    """

    def __init__(self, weight=0.05):
        self.weight = float(weight)

    def __call__(self, kernel):
        if self.weight == 0.0:
            return ops.zeros(())
        count = ops.shape(kernel)[-1]
        flat = ops.reshape(kernel, (-1, count))
        gram = ops.matmul(ops.transpose(flat), flat)
        return self.weight * 0.5 * ops.sum(ops.square(gram - ops.eye(count, dtype=gram.dtype)))

    def get_config(self):
        return {"weight": self.weight}


@keras.saving.register_keras_serializable(package="glasszoo")
class SumOfRegularizers(keras.regularizers.Regularizer):
    """Adds several regularisers on one weight (Keras takes one per weight).

    Args:
        regularizers: list of `keras.regularizers.Regularizer` (or their
            serialised configs).

    Example:
    >>> reg = SumOfRegularizers([TotalVariation(0.05), Orthonormality(0.05)])
    """

    def __init__(self, regularizers):
        self.regularizers = [
            r if isinstance(r, keras.regularizers.Regularizer) else keras.regularizers.deserialize(r)
            for r in regularizers
        ]

    def __call__(self, weight):
        total = ops.zeros(())
        for regularizer in self.regularizers:
            total = total + regularizer(weight)
        return total

    def get_config(self):
        return {"regularizers": [keras.regularizers.serialize(r) for r in self.regularizers]}
