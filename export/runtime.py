"""Serving an exported model with onnxruntime and NumPy only (no TensorFlow, no Keras)."""

import ctypes.util
import json
import os

import numpy as np

from glasszoo.zoo.inputs import check_image_size, validate_images

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _cuda_driver_present():
    """True when an NVIDIA driver library can be found (else the CUDA provider only prints errors)."""
    if os.path.exists("/proc/driver/nvidia/version"):
        return True
    return ctypes.util.find_library("cuda") is not None or ctypes.util.find_library("nvcuda") is not None


def _one_line(error):
    """An exception's message on one line (onnxruntime's span several)."""
    return " ".join(str(error).split()) or type(error).__name__


class OnnxModel:
    """An exported glasszoo model served by onnxruntime: images in, logits and explanations out.

    With `providers=None` the CUDA provider is used when onnxruntime has it,
    a driver is present and a warm-up run on it succeeds; otherwise the CPU
    provider, without onnxruntime's provider warnings.

    Args:
        path: the `.onnx` file written by `glasszoo.export.to_onnx`.
        providers: explicit onnxruntime provider list, or None for automatic.

    Example:
    >>> model = OnnxModel("model.onnx")  # doctest: +SKIP
    >>> outputs = model(images)  # dict: logits, max_responses, ..., decision_images
    >>> model.class_names[outputs["logits"].argmax(-1)[0]]  # doctest: +SKIP
    """

    def __init__(self, path, providers=None):
        import onnxruntime as ort

        if not os.path.exists(path):
            raise FileNotFoundError(f"No ONNX file at {path}.")
        if os.path.isdir(path):
            raise ValueError(f"{path} is a folder, not an ONNX file.")
        self.path = str(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            if providers is None:
                self.session = self._automatic_session(ort, options)
            else:
                self.session = ort.InferenceSession(self.path, sess_options=options, providers=list(providers))
        except Exception as error:  # onnxruntime's InvalidProtobuf, InvalidArgument, Fail, ...
            raise ValueError(f"Cannot load {path} as an ONNX model (truncated, corrupted or not ONNX?): {_one_line(error)}") from error
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); glasszoo serves models with one image input.")
        model_input = inputs[0]
        self.input_name = model_input.name
        self.input_type = model_input.type
        self.input_shape = tuple(d if isinstance(d, int) else None for d in model_input.shape[1:])
        if all(d is not None for d in self.input_shape):  # before any image is read or resized to it
            check_image_size(self.input_shape, f"{path}: the declared input (batch, {', '.join(map(str, self.input_shape))})")
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            self.class_names = [str(name) for name in json.loads(self.metadata.get("class_names", "[]"))]
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: the metadata 'class_names' is not a JSON list ({error}).") from error

    def _automatic_session(self, ort, options):
        available = ort.get_available_providers()
        if CUDA in available and _cuda_driver_present():
            ort.set_default_logger_severity(3)  # a CUDA provider that fails to load logs errors here
            try:
                session = ort.InferenceSession(self.path, sess_options=options, providers=[CUDA, CPU])
                if CUDA in session.get_providers():
                    probe = session.get_inputs()[0]
                    shape = [1] + [d if isinstance(d, int) else 1 for d in probe.shape[1:]]
                    session.run(None, {probe.name: np.zeros(shape, np.float32)})
                    return session
            except Exception:
                pass
        return ort.InferenceSession(self.path, sess_options=options, providers=[CPU])

    @property
    def providers(self):
        """Providers the session actually runs on, in priority order."""
        return self.session.get_providers()

    def __call__(self, images):
        """Runs the graph on float32 images `(B, H, W, C)` in [0, 1] (or one `(H, W, C)` image).

        Returns:
            dict output name -> NumPy array.

        Float16 and float64 images are converted to float32; integer images
        (e.g. uint8 in [0, 255]) are refused, since their scale is ambiguous:
        divide by 255 first.

        Raises:
            ValueError: wrong rank, size, channels, dtype, range, NaN/inf, or
                an empty batch.
            RuntimeError: onnxruntime failed to run the graph.
        """
        images = validate_images(images, self.input_shape)
        if not len(images):
            raise ValueError(f"No images to run: got an empty batch of shape {images.shape}.")
        try:
            values = self.session.run(self.output_names, {self.input_name: images})
        except Exception as error:
            raise RuntimeError(f"onnxruntime failed to run {self.path} on a batch of shape {images.shape}: {_one_line(error)}") from error
        return dict(zip(self.output_names, values))

    def predict_classes(self, images):
        """Index of the largest logit per image."""
        return np.argmax(self(images)["logits"], axis=-1)
