"""glasszoo: inherently interpretable image classifiers for Keras 3, with ONNX explanations.

Keras and TensorFlow are imported only when a model is built or exported, so
serving an ONNX export (`glasszoo.export.OnnxModel`) needs onnxruntime and
NumPy alone.

Example:
>>> import glasszoo
>>> glasszoo.list_models()  # doctest: +SKIP
['inam_fashion_mnist', 'inam_mnist']
>>> model = glasszoo.load("inam_fashion_mnist")  # doctest: +SKIP
>>> explanation = model.explain(images)  # doctest: +SKIP
"""

__version__ = "0.1.0"

from glasszoo.zoo.presets import CorruptedWeights
from glasszoo.zoo.registry import UnknownModel, list_models, load, model_info

__all__ = ["CorruptedWeights", "UnknownModel", "__version__", "list_models", "load", "model_info"]
