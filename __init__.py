"""glasszoo: inherently interpretable image classifiers for Keras 3, with ONNX explanations."""
__version__ = "0.1.0"
