"""glasszoo: inherently interpretable image classifiers for Keras 3, with ONNX explanations.

Keras and TensorFlow are imported only when a model is built or exported, so
serving an ONNX export (`glasszoo.export.OnnxModel`) needs onnxruntime and
NumPy alone. Once Keras is imported (before or after glasszoo),
`keras.saving.load_model("model.keras")` finds the zoo's classes.

Example:
>>> import glasszoo
>>> glasszoo.list_models()  # doctest: +SKIP
['inam_fashion_mnist', 'inam_mnist']
>>> model = glasszoo.load("inam_fashion_mnist")  # doctest: +SKIP
>>> explanation = model.explain(images)  # doctest: +SKIP
"""

__version__ = "0.1.0"

import importlib

from glasszoo.zoo.families import Family, families, register_family
from glasszoo.zoo.presets import CorruptedWeights
from glasszoo.zoo.registry import UnknownModel, list_models, load, model_info

__all__ = [
    "CorruptedWeights",
    "Family",
    "UnknownModel",
    "__version__",
    "families",
    "list_models",
    "load",
    "model_info",
    "register_family",
]

_SUBPACKAGES = ("data", "explain", "export", "layers", "zoo")


def __getattr__(name):
    """`glasszoo.export`, `glasszoo.layers`, ... on first use (none of them is imported by `import glasszoo`)."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"glasszoo.{name}")
    raise AttributeError(f"module 'glasszoo' has no attribute {name!r}")


from glasszoo.zoo.families import register_keras_classes_when_keras_is_imported  # noqa: E402

register_keras_classes_when_keras_is_imported()
