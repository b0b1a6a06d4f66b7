"""Data-parallel training gives the single-device result: MirroredStrategy (TensorFlow) and DataParallel (JAX).

No GPU here: the TensorFlow subprocess splits the CPU into two logical
devices (before TensorFlow initialises them, hence a subprocess), and the
JAX subprocess gets two host devices (`XLA_FLAGS=--xla_force_host_platform_device_count=2`);
tests/distributed_runs.py holds both (conftest.py's session fixture
`distribution_runs` runs them once, side by side).
Every family of the registry trains its tiny model (tests/tiny_models.py,
without random masks: tests/tiny_recipes.py) for 2 epochs of 2 steps with
its `compile()` defaults from the same initial weights on the same
unshuffled batches, once on one device and once under the strategy; the
running losses of every step and the final weights must agree.

Under MirroredStrategy each replica computes its step on its half of the
batch. With the knobs of tests/tiny_recipes.py that a family's model takes
(batch-wide loss terms off, BatchNorm statistics frozen) its loss is a mean
over examples, and it must match exactly (float32 rounding, 1e-5) on batches
whose halves differ. A family whose step still normalises with BatchNorm
statistics (no frozen mode) matches only within a tolerance there (1e-2 on
the losses: per-replica statistics of 10 images instead of 20). Every family
that couples the batch by default (batch-wide terms, BatchNorm) is also
trained with its defaults on batches of two identical halves, where the
per-replica statistics and minima equal the global ones: the steps must
match (this still checks the all-reduce and the loss scaling). JAX's
DataParallel runs one program over sharded arrays (statistics and minima of
the whole batch), so those families must match exactly there on distinct
halves, with their defaults. `train_preset(..., distribute=...)` writes a
preset whose card records the strategy and 2 replicas on both, and two local
worker processes (TF_CONFIG with localhost ports) train a tiny recipe under
MultiWorkerMirroredStrategy with the per-epoch losses of one device.
Family-specific runs under a strategy (ProtoPNet's staged schedule with its
push) live in the families' test files (tests/test_<family>_distributed.py:
`MIRRORED_CHECKS`, run in the same TensorFlow subprocess).
"""

import json

import numpy as np
import pytest
from distributed_runs import case_result
from tiny_models import family_names

FAMILIES = family_names()


# A conv kernel that feeds BatchNorm leaves the loss invariant to its scale: some of its entries get gradients at
# float32 noise level, and Adam divides every entry by its own gradient size, so a different summation order (two
# all-reduced halves vs one batch) moves those entries by up to ~6% of an Adam step (GapCNN: 2.4e-4 after 4 steps
# of 1e-3, measured), while the losses, BatchNorm statistics and classifier agree to 1e-6. Hence 1e-3 (a quarter
# of the 4 steps' maximal move) for the weights of a model that normalises with batch statistics. A model whose
# loss holds an input gradient (`second_order_training`: SENN's robustness penalty) trains through second
# derivatives, whose summation order varies with the threads: 8e-5 was seen once in a full run (1.5e-8 alone).
BATCH_STATISTICS_WEIGHT_TOLERANCE = 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_mirrored_strategy_matches_one_device(distribution_runs, family):
    """Distinct halves, per-example loss: exact; with BatchNorm statistics per replica only within 1e-2."""
    case = case_result(distribution_runs, "tensorflow", f"{family}_per_example")
    assert case["weights_changed"] and len(case["distributed_losses"]) == 4
    if case["batch_statistics"]:  # per-replica BatchNorm statistics (10 images instead of 20)
        assert case["loss_difference"] < 1e-2, case
        assert case["weight_difference"] < 5e-2, case
    elif case.get("second_order"):  # a loss of input gradients: noise-level gradient entries, amplified by Adam as above
        assert case["loss_difference"] < 1e-5, case
        assert case["weight_difference"] < BATCH_STATISTICS_WEIGHT_TOLERANCE, case
    else:
        assert case["loss_difference"] < 1e-5, case
        assert case["weight_difference"] < 1e-5, case


@pytest.mark.parametrize("family", FAMILIES)
def test_mirrored_strategy_matches_one_device_with_the_family_defaults_on_duplicated_halves(distribution_runs, family):
    """The family's batch-wide terms and BatchNorm statistics on batches whose replica halves are the same."""
    case = case_result(distribution_runs, "tensorflow", f"{family}_duplicated", missing=f"{family} does not couple the examples of a batch")
    assert case["weights_changed"] and len(case["distributed_losses"]) == 4
    assert case["loss_difference"] < 1e-5, case
    assert case["weight_difference"] < (BATCH_STATISTICS_WEIGHT_TOLERANCE if case["batch_statistics"] else 1e-5), case


@pytest.mark.parametrize("backend,kind,strategy", [("tensorflow", "mirrored", "tf.distribute.MirroredStrategy"), ("jax", "data_parallel", "keras.distribution.DataParallel")])
def test_train_preset_records_the_strategy(distribution_runs, backend, kind, strategy):
    case = case_result(distribution_runs, backend, "train_preset")
    distribution = case["distribution"]
    assert distribution["kind"] == kind and distribution["strategy"] == strategy
    assert distribution["replicas"] == 2 and distribution["global_batch_size"] == 32 and distribution["per_replica_batch_size"] == 16
    assert f"--distribute {kind}" in case["command"] and case["loaded"] == case["family"]  # the recipe's family
    assert 0.0 <= case["test_accuracy"] <= 1.0


@pytest.mark.parametrize("family", FAMILIES)
def test_jax_data_parallel_matches_one_device(distribution_runs, family):
    """The family's defaults (batch-wide terms, BatchNorm statistics) on distinct halves: one program, exact."""
    case = case_result(distribution_runs, "jax", family, missing=f"{family} does not couple the examples of a batch (the mirrored test checks it exactly)")
    assert case["weights_changed"] and len(case["distributed_losses"]) == 4
    assert case["loss_difference"] < 1e-5, case
    assert case["weight_difference"] < 1e-5, case


def test_a_kind_the_backend_cannot_do_is_refused_clearly():
    from glasszoo.zoo.distributed import DistributionUnavailable, distribution_scope

    with pytest.raises(DistributionUnavailable, match="needs the jax backend"):
        with distribution_scope("data_parallel"):
            pass
    with pytest.raises(ValueError, match="Unknown distribution 'ring'"):
        with distribution_scope("ring"):
            pass
    with distribution_scope("none") as info:
        assert info["replicas"] == 1 and info["strategy"] is None


def test_multi_worker_strategy_across_two_processes_matches_one_device(distribution_runs):
    """Two local worker processes (TF_CONFIG on localhost ports) train the tiny recipe as one device does;
    only the chief writes the preset folder, the other worker writes under work/worker_1
    (tests/distributed_runs.py runs them beside the TensorFlow subprocess)."""
    runs = distribution_runs["multi_worker"]
    cards = []
    for name in ("worker_0", "worker_1", "single"):
        output = runs[name]["output"]
        assert runs[name]["code"] == 0, f"{name} ({runs[name]['code']}):\n{output[-4000:]}"
        cards.append(json.loads(next(line[5:] for line in output.splitlines() if line.startswith("CARD "))))
    chief, other, alone = cards
    assert chief["distribution"]["strategy"] == "tf.distribute.MultiWorkerMirroredStrategy"
    assert chief["distribution"]["workers"] == 2 and chief["distribution"]["replicas"] == 2
    np.testing.assert_allclose(chief["losses"], alone["losses"], rtol=1e-4)
    assert chief["losses"] == other["losses"]
    folder = distribution_runs["folder"] / "multi_worker"
    assert (folder / "cluster" / "preset" / "metadata.json").exists()
    assert (folder / "cluster" / "work" / "worker_1" / "preset" / "metadata.json").exists()
