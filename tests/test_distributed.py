"""Data-parallel training gives the single-device result: MirroredStrategy (TensorFlow) and DataParallel (JAX).

No GPU here: the TensorFlow subprocess splits the CPU into two logical
devices (before TensorFlow initialises them, hence a subprocess), and the
JAX subprocess gets two host devices (`XLA_FLAGS=--xla_force_host_platform_device_count=2`).
Each family's tiny model (the configurations of tests/test_backends.py,
without dropout) trains 2 epochs of 2 steps with its `compile()` defaults
(ProtoPNet: StagedAdam) from the same initial weights on the same unshuffled
batches, once on one device and once under the strategy; the running losses
of every step and the final weights must agree.

Exact (float32 rounding only, 1e-5): INAM, CoDA, PrototypeDL and ProtoPNet
with BatchNorm statistics frozen, on batches whose two halves differ. Under
MirroredStrategy each replica normalises BatchNorm with its own half batch,
and PrototypeDL's R1 term takes its minimum over each replica's half, so
for those the test builds batches from two identical halves (the per-replica
statistics and minima then equal the global ones, and the steps must match:
this still checks the all-reduce and the loss scaling; GapCNN's weights
within 1e-3, see WEIGHT_TOLERANCE), and checks
distinct halves only within a tolerance (GapCNN: 1e-2 on the losses; per-replica
statistics of 10 images instead of 20 move them by ~1e-3). A short
ProtoPNetSchedule (warm-up, joint, push, last layer) runs under the strategy
too, and `train_preset(..., distribute="mirrored")` writes a preset whose
card records the strategy and 2 replicas. JAX's DataParallel runs one program
over sharded arrays (BatchNorm statistics of the whole batch), so all
families must match exactly on distinct halves; `train_preset(...,
distribute="data_parallel")` runs there too. Last, two local worker
processes (TF_CONFIG with localhost ports) train a tiny recipe under
MultiWorkerMirroredStrategy with the per-epoch losses of one device.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from tiny_models import subprocess_env

FAMILIES = ("inam", "coda", "cnn", "protopnet", "prototypedl")

COMMON = r'''
import json, os, pathlib, sys, time, traceback

import keras
import numpy as np

TINY_RECIPE = {
    "family": "inam", "dataset": "mnist_5k", "description": "tiny INAM for the distribution test",
    "config": {"num_kernels": 8, "kernel_size": 5, "tv_weight": 0.01, "ortho_weight": 0.01, "padding": "same"},
    "grid": [], "validation_size": 200, "batch_size": 32, "grid_batch_size": 32, "epochs": 1, "grid_epochs": 0,
    "learning_rate": 1e-3, "schedule": "plateau",
}


def build(family, seed=0, r1_weight=1.0):
    """tests/tiny_models.py's tiny configurations, without dropout."""
    from tiny_models import build as build_tiny

    overrides = {"cnn": {"dropout": 0.0}, "prototypedl": {"r1_weight": r1_weight}}.get(family, {})
    return build_tiny(family, seed, **overrides)


class StepLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def data(duplicated_halves, count=40, batch=20, seed=0):
    """`count` images in batches of `batch`; with duplicated_halves each batch's second half repeats its first."""
    rng = np.random.default_rng(seed)
    images = rng.random((count, 28, 28, 1), dtype="float32")
    labels = rng.integers(0, 10, count)
    if duplicated_halves:
        half = batch // 2
        for start in range(0, count, batch):
            images[start + half:start + batch] = images[start:start + half]
            labels[start + half:start + batch] = labels[start:start + half]
    return images, labels


def train(family, initial, scope, images, labels, frozen_statistics=False, r1_weight=1.0):
    """Losses of every step and final weights of 2 epochs of 2 steps from `initial` weights."""
    with scope():
        model = build(family, r1_weight=r1_weight)
        model.set_weights(initial)
        if frozen_statistics:
            model.frozen_feature_statistics = True
        model.compile()
        steps = StepLosses()
        model.fit(images, labels, batch_size=20, epochs=2, shuffle=False, verbose=0, callbacks=[steps])
    return steps.losses, model.get_weights(), [w.path for w in model.weights]


def compare(family, scope, duplicated_halves, **options):
    import contextlib

    images, labels = data(duplicated_halves)
    initial = build(family, r1_weight=options.get("r1_weight", 1.0)).get_weights()
    single = train(family, initial, contextlib.nullcontext, images, labels, **options)
    distributed = train(family, initial, scope, images, labels, **options)
    return {
        "single_losses": single[0],
        "distributed_losses": distributed[0],
        "loss_difference": float(np.max(np.abs(np.subtract(single[0], distributed[0])) / np.maximum(1.0, np.abs(single[0])))),
        "weight_difference": float(max(np.max(np.abs(a - b)) for a, b in zip(single[1], distributed[1]))),
        "weights_changed": bool(any(not np.array_equal(a, b) for a, b in zip(initial, single[1]))),
        "worst_weight": single[2][int(np.argmax([np.max(np.abs(a - b)) for a, b in zip(single[1], distributed[1])]))],
    }


def tiny_preset(folder, distribute):
    from glasszoo.zoo import recipes
    from glasszoo.zoo.training import train_preset

    recipes.RECIPES["tiny_distributed"] = TINY_RECIPE
    card = train_preset("tiny_distributed", folder / "preset", work_dir=folder / "work", grid=False, verbose=0,
                        max_train=64, distribute=distribute)
    import glasszoo
    model = glasszoo.load(folder / "preset")  # a valid preset: sha256 verified
    return {"distribution": card["training"]["distribution"], "command": card["training"]["command"],
            "test_accuracy": card["metrics"]["test_accuracy"], "loaded": type(model).__name__}


def run_all(folder, cases):
    results = {}
    for name, case in cases.items():
        tick = time.time()
        try:
            results[name] = case()
        except Exception:
            results[name] = {"error": traceback.format_exc()}
        results[name]["seconds"] = round(time.time() - tick, 1)
    (folder / f"{keras.backend.backend()}.json").write_text(json.dumps(results))
'''

TENSORFLOW = r'''
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

''' + COMMON + r'''
from glasszoo.zoo.distributed import distribution_scope, strategy_for


def mirrored():
    return strategy_for("mirrored").scope()


def schedule_under_strategy():
    """Warm-up, joint, push and last-layer epochs, one device vs mirrored, on duplicated-half batches."""
    import contextlib
    from glasszoo.zoo.protopnet_schedule import ProtoPNetSchedule

    images, labels = data(True)
    initial = build("protopnet").get_weights()
    runs = []
    for scope in (contextlib.nullcontext, mirrored):
        with scope():
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


folder = pathlib.Path(sys.argv[1])
assert strategy_for("mirrored").num_replicas_in_sync == 2
cases = {
    "inam": lambda: compare("inam", mirrored, False),
    "coda": lambda: compare("coda", mirrored, False),
    "prototypedl": lambda: compare("prototypedl", mirrored, False, r1_weight=0.0),
    "prototypedl_duplicated": lambda: compare("prototypedl", mirrored, True),
    "protopnet_frozen_statistics": lambda: compare("protopnet", mirrored, False, frozen_statistics=True),
    "protopnet_duplicated": lambda: compare("protopnet", mirrored, True),
    "cnn_duplicated": lambda: compare("cnn", mirrored, True),
    "cnn": lambda: compare("cnn", mirrored, False),
    "protopnet_schedule": schedule_under_strategy,
    "train_preset": lambda: tiny_preset(folder / "preset_mirrored", "mirrored"),
}
run_all(folder, cases)
'''

JAX = COMMON + r'''
import jax
from glasszoo.zoo.distributed import distribution_scope, strategy_for

folder = pathlib.Path(sys.argv[1])
assert len(jax.devices()) == 2, jax.devices()


def data_parallel():
    return strategy_for("data_parallel").scope()


cases = {family: (lambda family=family: compare(family, data_parallel, False)) for family in ("cnn", "protopnet", "prototypedl")}
cases["train_preset"] = lambda: tiny_preset(folder / "preset_data_parallel", "data_parallel")
run_all(folder, cases)
'''


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Runs the TensorFlow and JAX subprocesses side by side; backend -> results dict (or an error string)."""
    import importlib.util

    folder = tmp_path_factory.mktemp("distributed")
    base = subprocess_env()
    environments = {"tensorflow": dict(base, KERAS_BACKEND="tensorflow")}
    if importlib.util.find_spec("jax") is not None:
        environments["jax"] = dict(
            base, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
            XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0",
        )
    started = {}
    for backend, env in environments.items():
        script = folder / f"{backend}_script.py"
        script.write_text(TENSORFLOW if backend == "tensorflow" else JAX)
        log = open(folder / f"{backend}.log", "w")
        started[backend] = (subprocess.Popen([sys.executable, str(script), str(folder)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(folder)), log)
    outcome = {}
    for backend, (process, log) in started.items():
        try:
            code = process.wait(timeout=400)
        except subprocess.TimeoutExpired:
            process.kill()
            code = "timeout"
        log.close()
        report = folder / f"{backend}.json"
        if code != 0 or not report.exists():
            outcome[backend] = f"the {backend} subprocess failed ({code}):\n" + (folder / f"{backend}.log").read_text()[-5000:]
        else:
            outcome[backend] = json.loads(report.read_text())
    return outcome


def _case(results, backend, name):
    if backend not in results:
        pytest.skip(f"{backend} is not installed")
    if isinstance(results[backend], str):
        pytest.fail(results[backend])
    case = results[backend][name]
    if "error" in case:
        pytest.fail(f"{backend} {name}:\n{case['error']}")
    return case


# GapCNN's conv kernels feed BatchNorm, which makes the loss invariant to each kernel's scale: some kernel
# entries get gradients at float32 noise level, and Adam divides every entry by its own gradient size, so a
# different summation order (two all-reduced halves vs one batch) moves those entries by up to ~6% of an Adam
# step (2.4e-4 after 4 steps of 1e-3, measured), while the losses, BatchNorm statistics and classifier agree
# to 1e-6. Hence 1e-3 (a quarter of the 4 steps' maximal move) for its weights.
WEIGHT_TOLERANCE = {"cnn_duplicated": 1e-3}


@pytest.mark.parametrize("name", ["inam", "coda", "prototypedl", "prototypedl_duplicated", "protopnet_frozen_statistics", "protopnet_duplicated", "cnn_duplicated"])
def test_mirrored_strategy_matches_one_device(results, name):
    case = _case(results, "tensorflow", name)
    assert case["weights_changed"] and len(case["distributed_losses"]) == 4
    assert case["loss_difference"] < 1e-5, case
    assert case["weight_difference"] < WEIGHT_TOLERANCE.get(name, 1e-5), case


def test_mirrored_batchnorm_normalises_per_replica_within_tolerance(results):
    case = _case(results, "tensorflow", "cnn")
    assert case["loss_difference"] < 1e-2, case  # per-replica BatchNorm statistics (10 images instead of 20)
    assert case["weight_difference"] < 5e-2, case


def test_protopnet_schedule_with_push_under_mirrored_strategy(results):
    case = _case(results, "tensorflow", "protopnet_schedule")
    assert case["stages"] == [0.0, 1.0, 2.0]
    assert case["same_push"]
    assert case["loss_difference"] < 1e-5 and case["weight_difference"] < 1e-5, case


@pytest.mark.parametrize("backend,kind,strategy", [("tensorflow", "mirrored", "tf.distribute.MirroredStrategy"), ("jax", "data_parallel", "keras.distribution.DataParallel")])
def test_train_preset_records_the_strategy(results, backend, kind, strategy):
    case = _case(results, backend, "train_preset")
    distribution = case["distribution"]
    assert distribution["kind"] == kind and distribution["strategy"] == strategy
    assert distribution["replicas"] == 2 and distribution["global_batch_size"] == 32 and distribution["per_replica_batch_size"] == 16
    assert f"--distribute {kind}" in case["command"] and case["loaded"] == "INAM"
    assert 0.0 <= case["test_accuracy"] <= 1.0


@pytest.mark.parametrize("family", ["cnn", "protopnet", "prototypedl"])
def test_jax_data_parallel_matches_one_device(results, family):
    case = _case(results, "jax", family)
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


MULTI_WORKER = COMMON + r'''
from glasszoo.zoo import recipes
from glasszoo.zoo.training import train_preset

folder, distribute = pathlib.Path(sys.argv[1]), sys.argv[2]
recipes.RECIPES["tiny_distributed"] = dict(TINY_RECIPE, epochs=2)
card = train_preset("tiny_distributed", folder / "preset", work_dir=folder / "work", grid=False, verbose=0, max_train=64, distribute=distribute)
print("CARD " + json.dumps({"distribution": card["training"]["distribution"], "losses": [row["loss"] for row in card["history"]]}))
'''


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("localhost", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def test_multi_worker_strategy_across_two_processes_matches_one_device(tmp_path):
    """Two local worker processes (TF_CONFIG on localhost ports) train the tiny recipe as one device does;
    only the chief writes the preset folder, the other worker writes under work/worker_1."""
    script = tmp_path / "worker.py"
    script.write_text(MULTI_WORKER)
    base = subprocess_env(KERAS_BACKEND="tensorflow")
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        env = dict(base, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / "cluster"), "multi_worker"], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single"), "none"], env=base, capture_output=True, text=True, timeout=300)
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    cards = []
    for output, code in zip(outputs + [single.stdout + single.stderr], [p.returncode for p in processes] + [single.returncode]):
        assert code == 0, output[-4000:]
        cards.append(json.loads(next(line[5:] for line in output.splitlines() if line.startswith("CARD "))))
    chief, other, alone = cards
    assert chief["distribution"]["strategy"] == "tf.distribute.MultiWorkerMirroredStrategy"
    assert chief["distribution"]["workers"] == 2 and chief["distribution"]["replicas"] == 2
    np.testing.assert_allclose(chief["losses"], alone["losses"], rtol=1e-4)
    assert chief["losses"] == other["losses"]
    assert (tmp_path / "cluster" / "preset" / "metadata.json").exists()
    assert (tmp_path / "cluster" / "work" / "worker_1" / "preset" / "metadata.json").exists()
