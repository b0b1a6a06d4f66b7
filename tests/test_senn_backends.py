"""SENN's robustness penalty on the JAX and PyTorch backends of Keras (the generic checks: tests/test_backends.py).

This test process runs on TensorFlow and must not import PyTorch or JAX
(conftest.py). `OTHER_BACKEND_CHECKS` below run in the JAX and PyTorch
subprocesses of tests/other_backends.py:

- `penalty`: the penalty (vector-Jacobian products through
  `glasszoo.layers.input_gradients`) equals the seed's definition
  `||J_x f - theta^T J_x h||_F^2`, built from full Jacobians by the
  backend's own Jacobian function (`jax.jacrev`,
  `torch.autograd.functional.jacobian`);
- `in_training_step`: with a zero learning rate, `fit`'s loss exceeds the
  cross-entropy by exactly the penalty (the term reaches the training step
  on that backend), and a few Adam steps on the penalty alone lower it
  (its gradient reaches the weights).
"""

import numpy as np
import pytest
from other_backends import OTHER_BACKENDS


def _full_jacobians(function, x):
    """`(B, out, D)` Jacobian of `function` (per image; no coupling between images) with the backend's autodiff."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        jacobian = jax.jacrev(function)(x)  # (B, out, B, H, W, C)
    else:
        import torch

        jacobian = torch.autograd.functional.jacobian(function, x)
    jacobian = keras.ops.convert_to_numpy(jacobian).astype("float64")
    batch = x.shape[0]
    jacobian = jacobian.reshape(batch, jacobian.shape[1], batch, -1)
    return np.stack([jacobian[b, :, b, :] for b in range(batch)])


def penalty(images, labels):
    """The penalty against the definition from the backend's own full Jacobians."""
    from keras import ops
    from tiny_models import build

    model = build("senn", seed=21)
    x = ops.convert_to_tensor(images[:3])
    jacobian_f = _full_jacobians(lambda t: model(t), x)
    jacobian_h = _full_jacobians(lambda t: model.concept_values(t), x)
    theta = ops.convert_to_numpy(model.relevance_values(x)).astype("float64")
    residual = jacobian_f - np.einsum("bkc,bkd->bcd", theta, jacobian_h)
    expected = float(np.mean(np.sum(residual**2, axis=(1, 2))))
    return {"expected": expected, "actual": float(model.robustness_penalty(x))}


def in_training_step(images, labels):
    """`fit` loss minus cross-entropy = the penalty at unchanged weights; Adam steps on the penalty lower it."""
    import keras
    from keras import ops
    from tiny_models import build

    x, y = images[:16], labels[:16]
    plain = build("senn", seed=22, robustness_weight=0.0, reconstruction_weight=0.0)
    penalised = build("senn", seed=22, robustness_weight=1.0, reconstruction_weight=0.0)
    penalised.set_weights(plain.get_weights())
    losses = {}
    for name, model in (("plain", plain), ("penalised", penalised)):
        model.compile(optimizer=keras.optimizers.SGD(0.0))
        losses[name] = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0]
    value = float(penalised.robustness_penalty(ops.convert_to_tensor(x)))
    lowered = build("senn", seed=23, robustness_weight=1.0, reconstruction_weight=0.0)
    before = float(lowered.robustness_penalty(ops.convert_to_tensor(x)))
    lowered.compile(optimizer=keras.optimizers.Adam(1e-2), loss=lambda y_true, y_pred: 0.0 * ops.sum(y_pred))
    lowered.fit(x, y, batch_size=16, epochs=10, verbose=0)
    after = float(lowered.robustness_penalty(ops.convert_to_tensor(x)))
    return {"difference": float(losses["penalised"] - losses["plain"]), "penalty": value, "before": before, "after": after}


OTHER_BACKEND_CHECKS = {"penalty": penalty, "in_training_step": in_training_step}


@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_penalty_equals_the_definition_on_other_backends(backend, backend_runs):
    case = backend_runs.family_check(backend, "senn", "penalty")
    assert case["expected"] > 1e-4
    np.testing.assert_allclose(case["actual"], case["expected"], rtol=1e-4)


@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_penalty_reaches_the_training_step_on_other_backends(backend, backend_runs):
    case = backend_runs.family_check(backend, "senn", "in_training_step")
    np.testing.assert_allclose(case["difference"], case["penalty"], rtol=1e-3)
    assert case["after"] < 0.5 * case["before"], case
