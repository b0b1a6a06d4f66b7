"""HTTP serving of ONNX exports: `glasszoo serve MODEL.onnx` (Starlette + uvicorn + onnxruntime; no TensorFlow).

Example:
>>> from glasszoo.serving import create_app  # doctest: +SKIP
>>> app = create_app("inam_fashion_mnist.onnx", max_batch=32, batch_window_ms=5)  # doctest: +SKIP
"""

from glasszoo.serving.app import create_app, serve
from glasszoo.serving.batcher import MicroBatcher, ServiceClosed
from glasszoo.serving.request_images import RequestError, images_from_request

__all__ = ["MicroBatcher", "RequestError", "ServiceClosed", "create_app", "images_from_request", "serve"]
