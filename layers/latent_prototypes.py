"""The PrototypeDL prototype layer: squared L2 distances from latent vectors to learned prototypes."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="glasszoo")
class LatentPrototypes(keras.layers.Layer):
    """Squared Euclidean distances `d[b, j] = ||z_b - p_j||^2` to `P` learned prototypes (Li et al. 2018).

    The prototypes `p_j` live in the latent space of an autoencoder, so the
    decoder turns each of them into an image. The distances are computed as
    the sum of squared differences (not `|z|^2 - 2 z.p + |p|^2`), so they are
    exact and never negative.

    Args:
        num_prototypes: int `P`.
        initializer: initializer of the `(P, D)` prototype matrix; uniform on
            [0, 1) as in the reference, which suits non-negative (ReLU) latents.

    Example:
    >>> layer = LatentPrototypes(num_prototypes=15)
    >>> tuple(layer(keras.ops.zeros((4, 40))).shape)
    (4, 15)
    """

    def __init__(self, num_prototypes, initializer="random_uniform_01", **kwargs):
        super().__init__(**kwargs)
        if int(num_prototypes) < 1:
            raise ValueError(f"num_prototypes must be at least 1; got {num_prototypes!r}.")
        self.num_prototypes = int(num_prototypes)
        self.initializer = initializer

    def _initializer(self):
        if self.initializer == "random_uniform_01":
            return keras.initializers.RandomUniform(0.0, 1.0)
        return keras.initializers.get(self.initializer)

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"LatentPrototypes takes flat latent vectors (B, D); got input shape {tuple(input_shape)}.")
        self.prototypes = self.add_weight(
            shape=(self.num_prototypes, int(input_shape[-1])), initializer=self._initializer(), name="prototypes"
        )

    def call(self, latent):
        differences = latent[:, None, :] - ops.cast(self.prototypes, latent.dtype)[None, :, :]
        return ops.sum(ops.square(differences), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_prototypes)

    def get_config(self):
        config = super().get_config()
        initializer = self.initializer
        if not isinstance(initializer, str):
            initializer = keras.initializers.serialize(keras.initializers.get(initializer))
        config.update(num_prototypes=self.num_prototypes, initializer=initializer)
        return config
