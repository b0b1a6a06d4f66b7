"""CoDA's last layer as a function of its weights, for influence functions (NumPy, float64).

The last `DAUConv2D` has one dynamic alignment unit per class. At each
position, with `p` the input patch and `z = Bᵀ p` its rank-`r` projection
(`B` shared by the classes), class `j`'s dynamic weight is
`u_j = A_j z + b_j` and its output `out_j = alpha(|u_j|²) u_j · p`
(`alpha(s) = sqrt(s) / (1 + s)`, squashing, or `1 / sqrt(s)`, unit norm);
the head pools `out_j` over the positions into the logit (the sum `/ T +
b0`, or the softmax-weighted mean `/ T + b0`, whose weights are then part of
the derivative: `layers.evidence_pooling.pooling_weights_and_slopes`).

The weights modelled are each class's own, `A_j` `(d, r)` and `b_j` `(d,)`
(`d = k · k · C`): the class-`j` logit reads only them, so the Jacobian is
one `d (r + 1)`-vector per class (per-class features of
`explain.readout_objective`). The shared projection `B` is held fixed. With
`g = d out_j / d u_j = alpha p + 2 alpha'(s) (u_j · p) u_j`:

    d out_j / d A_j = g zᵀ,   d out_j / d b_j = g.

In the preset that is 4,896 weights a class; `explain.influence` lets
them move only along each class's principal directions
(`explain.readouts.SubspaceHead`).
"""

import numpy as np
from glasszoo.explain.readouts import to_numpy
from glasszoo.layers.evidence_pooling import pooling_constants, pooling_weights_and_slopes


class DAUHead:
    """The last DAU layer and pooling head of a `CoDA` on `n` images, as a function of the per-class weights.

    Parameters are `(d (r + 1), K)`: column `j` is `A_j` flattened
    row-major, then `b_j`. `jacobian_chunks(parameters)` yields the logits
    and the Jacobian `(b, d (r + 1), K)` chunk by chunk; `features` and
    `offsets` (the whole Jacobian at the model's weights) are computed on
    first use only, being large.

    Args:
        patches: `(n, positions, d)` the layer's input patches.
        layer: the `DAUConv2D` (its weights, `normalization`, `epsilon`).
        head: the model's pooling head (`TemperatureSumPooling` or `SoftmaxEvidencePooling`).
        chunk: images per NumPy batch.

    Example:
    >>> head = model.readout_head(images)  # doctest: +SKIP
    >>> np.allclose(head.logits(head.parameters), model.predict(images))  # doctest: +SKIP
    True
    """

    linear = False
    loss = "sigmoid"

    def __init__(self, patches, layer, head, chunk=128):
        self.patches = patches
        self.normalization, self.epsilon = layer.normalization, float(layer.epsilon)
        (self.temperature, self.sharpness), self.bias = pooling_constants(head), float(head.bias)
        self.width, self.rank, self.classes = int(patches.shape[-1]), int(layer.rank), int(layer.filters)
        projection = to_numpy(layer.projection).reshape(self.width, self.rank)
        self.projected = np.einsum("npd,dr->npr", patches, projection, optimize=True).astype("float32")  # z per position
        alignment = to_numpy(layer.alignment).reshape(self.width, self.classes, self.rank)  # A_j = [:, j, :]
        offset = to_numpy(layer.offset).reshape(self.width, self.classes)
        self.parameters = np.concatenate([alignment.transpose(0, 2, 1).reshape(-1, self.classes), offset])
        self.chunk = int(chunk)
        self._expanded = None

    @property
    def features(self):
        return self._expansion()[0]

    @property
    def offsets(self):
        return self._expansion()[1]

    def _expansion(self):
        if self._expanded is None:
            self._expanded = self.expand(self.parameters)
        return self._expanded

    def _split(self, parameters):
        parameters = np.asarray(parameters, "float64")
        alignment = parameters[: self.width * self.rank].reshape(self.width, self.rank, self.classes)
        return alignment, parameters[self.width * self.rank :]

    def _scale(self, squared):
        """`alpha(s)` and `alpha'(s)` of the squared norms."""
        if self.normalization == "l2":
            return squared**-0.5, -0.5 * squared**-1.5
        root = np.sqrt(squared)
        return root / (1.0 + squared), (1.0 - squared) / (2.0 * root * (1.0 + squared) ** 2)

    def _forward(self, start, parameters, jacobian=True):
        """Logits `(b, K)` of the chunk from image `start` and, with `jacobian`, `d logit / d parameters` `(b, F, K)`."""
        alignment, offset = self._split(parameters)
        p = np.asarray(self.patches[start : start + self.chunk], "float64")
        z = np.asarray(self.projected[start : start + self.chunk], "float64")
        weights = np.einsum("daj,npa->npjd", alignment, z, optimize=True) + offset.T  # u_j per position
        squared = np.sum(weights**2, axis=-1)
        scale, slope = self._scale(np.maximum(squared, self.epsilon))
        slope = np.where(squared > self.epsilon, slope, 0.0)  # the floor is flat
        response = np.einsum("npjd,npd->npj", weights, p, optimize=True)
        position_weights, position_slopes = pooling_weights_and_slopes(scale * response, self.temperature, self.sharpness)
        logits = np.sum(position_weights * scale * response, axis=1) + self.bias
        if not jacobian:
            return logits, None
        toward = scale[..., None] * p[:, :, None, :] + (2.0 * slope * response)[..., None] * weights  # (b, P, K, d)
        toward = toward * position_slopes[..., None]  # d logit / d u_j at each position
        by_alignment = np.einsum("npjd,npa->ndaj", toward, z, optimize=True).reshape(len(p), -1, self.classes)
        by_offset = np.sum(toward, axis=1).transpose(0, 2, 1)
        return logits, np.concatenate([by_alignment, by_offset], axis=1)

    def logits(self, parameters):
        """`(n, K)` logits with the per-class weights set to `parameters`."""
        return np.concatenate([self._forward(start, parameters, jacobian=False)[0] for start in range(0, len(self.patches), self.chunk)])

    def jacobian_chunks(self, parameters):
        """`(logits (b, K), Jacobian (b, F, K))` of consecutive chunks of the images."""
        for start in range(0, len(self.patches), self.chunk):
            yield self._forward(start, parameters)

    def expand(self, parameters):
        """`(features (n, F, K), offsets (n, K))`: the whole Jacobian at `parameters` and the rest (memory: `n F K` floats)."""
        parts = list(self.jacobian_chunks(parameters))
        logits = np.concatenate([part[0] for part in parts])
        features = np.concatenate([part[1] for part in parts])
        return features, logits - np.einsum("bfc,fc->bc", features, np.asarray(parameters, "float64"), optimize=True)


def last_layer_head(model, images, batch_size=256):
    """`DAUHead` of `model` (a `CoDA`) on `images`: the last layer's input patches, read once."""
    layer = model.stack()[-1]
    return DAUHead(model.last_layer_patches(images, layer._pad, batch_size), layer, model.head)
