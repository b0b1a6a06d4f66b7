"""Every registered family trains, predicts and explains on the JAX and PyTorch backends of Keras, and its files move between backends.

The test process runs on TensorFlow (conftest.py) and never imports PyTorch or
JAX: PyTorch (with triton) next to TensorFlow in one process can crash it, so
conftest.py refuses both there and fails the run if either is imported or
asked for (tests/backend_guard.py). Every check that needs another backend
runs in a subprocess: tests/other_backends.py describes them (conftest.py's
session fixture `backend_runs` runs them once). Here:

- `test_trains_predicts_and_explains`: under JAX and PyTorch, every family
  trains with its `compile()` defaults (finite loss, weights change),
  predicts and explains (exactly the declared outputs, batch-first, finite,
  `self_check_errors() == {}`), and saves and reloads a `.keras` file;
- `test_weights_from_this_backend_load_there`: weights saved here explain
  the same there;
- `test_files_from_there_load_here`: the weights, the `.keras` file (with
  `keras.saving.load_model` and `glasszoo.load`) and the preset folder saved
  there load in a fresh TensorFlow process without importing torch or jax,
  and explain as they did there;
- `test_keras_files_name_no_backend_module`: those `.keras` files name
  public Keras modules only;
- `test_presets_explain_the_same_there`: the shipped presets explain there
  as here.

Family-specific checks on the other backends (ProtoPNet's schedule and its
extra loss terms in compiled steps) live in the families' test files
(tests/test_<family>_backends.py: `OTHER_BACKEND_CHECKS`).
"""

import zipfile

import numpy as np
import pytest
from other_backends import LOADED_KINDS, OTHER_BACKENDS, compare, npz, preset_names
from tiny_models import family_names

FAMILIES = family_names()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_trains_predicts_and_explains(backend, family, backend_runs):
    """fit (finite loss, weights change), predict, explain (declared outputs, batch-first, self-checks), save: under `backend`."""
    result = backend_runs.family(backend, family)
    assert np.isfinite(result["losses"]).all()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_weights_from_this_backend_load_there(backend, family, backend_runs):
    """Weights saved here (TensorFlow) give the same explanation outputs under `backend`."""
    import keras

    backend_runs.part(backend)
    here, folder = keras.backend.backend(), backend_runs.folder
    produced = folder / f"{backend}_from_{here}_{family}.npz"
    assert produced.exists(), f"{backend} did not load the {here} weights of {family} (see test_trains_predicts_and_explains)"
    compare(npz(folder / f"{here}_{family}.npz"), npz(produced), f"{family}: {here} weights under {backend}")


def _loaded_here(backend, family, kind, backend_runs):
    """HERE's record of loading `backend`'s `kind` file of `family`: asserts it loaded without importing torch or jax."""
    backend_runs.family(backend, family)
    here = backend_runs.here()
    assert here["at_start"] == [], f"the TensorFlow loader started with {here['at_start']}"
    record = here[backend][family][kind]
    assert record["violations"] == [] and record["outsiders"] == [], (
        f"loading {backend}'s {kind} of {family} in a TensorFlow process: {record['violations']}, in sys.modules: {record['outsiders']}"
    )
    assert record["error"] is None, f"TensorFlow could not load {backend}'s {kind} of {family}:\n{record['error']}"


@pytest.mark.parametrize("kind", LOADED_KINDS)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_files_from_there_load_here(backend, family, kind, backend_runs):
    """`backend`'s weights, `.keras` file (keras and glasszoo loaders) and preset folder load in a fresh TensorFlow
    process without importing torch or jax, and explain as `backend` did."""
    _loaded_here(backend, family, kind, backend_runs)
    folder = backend_runs.folder
    compare(npz(folder / f"{backend}_{family}.npz"), npz(folder / f"here_{kind}_{backend}_{family}.npz"), f"{family}: {backend} {kind} under TensorFlow")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_keras_files_name_no_backend_module(backend, family, backend_runs):
    """A `.keras` file saved on `backend` names public Keras modules only (loading it elsewhere imports no backend)."""
    backend_runs.family(backend, family)
    with zipfile.ZipFile(backend_runs.folder / f"{backend}_{family}.keras") as archive:
        config = archive.read("config.json").decode()
    assert "keras.src.backend." not in config, [line for line in config.split('"') if "keras.src.backend." in line]


# Some layers compute in float64 where the backend can (ProtoPNet's similarities near a pushed prototype have a
# slope of ~-1/(d + 1e-4), reproducible only in float64); JAX gives float64 only with x64 enabled and computes
# those layers in float32 by default. So a preset whose JAX outputs differ from here is explained there once more
# with x64: then it must match here exactly (1e-4), and its default outputs within FLOAT32_FALLBACK_TOLERANCE
# (differences of ~1e-2 measured) with the same predicted classes.
FLOAT32_FALLBACK_TOLERANCE = 2e-2


@pytest.mark.parametrize("name", preset_names())
@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_presets_explain_the_same_there(backend, name, backend_runs):
    """The shipped presets load by name under `backend` and explain as here."""
    import keras

    results = backend_runs.part(backend, "extras")["presets"]
    assert "error" not in results, f"presets on {backend}:\n{results['error']}"
    folder = backend_runs.folder
    expected = npz(folder / f"{keras.backend.backend()}_preset_{name}.npz")
    got = npz(folder / f"{backend}_preset_{name}.npz")
    wide = folder / f"{backend}_x64_preset_{name}.npz"
    if wide.exists():  # it differed: it computes in float64 where it can
        compare(expected, npz(wide), f"preset {name} under {backend} with 64-bit floats")
        compare(expected, got, f"preset {name} under {backend} (float32 fallback)", atol=FLOAT32_FALLBACK_TOLERANCE)
    else:
        compare(expected, got, f"preset {name} under {backend}")
    np.testing.assert_array_equal(got["logits"].argmax(-1), expected["logits"].argmax(-1))
