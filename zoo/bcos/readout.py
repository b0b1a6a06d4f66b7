"""B-cos's last layer as a function of its weights, for influence functions (NumPy, float64).

The last `BcosConv2D` maps the patches `x_p` of its input to one output per
class: `out_pj = l_pj* · (|l_pj*| / |x_p| + eps)^(B - 1) / s`, where
`l_pjm = x_p · w_jm / |w_jm|` is the response of unit `m` of class `j` and
`j*` its MaxOut winner at the model's weights; the head pools `out_.j` over the positions into the
logit (`sum / T + b0`, or the softmax-weighted mean). The logit of class `j`
reads only that class's `max_out` units, so the layer's Jacobian is one
`(max_out · d)` vector per class (`d = k · k · C`): the per-class features of
`explain.readout_objective`.

The MaxOut winners are held where the model's weights put them, as the
model's own explanation holds them (`BcosConv2D.explain_backward`): with
free winners the objective has a kink wherever two units tie, millions of
them over a training set, and neither a refit nor its Newton steps
converge; with the winners held the layer stays non-linear in its weights
(the unit norms and the dynamic factor) but smooth. Its derivative:

    d out_pj / d w_jm = [m wins] g_pj (x_p - l_pjm ŵ_jm) / |w_jm|,
    g_pj = f_pj + (B - 1) |l_pj| / |x_p| · (|l_pj| / |x_p| + eps)^(B - 2) / s

(`f` the dynamic factor), times the pooling's weight of position `p`.
"""

import numpy as np
from glasszoo.explain.readouts import to_numpy
from glasszoo.layers import conv_padding
from glasszoo.layers.evidence_pooling import pooling_constants, pooling_weights_and_slopes


class BcosLastLayerHead:
    """The last B-cos layer and pooling head of a `BcosNet` on `n` images, as a function of the layer's kernel.

    Parameters are `(max_out · d, K)`: row `m · d + i` of column `j` is
    weight `i` of unit `m` of class `j`. `expand(parameters)` gives the
    logits' Jacobian (per-class features) and the offsets that make
    `logits = offsets + features · parameters` at those parameters.

    Args:
        patches: `(n, positions, d)` the layer's input patches (float32 is enough).
        kernel: `(k, k, C, K · max_out)` the layer's kernel.
        layer: the `BcosConv2D` (its `b`, `max_out`, `scale`, `epsilon`).
        head: the model's pooling head (`TemperatureSumPooling` or `SoftmaxEvidencePooling`).
        chunk: images per NumPy batch.

    Example:
    >>> head = model.readout_head(images)  # doctest: +SKIP
    >>> np.allclose(head.logits(head.parameters), model.predict_logits(images))  # doctest: +SKIP
    True
    """

    linear = False
    loss = "sigmoid"

    def __init__(self, patches, kernel, layer, head, chunk=512):
        self.patches = patches
        self.b, self.max_out, self.scale, self.epsilon = float(layer.b), int(layer.max_out), float(layer.scale), float(layer.epsilon)
        (self.temperature, self.sharpness), self.bias = pooling_constants(head), float(head.bias)
        self.classes = int(kernel.shape[-1]) // self.max_out
        self.width = int(patches.shape[-1])
        self.chunk = int(chunk)
        units = np.asarray(kernel, "float64").reshape(self.width, self.classes, self.max_out)  # column j · M + m
        self.parameters = units.transpose(2, 0, 1).reshape(self.max_out * self.width, self.classes)
        self.winners = None  # the first expansion records them (at the model's weights) for every later one
        self.features, self.offsets = self.expand(self.parameters)

    def _units(self, parameters):
        """`(d, K, M)` unit weights, their unit-norm version and norms `(K, M)`."""
        units = np.asarray(parameters, "float64").reshape(self.max_out, self.width, self.classes).transpose(1, 2, 0)
        norms = np.sqrt(np.sum(units**2, axis=0))
        return units, units / np.maximum(norms, self.epsilon), norms

    def _forward(self, x, unit, start):
        """Responses of the chunk of patches `x` `(b, P, d)` from image `start` on: everything the logits and the Jacobian need."""
        responses = np.einsum("bpi,ikm->bpkm", x, unit, optimize=True)
        if self.winners is None:
            winners = np.argmax(responses, axis=-1)  # the first unit on ties, as the layer
        else:
            winners = self.winners[start : start + len(x)].astype("int64")
        selected = np.take_along_axis(responses, winners[..., None], axis=-1)[..., 0]
        length = np.sqrt(np.sum(x**2, axis=-1, keepdims=True) + self.epsilon)  # (b, P, 1)
        cosine = np.abs(selected) / length + self.epsilon
        exponent = self.b - 1.0
        factor = cosine**exponent / self.scale
        outputs = selected * factor
        weights, slope = pooling_weights_and_slopes(outputs, self.temperature, self.sharpness)
        logits = np.sum(weights * outputs, axis=1) + self.bias
        growth = factor + exponent * (np.abs(selected) / length) * cosine ** (exponent - 1.0) / self.scale if exponent else factor
        return logits, responses, winners, slope * growth

    def logits(self, parameters):
        """`(n, K)` logits with the layer's kernel set to `parameters`."""
        _, unit, _ = self._units(parameters)
        return np.concatenate([self._forward(self._chunk(start), unit, start)[0] for start in range(0, len(self.patches), self.chunk)])

    def _chunk(self, start):
        return np.asarray(self.patches[start : start + self.chunk], dtype="float64")

    def expand(self, parameters):
        """`(features (n, M · d, K), offsets (n, K))`: the logits' Jacobian at `parameters` and the rest."""
        _, unit, norms = self._units(parameters)
        features, logits, all_winners = [], [], []
        for start in range(0, len(self.patches), self.chunk):
            x = self._chunk(start)
            chunk_logits, responses, winners, gain = self._forward(x, unit, start)
            all_winners.append(winners.astype("int8"))
            per_unit = []
            for m in range(self.max_out):
                weight = gain * (winners == m)  # (b, P, K)
                toward_input = np.einsum("bpk,bpi->bik", weight, x, optimize=True)
                along_unit = np.einsum("bpk,bpk->bk", weight, responses[..., m])[:, None, :] * unit[None, :, :, m]
                per_unit.append((toward_input - along_unit) / np.maximum(norms[:, m], self.epsilon))
            features.append(np.concatenate(per_unit, axis=1))
            logits.append(chunk_logits)
        features, logits = np.concatenate(features), np.concatenate(logits)
        if self.winners is None:
            self.winners = np.concatenate(all_winners)
        return features, logits - np.einsum("bfc,fc->bc", features, np.asarray(parameters, "float64"), optimize=True)


def last_layer_head(model, images, batch_size=256):
    """`BcosLastLayerHead` of `model` (a `BcosNet`) on `images`: the last layer's input patches, read once."""
    layer = model.stack()[-1]
    patches = model.last_layer_patches(images, lambda inputs: conv_padding.pad(inputs, *layer._paddings(inputs.shape[1], inputs.shape[2])), batch_size)
    return BcosLastLayerHead(patches, to_numpy(layer.kernel), layer, model.head)
