"""Operations written so that each exports to a single ONNX node (one pass over its input).

`keras.ops.argmax` is correct everywhere, but on the TensorFlow backend it
wraps `tf.argmax` in element-wise work over the whole tensor (it rewrites
-0.0), which tf2onnx exports as five or six extra passes. Where ties only
need the first maximum, the plain TensorFlow op is the same result at a
fraction of the cost; the other backends use the Keras op.

`keras.ops.scatter` sums repeated indices in every backend, but tf2onnx
exports TensorFlow's `scatter_nd` as an ONNX `ScatterND` without
reduction, where repeated indices overwrite each other; `scatter_sum`
exports as `ScatterND(reduction="add")` (opset 16).
"""

import keras
from keras import ops


def first_argmax(x, axis):
    """Index of the first maximum along `axis`, as int32.

    On TensorFlow this is `tf.argmax` (one ONNX `ArgMax`); -0.0 and 0.0
    compare equal, so the first of them wins as in the other backends.

    Args:
        x: float tensor.
        axis: int, the axis searched.

    Example:
    >>> first_argmax(keras.ops.convert_to_tensor([[0.0, 2.0, 2.0]]), axis=1)  # doctest: +SKIP
    [1]
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.argmax(x, axis=axis, output_type=tf.int32)
    return ops.cast(ops.argmax(x, axis=axis), "int32")


def scatter_sum(indices, updates, shape):
    """A zero tensor of `shape` with `updates` added at `indices`; repeated indices add up.

    On TensorFlow this is `tf.tensor_scatter_nd_add` on zeros (one ONNX
    `ScatterND` with `reduction="add"`, opset 16 or later), not
    `keras.ops.scatter`, whose export drops the sum over repeated indices.

    Args:
        indices: int tensor `(..., d)`: each last-axis vector indexes the
            first `d` axes of the output.
        updates: tensor `indices.shape[:-1] + shape[d:]`.
        shape: the output's shape (a tuple; entries may be tensors).

    Example:
    >>> scatter_sum(keras.ops.convert_to_tensor([[1], [1]]), keras.ops.ones((2,)), (3,))  # doctest: +SKIP
    [0.0, 2.0, 0.0]
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.tensor_scatter_nd_add(tf.zeros(shape, updates.dtype), indices, updates)
    return ops.scatter(indices, updates, shape)
