"""Tiny models of every registered family (their records' `test_config`), also built in test subprocesses."""

from glasszoo.zoo.families import families


def family_names():
    """The registered families, sorted."""
    return list(families())


def build(family, seed=0, **overrides):
    """A seeded tiny `family` model for 28 x 28 x 1 images and 10 classes; `overrides` change constructor arguments."""
    import keras

    record = families()[family]
    keras.utils.set_random_seed(seed)
    arguments = dict({"num_classes": 10, "input_shape": (28, 28, 1)}, **record.test_config)
    return record.model_class()(**dict(arguments, **overrides))


def subprocess_env(**variables):
    """`os.environ` for a quiet CPU-only test subprocess that can `import tiny_models`, plus `variables`."""
    import os

    tests = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="", **variables)
