"""Explicit zero padding of the dynamic-linear convolutions, and the inverse placement of their transposed pass.

Three conventions:
- `"same"`: TensorFlow's, `(before, after)` with the extra row or column
  after (`(0, 1)` for a 3x3 kernel at stride 2 on an even size);
- `"symmetric"`: `(k - 1) // 2` on both sides, PyTorch's `padding=k // 2`
  (what the CoDA and B-cos authors' networks use);
- `"valid"`: none.

Zero padding keeps a dynamic-linear layer linear in its input, and the
transposed pass (`place_back`) returns relevance for the unpadded input only.

Example:
>>> paddings(28, 28, 3, 2, "symmetric")
((1, 1), (1, 1))
>>> output_size(28, 3, 2, "symmetric")
14
"""

from keras import ops

PADDINGS = ("same", "symmetric", "valid")


def check_padding(padding):
    """`padding` if it is one of `PADDINGS`; a ValueError naming them otherwise."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}; got {padding!r}.")
    return padding


def same_padding(size, kernel_size, stride):
    """`(before, after)` zero padding of TensorFlow's "same" convolution along one axis."""
    output = -(-size // stride)
    total = max((output - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def axis_padding(size, kernel_size, stride, padding):
    """`(before, after)` zero padding along one axis of `size` values."""
    if padding == "valid":
        return 0, 0
    if padding == "symmetric":
        return (kernel_size - 1) // 2, (kernel_size - 1) // 2
    return same_padding(size, kernel_size, stride)


def paddings(height, width, kernel_size, stride, padding):
    """`((top, bottom), (left, right))` zero padding of an input of `height x width`."""
    return axis_padding(height, kernel_size, stride, padding), axis_padding(width, kernel_size, stride, padding)


def output_size(size, kernel_size, stride, padding):
    """Output positions along one axis (None stays None)."""
    if size is None:
        return None
    before, after = axis_padding(size, kernel_size, stride, padding)
    return (size + before + after - kernel_size) // stride + 1


def pad(inputs, rows, cols):
    """`inputs` `(B, H, W, C)` with `rows` / `cols` zeros before and after."""
    if rows == (0, 0) and cols == (0, 0):
        return inputs
    return ops.pad(inputs, ((0, 0), rows, cols, (0, 0)))


def place_back(placed, input_shape, rows, cols):
    """The part of a transposed convolution's output `placed` that lies on the unpadded input `(B, H, W, C)`.

    Rows and columns of the padded input that no window reached get zero
    relevance; the padding itself is cut away.
    """
    padded_height = input_shape[1] + rows[0] + rows[1]
    padded_width = input_shape[2] + cols[0] + cols[1]
    missing_rows, missing_cols = padded_height - placed.shape[1], padded_width - placed.shape[2]
    if missing_rows or missing_cols:
        placed = ops.pad(placed, ((0, 0), (0, missing_rows), (0, missing_cols), (0, 0)))
    return placed[:, rows[0] : rows[0] + input_shape[1], cols[0] : cols[0] + input_shape[2], :]
