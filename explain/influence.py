"""Which training images made this prediction: influence functions on a model's linear readout (Koh and Liang 2017).

Upweighting a training point `z` by a small `eps` moves the parameters that
minimise the training objective by `-eps H^-1 grad L(z)` (`H` the Hessian of
the objective), and so changes the loss on a test point by
`eps I(z, z_test)`, with

    I(z, z_test) = -grad L(z_test)^T H^-1 grad L(z)        (I_up,loss)

Removing `z` is upweighting it by `-1/n`: the test loss changes by about
`-I(z, z_test) / n`. A training image with a very negative `I` is
*helpful* (without it the test loss would rise); a very positive one is
*harmful*.

**What is modelled.** As Koh and Liang do for their Inception network, the
parameters are those of the model's last, linear layer (its *readout*):
every family that has one exposes it as `model.linear_readout(images)`,
`logits = offset + features @ kernel + bias`, and everything before it is
held fixed. Then the loss is the softmax cross-entropy of a linear model,
convex in the readout, and the Hessian is exact and cheap to form:
`H = 1/n sum_b (diag p_b - p_b p_b^T) (x) phi_b phi_b^T + damping I`, over
the `P = (F + 1) K` readout parameters. The damping makes `H` positive
definite; it is the objective's own L2 term when the readout is refitted
(`refit=True`, and the leave-one-out check).

**Cost.** `InfluenceIndex.build` passes the training images through the
model once, keeps their readout features `(n, F)` and residuals
`p - onehot(y)` `(n, K)`, and inverts `H` once. A query then costs one
readout pass over the test image, one `P x P` matrix-vector product and one
`(n, F) x (F, K)` product: the training set is not revisited. The index is
saved to an `.npz` keyed by the training data's and the readout's sha256
(`cache_file`), so a second process reuses it.

**Validation.** `leave_one_out_check` does what the paper does: for chosen
training points it removes each one, refits the readout to convergence
(warm-started at the full-data optimum, Newton steps with the full-data
Hessian until the gradient vanishes), and compares the actual change of the
test loss with the predicted `-I / n`.
"""

import hashlib
import json
import pathlib

import numpy as np
from glasszoo.explain.probabilities import probabilities_of

INDEX_KEYS = ("features", "residuals", "labels", "inverse_hessian", "kernel", "offsets")
DEFAULT_DAMPING = 1e-3
FIXED_HESSIAN_STEPS = 10


def _numpy(value):
    from keras import ops

    return None if value is None else np.asarray(ops.convert_to_numpy(value), dtype="float64")


def readout(model, images, batch_size=256):
    """The model's linear readout on `images`: `(features (n, F'), offsets (n, K), parameters (F', K))`, float64.

    A constant feature 1 is appended when the readout has a bias, whose row
    of `parameters` is the bias; so `logits = offsets + features @ parameters`.

    Raises:
        NotImplementedError: the family has no linear readout.
    """
    from keras import ops

    images = np.asarray(images, dtype="float32")
    features, offsets = [], []
    kernel = bias = None
    for start in range(0, len(images), batch_size):
        part = model.linear_readout(ops.convert_to_tensor(images[start : start + batch_size]))
        features.append(_numpy(part["features"]))
        count = features[-1].shape[0]
        offset = _numpy(part.get("offset"))
        offsets.append(np.zeros((count, model.num_classes)) if offset is None else offset)
        kernel, bias = _numpy(part["kernel"]), _numpy(part.get("bias"))
    features = np.concatenate(features)
    offsets = np.concatenate(offsets)
    if bias is not None:
        features = np.concatenate([features, np.ones((len(features), 1))], axis=1)
        kernel = np.concatenate([kernel, bias[None, :]], axis=0)
    return features, offsets, kernel


def _losses(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(labels)), labels]


def objective_gradient(features, offsets, labels, parameters, damping, weights=None, count=None):
    """Gradient `(F', K)` of `1/count sum_b w_b CE_b + damping/2 ||parameters||^2` (w: 1 by default, 0 removes a point)."""
    count = len(features) if count is None else count
    residuals = probabilities_of(offsets + features @ parameters)
    residuals[np.arange(len(labels)), labels] -= 1.0
    if weights is not None:
        residuals = residuals * weights[:, None]
    return features.T @ residuals / count + damping * parameters


def objective_hessian(features, offsets, parameters, damping, chunk=4096, weights=None):
    """Exact Hessian `(P, P)`, `P = F' K`, of the mean cross-entropy of the readout plus `damping/2 ||.||^2`.

    Parameters are flattened row-major from `(F', K)`: index `f K + c`.
    `H = 1/n [sum_b blockdiag_c(p_bc phi_b phi_b^T) - g_b g_b^T] + damping I` with
    `g_b = vec(phi_b p_b^T)`, built in chunks of `chunk` images; `weights`
    (one per image, 0 removes it) weigh the images' terms, with `n` kept.
    """
    n, width = features.shape
    classes = parameters.shape[1]
    size = width * classes
    hessian = np.zeros((size, size))
    for start in range(0, n, chunk):
        phi = features[start : start + chunk]
        p = probabilities_of(offsets[start : start + chunk] + phi @ parameters)
        scale = np.ones(len(phi)) if weights is None else np.asarray(weights[start : start + chunk], dtype="float64")
        outer = (phi[:, :, None] * p[:, None, :]).reshape(len(phi), size)
        hessian -= (outer * scale[:, None]).T @ outer
        for c in range(classes):
            block = (phi * (p[:, c] * scale)[:, None]).T @ phi
            hessian[c::classes, c::classes] += block
    hessian /= n
    hessian[np.diag_indices(size)] += damping
    return hessian


def _inverse(hessian):
    """The inverse of a symmetric positive definite matrix, through its Cholesky factor (symmetrised)."""
    lower = np.linalg.cholesky(hessian)
    inverse_lower = np.linalg.solve(lower, np.eye(len(hessian)))
    inverse = inverse_lower.T @ inverse_lower
    return (inverse + inverse.T) / 2


def objective_value(features, offsets, labels, parameters, damping, weights=None, count=None):
    """`1/count sum_b w_b CE_b + damping/2 ||parameters||^2`, the objective `objective_gradient` differentiates."""
    count = len(features) if count is None else count
    losses = _losses(offsets + features @ parameters, labels)
    if weights is not None:
        losses = losses * weights
    return losses.sum() / count + 0.5 * damping * np.sum(parameters**2)


def refit_readout(features, offsets, labels, parameters, damping, weights=None, tolerance=1e-10, max_steps=100, hessian_inverse=None):
    """The readout minimising the damped cross-entropy, by Newton steps from `parameters`; `(parameters, steps)`.

    With `hessian_inverse` given, that fixed matrix is used for the first
    `FIXED_HESSIAN_STEPS` steps (a warm start near the optimum converges in a
    few); otherwise, and after those, the exact Hessian of the (weighted)
    objective is formed at every step (leaving out an image that holds up a
    weakly constrained direction changes the Hessian too much for the fixed
    one). Far from the optimum each step is
    halved until the objective decreases; near it (a predicted decrease
    below what the objective's value resolves) the full Newton step is taken. Stops when the largest gradient entry is below
    `tolerance`, or when the Newton step is below the parameters' rounding.

    Raises:
        RuntimeError: no convergence within `max_steps`.
    """
    parameters = np.array(parameters, dtype="float64")
    value = objective_value(features, offsets, labels, parameters, damping, weights=weights)
    for step in range(int(max_steps)):
        gradient = objective_gradient(features, offsets, labels, parameters, damping, weights=weights)
        if np.max(np.abs(gradient)) < tolerance:
            return parameters, step
        fixed = hessian_inverse is not None and step < FIXED_HESSIAN_STEPS
        inverse = hessian_inverse if fixed else _inverse(objective_hessian(features, offsets, parameters, damping, weights=weights))
        direction = (inverse @ gradient.reshape(-1)).reshape(parameters.shape)
        if np.max(np.abs(direction)) < 1e-13 * max(1.0, float(np.max(np.abs(parameters)))):
            return parameters, step  # the gradient is at its rounding floor: no representable step remains
        length = 1.0
        predicted_decrease = float(np.sum(gradient * direction))
        if predicted_decrease < 1e-12 * max(1.0, abs(value)):  # below what the objective's value can resolve
            candidate = parameters - direction  # near the optimum: the full Newton step
            candidate_value = objective_value(features, offsets, labels, candidate, damping, weights=weights)
        else:
            for _ in range(60):
                candidate = parameters - length * direction
                candidate_value = objective_value(features, offsets, labels, candidate, damping, weights=weights)
                if candidate_value <= value:
                    break
                length /= 2
        parameters, value = candidate, candidate_value
    raise RuntimeError(f"The readout did not converge in {max_steps} Newton steps (largest gradient {np.max(np.abs(gradient)):.3g}).")


def data_sha256(images, labels):
    """sha256 of the training images and labels (their bytes, shapes and dtypes)."""
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(images), np.ascontiguousarray(labels)):
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class InfluenceIndex:
    """The training set seen through a model's readout, ready to answer influence queries.

    Build it once with `InfluenceIndex.build(model, images, labels)` (or
    `cached(...)`, which saves and reuses it); then `scores`,
    `most_influential` and `predicted_loss_change` answer for any test image.

    Args:
        features: `(n, F')` readout features of the training images (with the bias column).
        residuals: `(n, K)` `softmax(logits) - onehot(label)` at the parameters.
        labels: `(n,)` training labels.
        inverse_hessian: `(P, P)` inverse of the damped Hessian.
        parameters: `(F', K)` the readout's parameters the index was built at.
        offsets: `(n, K)` the readout's per-image offsets.
        damping: the damping added to the Hessian.
        info: dict of provenance (hashes, sizes, refit).

    Example:
    >>> index = InfluenceIndex.cached(model, x_fit, y_fit)  # doctest: +SKIP
    >>> found = index.most_influential(model, test_images[:1], count=5)  # doctest: +SKIP
    >>> found["helpful"][0], found["harmful"][0]  # doctest: +SKIP
    (array([ 812, 4410, ...]), array([ 51233, 90, ...]))
    """

    def __init__(self, features, residuals, labels, inverse_hessian, parameters, offsets, damping, info=None):
        self.features = np.asarray(features, dtype="float64")
        self.residuals = np.asarray(residuals, dtype="float64")
        self.labels = np.asarray(labels, dtype="int64")
        self.inverse_hessian = np.asarray(inverse_hessian, dtype="float64")
        self.parameters = np.asarray(parameters, dtype="float64")
        self.offsets = np.asarray(offsets, dtype="float64")
        self.damping = float(damping)
        self.info = dict(info or {})

    @property
    def size(self):
        """Number of training images."""
        return len(self.labels)

    @classmethod
    def build(cls, model, images, labels, damping=DEFAULT_DAMPING, refit=False, batch_size=256):
        """Reads the training set through `model`'s readout and inverts the Hessian there.

        Args:
            model: a zoo model with `linear_readout`.
            images: `(n, H, W, C)` training images in [0, 1].
            labels: `(n,)` their classes.
            damping: added to the Hessian's diagonal (and, with `refit`, the L2 weight of the objective).
            refit: first move the readout to the optimum of the damped
                cross-entropy on these images (the setting of the paper's
                guarantees; the model itself is not changed).
            batch_size: images per forward pass.
        """
        labels = np.asarray(labels, dtype="int64").reshape(-1)
        if len(labels) != len(images) or not len(labels):
            raise ValueError(f"Influence needs training images with one label each; got {len(images)} images and {len(labels)} labels.")
        if not float(damping) > 0:
            raise ValueError(f"damping must be positive (it makes the Hessian invertible); got {damping!r}.")
        features, offsets, parameters = readout(model, images, batch_size)
        steps = 0
        if refit:
            parameters, steps = refit_readout(features, offsets, labels, parameters, damping)
        hessian = objective_hessian(features, offsets, parameters, damping)
        residuals = probabilities_of(offsets + features @ parameters)
        residuals[np.arange(len(labels)), labels] -= 1.0
        info = {
            "data_sha256": data_sha256(np.asarray(images), labels),
            "readout_sha256": hashlib.sha256(np.ascontiguousarray(parameters).tobytes()).hexdigest(),
            "training_images": int(len(labels)),
            "parameters": int(parameters.size),
            "refit_steps": int(steps),
            "refit": bool(refit),
        }
        return cls(features, residuals, labels, _inverse(hessian), parameters, offsets, damping, info)

    @classmethod
    def cached(cls, model, images, labels, damping=DEFAULT_DAMPING, folder=None, batch_size=256):
        """`build`, saved to and reused from `cache_file(...)` under `folder` (default `~/.cache/glasszoo/influence`)."""
        path = cache_file(model, images, labels, damping, folder)
        if path.exists():
            return cls.load(path)
        index = cls.build(model, images, labels, damping=damping, batch_size=batch_size)
        index.save(path)
        return index

    def test_gradients(self, model, images, target=None):
        """`(m, F', K)` gradients of the test losses (label: `target`, else the predicted class) and the labels used."""
        features, offsets, _ = readout(model, images)
        logits = offsets + features @ self.parameters
        labels = np.argmax(logits, axis=1) if target is None else np.broadcast_to(np.asarray(target, "int64"), (len(images),))
        residuals = probabilities_of(logits)
        residuals[np.arange(len(labels)), labels] -= 1.0
        return features[:, :, None] * residuals[:, None, :], labels

    def scores(self, model, images, target=None):
        """`I_up,loss(z_i, x_t)` for every training image `i` and test image `t`, `(m, n)` float64.

        Negative: helpful (upweighting the training image lowers the test
        loss); positive: harmful. The test loss is that of `target`, or of
        each test image's predicted class.
        """
        return self._scores_and_labels(model, images, target)[0]

    def _scores_and_labels(self, model, images, target=None):
        gradients, labels = self.test_gradients(model, images, target)
        solved = (gradients.reshape(len(gradients), -1) @ self.inverse_hessian).reshape(gradients.shape)  # H^-1 g_test
        # g_i = phi_i (x) r_i, so g_test^T H^-1 g_i = sum_{f,c} V[f, c] phi_if r_ic for every i at once
        return -np.einsum("nf,tfc,nc->tn", self.features, solved, self.residuals, optimize=True), labels

    def predicted_loss_change(self, model, images, target=None):
        """`(m, n)`: the predicted change of each test loss when each training image is removed (`-I / n`)."""
        return -self.scores(model, images, target) / self.size

    def most_influential(self, model, images, count=8, target=None):
        """`{"helpful": (m, count) indices, "helpful_scores", "harmful": (m, count), "harmful_scores", "labels": (m,)}`."""
        scores, labels = self._scores_and_labels(model, images, target)
        count = max(1, min(int(count), self.size))
        helpful = np.argsort(scores, axis=1, kind="stable")[:, :count]
        harmful = np.argsort(-scores, axis=1, kind="stable")[:, :count]
        rows = np.arange(len(scores))[:, None]
        return {
            "helpful": helpful,
            "helpful_scores": scores[rows, helpful],
            "harmful": harmful,
            "harmful_scores": scores[rows, harmful],
            "labels": labels,
        }

    def save(self, path):
        """Writes the index to an `.npz` (atomically); returns the path."""
        from glasszoo.zoo.atomic import atomic_path

        path = pathlib.Path(path)
        with atomic_path(path) as temporary:
            np.savez(
                temporary,
                features=self.features.astype("float32"),
                residuals=self.residuals,
                labels=self.labels,
                inverse_hessian=self.inverse_hessian,
                kernel=self.parameters,
                offsets=self.offsets.astype("float32"),
                damping=np.float64(self.damping),
                info=np.array(json.dumps(self.info)),
            )
        return path

    @classmethod
    def load(cls, path):
        """Reads an index written by `save`; a ValueError naming the file if it is not one."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, EOFError, ValueError) as error:
            raise ValueError(f"{path} is not a readable influence index: {error}") from None
        missing = [key for key in INDEX_KEYS + ("damping", "info") if key not in arrays]
        if missing:
            raise ValueError(f"{path} is not an influence index: it lacks {missing}.")
        return cls(
            arrays["features"], arrays["residuals"], arrays["labels"], arrays["inverse_hessian"], arrays["kernel"],
            arrays["offsets"], float(arrays["damping"]), json.loads(str(arrays["info"])),
        )


def cache_file(model, images, labels, damping=DEFAULT_DAMPING, folder=None):
    """The index file of this model's readout, training data and damping (the names hold their sha256)."""
    folder = pathlib.Path(folder) if folder is not None else pathlib.Path.home() / ".cache" / "glasszoo" / "influence"
    _, _, parameters = readout(model, np.asarray(images[:1]))
    key = hashlib.sha256()
    key.update(np.ascontiguousarray(parameters).tobytes())
    key.update(data_sha256(np.asarray(images), np.asarray(labels, "int64")).encode())
    key.update(repr(float(damping)).encode())
    return folder / f"{model.name}-{key.hexdigest()[:24]}.npz"


def leave_one_out_check(index, model, test_image, test_label, removed, tolerance=1e-10):
    """Actual against predicted change of one test loss when each of `removed` training images is left out.

    The index must be built with `refit=True` (at the optimum of the damped
    objective, where the influence function's derivation holds). For each
    removed image the readout is refitted without it to convergence,
    warm-started at the full-data optimum.

    Returns:
        dict of `removed`, `predicted` and `actual` (arrays), and `pearson_r`.

    Example:
    >>> index = InfluenceIndex.build(model, x_fit, y_fit, refit=True)  # doctest: +SKIP
    >>> check = leave_one_out_check(index, model, x_test[0], y_test[0], removed=[3, 17, 400])  # doctest: +SKIP
    """
    if not index.info.get("refit"):
        raise ValueError("leave_one_out_check needs an index built with refit=True (at the optimum of its objective).")
    test_image = np.asarray(test_image, dtype="float32")[None]
    label = np.array([int(test_label)])
    features, offsets, _ = readout(model, test_image)
    base_loss = _losses(offsets + features @ index.parameters, label)[0]
    predicted = index.predicted_loss_change(model, test_image, target=label)[0]
    removed = np.asarray(removed, dtype="int64")
    actual = []
    for position in removed:
        weights = np.ones(index.size)
        weights[position] = 0.0
        parameters, _ = refit_readout(
            index.features, index.offsets, index.labels, index.parameters, index.damping, weights=weights,
            tolerance=tolerance, hessian_inverse=index.inverse_hessian,
        )
        actual.append(_losses(offsets + features @ parameters, label)[0] - base_loss)
    actual = np.array(actual)
    return {
        "removed": removed,
        "predicted": predicted[removed],
        "actual": actual,
        "pearson_r": float(np.corrcoef(predicted[removed], actual)[0, 1]),
    }


def helpfulness_percentiles(scores):
    """`(m, n)`: for each test image, the share (in %) of training images more helpful than each one.

    0 is the most helpful image, about 100 the most harmful; a training
    image drawn at random sits at 50 on average.
    """
    scores = np.asarray(scores, dtype="float64")
    ranks = np.argsort(np.argsort(scores, axis=1, kind="stable"), axis=1, kind="stable")
    return 100.0 * ranks / max(1, scores.shape[1] - 1)


def part_source_ranks(index, model, images, train_images, top=3):
    """Do a prediction's parts and its influential training images agree? Helpfulness of the parts' source images.

    For each test image, the `top` parts the model gives as its reason
    (`model.part_relevance`, e.g. a prototype network's largest prototype
    contributions to the predicted class) are traced to the training image
    each comes from (`model.part_sources`); this returns where those images
    rank among all training images by helpfulness to the prediction (the
    test loss of the predicted class).

    Returns:
        dict of `parts` `(m, top)`, `sources` `(m, top)` training indices,
        `percentiles` `(m, top)` (0: the most helpful image; 50: chance),
        and `mean_percentile` with its `standard_error` over the test images;
        the same by the size of the influence of either sign
        (`magnitude_percentiles`, `mean_magnitude_percentile`,
        `magnitude_standard_error`; 0: the largest |influence|).

    Raises:
        ValueError: the family has no parts (`part_sources` is None).

    Example:
    >>> agreement = part_source_ranks(index, model, test_images[:100], x_fit)  # doctest: +SKIP
    >>> agreement["mean_percentile"]  # doctest: +SKIP
    """
    sources = model.part_sources(train_images)
    relevance = model.part_relevance(images)
    if sources is None or relevance is None:
        raise ValueError(f"The {model.family} family has no parts (prototypes) whose sources could be compared with influence.")
    relevance = np.asarray(relevance, dtype="float64")
    top = max(1, min(int(top), relevance.shape[1]))
    parts = np.argsort(-relevance, axis=1, kind="stable")[:, :top]
    scores = index.scores(model, images)
    percentiles = helpfulness_percentiles(scores)
    magnitudes = helpfulness_percentiles(-np.abs(scores))  # 0: the largest |influence| of either sign
    chosen = sources[parts]
    rows = np.arange(len(parts))[:, None]
    values = percentiles[rows, chosen]
    sizes = magnitudes[rows, chosen]
    per_image = values.mean(axis=1)
    error = float(per_image.std(ddof=1) / np.sqrt(len(per_image))) if len(per_image) > 1 else float("nan")
    return {
        "parts": parts,
        "sources": chosen,
        "percentiles": values,
        "mean_percentile": float(per_image.mean()),
        "standard_error": error,
        "magnitude_percentiles": sizes,
        "mean_magnitude_percentile": float(sizes.mean()),
        "magnitude_standard_error": float(sizes.mean(axis=1).std(ddof=1) / np.sqrt(len(sizes))) if len(sizes) > 1 else float("nan"),
    }
