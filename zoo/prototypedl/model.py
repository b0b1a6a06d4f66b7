"""PrototypeDL: an autoencoder whose latent space holds the prototypes the classifier compares with (Li et al. 2018, seed 001)."""

import math

import keras
import numpy as np
from glasszoo.layers.latent_prototypes import LatentPrototypes
from glasszoo.layers.mirrored_decoder import mirrored_decoder_layers, strided_sizes
from glasszoo.zoo.base import ZooModel
from glasszoo.zoo.inputs import validate_images
from keras import layers, ops

EXPLANATION_OUTPUTS = {
    "logits": "(B, K) class scores (softmax); logits = prototype_distances @ W, no bias",
    "prototype_distances": "(B, P) squared L2 distance from the image's latent code to each prototype (small = similar)",
    "class_evidence": "(B, P, K) distance x weight of each prototype for each class; its sum over P is the logits",
    "reconstruction": "(B, H, W, C) the decoder's reconstruction of the image (what the latent code holds)",
}

KERNEL_SIZE = 3
STRIDE = 2
REFERENCE_LEARNING_RATE = 2e-3


@keras.saving.register_keras_serializable(package="glasszoo")
class PrototypeDL(ZooModel):
    """Case-based classifier with prototypes in an autoencoder's latent space (Li et al. 2018).

    `images -> encoder (3x3 stride-2 convolutions) -> latent z -> squared
    distances d_j = ||z - p_j||^2 to P prototypes -> logits = d @ W` (one
    dense layer without bias). A mirrored transposed-convolution decoder
    with a sigmoid output reconstructs the image from `z`, which makes the
    latent space, and so each prototype, viewable as an image
    (`decoded_prototypes()`). Because a logit is a weighted sum of
    distances, a prototype speaks for the class whose weight is most
    negative: the nearer the image, the less that class is penalised
    (`prototype_classes()`).

    The training objective is the paper's
    `lambda * CE + lambda_0 * R + lambda_1 * R1 + lambda_2 * R2`:
    - CE: softmax cross-entropy on the logits, from the default `compile`
      loss with weight `classification_weight` (lambda = 20);
    - R: reconstruction error, the squared L2 norm of `reconstruction - x`
      summed over pixels and averaged over the batch (the paper's
      `1/n sum_i ||g(f(x_i)) - x_i||^2`);
    - R1: mean over prototypes of the smallest squared distance to an
      encoded image of the batch (each prototype near some image);
    - R2: mean over images of the smallest squared distance to a prototype
      (each image near some prototype).
    R, R1 and R2 need no labels and are added with `add_loss` in `call`, so
    `model.compile()` and `model.fit(images, integer_labels)` train the full
    objective on any Keras backend.

    Activations: `activation` (ReLU) after every hidden convolution and on
    the latent code, sigmoid on the decoder's output. Padding is 'same', so
    28x28 gives 14, 7, 4, 2: a 2x2x10 = 40-dimensional latent; the decoder
    chooses each transposed convolution's output padding to come back to the
    encoder's sizes exactly.

    Args:
        num_classes: int `K`.
        input_shape: `(H, W, C)` of float images in [0, 1].
        filters: output channels of the encoder convolutions; the last is
            the latent depth. Reference: (32, 32, 32, 10).
        num_prototypes: int `P` (reference 15).
        classification_weight: lambda of the cross-entropy (20).
        reconstruction_weight: weight of R (1).
        r1_weight: weight of R1 (1).
        r2_weight: weight of R2 (1).
        activation: hidden activation (ReLU).
        class_names: optional `K` names.

    Example:
    >>> model = PrototypeDL(num_classes=10, input_shape=(28, 28, 1), filters=(8, 8, 8, 4), num_prototypes=6)
    >>> out = model.explain(np.zeros((2, 28, 28, 1), "float32"))
    >>> out["prototype_distances"].shape, out["reconstruction"].shape
    ((2, 6), (2, 28, 28, 1))
    >>> model.decoded_prototypes().shape
    (6, 28, 28, 1)
    """

    family = "prototypedl"
    explanation_outputs = EXPLANATION_OUTPUTS

    def __init__(
        self,
        num_classes=10,
        input_shape=(28, 28, 1),
        filters=(32, 32, 32, 10),
        num_prototypes=15,
        classification_weight=20.0,
        reconstruction_weight=1.0,
        r1_weight=1.0,
        r2_weight=1.0,
        activation="relu",
        class_names=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "prototypedl")
        super().__init__(num_classes=num_classes, input_shape=input_shape, class_names=class_names, **kwargs)
        self.filters = [int(f) for f in filters]
        self.num_prototypes = int(num_prototypes)
        self.classification_weight = float(classification_weight)
        self.reconstruction_weight = float(reconstruction_weight)
        self.r1_weight = float(r1_weight)
        self.r2_weight = float(r2_weight)
        self.activation = activation
        if not self.filters or min(self.filters) < 1:
            raise ValueError(f"filters needs at least one positive entry (one per encoder layer); got {list(filters)!r}.")
        if self.num_prototypes < 1:
            raise ValueError(f"num_prototypes must be at least 1; got {num_prototypes!r}.")
        for weight_name in ("classification_weight", "reconstruction_weight", "r1_weight", "r2_weight"):
            if getattr(self, weight_name) < 0:
                raise ValueError(f"{weight_name} must be non-negative; got {getattr(self, weight_name)}.")

        depth = len(self.filters)
        self.heights = strided_sizes(self.image_shape[0], depth)
        self.widths = strided_sizes(self.image_shape[1], depth)
        self.latent_shape = (self.heights[-1], self.widths[-1], self.filters[-1])
        self.latent_dim = int(np.prod(self.latent_shape))
        self.encoder_layers = [
            layers.Conv2D(width, KERNEL_SIZE, strides=STRIDE, padding="same", activation=activation, name=f"encoder_{index}")
            for index, width in enumerate(self.filters)
        ]
        self.prototype_layer = LatentPrototypes(self.num_prototypes, name="prototypes")
        self.classifier = layers.Dense(self.num_classes, use_bias=False, name="classifier")
        self.decoder_layers = mirrored_decoder_layers(self.filters, self.heights, self.widths, self.image_shape[-1], activation)
        self.build((None,) + self.image_shape)

    def build(self, input_shape):
        depth = len(self.filters)
        channels = [self.image_shape[-1]] + self.filters
        for index, layer in enumerate(self.encoder_layers):
            layer.build((None, self.heights[index], self.widths[index], channels[index]))
        self.prototype_layer.build((None, self.latent_dim))
        self.classifier.build((None, self.num_prototypes))
        decoder_inputs = self.filters[::-1]
        for index, layer in enumerate(self.decoder_layers):
            level = depth - index
            layer.build((None, self.heights[level], self.widths[level], decoder_inputs[index]))
        self.built = True

    # -- forward -------------------------------------------------------------------
    def encode(self, images):
        """Latent codes `(B, D)` of images `(B, H, W, C)`."""
        maps = images
        for layer in self.encoder_layers:
            maps = layer(maps)
        return ops.reshape(maps, (-1, self.latent_dim))

    def decode(self, latent):
        """Images `(B, H, W, C)` in (0, 1) of latent codes `(B, D)` (also prototypes)."""
        maps = ops.reshape(latent, (-1,) + self.latent_shape)
        for layer in self.decoder_layers:
            maps = layer(maps)
        return maps

    def call(self, images):
        latent = self.encode(images)
        distances = self.prototype_layer(latent)
        if self.reconstruction_weight:
            reconstruction = self.decode(latent)
            errors = ops.sum(ops.square(reconstruction - ops.cast(images, reconstruction.dtype)), axis=(1, 2, 3))
            self.add_loss(self.reconstruction_weight * ops.mean(errors))
        if self.r1_weight:
            self.add_loss(self.r1_weight * ops.mean(ops.min(distances, axis=0)))
        if self.r2_weight:
            self.add_loss(self.r2_weight * ops.mean(ops.min(distances, axis=1)))
        return self.classifier(distances)

    def linear_readout(self, images):
        """The bias-free last layer on the squared prototype distances."""
        distances = self.prototype_layer(self.encode(images))
        return {"features": distances, "kernel": self.classifier.kernel, "bias": None, "offset": None}

    def feature_maps_and_logits(self, images):
        """`(last encoder map (B, h, w, c), logits)` in one pass: the maps Grad-CAM weighs (post-hoc baselines)."""
        maps = images
        for layer in self.encoder_layers:
            maps = layer(maps)
        return maps, self.classifier(self.prototype_layer(ops.reshape(maps, (-1, self.latent_dim))))

    def explanation_graph(self, images, target=None):
        """Logits, prototype distances, class evidence and reconstruction, forward ops only (exports).

        `target` is unused: the class evidence of every class is an output.
        """
        latent = self.encode(images)
        distances = self.prototype_layer(latent)
        logits = self.classifier(distances)
        evidence = distances[:, :, None] * ops.cast(self.classifier.kernel, distances.dtype)[None, :, :]
        return {
            "logits": logits,
            "prototype_distances": distances,
            "class_evidence": evidence,
            "reconstruction": self.decode(latent),
        }

    # -- user API ----------------------------------------------------------------------
    def self_checks(self, images, explanation):
        """Adds: logits = class evidence summed over prototypes."""
        checks = super().self_checks(images, explanation)
        rebuilt = explanation["class_evidence"].astype("float64").sum(axis=1)
        checks["logits = sum of class evidence"] = float(np.max(np.abs(rebuilt - explanation["logits"])))
        return checks

    def part_sources(self, train_images, batch_size=1024):
        """For each prototype, the training image whose latent code is nearest to it, `(P,)`."""
        nearest, best = None, None
        for start in range(0, len(train_images), batch_size):
            batch = ops.convert_to_tensor(np.asarray(train_images[start : start + batch_size], "float32"))
            distances = ops.convert_to_numpy(self.prototype_layer(self.encode(batch)))
            low = distances.min(axis=0)
            where = distances.argmin(axis=0) + start
            if best is None:
                best, nearest = low, where
            else:
                better = low < best
                best, nearest = np.where(better, low, best), np.where(better, where, nearest)
        return nearest.astype("int64")

    def part_relevance(self, images):
        """Nearness of each prototype to the image's latent code, `-distance` `(B, P)` (the nearest is the reason shown)."""
        return -self.explain(images)["prototype_distances"]

    def decoded_prototypes(self):
        """The prototypes decoded to images, `(P, H, W, C)` NumPy (a property of the model, not of an input)."""
        return ops.convert_to_numpy(self.decode(self.prototype_layer.prototypes))

    def prototype_classes(self):
        """Class index each prototype speaks for, `(P,)`: its most negative weight (logits = distances @ W)."""
        return np.argmin(ops.convert_to_numpy(self.classifier.kernel), axis=1)

    def loss_terms(self, images, batch_size=None):
        """Unweighted R, R1 and R2 of one batch of images (as NumPy floats), for monitoring.

        Example:
        >>> model.loss_terms(images[:250])  # doctest: +SKIP
        {'reconstruction': 14.2, 'r1': 0.8, 'r2': 1.9}
        """
        images = validate_images(images, self.image_shape)
        if not len(images):
            raise ValueError("No images: got an empty batch.")
        out = self.explain(images, batch_size=batch_size or len(images))
        distances = out["prototype_distances"].astype("float64")
        errors = ((out["reconstruction"].astype("float64") - images) ** 2).sum(axis=(1, 2, 3))
        return {"reconstruction": float(errors.mean()), "r1": float(distances.min(0).mean()), "r2": float(distances.min(1).mean())}

    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """Keras `compile` with the reference defaults: Adam(2e-3), `classification_weight` x softmax CE, accuracy.

        The reconstruction, R1 and R2 terms are always part of the loss (added
        in `call`); `loss` replaces only the classification term, and the
        default one carries the weight `classification_weight` (via
        `loss_weights`, unless given).
        """
        if optimizer is None:
            optimizer = keras.optimizers.Adam(REFERENCE_LEARNING_RATE)
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            kwargs.setdefault("loss_weights", [self.classification_weight])
        super().compile(optimizer=optimizer, loss=loss, metrics=["accuracy"] if metrics is None else metrics, **kwargs)

    @classmethod
    def config_for_new_input(cls, config, old_shape, new_shape):
        """Scales the reconstruction weight by `old pixels / new pixels`: R is a sum over pixels, the others are not.

        So R keeps the share of the loss it had on the preset's images
        (a 32x32 RGB image has 3.9x the values of a 28x28 grey one).

        Example:
        >>> PrototypeDL.config_for_new_input({"reconstruction_weight": 1.0}, (28, 28, 1), (56, 56, 1))
        {'reconstruction_weight': 0.25}
        """
        config = dict(config)
        ratio = math.prod(old_shape) / math.prod(new_shape)
        config["reconstruction_weight"] = float(config.get("reconstruction_weight", 1.0)) * ratio
        return config

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=list(self.filters),
            num_prototypes=self.num_prototypes,
            classification_weight=self.classification_weight,
            reconstruction_weight=self.reconstruction_weight,
            r1_weight=self.r1_weight,
            r2_weight=self.r2_weight,
            activation=self.activation,
        )
        return config
