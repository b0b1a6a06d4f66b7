"""CoDA-Nets: convolutional dynamic alignment networks (seed 002)."""

import keras
import numpy as np
from glasszoo.layers.complement_encoding import input_encoding_layer
from glasszoo.layers.dynamic_alignment import DAUConv2D
from glasszoo.layers.evidence_pooling import evidence_pooling_head
from glasszoo.layers.temperature_head import PRIOR_BIAS
from glasszoo.zoo.base import ZooModel
from glasszoo.zoo.dynamic_linear import DynamicLinearStack
from glasszoo.zoo.losses import OneHotBinaryCrossentropy
from keras import ops

EXPLANATION_OUTPUTS = {
    "logits": "(B, K) class logits; logit_c = sum(contribution map of c) / T + b0",
    "contributions": "(B, H, W) contribution map of the predicted class: encoded input x W_0->L(x)_c (times the pooling's position weights x T), summed over the encoded channels",
}

# Layer lists: the last layer always has `num_classes` filters.
ARCHITECTURES = {
    # the paper's 9-layer S-CoDA for 32 x 32 x 3 inputs (CIFAR-10), REFERENCES.md
    "s_coda": {
        "kernel_sizes": [3, 3, 3, 3, 3, 3, 3, 3, 1],
        "strides": [1, 1, 2, 1, 1, 2, 1, 1, 1],
        "filters": [16, 16, 32, 32, 32, 64, 64, 64],
        "ranks": [32, 32, 64, 64, 64, 64, 64, 64, 64],
        "temperature": 1000.0,
        "padding": "symmetric",  # the authors' padding=1 (TensorFlow's "same" pads (0, 1) at stride 2)
    },
    # 5 layers sized to train on 28 x 28 Fashion-MNIST on two CPU cores (~3.6 s per 1,000 images)
    "coda_small": {
        "kernel_sizes": [3, 3, 3, 3, 3],
        "strides": [1, 2, 1, 2, 1],
        "filters": [16, 32, 32, 32],
        "ranks": [8, 16, 16, 16, 16],
        "temperature": 10.0,
    },
}


@keras.saving.register_keras_serializable(package="glasszoo")
class CoDA(DynamicLinearStack, ZooModel):
    """Convolutional Dynamic Alignment Network (Böhle et al., seed 002).

    `images -> [x, 1 - x] (or x) -> DAUConv2D x L (no other non-linearity, no
    normalisation) -> sum over positions / T + log(0.1/0.9)` (or, with
    `pooling="softmax"`, a softmax-weighted mean over positions / T). Every layer
    is dynamic linear, so the class logit is exactly a linear map of the
    encoded input, `logit_c = sum(x * W_0->L(x)_c) / T + b0`, and
    `x * W_0->L(x)_c` is the model's own contribution map. `compile()`
    defaults to binary cross-entropy on one-hot targets (integer labels are
    accepted), as in the paper.

    Args:
        num_classes: int `K` (filters of the last layer).
        input_shape: `(H, W, C)` of float images in [0, 1].
        kernel_sizes: one per layer (`L` entries).
        strides: one per layer.
        filters: output channels of the first `L - 1` layers.
        ranks: DAU rank of each layer.
        temperature: `T`.
        normalization: `"sq"` or `"l2"` (see `DAUConv2D`).
        padding: `"same"` (TensorFlow's) or `"symmetric"` (the paper's: `(k - 1) // 2`
            on both sides; see `glasszoo.layers.conv_padding`).
        input_encoding: `"complement"` (the paper's `[x, 1 - x]`: dark pixels
            contribute too) or `"none"` (the image itself: a black pixel
            contributes exactly 0, so no evidence can sit on a black background).
        pooling: `"sum"` (the paper's) or `"softmax"` (`SoftmaxEvidencePooling`:
            each class map pooled with weights `softmax(map / tau)` over
            positions, so an absent class needs negative evidence at every
            position, not only in total; the weights are a dynamic factor,
            so the contribution map stays exact).
        pooling_sharpness: `tau` of the softmax pooling (ignored for `"sum"`).
        class_names: optional `K` names.
        absent_evidence_weight: weight of the training penalty on positive evidence for
            absent classes at single positions (`DynamicLinearStack`); 0 by default.

    Example:
    >>> model = CoDA(num_classes=10, input_shape=(28, 28, 1), kernel_sizes=[3, 1],
    ...              strides=[2, 1], filters=[8], ranks=[4, 4], temperature=10.0)
    >>> out = model.explain(np.zeros((2, 28, 28, 1), "float32"))
    >>> out["contributions"].shape
    (2, 28, 28)
    """

    family = "coda"
    output_activation = "sigmoid"
    explanation_outputs = EXPLANATION_OUTPUTS
    attribution_output = "contributions"

    def __init__(
        self,
        num_classes=10,
        input_shape=(28, 28, 1),
        kernel_sizes=tuple(ARCHITECTURES["coda_small"]["kernel_sizes"]),
        strides=tuple(ARCHITECTURES["coda_small"]["strides"]),
        filters=tuple(ARCHITECTURES["coda_small"]["filters"]),
        ranks=tuple(ARCHITECTURES["coda_small"]["ranks"]),
        temperature=10.0,
        normalization="sq",
        padding="same",
        input_encoding="complement",
        pooling="sum",
        pooling_sharpness=1.0,
        class_names=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "coda")
        super().__init__(num_classes=num_classes, input_shape=input_shape, class_names=class_names, **kwargs)
        self.kernel_sizes = [int(k) for k in kernel_sizes]
        self.layer_strides = [int(s) for s in strides]
        self.filters = [int(f) for f in filters]
        self.ranks = [int(r) for r in ranks]
        self.temperature = float(temperature)
        self.normalization = normalization
        self.padding = padding
        depth = len(self.kernel_sizes)
        if not (len(self.layer_strides) == len(self.ranks) == depth and len(self.filters) == depth - 1):
            raise ValueError(
                f"kernel_sizes, strides and ranks need one entry per layer and filters one fewer (the last layer "
                f"has num_classes filters); got {depth}, {len(self.layer_strides)}, {len(self.ranks)} and {len(self.filters)}."
            )
        self.input_encoding = input_encoding
        self.encoding = input_encoding_layer(input_encoding)
        self.dau_layers = [
            DAUConv2D(
                channels, kernel, rank, strides=stride, padding=padding, normalization=normalization, name=f"dau_{index}"
            )
            for index, (channels, kernel, rank, stride) in enumerate(
                zip(self.filters + [self.num_classes], self.kernel_sizes, self.ranks, self.layer_strides)
            )
        ]
        self.head = evidence_pooling_head(pooling, self.temperature, pooling_sharpness)
        self.pooling, self.pooling_sharpness = pooling, float(pooling_sharpness)
        self.build((None,) + self.image_shape)

    @classmethod
    def from_architecture(cls, architecture, **kwargs):
        """A CoDA with the layer lists of `ARCHITECTURES[architecture]`; `kwargs` override.

        Example:
        >>> model = CoDA.from_architecture("s_coda", num_classes=10, input_shape=(32, 32, 3))
        """
        if architecture not in ARCHITECTURES:
            raise ValueError(f"Unknown CoDA architecture {architecture!r}; known: {sorted(ARCHITECTURES)}.")
        return cls(**dict(ARCHITECTURES[architecture], **kwargs))

    def stack(self):
        return self.dau_layers

    # -- forward -------------------------------------------------------------------
    def explanation_graph(self, images, target=None):
        """Logits and the contribution map, from forward ops only (so they export).

        Args:
            images: tensor `(B, H, W, C)` in [0, 1].
            target: optional one-hot (or any weighting) `(B, K)` of the classes
                to explain; the predicted class when None.

        Returns:
            dict with `logits` `(B, K)` and `contributions` `(B, H, W)`.
        """
        encoded, logits, relevance = self.stack_explanation(images, target, scale=self.temperature)
        return {"logits": logits, "contributions": ops.sum(encoded * relevance, axis=-1)}

    # -- user API ----------------------------------------------------------------------
    def self_checks(self, images, explanation):
        """Adds completeness: the explained logit = sum of the contribution map / T + b0."""
        checks = super().self_checks(images, explanation)
        logits = explanation["logits"].astype("float64")
        explained = logits[np.arange(len(logits)), logits.argmax(-1)]
        rebuilt = explanation["contributions"].astype("float64").sum(axis=(1, 2)) / self.temperature + PRIOR_BIAS
        checks["logit = sum(contributions) / T + b0"] = float(np.max(np.abs(rebuilt - explained)))
        return checks

    def contribution_maps(self, images, classes, batch_size=32):
        """Contribution maps `(B, len(classes), H, W)` of several classes per image."""
        maps = [self.explain(images, target=c, batch_size=batch_size)["contributions"] for c in classes]
        return np.stack(maps, axis=1)

    def readout_head(self, images, batch_size=256):
        """The last DAU layer and the pooling head as a function of its per-class weights (`zoo.coda.readout`)."""
        from glasszoo.zoo.coda.readout import last_layer_head

        return last_layer_head(self, images, batch_size)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Keras `compile` with the family's defaults: Adam, one-hot binary cross-entropy, accuracy."""
        if loss is None:
            loss = OneHotBinaryCrossentropy(self.num_classes)
        if metrics is None:
            metrics = ["accuracy"]
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # XLA fuses the DAU's element-wise ops: ~1.4x faster on CPU; not under tf.distribute (as Keras's own
            # "auto"), whose per-replica variables live on other devices than the XLA cluster
            kwargs.setdefault("jit_compile", not tf.distribute.has_strategy())
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_sizes=list(self.kernel_sizes),
            strides=list(self.layer_strides),
            filters=list(self.filters),
            ranks=list(self.ranks),
            temperature=self.temperature,
            normalization=self.normalization,
            padding=self.padding,
            input_encoding=self.input_encoding,
            pooling=self.pooling,
            pooling_sharpness=self.pooling_sharpness,
        )
        return config
