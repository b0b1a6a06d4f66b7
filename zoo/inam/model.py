"""INAM: interpretable convolution + global max-pooling + neural additive head (seed 000)."""

import pathlib
import warnings

import keras
import numpy as np
from glasszoo.layers import (
    GlobalMaxPoolingWithLocation,
    InterpretableConv2D,
    NeuralAdditiveHead,
)
from glasszoo.layers.single_node_ops import first_argmax
from glasszoo.zoo.base import ZooModel
from glasszoo.zoo.inam.feature_sample import FEATURE_SAMPLE_FILE
from keras import ops

EXPLANATION_OUTPUTS = {
    "logits": "(B, K) class scores; = contributions summed over features + bias",
    "max_responses": "(B, N) maximal response X_l of each kernel",
    "max_locations": "(B, N, 2) (row, column) in input pixels of that maximum",
    "contributions": "(B, N, K) centred per-feature class contributions g~_l(X_l)",
    "decision_images": "(B, K, H, W, C) decision image of every class (seed 000, Fig. 3)",
    "pixel_evidence": (
        "(B, K, H, W, C) each class's evidence against the black image in the image's pixels: every kernel whose "
        "evidence g(X_l) - g(0) is largest for the class, spread over the pixels under it in proportion to kernel x "
        "pixel (they sum to that evidence exactly)"
    ),
}

# a maximal response closer to 0 than this counts as this (with its sign) when evidence is divided by it: about the
# resolution of an int8 export's responses (of size 1 to 3), whose rounding noise would otherwise be divided by ~0
RESPONSE_FLOOR = 1e-2


@keras.saving.register_keras_serializable(package="glasszoo")
class INAM(ZooModel):
    """Image-scale neural additive model (Hüls et al., seed 000).

    `x -> InterpretableConv2D (N kernels n x n x c, no bias) -> global max
    -> NeuralAdditiveHead -> logits = sum_l g~_l(X_l) + bias`. Its losses
    (cross-entropy plus the kernels' TV and orthonormality penalties) are
    built in: `compile()` with no arguments and `fit` train it like any Keras
    model. `fit` centres the additive head on the training data when it
    ends (pass `center=False` to skip), so users get the seed's centred shape
    functions without an extra step; `center_head(data)` does it on demand.

    Args:
        num_classes: int, `K`.
        input_shape: `(H, W, C)` of the float images in [0, 1].
        num_kernels: int, `N`.
        kernel_size: int, odd `n`.
        tv_weight: float, `alpha_TV`.
        ortho_weight: float, `alpha_ortho`.
        padding: `"same"` or `"valid"` for the interpretable convolution.
        hidden_units: widths of each feature's subnet.
        class_names: optional list of `K` names.

    Example:
    >>> model = INAM(num_classes=10, input_shape=(28, 28, 1), num_kernels=16, kernel_size=5)
    >>> model.compile()
    >>> out = model.explain(np.zeros((2, 28, 28, 1), "float32"))
    >>> out["decision_images"].shape
    (2, 10, 28, 28, 1)
    """

    family = "inam"
    explanation_outputs = EXPLANATION_OUTPUTS
    attribution_output = "pixel_evidence"  # (B, K, H, W, C): the target class's map, channels summed

    def __init__(
        self,
        num_classes=10,
        input_shape=(28, 28, 1),
        num_kernels=256,
        kernel_size=13,
        tv_weight=0.05,
        ortho_weight=0.05,
        padding="same",
        hidden_units=(64, 64, 32),
        class_names=None,
        **kwargs,
    ):
        super().__init__(num_classes=num_classes, input_shape=input_shape, class_names=class_names, **kwargs)
        self.num_kernels = int(num_kernels)
        self.kernel_size = int(kernel_size)
        self.tv_weight = float(tv_weight)
        self.ortho_weight = float(ortho_weight)
        self.padding = padding
        self.hidden_units = tuple(hidden_units)
        self.feature_sample = None  # max responses of training images (density shading in the kernel views)
        self.conv = InterpretableConv2D(
            self.num_kernels,
            self.kernel_size,
            padding=padding,
            tv_weight=tv_weight,
            ortho_weight=ortho_weight,
            name="interpretable_conv",
        )
        self.pool = GlobalMaxPoolingWithLocation(self.conv.location_offset, name="max_pool_with_location")
        self.head = NeuralAdditiveHead(self.num_classes, self.hidden_units, name="additive_head")
        self.build((None,) + self.image_shape)

    def build(self, input_shape):
        self.conv.build(input_shape)
        maps_shape = self.conv.compute_output_shape(input_shape)
        self.head.build((input_shape[0], maps_shape[-1]))
        self.built = True

    # -- forward ---------------------------------------------------------
    def call(self, images):
        values, _ = self.pool(self.conv(images))
        return self.head.logits(self.head(values))

    def explanation_graph(self, images, target=None):
        """All explanation tensors from forward ops only (so they export).

        Args:
            images: tensor `(B, H, W, C)` in [0, 1] (symbolic or eager).
            target: unused: the decision images of every class are outputs.

        Returns:
            dict with the keys of `EXPLANATION_OUTPUTS`.
        """
        maps = self.conv(images)
        values, locations = self.pool(maps)
        contributions = self.head(values)
        logits = self.head.logits(contributions)
        return {
            "logits": logits,
            "max_responses": values,
            "max_locations": locations,
            "contributions": contributions,
            "decision_images": self.decision_images(contributions, locations, images.shape[1], images.shape[2]),
            "pixel_evidence": self.pixel_evidence(images, values, locations, contributions),
        }

    def decision_images(self, contributions, locations, height, width):
        """Decision image of every class (seed 000): each class's kernels, placed and weighted.

        For class t, every kernel l whose contribution is largest for t is
        placed, scaled by that contribution, centred on the location of its
        maximal response (`InterpretableConv2D.placement_by_group`: work
        proportional to the N placed kernels, not a transposed convolution
        over N x K one-hot maps). A kernel tied between classes goes to the
        first of them.

        Args:
            contributions: `(B, N, K)` contribution of each feature to each class.
            locations: `(B, N, 2)` input pixel of each feature's maximal response.
            height, width: int, the input image's size.

        Returns:
            `(B, K, H, W, C)`.
        """
        strongest = first_argmax(contributions, axis=-1)  # (B, N): the class each kernel is placed in
        weights = ops.max(contributions, axis=-1)
        return self.conv.placement_by_group(locations, strongest, weights, self.num_classes, height, width)

    def pixel_evidence(self, images, values, locations, contributions):
        """Each class's evidence against the black image, in the image's pixels (the model's own pixel map).

        A feature's evidence for class `k` against the black image (where
        every maximal response is 0) is `d_lk = g~_lk(X_l) - g~_lk(0)`. Each
        kernel goes to the class its evidence is largest for, as in the
        decision image (which uses `g~_lk(X_l)`, the evidence against the
        average image). The response `X_l = sum_p w_l[p] x[p]` is linear in
        the pixels under the kernel, so `d_lk` is spread over them in
        proportion to `w_l[p] x[p] / X_l`: pixel `p` of class `k` gets
        `x[p] * sum_l d_lk w_l[p] / X_l` over the kernels placed in `k`, and
        the class's pixels sum to `sum_l d_lk` exactly (a response smaller
        than `RESPONSE_FLOOR` in size counts as that floor, so a kernel that
        barely responds gives `d_lk X_l / floor`, less). Because the global
        maximum is positively homogeneous (`X_l(a x) = a X_l(x)`), this is
        each feature's Integrated Gradients from the black image, and pixel
        removal (which sets pixels to 0) moves the logit toward that image.

        Args:
            images: `(B, H, W, C)`.
            values: `(B, N)` maximal responses `X_l`.
            locations: `(B, N, 2)` where they are.
            contributions: `(B, N, K)` the centred contributions `g~_lk(X_l)`.

        Returns:
            `(B, K, H, W, C)`.

        Example:
        >>> out = model.explain(images)  # doctest: +SKIP
        >>> evidence_of_k = out["pixel_evidence"][0, k].sum()  # doctest: +SKIP
        """
        at_black = self.head(ops.zeros_like(values[:1]))  # (1, N, K): g~(0), every response 0
        evidence = contributions - at_black
        strongest = first_argmax(evidence, axis=-1)
        floor = ops.cast(RESPONSE_FLOOR, values.dtype)
        responses = ops.where(values >= 0, ops.maximum(values, floor), ops.minimum(values, -floor))
        per_unit_response = ops.max(evidence, axis=-1) / responses
        placed = self.conv.placement_by_group(locations, strongest, per_unit_response, self.num_classes, images.shape[1], images.shape[2])
        return placed * ops.expand_dims(ops.cast(images, placed.dtype), 1)

    # -- user API ----------------------------------------------------------
    def attribution_map(self, images, targets=None, batch_size=32):
        """The pixel evidence of each image's target class (None: the predicted one), summed over channels: `(B, H, W)`."""
        explained = self.explain(images, batch_size=batch_size)
        targets = explained["logits"].argmax(-1) if targets is None else np.broadcast_to(np.asarray(targets), (len(explained["logits"]),))
        return explained[self.attribution_output][np.arange(len(targets)), targets].sum(axis=-1)

    def self_checks(self, images, explanation):
        """Adds: logits = contributions summed over features + bias."""
        checks = super().self_checks(images, explanation)
        bias = ops.convert_to_numpy(self.head.bias).astype("float64")
        rebuilt = explanation["contributions"].astype("float64").sum(axis=1) + bias
        checks["logits = sum of contributions + bias"] = float(np.max(np.abs(rebuilt - explanation["logits"])))
        return checks

    def family_metrics(self, images, batch_size=64):
        """The seed's decision-image consistency: share of images whose positive decision image keeps the class."""
        from glasszoo.zoo.inam.consistency import decision_image_consistency

        return {"decision_image_consistency": round(decision_image_consistency(self, images, batch_size=batch_size)["consistency"], 4)}

    def fit(self, x=None, y=None, batch_size=None, *args, center=True, **kwargs):
        """Keras `fit`, then centring of the additive head on the training data.

        Args:
            center: keyword only; recompute the head's feature means on `x`
                after training (`x` as passed to fit: arrays, a
                `tf.data.Dataset` or a `keras.utils.PyDataset` of
                `(images, labels)`). An endless dataset is read for
                `steps_per_epoch` batches; a one-shot generator cannot be
                re-read, and fit then warns instead of centring.
        """
        history = super().fit(x, y, batch_size, *args, **kwargs)
        if center:
            steps = kwargs.get("steps_per_epoch")
            if steps is None and _is_endless(x):
                warnings.warn(
                    "INAM.fit did not centre the additive head: the training data never ends and no "
                    "steps_per_epoch was given; call model.center_head(training_images) yourself.",
                    stacklevel=2,
                )
                return history
            try:
                self.center_head(x, batch_size=batch_size or 256, max_batches=steps)
            except ValueError:
                warnings.warn(
                    "INAM.fit could not re-read the training data to centre the additive head (a one-shot "
                    "generator?); call model.center_head(training_images) yourself.",
                    stacklevel=2,
                )
        return history

    def feature_maps_and_logits(self, images):
        """`(response maps of the N kernels (B, H', W', N), logits)` in one pass: the maps Grad-CAM weighs."""
        maps = self.conv(images)
        values, _ = self.pool(maps)
        return maps, self.head.logits(self.head(values))

    def linear_readout(self, images):
        """The additive head's output layer: `logits = sum_l h_l(X_l) @ W_l + bias`, one linear map of all `h_l`.

        The centring shifts of the shape functions sum to zero over the
        features, so they leave the logits out; the features are the last
        hidden layers of the `N` shape functions side by side, `(B, N · width)`.
        """
        hidden = self.head.last_hidden(self.feature_values(images))
        kernel = self.head.output_kernel
        return {
            "features": ops.reshape(hidden, (-1, hidden.shape[1] * hidden.shape[2])),
            "kernel": ops.reshape(kernel, (-1, kernel.shape[-1])),
            "bias": self.head.bias,
            "offset": None,
        }

    def feature_values(self, images):
        """Maximal responses `(B, N)` of a batch tensor."""
        values, _ = self.pool(self.conv(images))
        return values

    def max_responses(self, images, batch_size=256):
        """Maximal responses `X_l` `(B, N)` of an image array, as NumPy (batched)."""
        parts = [ops.convert_to_numpy(self.feature_values(batch)) for batch in _image_batches(images, batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_kernels), "float32")

    def center_head(self, data, batch_size=256, max_batches=None):
        """Sets the head's feature means to those of `data` (seed 000 centring).

        Args:
            data: images array `(B, H, W, C)`, or an iterable of batches
                (`images` or `(images, labels, ...)`).
            batch_size: images per forward pass for arrays.
            max_batches: read at most this many batches (for endless data).
        """
        total, count = None, 0
        for index, batch in enumerate(_image_batches(data, batch_size)):
            if max_batches is not None and index >= max_batches:
                break
            raw = ops.convert_to_numpy(self.head.shape_functions(self.feature_values(batch)))
            total = raw.sum(axis=0) if total is None else total + raw.sum(axis=0)
            count += raw.shape[0]
        if not count:
            raise ValueError("center_head needs at least one training image.")
        self.head.set_feature_means(total / count)

    # -- training hooks ----------------------------------------------------------
    def fit_arguments(self):
        """`glasszoo train` centres the head once, on the best weights (`finish_training`), not after each fit."""
        return {"center": False}

    def finish_training(self, images):
        """Centres the additive head on the fit split and keeps a sample of feature values for the kernel views."""
        self.center_head(images)
        rng = np.random.default_rng(0)
        chosen = np.sort(rng.choice(len(images), min(2000, len(images)), replace=False))
        self.feature_sample = self.max_responses(images[chosen])

    def preset_files(self, directory):
        """The feature-value sample (`feature_sample.npz`), when the model has one."""
        if self.feature_sample is None:
            return {}
        from glasszoo.zoo.inam.feature_sample import write_feature_values

        return {FEATURE_SAMPLE_FILE: write_feature_values(self.feature_sample, pathlib.Path(directory) / FEATURE_SAMPLE_FILE)}

    def load_preset_files(self, folder, metadata):
        from glasszoo.zoo.inam.feature_sample import read_feature_sample

        self.feature_sample = read_feature_sample(folder)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_kernels=self.num_kernels,
            kernel_size=self.kernel_size,
            tv_weight=self.tv_weight,
            ortho_weight=self.ortho_weight,
            padding=self.padding,
            hidden_units=list(self.hidden_units),
        )
        return config


def _is_endless(data):
    cardinality = getattr(data, "cardinality", None)
    if cardinality is None:
        return False
    import tensorflow as tf

    return int(cardinality()) == int(tf.data.INFINITE_CARDINALITY)


def _image_batches(data, batch_size):
    if isinstance(data, np.ndarray) or hasattr(data, "shape"):
        for start in range(0, len(data), batch_size):
            yield ops.convert_to_tensor(np.asarray(data[start : start + batch_size], dtype="float32"))
        return
    if isinstance(data, keras.utils.PyDataset):
        data = (data[i] for i in range(len(data)))
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch
