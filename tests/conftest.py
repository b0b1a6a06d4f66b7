import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest


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


@pytest.fixture
def tiny_inam():
    import keras
    from glasszoo.zoo.inam import INAM

    keras.utils.set_random_seed(1)
    model = INAM(num_classes=10, input_shape=(28, 28, 1), num_kernels=12, kernel_size=5, tv_weight=0.01, ortho_weight=0.02)
    model.compile()
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny_coda():
    import keras
    from glasszoo.zoo.coda import CoDA

    keras.utils.set_random_seed(2)
    model = CoDA(
        num_classes=10, input_shape=(28, 28, 1), kernel_sizes=[3, 3, 3, 1], strides=[1, 2, 2, 1],
        filters=[6, 8, 8], ranks=[4, 6, 6, 6], temperature=10.0,
    )
    model.compile()
    return model
