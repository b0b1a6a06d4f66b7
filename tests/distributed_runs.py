"""The data-parallel subprocesses (TensorFlow MirroredStrategy, JAX DataParallel) of tests/test_distributed.py.

conftest.py's session fixture `distribution_runs` runs them once, side by
side, and once the JAX one is done, the multi-worker group (two local
workers under MultiWorkerMirroredStrategy and one device alone) beside the
TensorFlow one; tests/test_distributed.py describes the cases. The TensorFlow one also
runs the `MIRRORED_CHECKS = {name: check(scope) -> dict}` that a family's own
test file `tests/test_<family>_distributed.py` defines (case
`"<family>:<name>"`; `scope()` enters MirroredStrategy's scope over the two
logical CPU devices).
"""

import json
import subprocess
import sys

from tiny_models import subprocess_env

COMMON = r'''
import json, os, pathlib, sys, time, traceback

import keras
import numpy as np
from tiny_models import family_names
from tiny_recipes import build_deterministic


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


def train(family, initial, scope, images, labels, per_example):
    """Losses of every step and final weights of 2 epochs of 2 steps from `initial` weights."""
    with scope():
        model, _ = build_deterministic(family, per_example=per_example)
        model.set_weights(initial)
        model.compile()
        steps = StepLosses()
        model.fit(images, labels, batch_size=20, epochs=2, shuffle=False, verbose=0, callbacks=[steps])
    return steps.losses, model.get_weights(), [w.path for w in model.weights]


def compare(family, scope, duplicated_halves, per_example):
    import contextlib

    images, labels = data(duplicated_halves)
    model, setup = build_deterministic(family, per_example=per_example)
    initial = model.get_weights()
    single = train(family, initial, contextlib.nullcontext, images, labels, per_example)
    distributed = train(family, initial, scope, images, labels, per_example)
    differences = [np.max(np.abs(a - b)) for a, b in zip(single[1], distributed[1])]
    return dict(
        setup,
        single_losses=single[0],
        distributed_losses=distributed[0],
        loss_difference=float(np.max(np.abs(np.subtract(single[0], distributed[0])) / np.maximum(1.0, np.abs(single[0])))),
        weight_difference=float(max(differences)),
        weights_changed=bool(any(not np.array_equal(a, b) for a, b in zip(initial, single[1]))),
        second_order=bool(getattr(model, "second_order_training", False)),
        worst_weight=single[2][int(np.argmax(differences))],
    )


def batch_coupled(family):
    return bool(build_deterministic(family)[1]["batch_coupled"])


def tiny_preset(folder, distribute):
    from glasszoo.zoo import recipes
    from glasszoo.zoo.training import train_preset

    recipes.RECIPES["tiny_distributed"] = json.loads(sys.argv[2])  # tiny_recipe(epochs=1) of the test process
    card = train_preset("tiny_distributed", folder / "preset", work_dir=folder / "work", grid=False, verbose=0,
                        max_train=64, distribute=distribute)
    import glasszoo
    model = glasszoo.load(folder / "preset")  # a valid preset: sha256 verified
    return {"distribution": card["training"]["distribution"], "command": card["training"]["command"],
            "test_accuracy": card["metrics"]["test_accuracy"], "loaded": model.family, "family": card["family"]}


def family_checks(attribute, scope):
    """`{"<family>:<name>": case}` of the checks `attribute` of the families' own test files
    (tests/test_<family>_distributed.py: `{name: check(scope) -> dict}`), run under `scope`."""
    import importlib
    import importlib.util

    cases = {}
    for family in family_names():
        module = f"test_{family}_distributed"
        if importlib.util.find_spec(module) is not None:
            for name, check in getattr(importlib.import_module(module), attribute, {}).items():
                cases[f"{family}:{name}"] = lambda check=check: check(scope)
    return cases


def run_all(folder, cases, report=None):
    results = {}
    for name, case in cases.items():
        tick = time.time()
        try:
            results[name] = case()
        except Exception:
            results[name] = {"error": traceback.format_exc()}
        results[name]["seconds"] = round(time.time() - tick, 1)
    (folder / f"{report or keras.backend.backend()}.json").write_text(json.dumps(results))
'''

TENSORFLOW = r'''
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

''' + COMMON + r'''
from glasszoo.zoo.distributed import strategy_for


def mirrored():
    return strategy_for("mirrored").scope()


folder, part = pathlib.Path(sys.argv[1]), sys.argv[3]
assert strategy_for("mirrored").num_replicas_in_sync == 2
cases = {}
if part == "per_example":
    for family in family_names():
        cases[f"{family}_per_example"] = lambda family=family: compare(family, mirrored, False, per_example=True)
else:
    for family in family_names():
        if batch_coupled(family):
            cases[f"{family}_duplicated"] = lambda family=family: compare(family, mirrored, True, per_example=False)
    cases.update(family_checks("MIRRORED_CHECKS", mirrored))
    cases["train_preset"] = lambda: tiny_preset(folder / "preset_mirrored", "mirrored")
run_all(folder, cases, f"tensorflow_{part}")
'''

JAX = COMMON + r'''
import jax
from glasszoo.zoo.distributed import strategy_for

folder = pathlib.Path(sys.argv[1])
assert len(jax.devices()) == 2, jax.devices()


def data_parallel():
    return strategy_for("data_parallel").scope()


cases = {family: (lambda family=family: compare(family, data_parallel, False, per_example=False))
         for family in family_names() if batch_coupled(family)}
cases["train_preset"] = lambda: tiny_preset(folder / "preset_data_parallel", "data_parallel")
run_all(folder, cases)
'''


MULTI_WORKER = COMMON + r'''
from glasszoo.zoo import recipes
from glasszoo.zoo.training import train_preset

folder, distribute = pathlib.Path(sys.argv[1]), sys.argv[2]
recipes.RECIPES["tiny_distributed"] = json.loads(sys.argv[3])  # no TensorFlow op may run before the strategy exists
card = train_preset("tiny_distributed", folder / "preset", work_dir=folder / "work", grid=False, verbose=0, max_train=64, distribute=distribute)
print("CARD " + json.dumps({"distribution": card["training"]["distribution"], "losses": [row["loss"] for row in card["history"]]}))
'''


TENSORFLOW_PARTS = ("per_example", "defaults")  # one subprocess each, side by side


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("localhost", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def _start(folder, name, script, arguments, env):
    path = folder / f"{name}_script.py"  # not jax.py or tensorflow.py: the script's folder comes first on sys.path
    path.write_text(script)
    log = open(folder / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, str(path), *arguments], stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=str(folder)), log


def _start_multi_worker(folder, recipe):
    """Two local workers (TF_CONFIG on localhost ports) under MultiWorkerMirroredStrategy, and one device alone."""
    base = subprocess_env(KERAS_BACKEND="tensorflow")
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    started = {}
    for index in range(2):
        env = dict(base, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        started[f"worker_{index}"] = _start(folder, f"worker_{index}", MULTI_WORKER, [str(folder / "cluster"), "multi_worker", recipe], env)
    started["single"] = _start(folder, "single", MULTI_WORKER, [str(folder / "single"), "none", recipe], base)
    return started


def run(folder, timeout=600):
    """Runs the TensorFlow and JAX subprocesses side by side, and the multi-worker group once JAX is done.

    Returns `{backend: results dict or an error string, "multi_worker": {name: {"code", "output"}}}`.
    """
    import importlib.util
    import time

    from tiny_recipes import tiny_recipe

    recipe = json.dumps(tiny_recipe(epochs=1))  # one family for both backends, chosen here
    base = subprocess_env()
    environments = {"tensorflow": dict(base, KERAS_BACKEND="tensorflow")}
    if importlib.util.find_spec("jax") is not None:  # finds it without importing it
        environments["jax"] = dict(
            base, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
            XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0",
        )
    started = {}
    for backend, env in environments.items():  # TensorFlow in two parts (its cases take the longest)
        for part in TENSORFLOW_PARTS if backend == "tensorflow" else [None]:
            name = backend if part is None else f"{backend}_{part}"
            started[name] = _start(folder, name, TENSORFLOW if backend == "tensorflow" else JAX, [str(folder), recipe, str(part)], env)
    processes = set(started)
    outcome, multi_worker, deadline = {"multi_worker": {}}, None, time.time() + timeout
    (folder / "multi_worker").mkdir()
    while started:
        if multi_worker is None and "jax" not in started:  # the multi-worker group takes JAX's core
            multi_worker = _start_multi_worker(folder / "multi_worker", json.dumps(json.loads(recipe) | {"epochs": 2}))
            started.update(multi_worker)
        for name, (process, log) in list(started.items()):
            code = process.poll()
            if code is None and time.time() < deadline:
                continue
            if code is None:
                process.kill()
                process.wait()
                code = "timeout"
            log.close()
            del started[name]
            if name in processes:
                backend, report = name.split("_")[0], folder / f"{name}.json"
                if isinstance(outcome.get(backend), str):
                    continue  # its other part failed
                if code != 0 or not report.exists():
                    outcome[backend] = f"the {name} subprocess failed ({code}):\n" + (folder / f"{name}.log").read_text()[-5000:]
                else:
                    outcome[backend] = dict(outcome.get(backend, {}), **json.loads(report.read_text()))
            else:
                outcome["multi_worker"][name] = {"code": code, "output": (folder / "multi_worker" / f"{name}.log").read_text()}
        time.sleep(0.2)
    outcome["folder"] = folder
    return outcome


def case_result(results, backend, name, missing=None):
    """The result of case `name` under `backend`: a skip when the backend is not installed (or, with `missing`,
    the case did not run), a failure with the subprocess's traceback when it failed."""
    import pytest

    if backend not in results:
        pytest.skip(f"{backend} is not installed")
    if isinstance(results[backend], str):
        pytest.fail(results[backend])
    if name not in results[backend] and missing:
        pytest.skip(missing)
    found = results[backend][name]
    if "error" in found:
        pytest.fail(f"{backend} {name}:\n{found['error']}")
    return found
