"""The tiny configuration of each family that the backend and distribution tests build (also in subprocesses)."""

import importlib

TINY = {
    "inam": ("glasszoo.zoo.inam:INAM", dict(num_kernels=12, kernel_size=5, tv_weight=0.01, ortho_weight=0.02)),
    "coda": ("glasszoo.zoo.coda:CoDA", dict(kernel_sizes=[3, 3, 3, 1], strides=[1, 2, 2, 1], filters=[6, 8, 8], ranks=[4, 6, 6, 6], temperature=10.0)),
    "cnn": ("glasszoo.zoo.cnn:GapCNN", dict(filters=(6, 8))),
    "protopnet": ("glasszoo.zoo.protopnet:ProtoPNet", dict(backbone_stages=[[8], [12]], prototype_channels=6, prototypes_per_class=2)),
    "prototypedl": ("glasszoo.zoo.prototypedl:PrototypeDL", dict(filters=(6, 6, 6, 3), num_prototypes=5)),
}


def build(family, seed=0, **overrides):
    """A seeded tiny `family` model for 28 x 28 x 1 images and 10 classes; `overrides` change constructor arguments."""
    import keras

    if family not in TINY:
        raise ValueError(family)
    keras.utils.set_random_seed(seed)
    path, config = TINY[family]
    module, name = path.split(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(num_classes=10, input_shape=(28, 28, 1), **dict(config, **overrides))


def subprocess_env(**variables):
    """`os.environ` for a quiet CPU-only test subprocess that can `import tiny_models`, plus `variables`."""
    import os

    tests = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="", **variables)
