"""The neural additive head: one small MLP per feature, computed as batched tensors."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="glasszoo")
class NeuralAdditiveHead(keras.layers.Layer):
    """N independent shape functions `g_l: R -> R^K`, evaluated all at once.

    Feature `l` goes through its own subnet `1 -> hidden_units -> K` (ReLU),
    held as per-feature weight tensors `(N, in, out)` and applied with one
    einsum per layer. The output is the per-feature class contribution
    `(B, N, K)`, centred as in seed 000:
    `g~_l = g_l - mean_l + mean over l of mean_l`, with `mean_l` the mean of
    `g_l` over the training data, held in the non-trainable `feature_means`
    (zeros until `set_feature_means` is called). Centring never changes
    `sum_l g~_l`, so the logits `sum_l g~_l + bias` are unchanged.

    The first layer of each subnet takes a scalar; it is initialised with a
    unit-scale normal (Glorot would give it a tiny fan-in scale and the
    subnets stall), the later layers He-normal.

    Args:
        num_classes: int, `K`.
        hidden_units: tuple of ints, the subnet widths (64, 64, 32 in NAM).
        first_layer_stddev: float, std of the first layer's weights.

    Example:
    >>> head = NeuralAdditiveHead(num_classes=10)
    >>> head(keras.ops.ones((4, 16))).shape
    (4, 16, 10)
    """

    def __init__(self, num_classes, hidden_units=(64, 64, 32), first_layer_stddev=1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.first_layer_stddev = float(first_layer_stddev)

    def build(self, input_shape):
        features = input_shape[-1]
        self.num_features = features
        width = self.hidden_units[0]
        self.input_kernel = self.add_weight(
            name="input_kernel",
            shape=(features, width),
            initializer=keras.initializers.RandomNormal(stddev=self.first_layer_stddev),
        )
        self.input_bias = self.add_weight(name="input_bias", shape=(features, width), initializer="zeros")
        self.hidden_kernels, self.hidden_biases = [], []
        for index, units in enumerate(self.hidden_units[1:]):
            self.hidden_kernels.append(
                self.add_weight(
                    name=f"hidden_kernel_{index}",
                    shape=(features, width, units),
                    initializer=keras.initializers.RandomNormal(stddev=(2.0 / width) ** 0.5),
                )
            )
            self.hidden_biases.append(
                self.add_weight(name=f"hidden_bias_{index}", shape=(features, units), initializer="zeros")
            )
            width = units
        self.output_kernel = self.add_weight(
            name="output_kernel",
            shape=(features, width, self.num_classes),
            initializer=keras.initializers.RandomNormal(stddev=(1.0 / width) ** 0.5),
        )
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros")
        self.feature_means = self.add_weight(
            name="feature_means",
            shape=(features, self.num_classes),
            initializer="zeros",
            trainable=False,
        )

    def last_hidden(self, features):
        """The last hidden layer of every shape function, `(B, N)` -> `(B, N, width)`: what `output_kernel` reads."""
        hidden = ops.relu(features[..., None] * self.input_kernel + self.input_bias)
        for kernel, bias in zip(self.hidden_kernels, self.hidden_biases):
            hidden = ops.relu(ops.einsum("bni,nio->bno", hidden, kernel) + bias)
        return hidden

    def shape_functions(self, features):
        """Uncentred `g_l(X_l)`: `(B, N)` -> `(B, N, K)`."""
        return ops.einsum("bni,nio->bno", self.last_hidden(features), self.output_kernel)

    def centring_shift(self):
        """`(N, K)` tensor added to `g_l` by centring."""
        return ops.mean(self.feature_means, axis=0, keepdims=True) - self.feature_means

    def call(self, features):
        return self.shape_functions(features) + self.centring_shift()

    def logits(self, contributions):
        """`sum_l g~_l + bias`: `(B, N, K)` -> `(B, K)`."""
        return ops.sum(contributions, axis=1) + self.bias

    def set_feature_means(self, means):
        """Stores the training-data means `(N, K)` of the uncentred `g_l`."""
        self.feature_means.assign(ops.convert_to_tensor(means, dtype=self.feature_means.dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            hidden_units=list(self.hidden_units),
            first_layer_stddev=self.first_layer_stddev,
        )
        return config
