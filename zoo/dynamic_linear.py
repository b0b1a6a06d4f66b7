"""Networks that are dynamic linear end to end: an input encoding, a stack of layers `out = W(x) x`, a linear head.

A layer of such a stack has `dynamic_state(inputs)` (its forward pass and
what its transposed map needs) and `explain_backward(state, relevance,
input_shape)` (that transposed map with the dynamic weights held fixed), as
`DAUConv2D` and `BcosConv2D` do. The relevance of the class logit then flows
back to the encoded input in forward ops only, and `encoded ⊙ relevance` is
an exact contribution map.

Such a network may also be trained with a penalty on the positive evidence
that absent classes get at single positions (`absent_evidence_weight`; see
`glasszoo.zoo.losses.absent_class_evidence`): the pooled logit of an absent
class can be negative while some positions still speak for it, and on an
image of several objects that evidence lies on the wrong object.
"""

import threading

from glasszoo.zoo.base import class_selection
from glasszoo.zoo.distributed import per_replica_share
from glasszoo.zoo.losses import absent_class_evidence
from keras import ops


class DynamicLinearStack:
    """Mixin for a `ZooModel` made of `self.encoding`, the layers `self.stack()` returns, and `self.head`.

    It gives `build`, `call`, `feature_maps_and_logits` (the input of the
    last layer, for Grad-CAM) and `stack_explanation`, the forward and
    transposed passes of an explanation, and adds the absent-class evidence
    penalty to the compiled loss in `compute_loss`.

    Args:
        absent_evidence_weight: float >= 0, the weight of
            `absent_class_evidence` (each position's share of an absent
            class's logit, where it is positive) in the training loss; 0
            (the default) trains with the compiled loss alone.
        **kwargs: passed on to the `ZooModel`.

    Example:
    >>> class MyNet(DynamicLinearStack, ZooModel):  # doctest: +SKIP
    ...     def stack(self):
    ...         return self.my_layers
    """

    def __init__(self, *args, absent_evidence_weight=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if not float(absent_evidence_weight) >= 0:
            raise ValueError(f"absent_evidence_weight must be a number >= 0; got {absent_evidence_weight!r}.")
        self.absent_evidence_weight = float(absent_evidence_weight)
        self._loss_inputs = threading.local()  # the training step's class maps, per replica thread

    def stack(self):  # pragma: no cover - every model defines it
        raise NotImplementedError

    def build(self, input_shape):
        shape = self.encoding.compute_output_shape(input_shape)
        for layer in self.stack():
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, images, training=None):
        activations = self.encoding(images)
        for layer in self.stack():
            activations = layer(activations)
        if training and self.absent_evidence_weight:
            self._loss_inputs.class_maps = activations  # read by compute_loss in the same step
        return self.head(activations)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss plus `absent_evidence_weight` x `absent_class_evidence` of the step's class maps."""
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        class_maps = getattr(self._loss_inputs, "class_maps", None)
        self._loss_inputs.class_maps = None  # read once: a later call outside this step never sees a stale tensor
        if y is None or class_maps is None:  # not a training step, or a model trained without the penalty
            return loss
        contributions = self.head.position_weights(class_maps) * class_maps
        penalty = absent_class_evidence(contributions, y, self.num_classes)
        return loss + per_replica_share(self.absent_evidence_weight * penalty)

    def get_config(self):
        config = super().get_config()
        config.update(absent_evidence_weight=self.absent_evidence_weight)
        return config

    def feature_maps_and_logits(self, images):
        """`(input of the last layer (B, h, w, c), logits)` in one pass: the maps Grad-CAM weighs."""
        activations = self.encoding(images)
        for layer in self.stack()[:-1]:
            activations = layer(activations)
        return activations, self.head(self.stack()[-1](activations))

    def last_layer_patches(self, images, pad, batch_size=256):
        """`(n, positions, k·k·c)` float32: the windows the last layer of the stack reads, for its readout head.

        Args:
            images: `(n, H, W, C)` in [0, 1].
            pad: `pad(inputs) -> padded inputs`, the last layer's own padding.
            batch_size: images per forward pass.
        """
        import numpy as np
        from glasszoo.explain.readouts import to_numpy
        from glasszoo.layers.dynamic_alignment import extract_patches

        layer = self.stack()[-1]
        patches = []
        for start in range(0, len(images), batch_size):
            inputs, _ = self.feature_maps_and_logits(ops.convert_to_tensor(np.asarray(images[start : start + batch_size], "float32")))
            windows = to_numpy(extract_patches(pad(inputs), layer.kernel_size, layer.strides)).astype("float32")
            patches.append(windows.reshape(len(windows), -1, windows.shape[-1]))
        return np.concatenate(patches)

    def stack_explanation(self, images, target=None, scale=1.0):
        """`(encoded input, logits, relevance of the encoded input)` for the explained classes.

        Args:
            images: `(B, H, W, C)`.
            target: optional `(B, K)` weighting of the classes (None: the predicted one).
            scale: factor of the output relevance on top of the head's `position_weights` (1 for a map
                that sums to the logit minus the head's fixed bias).
        """
        encoded = self.encoding(images)
        activations, states, shapes = encoded, [], []
        for layer in self.stack():
            shapes.append(activations.shape)
            state = layer.dynamic_state(activations)
            states.append(state)
            activations = state["outputs"]
        weights = self.head.position_weights(activations)  # once: the logits and the relevance share them
        logits = self.head.pooled(activations, weights)
        relevance = weights * (class_selection(logits, target) * scale)[:, None, None, :]
        for layer, state, shape in zip(reversed(self.stack()), reversed(states), reversed(shapes)):
            relevance = layer.explain_backward(state, relevance, shape)
        return encoded, logits, relevance
