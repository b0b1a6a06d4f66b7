"""Keeps PyTorch and JAX out of a TensorFlow process: the test process (conftest.py) and TensorFlow test subprocesses.

PyTorch (with triton) imported next to TensorFlow can crash the process
(SIGSEGV), so checks on other Keras backends run in subprocesses. `install()`
puts a finder first on `sys.meta_path` that refuses to import `torch` and
`jax`: the import raises an ImportError that says why, and is recorded in
`refused` with the module that asked. TensorFlow and Keras probe for JAX
when it is installed (`tensorflow/lite/python/util.py` and
`keras/src/callbacks/orbax_checkpoint.py`: `try: import jax ... except
ImportError`); they are refused too, but such optional probes are not
`violations()`. A Keras backend package of another backend
(`keras.src.backend.torch`, imported when a file names one of its classes)
asking for its framework is a violation. `importlib.util.find_spec` still
finds an installed backend (the tests decide from it whether to start a
subprocess).

Example:
>>> import backend_guard
>>> backend_guard.install()
>>> import keras  # TensorFlow backend; `import torch` now raises ImportError
>>> backend_guard.violations()
[]
"""

import importlib.abc
import importlib.machinery
import sys

BLOCKED = ("torch", "jax")
PROBING_PACKAGES = ("tensorflow", "keras")  # their optional imports of a blocked module fall back without it
OTHER_BACKEND_PACKAGES = tuple(f"keras.src.backend.{name}" for name in BLOCKED)  # never optional

refused = []  # (module, importer) of every refused import


def _importer():
    """The module that runs the import statement (the first frame outside importlib and this module)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        machinery = name.startswith("importlib") or name == __name__ or frame.f_code.co_filename.startswith("<frozen importlib")
        if not machinery:
            return name or frame.f_code.co_filename
        frame = frame.f_back
    return "?"


def is_optional_probe(importer):
    """True for an import by TensorFlow or Keras code that runs on without the module."""
    if importer == "keras.src.backend" or importer.startswith(tuple(p + "." for p in OTHER_BACKEND_PACKAGES)) or importer in OTHER_BACKEND_PACKAGES:
        return False
    return importer.split(".")[0] in PROBING_PACKAGES


class _RefusingLoader(importlib.abc.Loader):
    def __init__(self, importer):
        self.importer = importer

    def create_module(self, spec):
        return None

    def exec_module(self, module):  # an import (a find_spec alone only looks)
        refused.append((module.__name__, self.importer))
        raise ImportError(
            f"{module.__name__} may not be imported into this TensorFlow process (asked by {self.importer}): "
            "run what needs another Keras backend in a subprocess (see tests/backend_guard.py)",
            name=module.__name__,
        )


class _Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in BLOCKED:
            return None  # submodules need their top-level package first
        real = importlib.machinery.PathFinder.find_spec(fullname, path)
        if real is None:
            return None  # not installed: the ordinary ModuleNotFoundError
        return importlib.machinery.ModuleSpec(fullname, _RefusingLoader(_importer()), origin=real.origin)


_guard = _Guard()


def install():
    """Refuses `torch` and `jax` from now on (idempotent). Call before anything imports TensorFlow."""
    if _guard not in sys.meta_path:
        sys.meta_path.insert(0, _guard)


def present():
    """The blocked modules in `sys.modules` (imported before `install()`, or around the finder)."""
    return [name for name in BLOCKED if name in sys.modules]


def violations(since=0):
    """Descriptions of what broke the rule: blocked modules present, refused imports (after the first `since`) that were not optional probes."""
    found = [f"{name} is imported" for name in present()]
    found += [f"{importer} tried to import {name}" for name, importer in refused[since:] if not is_optional_probe(importer)]
    return found
