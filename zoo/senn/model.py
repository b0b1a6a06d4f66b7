"""SENN: a self-explaining network whose logits are concepts weighted by input-dependent relevances (seed 003)."""

import math
import pathlib

import keras
import numpy as np
from glasszoo.layers.input_gradients import input_vector_jacobian_products
from glasszoo.layers.mirrored_decoder import STRIDE, mirrored_decoder_layers, strided_sizes
from glasszoo.zoo.base import ZooModel
from glasszoo.zoo.senn import concepts, robustness
from keras import layers, ops

EXPLANATION_OUTPUTS = {
    "logits": "(B, K) class scores (softmax); logits = contributions summed over the concepts, no bias",
    "concepts": "(B, k) the concept values h(x) (the bottleneck of the concept autoencoder)",
    "relevances": "(B, k, K) relevance theta(x)[i, c] of concept i for class c",
    "contributions": "(B, k, K) theta(x)[i, c] * h(x)[i]: what concept i adds to logit c; summed over i they are the logits",
    "reconstruction": "(B, H, W, C) the image decoded from its k concept values alone (what the concepts hold)",
}

KERNEL_SIZE = 3
REFERENCE_LEARNING_RATE = 1e-3


@keras.saving.register_keras_serializable(package="glasszoo")
class SENN(ZooModel):
    """Self-explaining neural network (Alvarez-Melis and Jaakkola, NeurIPS 2018).

    `logit_c(x) = sum_i theta(x)_ic h(x)_i`: a generalised linear model whose
    features are `k` learned concepts `h(x)` and whose coefficients
    `theta(x)` are computed from the input by a second network. Three parts:

    - concept encoder `h`: 3x3 stride-2 convolutions and a linear layer to
      `k` values; a mirrored decoder reconstructs the image from those `k`
      values alone (so a concept's meaning can be seen by decoding it);
    - relevance network `theta`: 3x3 convolutions (stride 2 by default), a hidden dense
      layer and a linear layer to `k x K` relevances;
    - aggregator: the sum over concepts (no bias), so the contributions
      `theta_ic h_i` add up to the logits exactly.

    The training loss is the seed's `L_y + lambda L_theta + xi L_h`:
    - `L_y`: softmax cross-entropy (the `compile` default);
    - `L_theta` (`robustness_weight` lambda): the robustness penalty
      `|| grad_x f(x) - theta(x)^T J_x h(x) ||^2`, squared Frobenius norm over
      classes and pixels, averaged over the batch. Because
      `grad_x f_c = J_x h^T theta_c + J_x theta_c^T h`, the residual is
      `J_x theta_c(x)^T h(x)`: the change of the relevances along the input,
      weighted by the concepts, with `h` held fixed. It is the gradient of
      `sum_i theta_ic(x) h_i` with `h` a constant, one vector-Jacobian
      product per class (`robustness_directions=None`), or an unbiased
      estimate from that many random Gaussian class directions; it is zero
      exactly when the model is locally linear in its concepts, so that
      `theta` is what the model does. It is computed with the backend's
      autodiff in the training step (`glasszoo.layers.input_gradients`); the
      explanation graph and the ONNX export have no gradients. Squared
      rather than the plain norm, so that it is smooth at zero;
    - `L_h` (`reconstruction_weight` xi): mean squared reconstruction error
      per pixel value, plus `concept_sparsity` times the mean `|h|`.
    The extra terms are added in `call` when `training` is true only, so
    `model.fit(images, labels)` trains the whole objective and `val_loss`
    is the cross-entropy alone.

    Args:
        num_classes: int `K`.
        input_shape: `(H, W, C)` of float images in [0, 1].
        num_concepts: int `k`.
        concept_filters: channels of the concept encoder's convolutions.
        relevance_filters: channels of the relevance network's convolutions.
        relevance_strides: their strides (1 or 2; default 2 for every one).
        relevance_units: width of the relevance network's hidden layer.
        robustness_weight: lambda (0 trains without the penalty).
        robustness_directions: None for the exact penalty (one input
            gradient per class), or the number of random class directions
            of its unbiased estimate (cheaper for many classes).
        reconstruction_weight: xi.
        concept_sparsity: weight of the L1 penalty on the concepts.
        activation: hidden activation.
        seed: seed of the random class directions.
        class_names: optional `K` names.

    Example:
    >>> model = SENN(num_classes=10, input_shape=(28, 28, 1), num_concepts=5, concept_filters=(8, 8), relevance_filters=(8, 8), relevance_units=16)
    >>> out = model.explain(np.zeros((2, 28, 28, 1), "float32"))
    >>> out["relevances"].shape, out["reconstruction"].shape
    ((2, 5, 10), (2, 28, 28, 1))
    >>> bool(np.allclose(out["contributions"].sum(axis=1), out["logits"], atol=1e-5))
    True
    """

    family = "senn"
    explanation_outputs = EXPLANATION_OUTPUTS

    @property
    def second_order_training(self):
        """True when the training loss holds input gradients (the robustness penalty): steps differentiate twice."""
        return self.robustness_weight > 0

    def __init__(
        self,
        num_classes=10,
        input_shape=(28, 28, 1),
        num_concepts=10,
        concept_filters=(32, 64),
        relevance_filters=(32, 64, 64),
        relevance_strides=None,
        relevance_units=128,
        robustness_weight=1e-2,
        robustness_directions=None,
        reconstruction_weight=1.0,
        concept_sparsity=0.0,
        activation="relu",
        seed=0,
        class_names=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "senn")
        super().__init__(num_classes=num_classes, input_shape=input_shape, class_names=class_names, **kwargs)
        self.num_concepts = int(num_concepts)
        self.concept_filters = [int(f) for f in concept_filters]
        self.relevance_filters = [int(f) for f in relevance_filters]
        self.relevance_strides = [STRIDE] * len(self.relevance_filters) if relevance_strides is None else [int(v) for v in relevance_strides]
        self.relevance_units = int(relevance_units)
        self.robustness_weight = float(robustness_weight)
        self.robustness_directions = None if robustness_directions is None else int(robustness_directions)
        self.reconstruction_weight = float(reconstruction_weight)
        self.concept_sparsity = float(concept_sparsity)
        self.activation = activation
        self.seed = int(seed)
        if self.num_concepts < 1:
            raise ValueError(f"num_concepts must be at least 1; got {num_concepts!r}.")
        for what, widths in (("concept_filters", self.concept_filters), ("relevance_filters", self.relevance_filters)):
            if not widths or min(widths) < 1:
                raise ValueError(f"{what} needs at least one positive entry (one per convolution); got {widths!r}.")
        if len(self.relevance_strides) != len(self.relevance_filters) or not set(self.relevance_strides) <= {1, STRIDE}:
            raise ValueError(
                f"relevance_strides needs one stride (1 or {STRIDE}) per relevance convolution; got {relevance_strides!r} for {len(self.relevance_filters)}."
            )
        if self.relevance_units < 1:
            raise ValueError(f"relevance_units must be at least 1; got {relevance_units!r}.")
        if self.robustness_directions is not None and self.robustness_directions < 1:
            raise ValueError(f"robustness_directions must be None (exact) or at least 1; got {robustness_directions!r}.")
        for weight_name in ("robustness_weight", "reconstruction_weight", "concept_sparsity"):
            value = getattr(self, weight_name)
            if not value >= 0 or not math.isfinite(value):
                raise ValueError(f"{weight_name} must be a finite non-negative number; got {value}.")

        height, width, channels = self.image_shape
        depth = len(self.concept_filters)
        self.heights, self.widths = strided_sizes(height, depth), strided_sizes(width, depth)
        self.code_shape = (self.heights[-1], self.widths[-1], self.concept_filters[-1])
        self.concept_convolutions = [
            layers.Conv2D(f, KERNEL_SIZE, strides=STRIDE, padding="same", activation=activation, name=f"concept_conv_{i}")
            for i, f in enumerate(self.concept_filters)
        ]
        self.concept_layer = layers.Dense(self.num_concepts, name="concepts")
        self.decoder_input = layers.Dense(int(np.prod(self.code_shape)), activation=activation, name="decoder_input")
        self.decoder_layers = mirrored_decoder_layers(self.concept_filters, self.heights, self.widths, channels, activation)
        self.relevance_convolutions = [
            layers.Conv2D(f, KERNEL_SIZE, strides=stride, padding="same", activation=activation, name=f"relevance_conv_{i}")
            for i, (f, stride) in enumerate(zip(self.relevance_filters, self.relevance_strides))
        ]
        self.relevance_hidden = layers.Dense(self.relevance_units, activation=activation, name="relevance_hidden")
        self.relevance_layer = layers.Dense(self.num_concepts * self.num_classes, name="relevances")
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="direction_seeds")
        self.concept_exemplars = None  # set by finish_training or loaded with a preset (concepts.npz)
        self.build((None,) + self.image_shape)

    def build(self, input_shape):
        channels = [self.image_shape[-1]] + self.concept_filters
        for index, layer in enumerate(self.concept_convolutions):
            layer.build((None, self.heights[index], self.widths[index], channels[index]))
        self.concept_layer.build((None, int(np.prod(self.code_shape))))
        self.decoder_input.build((None, self.num_concepts))
        inputs = self.concept_filters[::-1]
        depth = len(self.concept_filters)
        for index, layer in enumerate(self.decoder_layers):
            level = depth - index
            layer.build((None, self.heights[level], self.widths[level], inputs[index]))
        relevance_heights, relevance_widths = [self.image_shape[0]], [self.image_shape[1]]
        for stride in self.relevance_strides:
            relevance_heights.append(math.ceil(relevance_heights[-1] / stride))
            relevance_widths.append(math.ceil(relevance_widths[-1] / stride))
        channels = [self.image_shape[-1]] + self.relevance_filters
        for index, layer in enumerate(self.relevance_convolutions):
            layer.build((None, relevance_heights[index], relevance_widths[index], channels[index]))
        self.relevance_hidden.build((None, relevance_heights[-1] * relevance_widths[-1] * self.relevance_filters[-1]))
        self.relevance_layer.build((None, self.relevance_units))
        self.built = True

    # -- the three parts -------------------------------------------------------------------
    def concept_values(self, images):
        """The concepts `h(x)`, `(B, k)`."""
        maps = images
        for layer in self.concept_convolutions:
            maps = layer(maps)
        return self.concept_layer(ops.reshape(maps, (-1, int(np.prod(self.code_shape)))))

    def decode(self, concepts):
        """Images `(B, H, W, C)` in (0, 1) decoded from concept values `(B, k)`."""
        maps = ops.reshape(self.decoder_input(concepts), (-1,) + self.code_shape)
        for layer in self.decoder_layers:
            maps = layer(maps)
        return maps

    def relevance_values(self, images):
        """The relevances `theta(x)`, `(B, k, K)`."""
        maps = images
        for layer in self.relevance_convolutions:
            maps = layer(maps)
        hidden = self.relevance_hidden(ops.reshape(maps, (ops.shape(maps)[0], -1)))
        return ops.reshape(self.relevance_layer(hidden), (-1, self.num_concepts, self.num_classes))

    @staticmethod
    def aggregate(relevances, concepts):
        """`(contributions (B, k, K), logits (B, K))`: `theta_ic h_i` and its sum over the concepts."""
        contributions = relevances * concepts[:, :, None]
        return contributions, ops.sum(contributions, axis=1)

    # -- forward and training ------------------------------------------------------------
    def call(self, images, training=None):
        concepts = self.concept_values(images)
        _, logits = self.aggregate(self.relevance_values(images), concepts)
        if training:
            if self.reconstruction_weight:
                reconstruction = self.decode(concepts)
                self.add_loss(self.reconstruction_weight * ops.mean(ops.square(reconstruction - ops.cast(images, reconstruction.dtype))))
            if self.concept_sparsity:
                self.add_loss(self.concept_sparsity * ops.mean(ops.abs(concepts)))
            if self.robustness_weight:
                self.add_loss(self.robustness_weight * self.robustness_penalty(images, concepts))
        return logits

    def robustness_penalty(self, images, concepts=None):
        """`mean_b || grad_x f(x_b) - theta(x_b)^T J_x h(x_b) ||_F^2` (the seed's `L_theta`, squared), a scalar tensor.

        It equals `mean_b sum_c || J_x theta_c(x_b)^T h(x_b) ||^2`: the input
        gradient of `sum_i theta_ic(x) h_i` with the concepts held at their
        values. Differentiable with respect to the weights (it is a training
        loss); `concepts` are recomputed when not given.

        Example:
        >>> float(model.robustness_penalty(keras.ops.zeros((4, 28, 28, 1))))  # doctest: +SKIP
        0.0
        """
        if concepts is None:
            concepts = self.concept_values(images)
        held = concepts  # a constant of the function below; still a function of the weights

        def relevance_times_concepts(inputs):
            return ops.sum(self.relevance_values(inputs) * held[:, :, None], axis=1)

        batch = ops.shape(images)[0]
        if self.robustness_directions is None:
            identity = ops.eye(self.num_classes, dtype=concepts.dtype)
            cotangents = [ops.broadcast_to(identity[c][None, :], (batch, self.num_classes)) for c in range(self.num_classes)]
        else:
            scale = 1.0 / math.sqrt(self.robustness_directions)
            cotangents = [
                scale * keras.random.normal((batch, self.num_classes), dtype=concepts.dtype, seed=self.seed_generator)
                for _ in range(self.robustness_directions)
            ]
        gradients = input_vector_jacobian_products(relevance_times_concepts, images, cotangents)
        total = sum(ops.sum(ops.square(g), axis=tuple(range(1, len(g.shape)))) for g in gradients)
        return ops.mean(total)

    def explanation_graph(self, images, target=None):
        """Logits, concepts, relevances, contributions and the reconstruction; forward ops only (exports).

        `target` is unused: the contributions to every class are outputs.
        """
        concepts = self.concept_values(images)
        relevances = self.relevance_values(images)
        contributions, logits = self.aggregate(relevances, concepts)
        return {
            "logits": logits,
            "concepts": concepts,
            "relevances": relevances,
            "contributions": contributions,
            "reconstruction": self.decode(concepts),
        }

    def linear_readout(self, images):
        """The image-independent part of the relevances, `b` of `theta(x) = W z(x) + b`, as a readout of the concepts.

        `logit_c = sum_i h_i (W z)_ic + sum_i h_i b_ic`: linear in `b` (a
        `(k, K)` kernel on the concepts), with the first sum as the offset.
        Influence functions then ask which training images set the concept
        weights that every image shares.
        """
        concepts = self.concept_values(images)
        _, logits = self.aggregate(self.relevance_values(images), concepts)
        kernel = ops.reshape(self.relevance_layer.bias, (self.num_concepts, self.num_classes))
        return {"features": concepts, "kernel": kernel, "bias": None, "offset": logits - ops.matmul(concepts, kernel)}

    # -- user API ----------------------------------------------------------------------
    def self_checks(self, images, explanation):
        """Adds: contributions = relevances x concepts; logits = contributions summed over the concepts."""
        checks = super().self_checks(images, explanation)
        relevances = explanation["relevances"].astype("float64")
        concepts = explanation["concepts"].astype("float64")
        contributions = explanation["contributions"].astype("float64")
        checks["contributions = relevances x concepts"] = float(np.max(np.abs(contributions - relevances * concepts[:, :, None])))
        checks["logits = sum of contributions"] = float(np.max(np.abs(contributions.sum(axis=1) - explanation["logits"])))
        return checks

    def finish_training(self, images):
        """Finds each concept's training exemplars (`concepts.concept_exemplars`) on the fit split; kept with the preset."""
        self.concept_exemplars = concepts.concept_exemplars(self, images)

    def family_metrics(self, images, batch_size=64):
        """The local Lipschitz estimate of the relevances (`robustness.lipschitz_summary`) on up to 256 test images."""
        return {"relevance_local_lipschitz": robustness.lipschitz_summary(self, np.asarray(images)[:256])}

    def preset_files(self, directory):
        """`concepts.npz` (the concepts' training exemplars), when they were computed."""
        if self.concept_exemplars is None:
            return {}
        path = pathlib.Path(directory) / concepts.EXEMPLAR_FILE
        return {concepts.EXEMPLAR_FILE: concepts.save_exemplars(self.concept_exemplars, path)}

    def load_preset_files(self, folder, metadata):
        """Loads the preset's verified `concepts.npz` if it has one (called by `glasszoo.load`)."""
        from glasszoo.zoo.presets import verified_file_path

        path = verified_file_path(folder, metadata, concepts.EXEMPLAR_FILE)
        if path is not None:
            self.concept_exemplars = concepts.load_exemplars(path, self.num_concepts)

    def save_assets(self, directory):
        """`.keras` saving: the exemplars travel with the model."""
        if self.concept_exemplars is not None:
            concepts.save_exemplars(self.concept_exemplars, pathlib.Path(directory) / concepts.EXEMPLAR_FILE)

    def load_assets(self, directory):
        path = pathlib.Path(directory) / concepts.EXEMPLAR_FILE
        if path.exists():
            self.concept_exemplars = concepts.load_exemplars(path, self.num_concepts)

    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """Keras `compile` with the defaults: Adam(1e-3), softmax cross-entropy on logits, accuracy.

        The robustness, reconstruction and sparsity terms are added in `call`
        during training; `loss` replaces only the classification term.
        """
        super().compile(optimizer=optimizer or keras.optimizers.Adam(REFERENCE_LEARNING_RATE), loss=loss, metrics=metrics, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_concepts=self.num_concepts,
            concept_filters=list(self.concept_filters),
            relevance_filters=list(self.relevance_filters),
            relevance_strides=list(self.relevance_strides),
            relevance_units=self.relevance_units,
            robustness_weight=self.robustness_weight,
            robustness_directions=self.robustness_directions,
            reconstruction_weight=self.reconstruction_weight,
            concept_sparsity=self.concept_sparsity,
            activation=self.activation,
            seed=self.seed,
        )
        return config
