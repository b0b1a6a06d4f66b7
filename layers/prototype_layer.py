"""ProtoPNet's prototype layer: squared-L2 distance maps between latent patches and learned prototypes."""

import math

import keras
from keras import ops

SIMILARITY_EPSILON = 1e-4
DISTANCE_DTYPES = ("float32", "float64")
FLOAT32_SIGNIFICAND_BITS = 24


def _wide_dtype():
    """float64 where the backend computes in it (JAX only with x64 enabled), else float32."""
    if keras.backend.backend() == "jax":
        import jax

        return "float64" if jax.config.read("jax_enable_x64") else "float32"
    return "float64"


def log_similarity(distances, epsilon=SIMILARITY_EPSILON):
    """ProtoPNet's similarity `log((d + 1) / (d + epsilon))`: large for small distances, 0 at infinity.

    Args:
        distances: tensor of non-negative squared distances.
        epsilon: the small constant that bounds the similarity at `d = 0`
            (`log(1 / epsilon)`, 9.21 for 1e-4).
    """
    return ops.log((distances + 1.0) / (distances + epsilon))


def high_part_bits(depth):
    """Binary places kept in the high parts of `split_squared_distances` for vectors of `depth` components.

    The high parts are multiples of `2^-f` of at most about 1 in magnitude,
    so their products are multiples of `4^-f` and a dot product of `depth`
    of them, counted in those units, is an integer below `depth * 4^f`. With
    `depth * 4^f <= 2^23`, such dot products and `|z_hi|^2 - 2 z_hi . p_hi
    + |p_hi|^2` are exact in float32 whatever the order of summation (one
    bit to spare).

    Example:
    >>> high_part_bits(128)
    8
    """
    return max(0, (FLOAT32_SIGNIFICAND_BITS - 1 - math.ceil(math.log2(max(int(depth), 1)))) // 2)


def _split(values, bits):
    """`(high, low)`: `values` rounded to multiples of `2^-bits`, and the exact remainder."""
    grid = float(2**bits)
    high = ops.round(values * grid) / grid
    return high, values - high


def _split_forward(latent, prototypes):
    """The squared distances of `split_squared_distances` (no gradient rule)."""
    # one scale for every image (the prototypes' largest component), so an image's distances never depend
    # on the rest of its batch; latents outside [-scale, scale] only lose exactness where d is large anyway
    scale = ops.maximum(ops.max(ops.abs(prototypes)), 1e-30)
    z, p = latent / scale, prototypes / scale
    bits = high_part_bits(z.shape[-1])
    z_high, z_low = _split(z, bits)
    p_high, p_low = _split(p, bits)
    # |dz_hi|^2 exactly: the terms are integers in units of 4^-bits and cancel without round-off
    high = ops.sum(ops.square(z_high), axis=-1, keepdims=True) + ops.matmul(-2.0 * z_high, ops.transpose(p_high))
    high = high + ops.sum(ops.square(p_high), axis=-1)
    # relu leaves the exact (non-negative) sum as it is, but it keeps graph rewriters (Grappler's arithmetic
    # optimizer turns chains of adds into one sum in any order) from adding the low part before the cancellation
    high = ops.relu(high)
    # the rest, sum (2 dz_hi + dz_lo) dz_lo, expanded with u = z + z_hi and v = p + p_hi: terms of ~2^-bits
    z_sum, p_sum = z + z_high, p + p_high
    crossed = ops.matmul(ops.concatenate([z_sum, z_low], axis=-1), ops.transpose(ops.concatenate([p_low, p_sum], axis=-1)))
    low = ops.sum(z_sum * z_low, axis=-1, keepdims=True) + ops.sum(p_sum * p_low, axis=-1) - crossed
    return ops.relu(high + low) * ops.square(scale)


def split_squared_distances(latent, prototypes):
    """`|z - p|^2` for every latent vector and prototype in float32, without the cancellation of the expansion.

    `|z|^2 - 2 z.p + |p|^2` loses ~1e-7 `|z|^2` to round-off, all of it
    next to a prototype, where the distance is ~0. Here both sides are split
    into high parts on a grid of `2^-f` (`high_part_bits`) and low parts
    below `2^-(f+1)`, in units of the prototypes' largest component `s`:
    `|z - p|^2 = |dz_hi|^2 + sum (2 dz_hi + dz_lo) dz_lo`. The first term
    comes from matrix products of grid values that are exact in float32,
    the second from terms of ~`2^-f`, so the round-off left is ~1e-7
    `2^-f depth s^2` (3e-8 for 128-d sigmoid latents) instead of ~1e-7
    `depth s^2`. It costs a second matrix product of twice the depth; the
    gradient is the exact one, `2 (z - p)` per pair, from two products.

    Args:
        latent: float32 `(..., D)`.
        prototypes: float32 `(P, D)`.

    Returns:
        float32 `(..., P)`, never negative.

    Example:
    >>> z = ops.convert_to_tensor([[0.3, 0.7], [1.0, 0.0]])
    >>> [round(float(d), 6) for d in split_squared_distances(z, z[:1])[:, 0]]
    [0.0, 0.98]
    """

    @ops.custom_gradient
    def distances(latent, prototypes):
        def gradient(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            flat_upstream = ops.reshape(upstream, (-1, upstream.shape[-1]))
            flat_latent = ops.reshape(latent, (-1, latent.shape[-1]))
            d_latent = 2.0 * (latent * ops.sum(upstream, axis=-1, keepdims=True) - ops.matmul(upstream, prototypes))
            d_prototypes = ops.sum(flat_upstream, axis=0)[:, None] * prototypes - ops.matmul(ops.transpose(flat_upstream), flat_latent)
            return d_latent, 2.0 * d_prototypes

        return _split_forward(latent, prototypes), gradient

    return distances(latent, prototypes)


@keras.saving.register_keras_serializable(package="glasszoo")
class PrototypeLayer(keras.layers.Layer):
    """Squared L2 distances between every latent patch and every prototype, as distance maps.

    For latent maps `z` `(B, h, w, D)` and `P` prototypes of `k x k x D`,
    the distance of prototype `p` to the patch at `(i, j)` is
    `|z_patch - p|^2`. With `k = 1` (ProtoPNet's default) the maps are
    `(B, h, w, P)`; larger prototypes give "valid" maps
    `(B, h - k + 1, w - k + 1, P)`, computed as in the reference:
    `|z_patch|^2 - 2 z_patch . p + |p|^2` from two float32 convolutions
    (`z^2` with a kernel of ones, and `z` with the prototypes as kernels),
    clipped at 0.

    Next to a prototype (after a push, one patch of its source image is at
    distance ~0) the similarity `log((d + 1) / (d + 1e-4))` has slope
    `-1e4`, so round-off in `d` shows: the plain float32 expansion moves
    similarities there by up to 0.32 (measured on the latents of the
    `protopnet_fashion_mnist` preset). For 1x1 prototypes `distance_dtype`
    chooses how the distances avoid that:

    - `"float32"` (default): `split_squared_distances`, float32 matrix
      products on high and low parts with exact cancellation. On the
      preset's latents the similarities stay within 3e-4 of float64 next
      to the pushed prototypes and 2e-6 elsewhere, in Keras (TensorFlow,
      PyTorch, JAX) and in the exported ONNX graph (onnxruntime, the ONNX
      reference evaluator, OpenVINO). Forward + backward at batch 80,
      7x7x128 latents and 2,000 prototypes (`bench/prototype_layer.py`,
      2 CPU cores) it runs 2.9x (TensorFlow) and 2.3x (PyTorch) faster than
      `"float64"`, at 0.75x and 0.46x the speed of the reference's plain
      float32 convolutions, which are off by up to 0.1 in similarity there.
    - `"float64"`: the expansion in float64 matrix products; similarities within 1e-7
      of exact in Keras and onnxruntime, but slower, twice the memory per
      distance map, and OpenVINO's CPU plugin runs it in float32 (0.2 off
      next to pushed prototypes). On JAX it needs `jax_enable_x64`, else it
      runs in float32.

    The prototypes are initialised uniformly in [0, 1), the range of the
    sigmoid add-on layer in front of them (as in the reference).

    Args:
        num_prototypes: `P`.
        prototype_size: `k`, the prototypes' height and width in latent positions.
        distance_dtype: `"float32"` or `"float64"`, how 1x1 prototypes'
            distances are computed (see above); `"float64"` needs
            `prototype_size=1`. Configs saved without it load with the
            default.

    Example:
    >>> layer = PrototypeLayer(num_prototypes=20)
    >>> layer(ops.zeros((2, 7, 7, 64))).shape
    (2, 7, 7, 20)
    """

    # a float16 or int8 export (glasszoo.export.precision) keeps this layer's nodes in float32: its distances
    # cancel next to a prototype, where float16 would move similarities by whole units
    export_in_full_precision = True

    def __init__(self, num_prototypes, prototype_size=1, distance_dtype="float32", **kwargs):
        super().__init__(**kwargs)
        if int(num_prototypes) < 1 or int(prototype_size) < 1:
            raise ValueError(f"num_prototypes and prototype_size must be positive; got {num_prototypes} and {prototype_size}.")
        if distance_dtype not in DISTANCE_DTYPES:
            raise ValueError(f"distance_dtype must be one of {DISTANCE_DTYPES}; got {distance_dtype!r}.")
        if distance_dtype == "float64" and int(prototype_size) != 1:
            raise ValueError(f"distance_dtype='float64' is implemented for 1x1 prototypes; got prototype_size={prototype_size}.")
        self.num_prototypes = int(num_prototypes)
        self.prototype_size = int(prototype_size)
        self.distance_dtype = distance_dtype

    def build(self, input_shape):
        channels = int(input_shape[-1])
        size = self.prototype_size
        # stored as (P, k, k, D): one prototype per row, as the push writes them
        self.prototypes = self.add_weight(
            shape=(self.num_prototypes, size, size, channels),
            initializer=keras.initializers.RandomUniform(0.0, 1.0),
            name="prototypes",
        )
        self.channels = channels

    def call(self, latent):
        if self.prototype_size > 1:
            return self._patch_distances(latent)
        prototypes = ops.reshape(self.prototypes, (self.num_prototypes, -1))  # (P, D)
        if self.distance_dtype == "float64":
            return self._float64_distances(latent, prototypes)
        distances = split_squared_distances(ops.cast(latent, "float32"), ops.cast(prototypes, "float32"))
        return ops.cast(distances, latent.dtype)

    def _patch_distances(self, latent):
        """k x k prototypes: the reference's two convolutions, in the latent's dtype."""
        size = self.prototype_size
        kernel = ops.transpose(self.prototypes, (1, 2, 3, 0))  # (k, k, D, P)
        ones = ops.ones((size, size, self.channels, 1), dtype=latent.dtype)
        patch_norms = ops.conv(ops.square(latent), ones, padding="valid")  # (B, h', w', 1)
        products = ops.conv(latent, kernel, padding="valid")  # (B, h', w', P)
        prototype_norms = ops.sum(ops.square(self.prototypes), axis=(1, 2, 3))  # (P,)
        return ops.relu(patch_norms - 2.0 * products + prototype_norms)

    def _float64_distances(self, latent, prototypes):
        """1x1 prototypes, `distance_dtype="float64"`: `|z|^2 - 2 z.p + |p|^2` as float64 matrix products.

        In float64 (a MatMul, which onnxruntime runs in double, unlike Conv)
        the cancellation next to a prototype leaves ~1e-16 D.
        """
        dtype = _wide_dtype()
        z = ops.cast(latent, dtype)
        prototypes = ops.cast(prototypes, dtype)
        if keras.backend.backend() == "torch":  # Keras' torch matmul computes float64 in float32; einsum keeps it
            products = ops.einsum("...d,pd->...p", z, prototypes)
        else:
            products = ops.matmul(z, ops.transpose(prototypes))
        squared = ops.sum(ops.square(z), axis=-1, keepdims=True) - 2.0 * products
        squared = squared + ops.sum(ops.square(prototypes), axis=-1)
        return ops.cast(ops.relu(squared), latent.dtype)

    def compute_output_shape(self, input_shape):
        size = self.prototype_size

        def shrink(n):
            return None if n is None else n - size + 1

        return (input_shape[0], shrink(input_shape[1]), shrink(input_shape[2]), self.num_prototypes)

    def get_config(self):
        config = super().get_config()
        config.update(num_prototypes=self.num_prototypes, prototype_size=self.prototype_size, distance_dtype=self.distance_dtype)
        return config
