"""ProtoPNet's training machinery on the JAX and PyTorch backends of Keras (the generic checks: tests/test_backends.py).

This test process runs on TensorFlow and must not import PyTorch or JAX
(conftest.py). `OTHER_BACKEND_CHECKS` below run in the JAX and PyTorch
subprocesses of tests/other_backends.py (its `extras` part imports this file
there; conftest.py's `backend_runs` runs them once per session):

- `loss_in_step`: the cluster, separation and L1 terms reach the loss of
  compiled test and train steps (`compute_loss` reads the distances `call`
  stashed), equal to a NumPy computation of the paper's loss; the
  joint-stage rates of the default `compile()` keep the last layer at its
  class connection;
- `schedule`: a short `ProtoPNetSchedule` (warm-up, joint, push, last layer)
  in which the frozen parts of each stage stay bit-identical and the
  prototypes end on the latent patches the push recorded.
"""

import numpy as np
import pytest
from other_backends import OTHER_BACKENDS


def _part_weights(model):
    return {part: [w.copy() for w in getattr(model, part).get_weights()] for part in ("backbone", "add_on", "prototype_layer", "last_layer")}


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def schedule(images, labels):
    """Warm 1, joint 1, last layer 1 epoch (2 steps each) with a push: frozen parts stay bit-identical."""
    import keras
    from glasszoo.zoo.protopnet.schedule import ProtoPNetSchedule
    from keras import ops
    from tiny_models import build

    model = build("protopnet", seed=5)
    model.compile()
    plan = ProtoPNetSchedule(images, labels, warm_epochs=1, joint_epochs=1, last_layer_epochs=1, cycles=1)
    snapshots = [_part_weights(model)]

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(_part_weights(model))

    history = model.fit(images[:20], labels[:20], epochs=plan.total_epochs, batch_size=10, callbacks=[plan, Snapshot()], verbose=0)
    start, warm, joint, last = snapshots
    assert np.isfinite(history.history["loss"]).all(), history.history["loss"]
    # warm-up: backbone (weights and BatchNorm statistics) and last layer frozen; add-on and prototypes train
    assert _same(start["backbone"], warm["backbone"]), "warm-up changed the backbone"
    assert _same(start["last_layer"], warm["last_layer"]), "warm-up changed the last layer"
    assert not _same(start["add_on"], warm["add_on"]), "warm-up left the add-on layers unchanged"
    assert not _same(start["prototype_layer"], warm["prototype_layer"]), "warm-up left the prototypes unchanged"
    # joint: last layer frozen, the rest trains
    assert _same(warm["last_layer"], joint["last_layer"]), "joint stage changed the last layer"
    assert not _same(warm["backbone"], joint["backbone"]), "joint stage left the backbone unchanged"
    # push + last-layer stage: only the last layer trains; the prototypes stay the pushed patches
    for part in ("backbone", "add_on"):
        assert _same(joint[part], last[part]), f"last-layer stage changed {part}"
    assert not _same(joint["last_layer"], last["last_layer"]), "last-layer stage left the last layer unchanged"
    provenance = model.prototype_provenance
    assert provenance is not None and plan.pushed
    latent, _ = model.latent_and_distances(provenance["source_image"])
    rows, cols = provenance["patch_position"][:, 0], provenance["patch_position"][:, 1]
    patches = latent[np.arange(len(rows)), rows, cols]
    prototypes = ops.convert_to_numpy(model.prototype_layer.prototypes)[:, 0, 0, :]
    np.testing.assert_allclose(prototypes, patches, atol=1e-5, err_msg="prototypes moved away from their pushed patches")
    assert np.all(provenance["prototype_class"] == labels[provenance["source_index"]])
    return {"losses": [float(v) for v in history.history["loss"]], "stages": history.history["stage"]}


def loss_in_step(images, labels):
    """The cluster, separation and L1 terms (compute_loss reads the distances `call` stashed) in compiled steps."""
    from glasszoo.zoo.protopnet.model import class_connection
    from keras import ops
    from tiny_models import build

    model = build("protopnet", seed=6)
    model.frozen_feature_statistics = True  # BatchNorm in inference mode: the training step sees the same logits
    model.compile()
    images, labels = images[:10], labels[:10]
    latent, distances = model.latent_and_distances(images)
    min_distances = distances.min(axis=(1, 2)).astype("float64")
    kernel = ops.convert_to_numpy(model.last_layer.kernel).astype("float64")
    logits = np.log((min_distances + 1) / (min_distances + 1e-4)) @ kernel
    shifted = logits - logits.max(-1, keepdims=True)
    cross_entropy = np.mean(np.log(np.exp(shifted).sum(-1)) - shifted[np.arange(10), labels])
    own = model.prototype_class[None, :] == labels[:, None]
    cluster = np.mean([min_distances[b][own[b]].min() for b in range(10)])
    separation = np.mean([min_distances[b][~own[b]].min() for b in range(10)])
    l1 = np.abs(kernel * (1 - np.eye(10)[model.prototype_class])).sum()
    expected = cross_entropy + 0.8 * cluster - 0.08 * separation + 1e-4 * l1
    evaluated = model.evaluate(images, labels, batch_size=10, verbose=0, return_dict=True)["loss"]
    trained = model.train_on_batch(images, labels, return_dict=True)["loss"]  # the loss before this step's update
    np.testing.assert_allclose([evaluated, trained], [expected, expected], rtol=1e-4, err_msg="evaluate, train step")
    # the default compile() trains at the joint stage's rates: the last layer keeps its class connection
    np.testing.assert_array_equal(ops.convert_to_numpy(model.last_layer.kernel), class_connection(model.prototype_class, 10))
    return {"expected": float(expected), "evaluate": float(evaluated), "train_step": float(trained)}


OTHER_BACKEND_CHECKS = {"loss_in_step": loss_in_step, "schedule": schedule}


@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_cluster_separation_and_l1_terms_in_compiled_steps(backend, backend_runs):
    case = backend_runs.family_check(backend, "protopnet", "loss_in_step")
    np.testing.assert_allclose([case["evaluate"], case["train_step"]], case["expected"], rtol=1e-4)


@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_schedule_freezes_each_stage_and_keeps_the_pushed_prototypes(backend, backend_runs):
    case = backend_runs.family_check(backend, "protopnet", "schedule")
    assert case["stages"] == [0.0, 1.0, 2.0]
    assert np.isfinite(case["losses"]).all()
