"""ProtoPNet's staged schedule (warm-up, joint, push, last layer) under MirroredStrategy gives the one-device result.

The generic one-device vs strategy comparisons of every family are in
tests/test_distributed.py. `MIRRORED_CHECKS` below run in its TensorFlow
subprocess (tests/distributed_runs.py imports this file there, the CPU split
into two logical devices): a short `ProtoPNetSchedule` once on one device and
once under MirroredStrategy, on batches of two identical halves (per-replica
BatchNorm statistics then equal the global ones): the losses, the final
weights and the pushed patches must agree.
"""

import contextlib

import numpy as np


def _duplicated_halves(count=40, batch=20, seed=0):
    """`count` images in batches of `batch`, each batch's second half a repeat of its first."""
    rng = np.random.default_rng(seed)
    images = rng.random((count, 28, 28, 1), dtype="float32")
    labels = rng.integers(0, 10, count)
    half = batch // 2
    for start in range(0, count, batch):
        images[start + half:start + batch] = images[start:start + half]
        labels[start + half:start + batch] = labels[start:start + half]
    return images, labels


def schedule_under_strategy(scope):
    """Warm-up, joint, push and last-layer epochs, one device vs `scope` (MirroredStrategy's)."""
    from glasszoo.zoo.protopnet.schedule import ProtoPNetSchedule
    from tiny_models import build

    images, labels = _duplicated_halves()
    initial = build("protopnet").get_weights()
    runs = []
    for each in (contextlib.nullcontext, scope):
        with each():
            model = build("protopnet")
            model.set_weights(initial)
            model.compile()
            schedule = ProtoPNetSchedule(images, labels, warm_epochs=1, joint_epochs=1, last_layer_epochs=1, cycles=1)
            history = model.fit(images, labels, batch_size=20, epochs=schedule.total_epochs, shuffle=False, verbose=0,
                                callbacks=[schedule])
        runs.append((history.history["loss"], model.get_weights(), model.prototype_provenance))
    (single_losses, single_weights, single_push), (losses, weights, push) = runs
    return {
        "single_losses": single_losses, "distributed_losses": losses, "stages": history.history["stage"],
        "loss_difference": float(np.max(np.abs(np.subtract(single_losses, losses)))),
        "weight_difference": float(max(np.max(np.abs(a - b)) for a, b in zip(single_weights, weights))),
        "same_push": bool(push is not None and all(np.array_equal(single_push[k], push[k]) for k in ("source_index", "patch_position"))),
    }


MIRRORED_CHECKS = {"schedule": schedule_under_strategy}


def test_schedule_with_push_under_mirrored_strategy(distribution_runs):
    from distributed_runs import case_result

    case = case_result(distribution_runs, "tensorflow", "protopnet:schedule")
    assert case["stages"] == [0.0, 1.0, 2.0]
    assert case["same_push"]
    assert case["loss_difference"] < 1e-5 and case["weight_difference"] < 1e-5, case
