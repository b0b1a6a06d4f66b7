"""Maps [0, 1] images to the input convention of a keras.applications backbone, inside the model."""

import keras
from keras import ops

# per-channel statistics of ImageNet, RGB order
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
MODES = ("caffe", "torch", "tf", "raw255")


@keras.saving.register_keras_serializable(package="glasszoo")
class ImageNetPreprocessing(keras.layers.Layer):
    """The preprocessing a keras.applications network expects, for images in [0, 1].

    Keeping it inside the model keeps glasszoo's input contract (float NHWC
    in [0, 1]) for every backbone, in Keras and in the exported ONNX graph.
    One-channel images are repeated to three channels first, so grayscale
    data can use ImageNet weights.

    Modes (those of `keras.applications.imagenet_utils.preprocess_input`):
    `"caffe"` (VGG, ResNet v1): RGB to BGR, 0-255, minus the ImageNet mean;
    `"torch"` (DenseNet): minus mean, divided by std, in [0, 1] units;
    `"tf"` (ResNet v2, MobileNet, Inception, Xception): scaled to [-1, 1];
    `"raw255"` (EfficientNet, ConvNeXt, which normalise inside): 0-255.

    Args:
        mode: one of `MODES`.

    Example:
    >>> ImageNetPreprocessing("torch")(ops.zeros((1, 32, 32, 1))).shape
    (1, 32, 32, 3)
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Unknown preprocessing mode {mode!r}; known: {', '.join(MODES)}.")
        self.mode = mode

    def call(self, images):
        if images.shape[-1] == 1:
            images = ops.concatenate([images] * 3, axis=-1)
        if self.mode == "caffe":
            bgr = ops.take(images, [2, 1, 0], axis=-1) * 255.0  # a gather: exports to ONNX
            return bgr - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=images.dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(IMAGENET_MEAN_RGB, dtype=images.dtype)
            return (images - mean) / ops.convert_to_tensor(IMAGENET_STD_RGB, dtype=images.dtype)
        if self.mode == "tf":
            return images * 2.0 - 1.0
        return images * 255.0

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (3,)

    def get_config(self):
        return dict(super().get_config(), mode=self.mode)
