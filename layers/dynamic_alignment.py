"""Convolutional dynamic alignment units (CoDA-Nets, seed 002) without per-position weight vectors."""

import math

import keras
from glasszoo.layers import conv_padding
from keras import ops

NORMALIZATIONS = ("sq", "l2")


def extract_patches(padded, kernel_size, strides=1):
    """Every `k x k` window of `padded`, flattened on the last axis: `(B, H', W', k·k·C)`.

    The values of a window are ordered `(kh, kw, c)`, the order of a
    `(k, k, C, n)` convolution kernel reshaped to `(k·k·C, n)`, so
    `patches @ reshape(kernel, (-1, n))` is the valid convolution. The
    windows are `k²` strided slices concatenated on the channel axis: the
    tensors stay channels last, and the products that follow are plain
    matrix products, which onnxruntime runs without the layout changes
    (NHWC -> NCHW -> blocked -> NHWC) a convolution exported from
    TensorFlow costs.

    Args:
        padded: `(B, H, W, C)`, already padded (the windows are "valid").
        kernel_size: int `k`, the window side.
        strides: int, step between windows.

    Returns:
        `(B, (H - k) // strides + 1, (W - k) // strides + 1, k·k·C)`.

    Example:
    >>> patches = extract_patches(keras.ops.ones((2, 9, 9, 3)), 3, strides=2)
    >>> tuple(patches.shape)
    (2, 4, 4, 27)
    """
    k, s = int(kernel_size), int(strides)
    height = (padded.shape[1] - k) // s + 1
    width = (padded.shape[2] - k) // s + 1
    if k == 1 and s == 1:
        return padded
    windows = [
        padded[:, dy : dy + s * (height - 1) + 1 : s, dx : dx + s * (width - 1) + 1 : s, :]
        for dy in range(k)
        for dx in range(k)
    ]
    return windows[0] if len(windows) == 1 else ops.concatenate(windows, axis=-1)


def fold_patches(patches, kernel_size, strides, padded_size):
    """The transpose of `extract_patches`: each window's values added back where they came from.

    `fold_patches(g, k, s, (H, W))` is the gradient of
    `sum(g * extract_patches(x, k, s))` with respect to `x` of `(B, H, W, C)`,
    i.e. a transposed convolution whose kernel has already been applied
    (`g = relevance_rows @ kernel_rows^T`). Windows `(dy, dx)` of one phase
    `(dy mod s, dx mod s)` land on the same `1/s`-subsampled grid, so each
    is padded (shifted) there and summed, and the `s²` phase grids are
    interleaved by a reshape: pads, adds and one reshape, all channels last.

    Args:
        patches: `(B, H', W', k·k·C)`, ordered as `extract_patches` orders them.
        kernel_size: int `k`.
        strides: int `s`.
        padded_size: `(H, W)` of the padded input the windows were taken from.

    Returns:
        `(B, H, W, C)`; rows and columns no window covered are zero.

    Example:
    >>> x = keras.ops.ones((1, 5, 5, 2))
    >>> counts = fold_patches(extract_patches(x, 3, strides=2), 3, 2, (5, 5))
    >>> [int(v) for v in keras.ops.convert_to_numpy(counts)[0, :, 2, 0]]
    [2, 2, 4, 2, 2]
    """
    k, s = int(kernel_size), int(strides)
    rows, cols = patches.shape[1], patches.shape[2]
    channels = patches.shape[-1] // (k * k)
    grid_rows = max(-(-padded_size[0] // s), rows + (k - 1) // s)  # the subsampled grid, big enough for every shift
    grid_cols = max(-(-padded_size[1] // s), cols + (k - 1) // s)
    phases = {}
    for dy in range(k):
        for dx in range(k):
            index = dy * k + dx
            window = patches[..., index * channels : (index + 1) * channels]
            shift_rows, shift_cols = dy // s, dx // s
            window = ops.pad(
                window,
                ((0, 0), (shift_rows, grid_rows - rows - shift_rows), (shift_cols, grid_cols - cols - shift_cols), (0, 0)),
            )
            phase = (dy % s, dx % s)
            phases[phase] = window if phase not in phases else phases[phase] + window
    if s == 1:
        folded = phases[(0, 0)]
    else:
        empty = ops.zeros_like(phases[(0, 0)])  # phases no window reaches (k < s)
        grid = [ops.stack([phases.get((py, px), empty) for px in range(s)], axis=3) for py in range(s)]
        folded = ops.reshape(ops.stack(grid, axis=2), (-1, grid_rows * s, grid_cols * s, channels))
    if folded.shape[1] != padded_size[0] or folded.shape[2] != padded_size[1]:
        folded = folded[:, : padded_size[0], : padded_size[1], :]
    return folded


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
    `q_j = A_j^T p` and `c_j = b_j·p` (the convolutions, as matrix products
    of the patch rows: `extract_patches`), `u_j·p = z·q_j + c_j` and
    `|u_j|² = zᵀ(A_jᵀA_j)z + 2(A_jᵀb_j)·z + |b_j|²` (one product of the
    outer products `z zᵀ` with the Gram matrices), so a position holds
    `filters · rank` numbers instead of `filters · d`. `explain_backward` is
    the transposed linear map with the dynamic weights held fixed: a matrix
    product back to the patches, then their overlap-add (`fold_patches`).
    Every tensor stays channels last, so an ONNX export is matrix products
    and elementwise operations without layout changes (TensorFlow's
    convolutions export as NCHW convolutions between transposes, which
    onnxruntime runs slower than the same products).

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
    def _kernel_rows(self, kernel):
        """A `(k, k, C, n)` kernel as the `(d, n)` matrix that multiplies patch rows."""
        return ops.reshape(kernel, (-1, kernel.shape[-1]))

    def dynamic_state(self, inputs):
        """Forward pass that also returns what the explanation pass needs.

        Every contraction is a matrix product on rows of positions
        (channels last, no transposes; see `extract_patches`), which
        TensorFlow and onnxruntime both run as one GEMM or one batched
        matrix-vector product.

        Returns:
            dict with `outputs` `(B, H', W', filters)`, `projected` (`z = B p`,
            `(B, H', W', rank)`) and `scale` (`alpha(|u_j|)`, `(B, H', W', filters)`).
        """
        self._ensure_built(inputs)
        rank, filters = self.rank, self.filters
        patches = extract_patches(self._pad(inputs), self.kernel_size, self.strides)
        height, width, patch_size = patches.shape[1], patches.shape[2], patches.shape[3]
        rows = ops.reshape(patches, (-1, patch_size))  # one patch p per row
        # q_j = A_j^T p for every channel j (the one large product), z = B p and c_j = b_j . p (one small product)
        aligned = ops.reshape(ops.matmul(rows, self._kernel_rows(self.alignment)), (-1, filters, rank))
        small = ops.matmul(rows, self._kernel_rows(ops.concatenate([self.projection, self.offset], axis=-1)))
        projected, offset_response = small[:, :rank], small[:, rank:]
        column = projected[:, :, None]  # z as a (rank, 1) matrix per row
        linear = ops.reshape(ops.matmul(aligned, column), (-1, filters)) + offset_response  # u_j . p = q_j . z + c_j

        # |u_j|^2 = z^T (A_j^T A_j) z + 2 (A_j^T b_j) . z + |b_j|^2: one product of the rank x rank outer products
        # z z^T (rows, rank^2) with the Gram matrices, one of z with the cross terms
        alignment = ops.reshape(self.alignment, (-1, filters, rank))  # (d, filters, rank)
        offset = ops.reshape(self.offset, (-1, filters))  # (d, filters)
        gram = ops.reshape(ops.einsum("dja,djb->abj", alignment, alignment), (rank * rank, filters))  # weights only
        cross = ops.einsum("dja,dj->aj", alignment, offset)  # (rank, filters)
        offset_norm = ops.sum(offset * offset, axis=0)
        outer = ops.reshape(column * projected[:, None, :], (-1, rank * rank))  # z_a z_b
        squared_norm = ops.matmul(outer, gram) + ops.matmul(projected, 2.0 * cross) + offset_norm
        squared_norm = ops.maximum(squared_norm, self.epsilon)
        if self.normalization == "l2":
            scale = ops.rsqrt(squared_norm)
        else:
            scale = ops.sqrt(squared_norm) / (1.0 + squared_norm)

        def positions(values):
            return ops.reshape(values, (-1, height, width, values.shape[-1]))

        return {"outputs": positions(scale * linear), "projected": positions(projected), "scale": positions(scale)}

    def call(self, inputs):
        return self.dynamic_state(inputs)["outputs"]

    # -- explanation -------------------------------------------------------------
    def explain_backward(self, state, relevance, input_shape):
        """Transposed dynamic linear map: output relevance to input relevance.

        With the dynamic weights `w_j` held fixed, the layer is
        `out_j = w_j · p`; this returns `sum_j R_j w_j` placed back on the
        patches (the gradient of `sum(R * out)` with detached weights), so
        `sum(result * inputs) == sum(relevance * outputs)`. Per position,
        `sum_j R_j w_j = A (beta ⊗ z) + b beta` with `beta_j = R_j alpha_j`:
        two matrix products on rows of positions, then the patches are
        summed back onto the input (`fold_patches`, the transposed
        convolution's overlap-add).

        Args:
            state: `dynamic_state(inputs)` of the same inputs.
            relevance: `(B, H', W', filters)`.
            input_shape: shape of `inputs` (height and width are used).

        Returns:
            `(B, H, W, channels)`.
        """
        rank, filters = self.rank, self.filters
        beta = relevance * ops.stop_gradient(state["scale"])
        z = ops.stop_gradient(state["projected"])
        height, width = beta.shape[1], beta.shape[2]
        beta = ops.reshape(beta, (-1, filters))
        outer = ops.reshape(beta[:, :, None] * ops.reshape(z, (-1, 1, rank)), (-1, filters * rank))  # beta_j z_a
        per_patch = ops.matmul(outer, ops.transpose(self._kernel_rows(self.alignment))) + ops.matmul(
            beta, ops.transpose(self._kernel_rows(self.offset))
        )  # (rows, d)
        per_patch = ops.reshape(per_patch, (-1, height, width, per_patch.shape[-1]))
        rows, cols = self._paddings(input_shape[1], input_shape[2])
        padded_size = (input_shape[1] + rows[0] + rows[1], input_shape[2] + cols[0] + cols[1])
        placed = fold_patches(per_patch, self.kernel_size, self.strides, padded_size)
        return conv_padding.place_back(placed, input_shape, rows, cols)

    def dynamic_weights(self, inputs):
        """The materialised weights `w_j` per position `(B, H', W', filters, d)` (tests and plots; memory-hungry)."""
        self._ensure_built(inputs)
        patches = extract_patches(self._pad(inputs), self.kernel_size, self.strides)
        height, width = patches.shape[1], patches.shape[2]
        z = ops.matmul(ops.reshape(patches, (-1, patches.shape[-1])), self._kernel_rows(self.projection))
        alignment = ops.reshape(self.alignment, (-1, self.filters, self.rank))  # (d, filters, rank)
        by_rank = ops.reshape(ops.transpose(alignment, (2, 1, 0)), (self.rank, -1))  # (rank, filters * d)
        u = ops.matmul(ops.reshape(z, (-1, self.rank)), by_rank)
        u = ops.reshape(u, (-1, height, width, self.filters, by_rank.shape[-1] // self.filters))
        u = u + ops.transpose(ops.reshape(self.offset, (-1, self.filters)))
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
