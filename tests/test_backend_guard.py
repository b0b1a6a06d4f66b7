"""The TensorFlow test process refuses torch and jax, and fails the run for that reason alone (conftest.py, backend_guard.py).

Each case runs pytest in a subprocess on a folder holding copies of
conftest.py and backend_guard.py and a small test file.
"""

import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest
from tiny_models import subprocess_env

TESTS = pathlib.Path(__file__).resolve().parent

CLEAN = r'''
import importlib.util
import sys

import backend_guard

PROBE = "try:\n    from jax import jit\nexcept ImportError:\n    jit = None\n"


def test_optional_probes_of_tensorflow_and_keras_are_refused_but_allowed():
    # what tensorflow/lite/python/util.py and keras/src/callbacks/orbax_checkpoint.py do when they are imported
    # (the whole suite imports them for real under this guard)
    for module in ("tensorflow.lite.python.util", "keras.src.callbacks.orbax_checkpoint"):
        namespace = {"__name__": module}
        exec(PROBE, namespace)
        assert namespace["jit"] is None
    assert [importer for _, importer in backend_guard.refused] == ["tensorflow.lite.python.util", "keras.src.callbacks.orbax_checkpoint"]
    assert "jax" not in sys.modules and backend_guard.violations() == []


def test_a_keras_backend_package_of_another_backend_is_no_optional_probe():
    assert not backend_guard.is_optional_probe("keras.src.backend.torch.core")
    assert not backend_guard.is_optional_probe("keras.src.backend")
    assert backend_guard.is_optional_probe("keras.src.callbacks.orbax_checkpoint")


def test_find_spec_still_finds_the_other_backends():
    assert all(importlib.util.find_spec(name) is not None for name in ("jax", "torch"))
'''

VIOLATING = r'''
import sys
import types

import pytest


def test_imports_torch():
    import torch  # noqa: F401


def test_swallows_a_refused_jax():
    try:
        import jax  # noqa: F401
    except ImportError:
        pass


def test_clean():
    pass


@pytest.fixture(scope="module")
def sneaks_jax_in():
    yield
    sys.modules["jax"] = types.ModuleType("jax")  # around the finder, at the module's teardown: outside any test


def test_uses_a_fixture_that_sneaks_jax_in(sneaks_jax_in):
    pass
'''


def _run(tmp_path, source):
    for name in ("conftest.py", "backend_guard.py"):
        shutil.copy(TESTS / name, tmp_path / name)
    (tmp_path / "test_case.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = subprocess_env(KERAS_BACKEND="tensorflow")
    env.pop("PYTHONPATH")  # the copies only
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "test_case.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in ("jax", "torch")), reason="needs jax and torch installed")
def test_optional_probes_of_tensorflow_and_keras_pass(tmp_path):
    result = _run(tmp_path, CLEAN)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout


@pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in ("jax", "torch")), reason="needs jax and torch installed")
def test_imports_of_torch_or_jax_fail_the_test_and_the_run(tmp_path):
    result = _run(tmp_path, VIOLATING)
    output = result.stdout
    assert result.returncode == 1, output[-4000:] + result.stderr[-2000:]
    assert "torch may not be imported into this TensorFlow process (asked by test_case)" in output
    assert "ERROR test_case.py::test_imports_torch" in output or "FAILED test_case.py::test_imports_torch" in output
    assert "test_case.py::test_swallows_a_refused_jax: test_case tried to import jax" in output
    assert "PASSED test_case.py::test_clean" in output and "ERROR test_case.py::test_clean" not in output
    summary = output[output.index("torch / jax in the TensorFlow test process"):]
    assert "test_imports_torch: test_case tried to import torch" in summary
    assert "outside a test (collection or a fixture): jax is imported" in summary  # the module fixture's sneak, at the end
