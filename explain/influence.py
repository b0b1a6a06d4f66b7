"""Which training images made this prediction: influence functions on a model's last layer (Koh and Liang 2017).

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
parameters are those of the model's last layer (its *readout*), with
everything before it held fixed (`explain.readouts`):

- a linear last layer exposes
  itself as `model.linear_readout(images)`,
  `logits = offset + features @ kernel + bias`. The loss is then convex in
  the readout and the Hessian is exact:
  `H = 1/n sum_b (diag p_b - p_b p_bᵀ) (x) phi_b phi_bᵀ + damping I` over
  the `P = (F + 1) K` readout parameters. A readout wider than
  `MAX_PARAMETERS` (an additive head of many per-feature networks, say)
  has its weights free only along the principal directions of its
  features (the rest held at the model's values), so `H` stays small
  enough to invert exactly; the index records the share of the features'
  second moment those directions hold.
- a non-linear last layer exposes
  `model.readout_head(images)`: its logits and their Jacobian in the
  layer's weights, one set of weights per class. `H` is then the
  Gauss-Newton matrix (`explain.readout_objective`). A non-linear layer
  wider than `MAX_PARAMETERS` has each class's weights free only along
  that class's principal Jacobian directions (`readouts.SubspaceHead`).
  Its default damping is relative to its curvature and pulls toward the
  model's weights (`resolved_damping`); its refits take Levenberg-Marquardt
  steps.

The loss is the model's own (`output_activation`: softmax cross-entropy,
or the one-hot binary cross-entropy of sigmoid outputs). The damping
makes `H` positive definite; it is the objective's own L2 term when the
readout is refitted (`refit=True`, and the leave-one-out check).

**Cost.** `InfluenceIndex.build` passes the training images through the
model once, keeps their readout features `(n, F)` (or `(n, F, K)`) and
residuals `dL/dlogits` `(n, K)`, and inverts `H` once. A query then costs one
readout pass over the test image, one `P x P` matrix-vector product and one
`(n, F) x (F, K)` product: the training set is not revisited. The index is
saved to an `.npz` keyed by the training data's and the readout's sha256
(`cache_file`), so a second process reuses it.

**Validation.** `leave_one_out_check` does what the paper does: for chosen
training points it removes each one, refits the readout to convergence
(warm-started at the full-data optimum, Newton steps with the full-data
Hessian until the gradient vanishes; a non-linear layer is re-evaluated at
every step, so the check measures the real layer), and compares the actual change of the
test loss with the predicted `-I / n`.
"""

import hashlib
import json
import pathlib

import numpy as np
from glasszoo.explain.readout_objective import (  # noqa: F401  (the objective's API, re-exported)
    FIXED_HESSIAN_STEPS,
    inverse as _inverse,
    logits_of,
    losses as _readout_losses,
    objective_gradient,
    objective_hessian,
    objective_value,
    parameter_gradients,
    refit_readout,
    residuals as _residuals,
)
from glasszoo.explain.readout_losses import LOSSES, loss_config, resolve_loss
from glasszoo.explain.readouts import SubspaceHead, class_principal_bases, linear_head, principal_directions, project

INDEX_KEYS = ("features", "residuals", "labels", "inverse_hessian", "kernel", "offsets")
DEFAULT_DAMPING = 1e-3
RELATIVE_DAMPING = 0.03
MAX_PARAMETERS = 2600
DAMPING_ESCALATION = 3.0  # a default non-linear damping whose proximal optimum the refit cannot reach is raised by this
ESCALATIONS = 8
PATIENCE = 40  # Levenberg-Marquardt steps without the gradient halving before a default damping is raised


def resolved_damping(head, damping=None):
    """`(damping, rule)`: `damping` as given, or the default for the layer and the rule that set it.

    The default is `DEFAULT_DAMPING` for a linear last layer. A non-linear
    layer's damping pulls its weights toward the model's own
    (`refit_readout`'s `center`): the objective the influence function then
    describes is the layer retrained *near* the model's weights, the
    "proximal" response Bae et al. (2022) show influence functions estimate
    for non-convex models. Its size follows the layer's curvature, whose
    scale differs by orders of magnitude between families (the largest
    Gauss-Newton eigenvalue of the zoo's non-linear last layers ranges from
    about 0.02 to 3): `RELATIVE_DAMPING` times the largest eigenvalue at the
    model's weights.

    Args:
        head: the readout head (`readout`), expanded at the model's weights.
        damping: a damping to keep, or None.
    """
    if damping is not None:
        return float(damping), "given"
    if head.linear:
        return DEFAULT_DAMPING, f"{DEFAULT_DAMPING} (a linear last layer)"
    curvature = float(np.linalg.eigvalsh(objective_hessian(head.features, head.offsets, head.parameters, 0.0, loss=head.loss))[-1])
    return RELATIVE_DAMPING * curvature, f"{RELATIVE_DAMPING} x the largest Gauss-Newton eigenvalue at the model's weights ({curvature:.4g})"


def _refit_at_reachable_damping(head, labels, damping, center, escalate):
    """`refit_readout` of `head` to its damped optimum; `(parameters, steps, damping)`.

    With `escalate` (a non-linear layer at its default damping), a damping
    whose optimum the refit does not approach (its largest gradient entry
    does not halve within `PATIENCE` Levenberg-Marquardt steps) is raised `DAMPING_ESCALATION`-fold, at most `ESCALATIONS` times:
    with too weak a pull toward the model's weights a layer with kinks (MaxOut
    units, say) wanders along flat directions of the loss.
    """
    linear = head.linear
    attempts = ESCALATIONS + 1 if escalate else 1
    for attempt in range(attempts):
        try:
            parameters, steps = refit_readout(
                head.features, head.offsets, labels, head.parameters, damping, loss=head.loss, head=None if linear else head,
                center=center, max_steps=100 if linear else 1000, patience=PATIENCE if escalate else None,
            )  # fmt: skip
            return parameters, steps, damping
        except RuntimeError:
            if attempt + 1 == attempts:
                raise
            damping *= DAMPING_ESCALATION


def readout(model, images, batch_size=256):
    """The model's last layer on `images` as a readout head (`explain.readouts`), float64.

    `model.readout_head(images)` where the family defines one (a non-linear
    last layer), else its `linear_readout` (a column of ones is appended for
    a bias, whose row of `parameters` is the bias).

    Raises:
        NotImplementedError: the family has neither.
    """
    images = np.asarray(images, dtype="float32")
    own = model.readout_head(images, batch_size=batch_size)
    return own if own is not None else linear_head(model, images, batch_size)


def data_sha256(images, labels):
    """sha256 of the training images and labels (their bytes, shapes and dtypes)."""
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(images), np.ascontiguousarray(labels)):
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class InfluenceIndex:
    """The training set seen through a model's last layer, ready to answer influence queries.

    Build it once with `InfluenceIndex.build(model, images, labels)` (or
    `cached(...)`, which saves and reuses it); then `scores`,
    `most_influential` and `predicted_loss_change` answer for any test image.

    Args:
        features: `(n, F')` or `(n, F', K)` readout features of the training images (the layer's Jacobian).
        residuals: `(n, K)` gradient of each training loss in its logits at the parameters.
        labels: `(n,)` training labels.
        inverse_hessian: `(P, P)` inverse of the damped Hessian.
        parameters: `(F', K)` the readout's parameters the index was built at.
        offsets: `(n, K)` the readout's per-image offsets.
        damping: the damping added to the Hessian.
        info: dict of provenance (hashes, sizes, refit).
        loss: the model's training loss, `"softmax"` or `"sigmoid"`.
        projection: `(F, F')` orthonormal directions the weights are free in (a linear layer), `(K, F, F')` one set per
            class (a non-linear one), or None (all of them).
        head: the training images' readout head, kept in memory for refits of a non-linear layer (not saved).
        center: the weights the damping pulls toward (None: 0; a non-linear layer's: the model's own).

    Example:
    >>> index = InfluenceIndex.cached(model, x_fit, y_fit)  # doctest: +SKIP
    >>> found = index.most_influential(model, test_images[:1], count=5)  # doctest: +SKIP
    >>> found["helpful"][0], found["harmful"][0]  # doctest: +SKIP
    (array([ 812, 4410, ...]), array([ 51233, 90, ...]))
    """

    def __init__(
        self, features, residuals, labels, inverse_hessian, parameters, offsets, damping, info=None, loss="softmax", projection=None,
        head=None, center=None,
    ):  # fmt: skip
        self.features = np.asarray(features, dtype="float64")
        self.residuals = np.asarray(residuals, dtype="float64")
        self.labels = np.asarray(labels, dtype="int64")
        self.inverse_hessian = np.asarray(inverse_hessian, dtype="float64")
        self.parameters = np.asarray(parameters, dtype="float64")
        self.offsets = np.asarray(offsets, dtype="float64")
        self.damping = float(damping)
        self.info = dict(info or {})
        self.loss = loss
        self.projection = None if projection is None else np.asarray(projection, dtype="float64")
        self.head = head
        self.center = center

    @property
    def size(self):
        """Number of training images."""
        return len(self.labels)

    @classmethod
    def build(cls, model, images, labels, damping=None, refit=False, batch_size=256, max_parameters=MAX_PARAMETERS, reuse=None):
        """Reads the training set through `model`'s last layer and inverts the Hessian there.

        Args:
            model: a zoo model with `readout_head` or `linear_readout`.
            images: `(n, H, W, C)` training images in [0, 1].
            labels: `(n,)` their classes.
            damping: added to the Hessian's diagonal (and, with `refit`, the L2 weight of the objective);
                None: `resolved_damping`'s default for the layer (`info["damping_rule"]` says which).
            refit: first move the readout to the optimum of the damped
                objective on these images (the setting of the paper's
                guarantees; the model itself is not changed).
            batch_size: images per forward pass.
            max_parameters: a readout with more weights than this has them
                free only along the principal directions of its features (a
                linear layer, `explain.readouts.project`) or of each class's
                Jacobian (a non-linear one, `explain.readouts.SubspaceHead`),
                so that the Hessian stays small; `info["projection"]` says
                how much of the second moment those directions hold.
            reuse: an index built by this method for the same model, images
                and `max_parameters`, whose directions are taken instead of
                computed again (for a wide non-linear layer they cost one
                eigendecomposition per class).
        """
        labels = np.asarray(labels, dtype="int64").reshape(-1)
        if len(labels) != len(images) or not len(labels):
            raise ValueError(f"Influence needs training images with one label each; got {len(images)} images and {len(labels)} labels.")
        if damping is not None and not float(damping) > 0:
            raise ValueError(f"damping must be positive (it makes the Hessian invertible); got {damping!r}.")
        head = readout(model, images, batch_size)
        projection, info = None, {}
        if head.parameters.size > max_parameters:
            width = max(1, int(max_parameters) // head.parameters.shape[1])
            if reuse is not None and reuse.projection is not None:
                if reuse.info.get("data_sha256") != data_sha256(np.asarray(images), labels):
                    raise ValueError("build(reuse=...) needs an index of the same training images.")
                projection, share = reuse.projection, reuse.info["projection"]["second_moment_share"]
            elif head.linear:
                projection, share = principal_directions(head.features, width)
            else:  # each class's weights along its own directions, at most 2,048 images estimating them
                projection, shares = class_principal_bases(head, width)
                share = float(shares.mean())
            head = project(head, projection) if head.linear else SubspaceHead(head, projection)
            info["projection"] = {"directions": int(width), "of": int(projection.shape[-2]), "second_moment_share": share}
        features, offsets, parameters = head.features, head.offsets, head.parameters
        center = None if head.linear else parameters  # a non-linear layer's damping pulls toward the model's weights
        defaulted = damping is None
        damping, info["damping_rule"] = resolved_damping(head, damping)
        steps = 0
        if refit:
            initial = damping
            parameters, steps, damping = _refit_at_reachable_damping(head, labels, damping, center, escalate=defaulted and not head.linear)
            if damping != initial:
                info["damping_rule"] += f", raised x{DAMPING_ESCALATION:g} until the refit converged: {damping:.4g}"
            features, offsets = head.expand(parameters)
        hessian = objective_hessian(features, offsets, parameters, damping, loss=head.loss, labels=labels)
        residuals = _residuals(logits_of(features, offsets, parameters), labels, head.loss)
        info.update({
            "data_sha256": data_sha256(np.asarray(images), labels),
            "readout_sha256": hashlib.sha256(np.ascontiguousarray(parameters).tobytes()).hexdigest(),
            "training_images": int(len(labels)),
            "parameters": int(parameters.size),
            "refit_steps": int(steps),
            "refit": bool(refit),
            "loss": resolve_loss(head.loss).name,
            "layer": "linear" if head.linear else "non-linear (Gauss-Newton Hessian)",
        })  # fmt: skip
        return cls(
            features, residuals, labels, _inverse(hessian), parameters, offsets, damping, info, head.loss, projection,
            None if head.linear else head, center,
        )  # fmt: skip

    @classmethod
    def cached(cls, model, images, labels, damping=None, folder=None, batch_size=256):
        """`build`, saved to and reused from `cache_file(...)` under `folder` (default `~/.cache/glasszoo/influence`)."""
        path = cache_file(model, images, labels, damping, folder)
        if path.exists():
            return cls.load(path)
        index = cls.build(model, images, labels, damping=damping, batch_size=batch_size)
        index.save(path)
        return index

    def test_readout(self, model, images):
        """The readout head of `images`, expanded at the index's parameters (and projected as the index is)."""
        head = readout(model, images)
        if self.projection is not None:
            head = project(head, self.projection) if self.projection.ndim == 2 else SubspaceHead(head, self.projection)
        if not head.linear:
            head.features, head.offsets = head.expand(self.parameters)
        return head

    def test_gradients(self, model, images, target=None):
        """`(m, F', K)` gradients of the test losses (label: `target`, else the predicted class) and the labels used."""
        head = self.test_readout(model, images)
        logits = logits_of(head.features, head.offsets, self.parameters)
        labels = np.argmax(resolve_loss(self.loss).class_logits(logits), axis=1) if target is None else np.broadcast_to(np.asarray(target, "int64"), (len(images),))
        return parameter_gradients(head.features, _residuals(logits, labels, self.loss)), labels

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
        # g_i = J_iᵀ r_i, so g_testᵀ H^-1 g_i = sum_{f,c} V[f, c] J_i[f, c] r_ic for every i at once
        pattern = "nf,tfc,nc->tn" if self.features.ndim == 2 else "nfc,tfc,nc->tn"
        return -np.einsum(pattern, self.features, solved, self.residuals, optimize=True), labels

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
        extra = {} if self.projection is None else {"projection": self.projection}
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
                loss=np.array(loss_config(self.loss)),
                info=np.array(json.dumps(self.info)),
                **extra,
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
            _stored_loss(arrays), arrays.get("projection"),
        )  # fmt: skip


def _stored_loss(arrays):
    """The loss saved in an index file: a name (`"softmax"` in files older than the field) or a loss's JSON config."""
    text = str(arrays["loss"]) if "loss" in arrays else "softmax"
    return text if text in LOSSES else resolve_loss(text)


def cache_file(model, images, labels, damping=None, folder=None):
    """The index file of this model's readout, training data and damping (None: the default rule); the name holds their sha256."""
    folder = pathlib.Path(folder) if folder is not None else pathlib.Path.home() / ".cache" / "glasszoo" / "influence"
    parameters = readout(model, np.asarray(images[:1])).parameters
    key = hashlib.sha256()
    key.update(np.ascontiguousarray(parameters).tobytes())
    key.update(data_sha256(np.asarray(images), np.asarray(labels, "int64")).encode())
    key.update(("default" if damping is None else repr(float(damping))).encode())
    return folder / f"{model.name}-{key.hexdigest()[:24]}.npz"


def leave_one_out_check(index, model, test_image, test_label, removed, tolerance=1e-10, max_steps=None, relative_tolerance=None):
    """Actual against predicted change of one test loss when each of `removed` training images is left out.

    The index must be built with `refit=True` (at the optimum of the damped
    objective, where the influence function's derivation holds). For each
    removed image the last layer is refitted without it to convergence,
    warm-started at the full-data optimum: a linear layer by Newton steps, a
    non-linear one by Gauss-Newton steps on its true objective (the layer
    re-evaluated at every step), so the check also measures what the
    Gauss-Newton Hessian leaves out. Those converge linearly: by default
    they stop once the gradient is `1e-4` of the one removing the image
    makes (the parameters' shift then known to about that share), or at
    `tolerance`.

    Returns:
        dict of `removed`, `predicted` and `actual` (arrays), and `pearson_r`.

    Example:
    >>> index = InfluenceIndex.build(model, x_fit, y_fit, refit=True)  # doctest: +SKIP
    >>> check = leave_one_out_check(index, model, x_test[0], y_test[0], removed=[3, 17, 400])  # doctest: +SKIP
    """
    if not index.info.get("refit"):
        raise ValueError("leave_one_out_check needs an index built with refit=True (at the optimum of its objective).")
    if index.head is None and "non-linear" in index.info.get("layer", ""):
        raise ValueError("leave_one_out_check of a non-linear layer needs the index built in this process (its head is not saved).")
    test_image = np.asarray(test_image, dtype="float32")[None]
    label = np.array([int(test_label)])
    head = index.test_readout(model, test_image)
    base_loss = _readout_losses(head.logits(index.parameters), label, index.loss)[0]
    predicted = index.predicted_loss_change(model, test_image, target=label)[0]
    removed = np.asarray(removed, dtype="int64")
    linear = index.head is None
    max_steps = (100 if linear else 1000) if max_steps is None else max_steps
    relative_tolerance = (None if linear else 1e-4) if relative_tolerance is None else relative_tolerance
    actual = []
    for position in removed:
        weights = np.ones(index.size)
        weights[position] = 0.0
        parameters, _ = refit_readout(
            index.features, index.offsets, index.labels, index.parameters, index.damping, weights=weights,
            tolerance=tolerance, max_steps=max_steps, hessian_inverse=index.inverse_hessian, loss=index.loss, head=index.head,
            center=index.center, relative_tolerance=relative_tolerance,
        )  # fmt: skip
        actual.append(_readout_losses(head.logits(parameters), label, index.loss)[0] - base_loss)
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
