"""Operations written so that each exports to a single ONNX node (one pass over its input).

`keras.ops.argmax` and `keras.ops.take` are correct everywhere, but on the
TensorFlow backend each wraps its TensorFlow op in element-wise work over
the whole tensor (argmax rewrites -0.0; take wraps negative indices),
which tf2onnx exports as five or six extra passes. Where ties only need
the first maximum and indices are known to be valid, the plain TensorFlow
op is the same result at a fraction of the cost; the other backends use
the Keras op.

No scatter-add here: tf2onnx exports `keras.ops.scatter` as a `ScatterND`
without reduction (repeated indices overwrite each other), and onnxruntime
1.31's CPU `ScatterND` with `reduction="add"` loses updates to repeated
indices between its threads (its results change from run to run).
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


def gather_rows(table, index):
    """`table[index]`: rows of `table` picked by a tensor of int indices in `[0, len(table))`.

    On TensorFlow this is `tf.gather` (one ONNX `Gather`); negative indices
    are not wrapped, so the caller guarantees they do not occur.

    Args:
        table: tensor `(R, ...)`.
        index: int tensor of any shape, with values in `[0, R)`.

    Returns:
        tensor `index.shape + table.shape[1:]`.

    Example:
    >>> gather_rows(keras.ops.eye(3), keras.ops.convert_to_tensor([[2, 0]])).shape  # doctest: +SKIP
    (1, 2, 3)
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.gather(table, index, axis=0)
    return ops.take(table, index, axis=0)
