"""ProtoPNet's prototype layer: squared-L2 distance maps between latent patches and learned prototypes."""

import keras
from keras import ops

SIMILARITY_EPSILON = 1e-4


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


@keras.saving.register_keras_serializable(package="glasszoo")
class PrototypeLayer(keras.layers.Layer):
    """Squared L2 distances between every latent patch and every prototype, as distance maps.

    For latent maps `z` `(B, h, w, D)` and `P` prototypes of `k x k x D`,
    the distance of prototype `p` to the patch at `(i, j)` is
    `|z_patch|^2 - 2 z_patch . p + |p|^2`, computed as two convolutions
    (`z^2` with a kernel of ones, and `z` with the prototypes as kernels)
    plus the prototypes' norms, and clipped at 0 against round-off. For
    1x1 prototypes the convolutions are matrix products and run in float64
    (see `_pointwise_distances`), so that similarities near a prototype are
    reproducible. With
    `k = 1` (ProtoPNet's default) the maps are `(B, h, w, P)`; larger
    prototypes give "valid" maps `(B, h - k + 1, w - k + 1, P)`.

    The prototypes are initialised uniformly in [0, 1), the range of the
    sigmoid add-on layer in front of them (as in the reference).

    Args:
        num_prototypes: `P`.
        prototype_size: `k`, the prototypes' height and width in latent positions.

    Example:
    >>> layer = PrototypeLayer(num_prototypes=20)
    >>> layer(ops.zeros((2, 7, 7, 64))).shape
    (2, 7, 7, 20)
    """

    def __init__(self, num_prototypes, prototype_size=1, **kwargs):
        super().__init__(**kwargs)
        if int(num_prototypes) < 1 or int(prototype_size) < 1:
            raise ValueError(f"num_prototypes and prototype_size must be positive; got {num_prototypes} and {prototype_size}.")
        self.num_prototypes = int(num_prototypes)
        self.prototype_size = int(prototype_size)

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
        if self.prototype_size == 1:
            return self._pointwise_distances(latent)
        size = self.prototype_size
        kernel = ops.transpose(self.prototypes, (1, 2, 3, 0))  # (k, k, D, P)
        ones = ops.ones((size, size, self.channels, 1), dtype=latent.dtype)
        patch_norms = ops.conv(ops.square(latent), ones, padding="valid")  # (B, h', w', 1)
        products = ops.conv(latent, kernel, padding="valid")  # (B, h', w', P)
        prototype_norms = ops.sum(ops.square(self.prototypes), axis=(1, 2, 3))  # (P,)
        return ops.relu(patch_norms - 2.0 * products + prototype_norms)

    def _pointwise_distances(self, latent):
        """1x1 prototypes: the 1x1 convolutions are matrix products, done in float64.

        The expansion `|z|^2 - 2 z.p + |p|^2` cancels: next to a prototype the
        distance is ~0 while the terms are ~D, so float32 leaves an error of
        ~1e-6 D, and the similarity's slope there is -1 / (d + 1e-4) = -1e4.
        In float64 (a MatMul, which onnxruntime runs in double, unlike Conv)
        the similarities agree across Keras backends and ONNX runtimes.
        """
        dtype = _wide_dtype()
        z = ops.cast(latent, dtype)
        prototypes = ops.cast(ops.reshape(self.prototypes, (self.num_prototypes, -1)), dtype)  # (P, D)
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
        return dict(super().get_config(), num_prototypes=self.num_prototypes, prototype_size=self.prototype_size)
