"""Every family trains, predicts and explains on the JAX and PyTorch backends of Keras, and weights move between backends.

The test process runs on TensorFlow (conftest.py). One subprocess per other
backend (both side by side) runs `CHECKS` below for all five families: it
loads the weights this process saved and writes their explanation outputs
(compared here), then trains a fresh tiny model with the family's
`compile()` defaults (finite loss, weights change), checks `predict` and the
explanation invariants, and saves `.weights.h5` and `.keras` files, which
this process loads and compares. For ProtoPNet it also checks that the
cluster, separation and L1 terms reach the loss of compiled train and test
steps (`compute_loss` reads what `call` stashed), and runs a short
`ProtoPNetSchedule` (warm, joint, push, last layer) whose frozen parts must
stay bit-identical. The shipped presets load by name there and explain as here.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from tiny_models import subprocess_env

FAMILIES = ("inam", "coda", "cnn", "protopnet", "prototypedl")
OTHER_BACKENDS = {"jax": "jax", "torch": "torch"}  # KERAS_BACKEND -> module it needs

# Runs in a subprocess (`python script.py <folder> <reference backend>`) and, for its helpers, in this process.
CHECKS = r'''
import json, pathlib, sys, traceback

import keras
import numpy as np
from keras import ops

FAMILIES = ("inam", "coda", "cnn", "protopnet", "prototypedl")
EXPLAIN_COUNT = 8


def build(family, seed=0):
    """The tiny configuration of each family's tests, seeded (tests/tiny_models.py)."""
    from tiny_models import build as build_tiny

    return build_tiny(family, seed)


def explain(model, images):
    """The float explanation outputs (what is compared across backends)."""
    return {k: np.asarray(v, "float32") for k, v in model.explain(images).items() if np.asarray(v).dtype.kind == "f"}


def check_invariants(family, model, images, out):
    """The family's explanation invariants (AssertionError when one fails)."""
    def close(a, b, what):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4, err_msg=what)

    logits = out["logits"]
    assert all(np.isfinite(v).all() for v in out.values() if np.asarray(v).dtype.kind == "f"), "non-finite explanation"
    close(model.predict(images, verbose=0), logits, "predict = explain logits")
    if family == "inam":
        close(out["contributions"].sum(1) + ops.convert_to_numpy(model.head.bias), logits, "INAM: contributions + bias")
        assert out["decision_images"].shape == (len(images), 10, 28, 28, 1)
    elif family == "coda":
        from glasszoo.layers.temperature_head import PRIOR_BIAS
        chosen = logits[np.arange(len(images)), out["target"]]
        close(out["contributions"].sum((1, 2)) / model.temperature + PRIOR_BIAS, chosen, "CoDA completeness")
    elif family == "cnn":
        maps, cnn_logits = model.feature_maps_and_logits(ops.convert_to_tensor(images))
        maps, cnn_logits = ops.convert_to_numpy(maps), ops.convert_to_numpy(cnn_logits)
        classifier = model.get_layer("classifier")
        kernel, bias = ops.convert_to_numpy(classifier.kernel), ops.convert_to_numpy(classifier.bias)
        predicted = logits.argmax(-1)
        cam = np.einsum("bhwc,cb->bhw", maps, kernel[:, predicted])
        close(cam.mean((1, 2)) + bias[predicted], logits[np.arange(len(images)), predicted], "CNN: CAM mean = logit - bias")
        assert out["class_activation_map"].shape == (len(images), 28, 28)
    elif family == "protopnet":
        close(out["prototype_contributions"].sum(1), logits, "ProtoPNet: contributions summed over prototypes")
        close(out["prototype_similarity"] @ ops.convert_to_numpy(model.last_layer.kernel), logits, "ProtoPNet: similarity @ W")
        assert out["upsampled_similarity_maps"].shape == (len(images), 28, 28, 20)
    elif family == "prototypedl":
        close(out["class_evidence"].sum(1), logits, "PrototypeDL: class evidence summed")
        assert out["reconstruction"].shape == (len(images), 28, 28, 1)


def part_weights(model):
    return {part: [w.copy() for w in getattr(model, part).get_weights()] for part in ("backbone", "add_on", "prototype_layer", "last_layer")}


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def protopnet_schedule(images, labels):
    """Warm 1, joint 1, last layer 1 epoch (2 steps each) with a push: frozen parts stay bit-identical."""
    from glasszoo.zoo.protopnet_schedule import ProtoPNetSchedule

    model = build("protopnet", seed=5)
    model.compile()
    schedule = ProtoPNetSchedule(images, labels, warm_epochs=1, joint_epochs=1, last_layer_epochs=1, cycles=1)
    snapshots = [part_weights(model)]

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(part_weights(model))

    history = model.fit(images[:20], labels[:20], epochs=schedule.total_epochs, batch_size=10,
                        callbacks=[schedule, Snapshot()], verbose=0)
    start, warm, joint, last = snapshots
    assert np.isfinite(history.history["loss"]).all(), history.history["loss"]
    # warm-up: backbone (weights and BatchNorm statistics) and last layer frozen; add-on and prototypes train
    assert same(start["backbone"], warm["backbone"]), "warm-up changed the backbone"
    assert same(start["last_layer"], warm["last_layer"]), "warm-up changed the last layer"
    assert not same(start["add_on"], warm["add_on"]), "warm-up left the add-on layers unchanged"
    assert not same(start["prototype_layer"], warm["prototype_layer"]), "warm-up left the prototypes unchanged"
    # joint: last layer frozen, the rest trains
    assert same(warm["last_layer"], joint["last_layer"]), "joint stage changed the last layer"
    assert not same(warm["backbone"], joint["backbone"]), "joint stage left the backbone unchanged"
    # push + last-layer stage: only the last layer trains; the prototypes stay the pushed patches
    for part in ("backbone", "add_on"):
        assert same(joint[part], last[part]), f"last-layer stage changed {part}"
    assert not same(joint["last_layer"], last["last_layer"]), "last-layer stage left the last layer unchanged"
    provenance = model.prototype_provenance
    assert provenance is not None and schedule.pushed
    latent, _ = model.latent_and_distances(provenance["source_image"])
    rows, cols = provenance["patch_position"][:, 0], provenance["patch_position"][:, 1]
    patches = latent[np.arange(len(rows)), rows, cols]
    prototypes = ops.convert_to_numpy(model.prototype_layer.prototypes)[:, 0, 0, :]
    np.testing.assert_allclose(prototypes, patches, atol=1e-5, err_msg="prototypes moved away from their pushed patches")
    assert np.all(provenance["prototype_class"] == labels[provenance["source_index"]])
    return {"losses": [float(v) for v in history.history["loss"]], "stages": history.history["stage"]}


def protopnet_loss_in_step(images, labels):
    """The cluster, separation and L1 terms (compute_loss reads the distances `call` stashed) in compiled steps."""
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
    return {"expected": float(expected), "evaluate": float(evaluated), "train_step": float(trained)}


def run(family, folder, backend, reference, images, labels):
    result = {}
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
    if family == "protopnet":  # the joint-stage default rates keep the last layer fixed
        from glasszoo.zoo.protopnet import class_connection
        np.testing.assert_array_equal(ops.convert_to_numpy(model.last_layer.kernel), class_connection(model.prototype_class, 10))
    out = model.explain(sample)
    check_invariants(family, model, sample, out)
    model.save_weights(str(folder / f"{backend}_{family}.weights.h5"))
    outputs = explain(model, sample)
    np.savez(folder / f"{backend}_{family}.npz", **outputs)
    model.save(str(folder / f"{backend}_{family}.keras"))  # with its compiled optimizer
    reloaded = explain(keras.saving.load_model(str(folder / f"{backend}_{family}.keras")), sample)
    for name in outputs:
        np.testing.assert_allclose(reloaded[name], outputs[name], atol=1e-6, err_msg=f".keras round trip: {name}")
    result.update(losses=losses, changed=f"{sum(changed)}/{len(changed)}")
    if family == "protopnet":
        result["loss_in_step"] = protopnet_loss_in_step(images, labels)
        result["schedule"] = protopnet_schedule(images, labels)
    return result


def presets(folder, backend, images):
    """Every shipped preset (weights trained elsewhere) loads by name and explains the samples."""
    import glasszoo

    names = glasszoo.list_models()
    for name in names:
        np.savez(folder / f"{backend}_preset_{name}.npz", **explain(glasszoo.load(name), images[:EXPLAIN_COUNT]))
    return {"names": names}


def main(folder, reference):
    from glasszoo.data.samples import load_samples

    folder, backend = pathlib.Path(folder), keras.backend.backend()
    images, labels, _ = load_samples()
    results = {}
    try:
        results["presets"] = presets(folder, backend, images)
    except Exception:
        results["presets"] = {"error": traceback.format_exc()}
    for family in FAMILIES:
        try:
            results[family] = run(family, folder, backend, reference, images, labels)
        except Exception:
            results[family] = {"error": traceback.format_exc()}
    (folder / f"{backend}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''


def _checks():
    namespace = {"__name__": "glasszoo_backend_checks"}
    exec(compile(CHECKS, "backend_checks", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def checks():
    return _checks()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, checks, samples):
    """Weights and explanation outputs of each family saved on this process's backend (untrained, seeded)."""
    import keras

    path = tmp_path_factory.mktemp("backends")
    here = keras.backend.backend()
    for family in FAMILIES:
        model = checks["build"](family)
        model.save_weights(str(path / f"{here}_{family}.weights.h5"))
        np.savez(path / f"{here}_{family}.npz", **checks["explain"](model, samples[0][: checks["EXPLAIN_COUNT"]]))
    return path


@pytest.fixture(scope="module")
def runs(folder):
    """Runs CHECKS under each other installed backend, the subprocesses side by side; backend -> results or error."""
    import importlib.util

    import keras

    here, started, results = keras.backend.backend(), {}, {}
    script = folder / "backend_checks.py"
    script.write_text(CHECKS)
    for backend, module in OTHER_BACKENDS.items():
        if backend == here:
            results[backend] = f"this process already runs on {backend}"
        elif importlib.util.find_spec(module) is None:
            results[backend] = f"{module} is not installed (pip install -e '.[test]' installs it)"
        else:
            env = subprocess_env(KERAS_BACKEND=backend)
            if backend == "jax":  # CPU only, and quick XLA compiles: the tiny models are compile-bound
                env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=(env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip())
            log = open(folder / f"{backend}.log", "w")
            started[backend] = (subprocess.Popen([sys.executable, str(script), str(folder), here], stdout=log,
                                                 stderr=subprocess.STDOUT, env=env, cwd=str(folder)), log)
    for backend, (process, log) in started.items():
        try:
            returncode = process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = "timeout"
        log.close()
        report = folder / f"{backend}.json"
        if returncode != 0 or not report.exists():
            tail = (folder / f"{backend}.log").read_text()[-6000:]
            results[backend] = RuntimeError(f"the {backend} subprocess failed ({returncode}):\n{tail}")
        else:
            results[backend] = json.loads(report.read_text())
    return results


def backend_run(backend, runs):
    """The per-family results of `backend`; skips when it is not installed."""
    result = runs[backend]
    if isinstance(result, str):
        pytest.skip(result)
    if isinstance(result, Exception):
        raise result
    return result


def _compare(expected, got, what):
    assert sorted(expected) == sorted(got), what
    for name in expected:
        scale = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(got[name], expected[name], atol=1e-4 * scale, rtol=1e-4, err_msg=f"{what}: {name}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_trains_predicts_and_explains(backend, family, runs):
    """fit (finite loss, weights change), predict, explain and its invariants, save_weights: under `backend`."""
    result = backend_run(backend, runs)[family]
    assert "error" not in result, f"{family} on {backend}:\n{result['error']}"
    assert np.isfinite(result["losses"]).all()
    if family == "protopnet":
        assert result["schedule"]["stages"] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_weights_from_this_backend_load_there(backend, family, folder, runs):
    """Weights saved here (TensorFlow) give the same explanation outputs under `backend`."""
    import keras

    backend_run(backend, runs)
    here = keras.backend.backend()
    produced = folder / f"{backend}_from_{here}_{family}.npz"
    assert produced.exists(), f"{backend} did not load the {here} weights of {family} (see test_trains_predicts_and_explains)"
    with np.load(folder / f"{here}_{family}.npz") as expected, np.load(produced) as got:
        _compare(dict(expected), dict(got), f"{family}: {here} weights under {backend}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_weights_from_there_load_here(backend, family, folder, runs, checks, samples):
    """Weights trained under `backend` give the same explanation outputs here (TensorFlow)."""
    backend_run(backend, runs)
    weights = folder / f"{backend}_{family}.weights.h5"
    assert weights.exists(), f"{backend} saved no {family} weights (see test_trains_predicts_and_explains)"
    model = checks["build"](family, seed=7)
    model.load_weights(str(weights))
    got = checks["explain"](model, samples[0][: checks["EXPLAIN_COUNT"]])
    with np.load(folder / f"{backend}_{family}.npz") as expected:
        expected = dict(expected)
    _compare(expected, got, f"{family}: {backend} weights here")
    import keras

    whole = keras.saving.load_model(str(folder / f"{backend}_{family}.keras"))  # config, weights and optimizer
    _compare(expected, checks["explain"](whole, samples[0][: checks["EXPLAIN_COUNT"]]), f"{family}: {backend} .keras here")


# ProtoPNet similarities near a pushed prototype have a slope of ~-1/(d + 1e-4): the prototype layer computes
# them in float64, which JAX gives only with jax_enable_x64 (else float32: differences up to ~1e-2 there)
PRESET_TOLERANCE = {("jax", "protopnet"): 2e-2}


def _presets():
    import glasszoo

    try:
        return glasszoo.list_models()
    except Exception:  # pragma: no cover
        return []


@pytest.mark.parametrize("name", _presets())
@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_presets_explain_the_same_there(backend, name, folder, runs, samples):
    """The shipped presets load by name under `backend` and explain as here."""
    import glasszoo

    results = backend_run(backend, runs)["presets"]
    assert "error" not in results, f"presets on {backend}:\n{results['error']}"
    model = glasszoo.load(name)
    expected = {k: v for k, v in model.explain(samples[0][:8]).items() if np.asarray(v).dtype.kind == "f"}
    with np.load(folder / f"{backend}_preset_{name}.npz") as got:
        got = dict(got)
    tolerance = PRESET_TOLERANCE.get((backend, model.family))
    if tolerance is None:
        _compare(expected, got, f"preset {name} under {backend}")
    else:
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], atol=tolerance, err_msg=f"preset {name} under {backend}: {key}")
    np.testing.assert_array_equal(got["logits"].argmax(-1), expected["logits"].argmax(-1))
