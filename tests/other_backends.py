"""The subprocesses on the other Keras backends, shared by tests/test_backends.py and the families' test files.

conftest.py's session fixture `backend_runs` runs them once: `prepare`
saves the tiny models' weights and the explanations of this (TensorFlow)
process, `run` starts, side by side:

- `THERE`, two per other backend (`python there.py <folder> <this backend>
  families|extras`). `families`, for every family of the registry
  (`glasszoo.zoo.families.families()`): loads the weights this process saved
  and writes their explanation outputs; trains a fresh tiny model with the
  family's `compile()` defaults (finite loss, weights change); checks that
  `explain` returns exactly the declared `explanation_outputs`, batch-first
  and finite, and that the family's own identities hold
  (`model.self_check_errors(...) == {}`, which includes logits = `predict`);
  saves a `.weights.h5` file, a `.keras` file (with its compiled optimizer;
  round trip on that backend) and a preset folder (`model.save_preset`).
  `extras` explains every shipped preset (on JAX, one whose outputs differ
  from here once more with 64-bit floats enabled), and runs the
  `OTHER_BACKEND_CHECKS = {name: check(images, labels) -> dict}` that a
  family's own test file `tests/test_<family>_backends.py` defines.
- `HERE`, a fresh TensorFlow process: as soon as a backend's `families` part
  has finished, it loads that backend's files (the weights into a tiny
  model, the `.keras` file with `keras.saving.load_model` and with
  `glasszoo.load`, the preset folder with `glasszoo.load`) and writes their
  explanation outputs. It runs under tests/backend_guard.py, which refuses
  and records `import torch` and `import jax` (TensorFlow and Keras probe for
  JAX themselves: those optional imports are refused but allowed): no load
  may ask for either, and neither may be in `sys.modules` after it.
"""

import json
import subprocess
import sys
import time

import numpy as np
from tiny_models import family_names, subprocess_env

OTHER_BACKENDS = {"jax": "jax", "torch": "torch"}  # KERAS_BACKEND -> module it needs
EXPLAIN_COUNT = 8
THERE_PARTS = ("families", "extras")  # one subprocess each, per backend
LOADED_KINDS = ("weights", "keras_file", "glasszoo_keras_file", "preset_folder")  # what HERE loads of each backend's family

# Helpers of the subprocesses and of the test process.
COMMON = r'''
import json, pathlib, sys, time, traceback

import keras
import numpy as np

EXPLAIN_COUNT = 8


def build(family, seed=0):
    """The tiny model of the family's record (tests/tiny_models.py), seeded."""
    from tiny_models import build as build_tiny

    return build_tiny(family, seed)


def explain(model, images):
    """The float explanation outputs (what is compared across backends)."""
    return {k: np.asarray(v, "float32") for k, v in model.explain(images).items() if np.asarray(v).dtype.kind == "f"}


def samples():
    from glasszoo.data.samples import load_samples

    return load_samples()


def differences(expected, got, atol=1e-4):
    """{output: what differs} between two sets of float outputs: beyond `atol` (times the largest magnitude, at
    least 1) and 1e-4 relative; empty when they agree."""
    if sorted(expected) != sorted(got):
        return {"outputs": f"{sorted(expected)} != {sorted(got)}"}
    found = {}
    for name in expected:
        scale = max(1.0, float(np.abs(expected[name]).max()))
        try:
            np.testing.assert_allclose(got[name], expected[name], atol=atol * scale, rtol=1e-4)
        except AssertionError as error:
            found[name] = str(error)
    return found
'''

# Runs under another backend: `python there.py <folder> <reference backend> families|extras` (the two parts side by side).
THERE = COMMON + r'''
from tiny_models import family_names


def check_explanation(model, images, out):
    """`explain` gives the declared outputs, batch-first and finite, and the family's identities hold."""
    assert list(out) == list(model.explanation_outputs), (list(out), list(model.explanation_outputs))
    for name, value in out.items():
        value = np.asarray(value)
        assert value.ndim >= 1 and value.shape[0] == len(images), f"{name}: shape {value.shape} is not batch-first"
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), f"{name}: non-finite values"
    assert out["logits"].shape == (len(images), model.num_classes), out["logits"].shape
    predicted = model.predict(images, verbose=0)
    assert predicted.shape == (len(images), model.num_classes), predicted.shape
    errors = model.self_check_errors(images, out)
    assert errors == {}, f"self-checks failed: {errors} (all: {model.self_checks(images, out)})"


def run(family, folder, backend, reference, images, labels):
    sample = images[:EXPLAIN_COUNT]
    # 1. weights saved on the reference backend
    model = build(family)
    model.load_weights(str(folder / f"{reference}_{family}.weights.h5"))
    np.savez(folder / f"{backend}_from_{reference}_{family}.npz", **explain(model, sample))
    # 2. train a fresh model here with the family's defaults
    model = build(family, seed=1)
    model.compile()
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(images, labels, epochs=3, batch_size=20, verbose=0)
    losses = [float(v) for v in history.history["loss"]]
    after = model.get_weights()
    changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert np.isfinite(losses).all(), f"non-finite loss {losses}"
    assert any(changed), "training changed no weight"
    assert losses[-1] < losses[0] or sum(changed) > len(changed) // 2, f"loss {losses}, {sum(changed)}/{len(changed)} weights changed"
    out = model.explain(sample)
    check_explanation(model, sample, out)
    # 3. its files, for the TensorFlow process
    outputs = explain(model, sample)
    np.savez(folder / f"{backend}_{family}.npz", **outputs)
    model.save_weights(str(folder / f"{backend}_{family}.weights.h5"))
    model.save_preset(folder / f"{backend}_{family}_preset")
    model.save(str(folder / f"{backend}_{family}.keras"))  # with its compiled optimizer
    reloaded = keras.saving.load_model(str(folder / f"{backend}_{family}.keras"))
    assert reloaded.optimizer is not None, ".keras round trip lost the compiled optimizer"
    reloaded = explain(reloaded, sample)
    for name in outputs:
        np.testing.assert_allclose(reloaded[name], outputs[name], atol=1e-6, err_msg=f".keras round trip: {name}")
    return {"losses": losses, "changed": f"{sum(changed)}/{len(changed)}"}


def presets(folder, backend, reference, images):
    """Every shipped preset (weights trained elsewhere) loads by name and explains the samples.

    On JAX, a preset whose outputs differ from the reference backend's is explained once more with 64-bit
    floats enabled (see test_presets_explain_the_same_there).
    """
    import glasszoo

    names = glasszoo.list_models()
    widened = []
    for name in names:
        model = glasszoo.load(name)
        outputs = explain(model, images[:EXPLAIN_COUNT])
        np.savez(folder / f"{backend}_preset_{name}.npz", **outputs)
        with np.load(folder / f"{reference}_preset_{name}.npz") as expected:
            differ = differences(dict(expected), outputs)
        if differ and backend == "jax":
            import jax

            with jax.enable_x64(True):  # layers that ask for float64 get it (else JAX computes them in float32)
                np.savez(folder / f"{backend}_x64_preset_{name}.npz", **explain(model, images[:EXPLAIN_COUNT]))
            widened.append(name)
    return {"names": names, "x64": widened}


def family_checks(images, labels):
    """The `OTHER_BACKEND_CHECKS` of the families' own test files (tests/test_<family>_backends.py), run here."""
    import importlib
    import importlib.util

    results = {}
    for family in family_names():
        module = f"test_{family}_backends"
        if importlib.util.find_spec(module) is None:
            continue
        for name, check in getattr(importlib.import_module(module), "OTHER_BACKEND_CHECKS", {}).items():
            tick = time.time()
            try:
                result = check(images, labels)
            except Exception:
                result = {"error": traceback.format_exc()}
            results.setdefault(family, {})[name] = dict(result, seconds=round(time.time() - tick, 1))
    return results


def main(folder, reference, part):
    folder, backend = pathlib.Path(folder), keras.backend.backend()
    images, labels, _ = samples()
    if part == "families":
        cases = {family: (lambda family=family: run(family, folder, backend, reference, images, labels)) for family in family_names()}
    else:
        cases = {"presets": lambda: presets(folder, backend, reference, images), "family_checks": lambda: family_checks(images, labels)}
    results = {}
    for name, case in cases.items():
        tick = time.time()
        try:
            results[name] = case()
        except Exception:
            results[name] = {"error": traceback.format_exc()}
        results[name]["seconds"] = round(time.time() - tick, 1)
    (folder / f"{backend}_{part}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:4])
'''

# Runs in a fresh TensorFlow process: `python here.py <folder> <backend>...`; loads each backend's files once
# `<backend>.finished` exists (written by the test process when that backend's subprocess has ended).
HERE = r'''
import backend_guard

backend_guard.install()  # before TensorFlow: refuses (and records) torch and jax, which TensorFlow also probes for
''' + COMMON + r'''
import os


def outsiders():
    return [name for name in ("torch", "jax") if name in sys.modules]


def load_all(folder, backend, family, images):
    """Loads the files `backend` wrote for `family`; {kind: record}, explanations in npz files."""
    import glasszoo

    def weights():
        model = build(family, seed=7)
        model.load_weights(str(folder / f"{backend}_{family}.weights.h5"))
        return model

    def keras_file():
        model = keras.saving.load_model(str(folder / f"{backend}_{family}.keras"))  # config, weights and optimizer
        assert model.optimizer is not None, "the compiled optimizer was not restored"
        return model

    loaders = {
        "weights": weights,
        "keras_file": keras_file,
        "glasszoo_keras_file": lambda: glasszoo.load(folder / f"{backend}_{family}.keras"),
        "preset_folder": lambda: glasszoo.load(folder / f"{backend}_{family}_preset"),
    }
    result = {}
    for kind, loader in loaders.items():
        start, error = len(backend_guard.refused), None
        try:
            model = loader()
            np.savez(folder / f"here_{kind}_{backend}_{family}.npz", **explain(model, images[:EXPLAIN_COUNT]))
        except Exception:
            error = traceback.format_exc()
        # "torch" not in sys.modules and "jax" not in sys.modules, and nothing but TensorFlow's probes asked for them
        result[kind] = {"error": error, "violations": backend_guard.violations(start), "outsiders": outsiders()}
    return result


def main(folder, backends):
    from tiny_models import family_names

    folder = pathlib.Path(folder)
    assert keras.backend.backend() == "tensorflow", keras.backend.backend()
    images, _, _ = samples()
    results = {"at_start": backend_guard.violations()}
    pending, parent, give_up = list(backends), os.getppid(), time.time() + 1200
    while pending and os.getppid() == parent and time.time() < give_up:  # the test process may have died
        for backend in [b for b in pending if (folder / f"{b}.finished").exists()]:
            pending.remove(backend)
            if not (folder / f"{backend}_families.json").exists():
                continue  # that subprocess failed: its tests report it
            tick = time.time()
            results[backend] = {family: load_all(folder, backend, family, images) for family in family_names()}
            results["seconds"] = dict(results.get("seconds", {}), **{backend: round(time.time() - tick, 1)})
        time.sleep(0.2)
    results["optional_probes_refused"] = [list(probe) for probe in backend_guard.refused if backend_guard.is_optional_probe(probe[1])]
    (folder / "here.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
'''


def common():
    """COMMON's helpers in this process (COMMON imports Keras: on first use, not at collection)."""
    if "differences" not in _common:
        exec(compile(COMMON, "backend_checks_common", "exec"), _common)
    return _common


_common = {"__name__": "glasszoo_backend_checks"}


def preset_names():
    import glasszoo

    try:
        return glasszoo.list_models()
    except Exception:  # pragma: no cover
        return []


def prepare(folder, images):
    """Weights and explanation outputs of each family saved on this process's backend (untrained, seeded), and
    the explanation outputs of the shipped presets here."""
    import glasszoo
    import keras

    helpers, here = common(), keras.backend.backend()
    for family in family_names():
        model = helpers["build"](family)
        model.save_weights(str(folder / f"{here}_{family}.weights.h5"))
        np.savez(folder / f"{here}_{family}.npz", **helpers["explain"](model, images[:EXPLAIN_COUNT]))
    for name in preset_names():
        np.savez(folder / f"{here}_preset_{name}.npz", **helpers["explain"](glasszoo.load(name), images[:EXPLAIN_COUNT]))
    return folder


class Runs:
    """What the subprocesses wrote: `folder` and `results` (see `run`)."""

    def __init__(self, folder, results):
        self.folder, self.results = folder, results

    def part(self, backend, part="families"):
        """`backend`'s results of `part`; a skip (pytest) when it is not installed, the failure when it failed."""
        import pytest

        result = self.results[backend]
        if isinstance(result, str):
            pytest.skip(result)
        result = result[part]
        if isinstance(result, Exception):
            raise result
        return result

    def family(self, backend, family):
        """`backend`'s results of `family` (an AssertionError with its traceback when it failed)."""
        result = self.part(backend)[family]
        assert "error" not in result, f"{family} on {backend} (see test_backends.py::test_trains_predicts_and_explains):\n{result['error']}"
        return result

    def family_check(self, backend, family, name):
        """The result of `OTHER_BACKEND_CHECKS[name]` of tests/test_<family>_backends.py under `backend`."""
        checks = self.part(backend, "extras")["family_checks"]
        assert "error" not in checks, f"family checks on {backend}:\n{checks['error']}"
        result = checks.get(family, {}).get(name)
        assert result is not None, f"{name} of tests/test_{family}_backends.py did not run on {backend}"
        assert "error" not in result, f"{family}'s {name} on {backend}:\n{result['error']}"
        return result

    def here(self):
        """HERE's results (the failure when it failed)."""
        here = self.results.get("here")
        if isinstance(here, Exception):
            raise here
        return here


def npz(path):
    with np.load(path) as data:
        return dict(data)


def compare(expected, got, what, atol=1e-4):
    """Same float outputs: within `atol` (relative to the largest magnitude, at least 1) and 1e-4 relative."""
    found = common()["differences"](expected, got, atol=atol)
    assert not found, f"{what}:\n" + "\n".join(f"{name}: {text}" for name, text in found.items())


def _start(script, folder, arguments, env, name):
    log = open(folder / f"{name}.log", "w")
    process = subprocess.Popen([sys.executable, str(script), str(folder), *arguments], stdout=log,
                               stderr=subprocess.STDOUT, env=env, cwd=str(folder))
    return process, log


def _finish(process, log, deadline):
    try:
        code = process.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = "timeout"
    log.close()
    return code


def _failure(folder, name, code):
    tail = (folder / f"{name}.log").read_text()[-6000:]
    return RuntimeError(f"the {name} subprocess failed ({code}):\n{tail}")


def run(folder):
    """Runs THERE's two parts under each other installed backend and HERE on TensorFlow, all side by side.

    Returns `{backend: {part: results or an exception} or a skip reason, "here": results or an exception}`.
    """
    import importlib.util

    import keras

    here, started, results = keras.backend.backend(), {}, {}
    (folder / "there.py").write_text(THERE)
    (folder / "here.py").write_text(HERE)
    for backend, module in OTHER_BACKENDS.items():
        if backend == here:
            results[backend] = f"this process already runs on {backend}"
        elif importlib.util.find_spec(module) is None:  # finds it without importing it
            results[backend] = f"{module} is not installed (pip install -e '.[test]' installs it)"
        else:
            results[backend] = {}
            env = subprocess_env(KERAS_BACKEND=backend)
            if backend == "jax":  # CPU only, and quick XLA compiles: the tiny models are compile-bound
                env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=(env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip())
            for part in THERE_PARTS:
                started[backend, part] = _start(folder / "there.py", folder, [here, part], env, f"{backend}_{part}")
    deadline = time.time() + 600
    backends = sorted({backend for backend, _ in started})
    loader = None
    if backends:  # the TensorFlow loader starts now: its imports overlap the other backends' work
        loader = _start(folder / "here.py", folder, backends, subprocess_env(KERAS_BACKEND="tensorflow"), "here")
    while started:
        for (backend, part), (process, log) in list(started.items()):
            code = process.poll()
            if code is None and time.time() < deadline:
                continue
            if code is None:
                process.kill()
                process.wait()
                code = "timeout"
            log.close()
            del started[backend, part]
            if part == "families":  # HERE may load its files now
                (folder / f"{backend}.finished").write_text(str(code))
            report = folder / f"{backend}_{part}.json"
            ok = code == 0 and report.exists()
            results[backend][part] = json.loads(report.read_text()) if ok else _failure(folder, f"{backend}_{part}", code)
        time.sleep(0.2)
    if loader is not None:
        code = _finish(*loader, deadline + 300)
        report = folder / "here.json"
        results["here"] = json.loads(report.read_text()) if code == 0 and report.exists() else _failure(folder, "here", code)
    return Runs(folder, results)
