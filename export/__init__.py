"""ONNX export (TensorFlow backend) and serving (onnxruntime + NumPy only).

`OnnxModel` never imports TensorFlow or Keras; `to_onnx` imports them when called.
"""

from glasszoo.export.runtime import OnnxModel


def to_onnx(model, path, opset=None, model_name=None, sidecar=True, precision="fp32", calibration=None, check_drift=True):
    """See `glasszoo.export.onnx_export.to_onnx`."""
    from glasszoo.export.onnx_export import to_onnx as _to_onnx

    return _to_onnx(model, path, opset=opset, model_name=model_name, sidecar=sidecar, precision=precision, calibration=calibration, check_drift=check_drift)


__all__ = ["OnnxModel", "to_onnx"]
