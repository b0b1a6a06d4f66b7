import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

# -- one backend per process --------------------------------------------------------------------
# PyTorch (with triton) or JAX imported into a process that holds TensorFlow can crash it (SIGSEGV): whatever
# needs another Keras backend runs in its own subprocess (tests/test_backends.py). This TensorFlow test process
# refuses `import torch` and `import jax` (tests/backend_guard.py: an ImportError that says why; the optional
# probes of TensorFlow and Keras then run on without them), a test during which one of them was imported or
# asked for errors at teardown, and the run fails at its end if either happened at any time (collection too).
import backend_guard  # noqa: E402  (tests/ is on sys.path: pytest inserts this file's folder)

PROCESS_BACKEND = os.environ["KERAS_BACKEND"]  # as the process starts (tests change the variable for subprocesses only)
GUARDED = PROCESS_BACKEND == "tensorflow"
if GUARDED:
    backend_guard.install()
_backend_violations = []  # messages for the summary
_reported = set()  # ("refused", index) and ("present", module) already reported by a test


def _unreported_violations():
    """Refused imports (not optional probes) and blocked modules present that no test has reported yet."""
    found = []
    for index, (name, importer) in enumerate(backend_guard.refused):
        if ("refused", index) not in _reported and not backend_guard.is_optional_probe(importer):
            _reported.add(("refused", index))
            found.append(f"{importer} tried to import {name}")
    for name in backend_guard.present():
        if ("present", name) not in _reported:
            _reported.add(("present", name))
            found.append(f"{name} is imported")
    return found


@pytest.fixture(autouse=True)
def _no_other_backend_in_this_process(request):
    """Errors (at teardown) the test during which torch or jax was imported or asked for in this TensorFlow process."""
    if GUARDED:
        earlier = _unreported_violations()  # from collection or wider fixtures: reported at the end of the run
        if earlier:
            _backend_violations.append(f"outside a test (collection or a fixture), before {request.node.nodeid}: {'; '.join(earlier)}")
    yield
    found = _unreported_violations() if GUARDED else []
    if found:
        message = f"{request.node.nodeid}: {'; '.join(found)} in the TensorFlow test process"
        _backend_violations.append(message)
        pytest.fail(message + ": run what needs another Keras backend in a subprocess (see tests/backend_guard.py)", pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    """Fails the run if torch or jax was imported into, or asked for in, this TensorFlow process at any time."""
    found = _unreported_violations() if GUARDED else []
    if found:
        _backend_violations.append(f"outside a test (collection or a fixture): {'; '.join(found)}")
    if _backend_violations and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _backend_violations:
        terminalreporter.section("torch / jax in the TensorFlow test process", sep="=", red=True, bold=True)
        for violation in _backend_violations:
            terminalreporter.write_line(f"FAILED {violation}", red=True, bold=True)


@pytest.fixture(scope="session")
def fashion_mnist():
    """The full Fashion-MNIST (local idx files); skipped where no local copy exists."""
    from glasszoo.data import DatasetUnavailable
    from glasszoo.data.datasets import _fashion_mnist_local, load_fashion_mnist

    arrays, _ = _fashion_mnist_local()
    if arrays is None:
        pytest.skip("Fashion-MNIST idx files not installed (apt-get install dataset-fashion-mnist)")
    try:
        return load_fashion_mnist()
    except DatasetUnavailable as error:  # pragma: no cover
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def samples():
    from glasszoo.data.samples import load_samples

    return load_samples()


@pytest.fixture(scope="session")
def backend_runs(tmp_path_factory, samples):
    """The subprocesses on the other Keras backends (tests/other_backends.py), run once for the whole session:
    tests/test_backends.py and the families' tests/test_<family>_backends.py read their results."""
    import other_backends

    folder = other_backends.prepare(tmp_path_factory.mktemp("backends"), samples[0])
    return other_backends.run(folder)


@pytest.fixture(scope="session")
def distribution_runs(tmp_path_factory):
    """The data-parallel subprocesses (tests/distributed_runs.py), run once for the whole session:
    tests/test_distributed.py and the families' tests/test_<family>_distributed.py read their results."""
    import distributed_runs

    return distributed_runs.run(tmp_path_factory.mktemp("distributed"))


@pytest.fixture
def tiny_model():
    """`tiny_model(family, seed=0, **overrides)`: the compiled tiny model of a registered family (tests/tiny_models.py)."""
    from tiny_models import build

    def make(family, seed=0, **overrides):
        model = build(family, seed, **overrides)
        model.compile()
        return model

    return make


@pytest.fixture
def tiny_inam(tiny_model):
    return tiny_model("inam", seed=1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny_coda(tiny_model):
    return tiny_model("coda", seed=2)
