"""The training objective of a model's last layer, as a function of that layer's weights (NumPy, float64).

A *readout* writes a model's logits through the weights `theta` `(F, K)`
of its last layer, expanded at a point:

    logits_b = offsets_b + features_b · theta

with `features` either shared by the classes, `(n, F)`
(`logits_bc = offsets_bc + sum_f features_bf theta_fc`: a linear layer), or
one per class, `(n, F, K)` (`logits_bc = offsets_bc + sum_f features_bfc theta_fc`:
the class-`c` logit reads only column `c`, as in a layer with one unit (or
one MaxOut group) per class). For a linear layer the expansion is exact for
every `theta`; for a non-linear one (`head` below) it is its first-order
Taylor expansion at the point, re-expanded as `theta` moves.

The objective is the model's own training loss on the logits, averaged over
the images, plus `damping/2 ||theta||^2`:

- `"softmax"`: cross-entropy of the softmax;
- `"sigmoid"`: binary cross-entropy of every class logit against the one-hot
  label, averaged over the `K` classes (`OneHotBinaryCrossentropy`, the
  loss of models whose `output_activation` is a sigmoid);
- a `readout_losses.GroupedSoftmax`: the readout's `U` outputs are the
  scores of a model's steps (a taxonomy's edges), not the class logits; a
  softmax within each group of them, and the cross-entropies of the groups
  on the label's path summed. `theta` is then `(F, U)`.

`objective_hessian` is the Gauss-Newton matrix
`1/n sum_b J_bᵀ Λ_b J_b + damping I` (`J_b` the Jacobian of the logits in
`theta`, `Λ_b` the loss's Hessian in the logits). For a linear layer it is
the exact Hessian of the objective; for a non-linear one it leaves out the
term of the layer's own curvature, and it is positive semi-definite
everywhere (Martens 2020; Bae et al. 2022 show that influence functions
of non-convex networks estimate the response of the objective with this
matrix). Parameters are flattened row-major from `(F, K)`: index `f K + c`.
"""

import numpy as np
from glasszoo.explain.readout_losses import LOSSES, resolve_loss  # noqa: F401  (LOSSES re-exported)

FIXED_HESSIAN_STEPS = 10


def check_loss(loss):
    """`loss` as given (a name of `LOSSES` or a loss object); a ValueError naming it if it is neither."""
    resolve_loss(loss)
    return loss


def logits_of(features, offsets, parameters):
    """`offsets + features · parameters` for shared `(n, F)` or per-output `(n, F, U)` features."""
    if features.ndim == 2:
        return offsets + features @ parameters
    return offsets + np.einsum("bfc,fc->bc", features, parameters, optimize=True)


def losses(logits, labels, loss="softmax"):
    """`(n,)` per-image loss of the readout's outputs against integer labels."""
    return resolve_loss(loss).losses(np.asarray(logits, dtype="float64"), labels)


def residuals(logits, labels, loss="softmax"):
    """`(n, U)` gradient of each image's loss in the readout's outputs (softmax: `p - onehot`; sigmoid: `(sigma - onehot) / K`)."""
    return resolve_loss(loss).residuals(np.asarray(logits, dtype="float64"), labels)


def parameter_gradients(features, residual_values):
    """Per-image gradients `(n, F, K)` of the loss in the readout's parameters: `J_bᵀ r_b`."""
    if features.ndim == 2:
        return features[:, :, None] * residual_values[:, None, :]
    return features * residual_values[:, None, :]


def summed_gradient(features, residual_values):
    """`sum_b J_bᵀ r_b` `(F, K)` without forming the per-image gradients."""
    if features.ndim == 2:
        return features.T @ residual_values
    return np.einsum("bfc,bc->fc", features, residual_values, optimize=True)


def _away(parameters, center):
    return parameters if center is None else parameters - center


def objective_of_logits(logits, labels, parameters, damping, weights=None, count=None, loss="softmax", center=None):
    """`1/count sum_b w_b L_b + damping/2 ||parameters - center||^2` given the logits at `parameters`."""
    count = len(logits) if count is None else count
    values = losses(logits, labels, loss)
    if weights is not None:
        values = values * weights
    return values.sum() / count + 0.5 * damping * np.sum(_away(parameters, center) ** 2)


def objective_value(features, offsets, labels, parameters, damping, weights=None, count=None, loss="softmax", center=None):
    """`1/count sum_b w_b L_b + damping/2 ||parameters - center||^2` (w: 1 by default, 0 removes a point; center: 0 by default)."""
    logits = logits_of(features, offsets, parameters)
    return objective_of_logits(logits, labels, parameters, damping, weights=weights, count=count, loss=loss, center=center)


def objective_gradient(features, offsets, labels, parameters, damping, weights=None, count=None, loss="softmax", center=None):
    """Gradient `(F, K)` of `objective_value` in the parameters."""
    count = len(features) if count is None else count
    values = residuals(logits_of(features, offsets, parameters), labels, loss)
    if weights is not None:
        values = values * weights[:, None]
    return summed_gradient(features, values) / count + damping * _away(parameters, center)


def objective_hessian(features, offsets, parameters, damping, chunk=4096, weights=None, loss="softmax", labels=None):
    """Gauss-Newton matrix `(P, P)`, `P = F U`, of `objective_value` (its exact Hessian for a linear layer).

    The loss's Hessian in the outputs is `Λ_b = diag(d_b) - sum_i v_ib v_ibᵀ`
    (`readout_losses`; softmax: `d = v = p`; sigmoid: `d = sigma (1 - sigma) / K`
    and no `v`), so
    `H = 1/n sum_b [blockdiag_c(d_bc phi_bc phi_bcᵀ) - sum_i w_ib w_ibᵀ] + damping I` with
    `w_ib[f U + c] = phi_bfc v_ibc`. Built in chunks of `chunk` images; `weights`
    (one per image, 0 removes it) weigh the images' terms, with `n` kept.
    `labels` are needed by a loss whose curvature depends on them (`GroupedSoftmax`).
    """
    scorer = resolve_loss(loss)
    n, width = features.shape[:2]
    classes = parameters.shape[1]
    size = width * classes
    hessian = np.zeros((size, size))
    for start in range(0, n, chunk):
        phi = features[start : start + chunk]
        logits = logits_of(phi, offsets[start : start + chunk], parameters)
        scale = np.ones(len(phi)) if weights is None else np.asarray(weights[start : start + chunk], dtype="float64")
        diagonal, vectors = scorer.curvature(logits, None if labels is None else labels[start : start + chunk])
        for vector in vectors:
            outer = (phi[:, :, None] * vector[:, None, :] if phi.ndim == 2 else phi * vector[:, None, :]).reshape(len(phi), size)
            hessian -= (outer * scale[:, None]).T @ outer
        for c in range(classes):
            column = phi if phi.ndim == 2 else phi[:, :, c]
            hessian[c::classes, c::classes] += (column * (diagonal[:, c] * scale)[:, None]).T @ column
    hessian /= n
    hessian[np.diag_indices(size)] += damping
    return hessian


def inverse(hessian):
    """The inverse of a symmetric positive definite matrix, through its Cholesky factor (symmetrised)."""
    lower = np.linalg.cholesky(hessian)
    inverse_lower = np.linalg.solve(lower, np.eye(len(hessian)))
    result = inverse_lower.T @ inverse_lower
    return (result + result.T) / 2


def refit_readout(
    features, offsets, labels, parameters, damping, weights=None, tolerance=1e-10, max_steps=100, hessian_inverse=None,
    loss="softmax", head=None, center=None, relative_tolerance=None, patience=None,
):  # fmt: skip
    """The readout minimising the damped objective, by (Gauss-)Newton steps from `parameters`; `(parameters, steps)`.

    With `hessian_inverse` given, that fixed matrix is used for the first
    `FIXED_HESSIAN_STEPS` steps (a warm start near the optimum converges in a
    few); otherwise, and after those, the Hessian of the (weighted)
    objective is formed at every step (leaving out an image that holds up a
    weakly constrained direction changes the Hessian too much for the fixed
    one). Far from the optimum each step is halved until the objective
    decreases; near it (a predicted decrease below what the objective's value
    resolves) the full step is taken. Stops when the largest gradient entry
    is below `tolerance` (or below `relative_tolerance` times its value at
    the start, if that is larger), or when the step is below the
    parameters' rounding. A non-linear layer (`head`) keeps the fixed
    `hessian_inverse` throughout when one is given: its Gauss-Newton steps
    converge linearly anyway, and the matrix is not re-formed.

    Args:
        features, offsets: the readout expanded at `parameters`.
        head: for a non-linear layer, an object whose `expand(parameters)`
            returns `(features, offsets)` expanded at other parameters
            (`explain.readouts`); None for a linear layer.
        patience: for a non-linear layer's Levenberg-Marquardt refit, give up
            (RuntimeError) when the largest gradient entry has not halved
            in this many steps (None: only `max_steps` ends it).
        center: the point the damping pulls toward (None: 0). A layer whose
            logits do not change with the size of its weights (unit-norm
            weights) has no optimum with the damping pulling toward 0 (the
            weights would shrink without end); pulling toward the model's
            own weights gives it one.

    A non-linear layer without a given `hessian_inverse` is refitted by
    Levenberg-Marquardt steps instead (`_levenberg_marquardt`): its
    Gauss-Newton matrix leaves out the layer's own curvature, so a full
    Gauss-Newton step can overshoot far from the model's weights when the
    damping is small.

    Raises:
        RuntimeError: no convergence within `max_steps`.
    """
    parameters = np.array(parameters, dtype="float64")
    if head is not None and hessian_inverse is None:
        return _levenberg_marquardt(head, labels, parameters, damping, weights, tolerance, relative_tolerance, max_steps, loss, center, patience)

    def value_at(candidate):  # a non-linear layer is evaluated itself, not its expansion
        logits = logits_of(features, offsets, candidate) if head is None else head.logits(candidate)
        return objective_of_logits(logits, labels, candidate, damping, weights=weights, loss=loss, center=center)

    value = value_at(parameters)
    threshold = tolerance
    for step in range(int(max_steps)):
        gradient = objective_gradient(features, offsets, labels, parameters, damping, weights=weights, loss=loss, center=center)
        largest = float(np.max(np.abs(gradient)))
        if step == 0 and relative_tolerance:
            threshold = max(tolerance, relative_tolerance * largest)
        if largest < threshold:
            return parameters, step
        fixed = hessian_inverse is not None and (step < FIXED_HESSIAN_STEPS or head is not None)
        solver = hessian_inverse if fixed else inverse(objective_hessian(features, offsets, parameters, damping, weights=weights, loss=loss, labels=labels))
        direction = (solver @ gradient.reshape(-1)).reshape(parameters.shape)
        if np.max(np.abs(direction)) < 1e-13 * max(1.0, float(np.max(np.abs(parameters)))):
            return parameters, step  # the gradient is at its rounding floor: no representable step remains
        length = 1.0
        predicted_decrease = float(np.sum(gradient * direction))
        for _ in range(60):
            candidate = parameters - length * direction
            candidate_value = value_at(candidate)
            if candidate_value <= value or predicted_decrease < 1e-12 * max(1.0, abs(value)):
                break  # a decrease, or near the optimum, where the value cannot resolve one: the full step
            length /= 2
        parameters, value = candidate, candidate_value
        if head is not None:
            features, offsets = head.expand(parameters)
    raise RuntimeError(f"The readout did not converge in {max_steps} Newton steps (largest gradient {np.max(np.abs(gradient)):.3g}).")


def _levenberg_marquardt(head, labels, parameters, damping, weights, tolerance, relative_tolerance, max_steps, loss, center, patience=None):
    """`refit_readout` of a non-linear layer: trust-region Gauss-Newton steps on the true objective; `(parameters, steps)`.

    Each step solves `(G + mu I) delta = gradient` with `G` the damped
    Gauss-Newton matrix at the current weights, and is taken when the true
    objective falls; `mu` shrinks after a step that did as well as the
    quadratic model predicted and grows after a rejected one (Nielsen's
    update), so the steps are Gauss-Newton's near the optimum and short,
    gradient-like ones far from it.
    """

    def value_at(candidate):
        return objective_of_logits(head.logits(candidate), labels, candidate, damping, weights=weights, loss=loss, center=center)

    features, offsets = head.expand(parameters)
    value = value_at(parameters)
    threshold, mu, growth = tolerance, None, 2.0
    best, best_step = np.inf, 0
    for step in range(int(max_steps)):
        gradient = objective_gradient(features, offsets, labels, parameters, damping, weights=weights, loss=loss, center=center)
        largest = float(np.max(np.abs(gradient)))
        if step == 0 and relative_tolerance:
            threshold = max(tolerance, relative_tolerance * largest)
        if largest < threshold:
            return parameters, step
        if largest < 0.5 * best:
            best, best_step = largest, step
        elif patience is not None and step - best_step >= patience:
            raise RuntimeError(f"The readout's Levenberg-Marquardt refit stalled: its largest gradient did not halve in {patience} steps ({largest:.3g}).")
        hessian = objective_hessian(features, offsets, parameters, damping, weights=weights, loss=loss, labels=labels)
        if mu is None:
            mu = 1e-3 * float(np.max(np.diag(hessian)))
        flat_gradient = gradient.reshape(-1)
        for _ in range(60):
            direction = np.linalg.solve(hessian + mu * np.eye(len(hessian)), flat_gradient)
            predicted = float(flat_gradient @ direction - 0.5 * direction @ (hessian @ direction))
            candidate = parameters - direction.reshape(parameters.shape)
            candidate_value = value_at(candidate)
            # near the optimum the objective's value cannot resolve the predicted decrease: the step is taken as the model's
            ratio = 1.0 if predicted < 1e-13 * max(1.0, abs(value)) else (value - candidate_value) / predicted
            if ratio > 0:
                mu *= max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
                growth = 2.0
                break
            mu *= growth
            growth *= 2.0
        else:
            raise RuntimeError(f"The readout's Levenberg-Marquardt step found no decrease (largest gradient {largest:.3g}).")
        parameters, value = candidate, candidate_value
        features, offsets = head.expand(parameters)
    raise RuntimeError(f"The readout did not converge in {max_steps} Levenberg-Marquardt steps (largest gradient {largest:.3g}).")
