"""Naive reference formulation of `DAUConv2D`: per-position weight vectors, as in the seed paper's code.

This module exists for the tests and for `bench/dau_benchmark.py`: it
computes what a `DAUConv2D` computes the way the seed paper's reference
implementation does, by materialising every dynamic weight vector, so the
low-rank formulation of `DAUConv2D` can be checked against it and compared
with it for speed and memory. It is not meant for models.
"""

from keras import ops


def reference_dau_outputs(layer, inputs):
    """Outputs of a built `DAUConv2D`, computed with materialised dynamic weights.

    At every output position with patch `p` (d = kernel_size² · channels
    values, order `(kh, kw, c)`, the order of the kernels reshaped to
    `(d, ...)`), this forms `z = B p`, then for every output channel `j` the
    full weight vector `u_j = A_j z + b_j` (`(B, H', W', filters, d)` values
    in all), normalises it with the layer's `g` (`"sq"`: `|u|/(1+|u|²) u`,
    `"l2"`: `u/|u|`, with `|u|²` floored at `layer.epsilon` as in the layer)
    and returns `w_j · p`. Memory grows with `filters · d` per position,
    against `filters · rank` for `layer(inputs)`; the two agree to float
    round-off. Uses `keras.ops` only, so it runs on any backend and can be
    differentiated.

    Args:
        layer: a built `glasszoo.layers.DAUConv2D`.
        inputs: `(B, H, W, channels)` float tensor.

    Returns:
        `(B, H', W', filters)`, the same as `layer(inputs)`.

    Example:
    >>> import numpy as np
    >>> from glasszoo.layers import DAUConv2D
    >>> layer = DAUConv2D(filters=4, kernel_size=3, rank=2, strides=2)
    >>> x = np.random.default_rng(0).normal(size=(2, 7, 7, 3)).astype("float32")
    >>> low_rank = layer(x)  # builds the layer
    >>> reference = reference_dau_outputs(layer, x)
    >>> tuple(reference.shape)
    (2, 4, 4, 4)
    >>> bool(np.allclose(reference, low_rank, atol=1e-5))
    True
    """
    if not layer.built:
        raise ValueError("reference_dau_outputs needs a built DAUConv2D; call it on inputs first.")
    filters, rank = layer.filters, layer.rank
    padded = layer._pad(ops.convert_to_tensor(inputs))
    patches = ops.image.extract_patches(
        padded, layer.kernel_size, strides=layer.strides, padding="valid", data_format="channels_last"
    )  # (B, H', W', d), d ordered (kh, kw, c)
    patch_size = patches.shape[-1]
    projection = ops.reshape(layer.projection, (patch_size, rank))  # B^T, (d, rank)
    alignment = ops.reshape(layer.alignment, (patch_size, filters, rank))  # A_j, (d, filters, rank)
    offset = ops.reshape(layer.offset, (patch_size, filters))  # b_j, (d, filters)

    z = ops.matmul(patches, projection)  # (B, H', W', rank)
    u = ops.einsum("nhwa,dja->nhwjd", z, alignment) + ops.transpose(offset)  # (B, H', W', filters, d)
    squared_norm = ops.maximum(ops.sum(u * u, axis=-1, keepdims=True), layer.epsilon)
    if layer.normalization == "l2":
        scale = ops.rsqrt(squared_norm)
    else:
        scale = ops.sqrt(squared_norm) / (1.0 + squared_norm)
    weights = u * scale  # w_j(p), (B, H', W', filters, d)
    return ops.sum(weights * patches[..., None, :], axis=-1)
