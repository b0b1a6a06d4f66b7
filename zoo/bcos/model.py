"""B-cos networks: every linear transform a B-cos transform, so the model is dynamic linear and its maps exact."""

import keras
import numpy as np
from glasszoo.layers.bcos import BcosConv2D
from glasszoo.layers.complement_encoding import input_encoding_layer
from glasszoo.layers.evidence_pooling import evidence_pooling_head
from glasszoo.layers.temperature_head import PRIOR_BIAS
from glasszoo.zoo.base import ZooModel
from glasszoo.zoo.dynamic_linear import DynamicLinearStack
from glasszoo.zoo.losses import OneHotBinaryCrossentropy
from keras import ops

EXPLANATION_OUTPUTS = {
    "logits": "(B, K) class logits; logit_c = sum(contribution map of c) + b0 (b0 = log(0.1/0.9))",
    "contributions": "(B, H, W) contribution map of the explained class: encoded input x W(x)_c (the pooling weights and 1 / T included), summed over the encoded channels",
    "linear_map": "(B, H, W, E) the dynamic linear map W(x)_c / T on the encoded input ([x, 1 - x], E = 2C; or x, E = C); its colour rendering for RGB inputs",
}


@keras.saving.register_keras_serializable(package="glasszoo")
class BcosNet(DynamicLinearStack, ZooModel):
    """B-cos network (Böhle et al. 2022): `[x, 1 - x] -> BcosConv2D x L -> pooled over positions / T + b0`.

    No biases, no normalisation layers, no other non-linearity: every layer
    is `W_l(x) x`, so the class logit is exactly a linear map of the encoded
    input, `logit_c = sum(x ⊙ W(x)_c) / T + b0`, and `x ⊙ W(x)_c / T` is the
    model's own contribution map (completeness holds to float precision). The
    alignment pressure of `B > 1` makes `W(x)_c` align with the class's
    evidence, which is what the paper shows to localise. `compile()` defaults
    to binary cross-entropy on one-hot targets (integer labels accepted), as
    in the paper; `output_activation` is a sigmoid per class.

    Args:
        num_classes: int `K` (filters of the last layer).
        input_shape: `(H, W, C)` of float images in [0, 1].
        filters: output channels of the first `L - 1` layers.
        kernel_sizes: one per layer (`L` entries; the last is usually 1).
        strides: one per layer.
        b: the exponent `B` of every layer.
        max_out: MaxOut units per channel.
        temperature: `T` of the head.
        scale_factor: each layer's output scale (`BcosConv2D`).
        padding: `"symmetric"` (the paper's) or `"same"`.
        input_encoding: `"complement"` (the paper's `[x, 1 - x]`: dark pixels
            are evidence too) or `"none"` (`x` alone: a black pixel
            contributes exactly nothing).
        pooling: `"sum"` (the paper's: sum of each class map over positions)
            or `"softmax"` (`SoftmaxEvidencePooling`: a weighted mean that
            favours each class's strongest positions, so an absent class
            needs negative evidence everywhere, not only on average).
        pooling_sharpness: `tau` of the softmax pooling (ignored for `"sum"`).
        class_names: optional `K` names.
        absent_evidence_weight: weight of the training penalty on positive evidence for
            absent classes at single positions (`DynamicLinearStack`); 0 by default.

    Example:
    >>> model = BcosNet(num_classes=10, input_shape=(28, 28, 1), filters=[8], kernel_sizes=[3, 1], strides=[2, 1])
    >>> model.explain(np.zeros((2, 28, 28, 1), "float32"))["contributions"].shape
    (2, 28, 28)
    """

    family = "bcos"
    output_activation = "sigmoid"
    explanation_outputs = EXPLANATION_OUTPUTS
    attribution_output = "contributions"

    def __init__(
        self,
        num_classes=10,
        input_shape=(28, 28, 1),
        filters=(32, 64, 64, 128),
        kernel_sizes=(3, 3, 3, 3, 1),
        strides=(1, 2, 1, 2, 1),
        b=2.0,
        max_out=2,
        temperature=100.0,
        scale_factor=100.0,
        padding="symmetric",
        input_encoding="complement",
        pooling="sum",
        pooling_sharpness=1.0,
        class_names=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "bcos")
        super().__init__(num_classes=num_classes, input_shape=input_shape, class_names=class_names, **kwargs)
        self.filters = [int(f) for f in filters]
        self.kernel_sizes = [int(k) for k in kernel_sizes]
        self.layer_strides = [int(s) for s in strides]
        self.b, self.max_out = float(b), int(max_out)
        self.temperature, self.scale_factor, self.padding = float(temperature), float(scale_factor), padding
        self.input_encoding = input_encoding
        self.head = evidence_pooling_head(pooling, self.temperature, pooling_sharpness)
        self.pooling, self.pooling_sharpness = pooling, float(pooling_sharpness)
        depth = len(self.kernel_sizes)
        if not (len(self.layer_strides) == depth and len(self.filters) == depth - 1):
            raise ValueError(
                f"kernel_sizes and strides need one entry per layer and filters one fewer (the last layer has "
                f"num_classes filters); got {depth}, {len(self.layer_strides)} and {len(self.filters)}."
            )
        self.encoding = input_encoding_layer(input_encoding)
        self.bcos_layers = [
            BcosConv2D(
                channels, kernel, strides=stride, padding=padding, b=self.b, max_out=self.max_out,
                scale_factor=self.scale_factor, name=f"bcos_{index}",
            )
            for index, (channels, kernel, stride) in enumerate(zip(self.filters + [self.num_classes], self.kernel_sizes, self.layer_strides))
        ]
        self.build((None,) + self.image_shape)

    def stack(self):
        return self.bcos_layers

    # -- forward -------------------------------------------------------------------
    def explanation_graph(self, images, target=None):
        """Logits, the contribution map and the linear map of the explained class, forward ops only (exports).

        Args:
            images: tensor `(B, H, W, C)` in [0, 1].
            target: optional one-hot (or any weighting) `(B, K)` of the classes
                to explain; the predicted class when None.
        """
        encoded, logits, relevance = self.stack_explanation(images, target)
        return {"logits": logits, "contributions": ops.sum(encoded * relevance, axis=-1), "linear_map": relevance}

    # -- user API ----------------------------------------------------------------------
    def self_checks(self, images, explanation):
        """Adds completeness: the explained logit = sum of the contribution map + b0."""
        checks = super().self_checks(images, explanation)
        logits = explanation["logits"].astype("float64")
        explained = logits[np.arange(len(logits)), logits.argmax(-1)]
        rebuilt = explanation["contributions"].astype("float64").sum(axis=(1, 2)) + PRIOR_BIAS
        checks["logit = sum(contributions) + b0"] = float(np.max(np.abs(rebuilt - explained)))
        return checks

    def readout_head(self, images, batch_size=256):
        """The last B-cos layer and the pooling head as a function of that layer's kernel (`zoo.bcos.readout`)."""
        from glasszoo.zoo.bcos.readout import last_layer_head

        return last_layer_head(self, images, batch_size)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Keras `compile` with the family's defaults: Adam, one-hot binary cross-entropy, accuracy."""
        loss = OneHotBinaryCrossentropy(self.num_classes) if loss is None else loss
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=list(self.filters),
            kernel_sizes=list(self.kernel_sizes),
            strides=list(self.layer_strides),
            b=self.b,
            max_out=self.max_out,
            temperature=self.temperature,
            scale_factor=self.scale_factor,
            padding=self.padding,
            input_encoding=self.input_encoding,
            pooling=self.pooling,
            pooling_sharpness=self.pooling_sharpness,
        )
        return config
