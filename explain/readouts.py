"""A model's last layer seen as a function of its weights, on a set of images (NumPy, float64).

Influence functions (`explain.influence`) model how training the last
layer's weights `theta` `(F, K)` would change, with everything before them
held fixed. A *readout head* is that layer on given images, expanded at a
point `theta`:

    logits = offsets + features · theta        (`explain.readout_objective`)

It has `features` (`(n, F)` shared by the classes, or `(n, F, K)` one set
per class), `offsets` `(n, K)`, `parameters` (the model's `theta`), `loss`
(the model's training loss: `"softmax"` or `"sigmoid"`), `linear`, and
`expand(theta) -> (features, offsets)` at other weights. A linear layer's
expansion is the same everywhere (`LinearHead`); a non-linear one's
is re-expanded from the images' inputs to the layer, which the head keeps.

Families give theirs with `ZooModel.readout_head(images)`; by default that
wraps `ZooModel.linear_readout`.
"""

import numpy as np
from glasszoo.explain.readout_objective import check_loss, logits_of


def to_numpy(value):
    """A backend tensor (or None) as a float64 array."""
    from keras import ops

    return None if value is None else np.asarray(ops.convert_to_numpy(value), dtype="float64")


class LinearHead:
    """A linear last layer on `n` images: `logits = offsets + features @ parameters`.

    Args:
        features: `(n, F)` inputs of the layer (with a column of ones for its bias).
        offsets: `(n, K)` the part of the logits the layer's weights do not touch.
        parameters: `(F, K)` the layer's weights (the bias as the last row).
        loss: the model's training loss on the logits, `"softmax"` or `"sigmoid"`.

    Example:
    >>> head = LinearHead(np.ones((2, 3)), np.zeros((2, 4)), np.zeros((3, 4)))
    >>> head.logits(np.ones((3, 4)))[0]
    array([3., 3., 3., 3.])
    """

    linear = True

    def __init__(self, features, offsets, parameters, loss="softmax"):
        self.features = np.asarray(features, dtype="float64")
        self.offsets = np.asarray(offsets, dtype="float64")
        self.parameters = np.asarray(parameters, dtype="float64")
        self.loss = check_loss(loss)

    def expand(self, parameters):
        """`(features, offsets)`: the same at every `parameters` (the layer is linear)."""
        return self.features, self.offsets

    def logits(self, parameters):
        """`(n, K)` logits with the layer's weights set to `parameters`."""
        return logits_of(self.features, self.offsets, parameters)


def linear_head(model, images, batch_size=256):
    """`LinearHead` of `model.linear_readout` on `images` (a column of ones is appended for a bias).

    Raises:
        NotImplementedError: the family has no linear readout.
    """
    from keras import ops

    images = np.asarray(images, dtype="float32")
    features, offsets = [], []
    kernel = bias = None
    for start in range(0, len(images), batch_size):
        part = model.linear_readout(ops.convert_to_tensor(images[start : start + batch_size]))
        features.append(to_numpy(part["features"]))
        count = features[-1].shape[0]
        offset = to_numpy(part.get("offset"))
        offsets.append(np.zeros((count, model.num_classes)) if offset is None else offset)
        kernel, bias = to_numpy(part["kernel"]), to_numpy(part.get("bias"))
    features = np.concatenate(features)
    offsets = np.concatenate(offsets)
    if bias is not None:
        features = np.concatenate([features, np.ones((len(features), 1))], axis=1)
        kernel = np.concatenate([kernel, bias[None, :]], axis=0)
    return LinearHead(features, offsets, kernel, getattr(model, "output_activation", "softmax"))


def principal_directions(features, count):
    """`(F, count)` orthonormal directions of largest `sum_b phi_b phi_bᵀ` and the share of it they hold.

    The uncentred second moment: the readout's Hessian is built from it (not
    from the covariance), so these are the directions the data constrain most.
    """
    moment = np.zeros((features.shape[1],) * 2)
    for start in range(0, len(features), 4096):
        part = features[start : start + 4096]
        moment += part.T @ part
    values, vectors = np.linalg.eigh(moment)
    order = np.argsort(values)[::-1][:count]
    return vectors[:, order], float(values[order].sum() / max(values.sum(), 1e-300))


def project(head, projection):
    """`head` with its weights free only in the span of `projection` `U` `(F, m)` (orthonormal columns).

    The weights are `W = (I - U Uᵀ) W0 + U theta`: the new parameters are
    `theta = Uᵀ W` `(m, K)` on features `phi U`, and the part of the
    model's weights `W0` outside the span is held fixed in the offsets, so
    the logits at the model's weights are unchanged.
    """
    if not head.linear or head.features.ndim != 2:
        raise ValueError("Only a linear readout with features shared by the classes can be projected.")
    base = head.parameters
    frozen = base - projection @ (projection.T @ base)
    return LinearHead(head.features @ projection, head.offsets + head.features @ frozen, projection.T @ base, head.loss)


class SubspaceHead:
    """A non-linear head whose weights move only along given directions, one set per class.

    Class `j`'s weights are `theta0_j + U_j delta_j` (`theta0` the model's,
    `U_j` `(F, m)` orthonormal): the parameters are the `delta` `(m, K)`,
    zero at the model. The head must give its Jacobian chunk by chunk
    (`jacobian_chunks(parameters)` yielding `(logits, features (b, F, K))`),
    so that the full `(n, F, K)` Jacobian is never held.

    Args:
        head: the non-linear head.
        bases: `(K, F, m)` the directions of each class (`class_principal_bases`).
    """

    linear = False

    def __init__(self, head, bases):
        self.head, self.bases, self.loss = head, np.asarray(bases, "float64"), head.loss
        self.parameters = np.zeros((self.bases.shape[2], self.bases.shape[0]))
        self.features, self.offsets = self.expand(self.parameters)

    def weights(self, parameters):
        """The layer's full weights `(F, K)` at subspace coordinates `parameters`."""
        return self.head.parameters + np.einsum("jfm,mj->fj", self.bases, parameters, optimize=True)

    def logits(self, parameters):
        return self.head.logits(self.weights(parameters))

    def expand(self, parameters):
        logits, features = [], []
        for chunk_logits, chunk_features in self.head.jacobian_chunks(self.weights(parameters)):
            logits.append(chunk_logits)
            features.append(np.einsum("bfj,jfm->bmj", chunk_features, self.bases, optimize=True))
        features = np.concatenate(features)
        return features, np.concatenate(logits) - np.einsum("bmj,mj->bj", features, parameters, optimize=True)


def class_principal_bases(head, count, max_images=2048):
    """`(K, F, count)`: each class's directions of largest `sum_b J_bj J_bjᵀ` (its Jacobian's uncentred second moment).

    Estimated on the first `max_images` images of the head; also returns the
    share of each class's second moment they hold, `(K,)`.
    """
    moments, seen = None, 0
    for _, features in head.jacobian_chunks(head.parameters):
        part = features[: max_images - seen]
        moments = (0 if moments is None else moments) + np.einsum("bfj,bgj->jfg", part, part, optimize=True)
        seen += len(part)
        if seen >= max_images:
            break
    bases, shares = [], []
    for moment in moments:
        values, vectors = np.linalg.eigh(moment)
        order = np.argsort(values)[::-1][:count]
        bases.append(vectors[:, order])
        shares.append(float(values[order].sum() / max(values.sum(), 1e-300)))
    return np.stack(bases), np.array(shares)
