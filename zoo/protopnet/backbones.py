"""Feature extractors for ProtoPNet: a small CNN trained from scratch, or a keras.applications network."""

import keras
from glasszoo.layers.imagenet_preprocessing import ImageNetPreprocessing
from keras import layers

# glasszoo name -> (keras.applications constructor, input preprocessing)
APPLICATIONS = {
    "vgg16": ("VGG16", "caffe"),
    "vgg19": ("VGG19", "caffe"),
    "resnet50": ("ResNet50", "caffe"),
    "resnet101": ("ResNet101", "caffe"),
    "resnet152": ("ResNet152", "caffe"),
    "resnet50v2": ("ResNet50V2", "tf"),
    "resnet101v2": ("ResNet101V2", "tf"),
    "resnet152v2": ("ResNet152V2", "tf"),
    "densenet121": ("DenseNet121", "torch"),
    "densenet169": ("DenseNet169", "torch"),
    "densenet201": ("DenseNet201", "torch"),
    "mobilenetv2": ("MobileNetV2", "tf"),
    "efficientnetb0": ("EfficientNetB0", "raw255"),
    "convnexttiny": ("ConvNeXtTiny", "raw255"),
}
SMALL_CNN = "small_cnn"
DEFAULT_SMALL_CNN_STAGES = ((32, 32), (64, 64), (128,))


def backbone_names():
    return [SMALL_CNN] + sorted(APPLICATIONS)


def small_cnn(input_shape, stages=DEFAULT_SMALL_CNN_STAGES, name="backbone"):
    """A plain CNN for small images: stages of `3x3 conv -> BatchNorm -> ReLU`, 2x2 max-pooling between stages.

    The default stages take 28 x 28 images to a 7 x 7 x 128 map whose
    positions see 24 x 24 input windows.

    Args:
        input_shape: `(H, W, C)`.
        stages: list of lists of channel counts, one list per stage.
        name: name of the returned functional model.
    """
    if not stages or not all(stages):
        raise ValueError(f"small_cnn needs at least one stage with at least one convolution; got {stages}.")
    images = keras.Input(tuple(input_shape), name="image")
    x = images
    for stage, widths in enumerate(stages):
        if stage:
            x = layers.MaxPooling2D(2, name=f"pool_{stage}")(x)
        for block, width in enumerate(widths):
            x = layers.Conv2D(int(width), 3, padding="same", use_bias=False, name=f"conv_{stage}_{block}")(x)
            x = layers.BatchNormalization(name=f"bn_{stage}_{block}")(x)
            x = layers.ReLU(name=f"relu_{stage}_{block}")(x)
    return keras.Model(images, x, name=name)


def applications_backbone(backbone, input_shape, weights=None, name="backbone"):
    """A keras.applications network without its classifier, preceded by its own preprocessing.

    Args:
        backbone: a key of `APPLICATIONS`, e.g. `"vgg19"`, `"resnet50"`, `"densenet121"`.
        input_shape: `(H, W, C)` with `C` 1 or 3 (gray images are repeated to RGB).
        weights: `"imagenet"` (downloaded by Keras on first use) or None.
        name: name of the returned functional model.
    """
    if backbone not in APPLICATIONS:
        raise ValueError(f"Unknown backbone {backbone!r}; known: {', '.join(backbone_names())}.")
    height, width, channels = (int(s) for s in input_shape)
    if channels not in (1, 3):
        raise ValueError(f"keras.applications backbones take 1- or 3-channel images; got {channels} channels.")
    if min(height, width) < 32:
        raise ValueError(f"keras.applications backbones need images of at least 32 x 32; got {height} x {width}.")
    constructor, mode = APPLICATIONS[backbone]
    network = getattr(keras.applications, constructor)(include_top=False, weights=weights, input_shape=(height, width, 3))
    images = keras.Input((height, width, channels), name="image")
    features = network(ImageNetPreprocessing(mode, name="preprocessing")(images))
    return keras.Model(images, features, name=name)


def add_on_layers(channels, name="add_on"):
    """The reference's add-on block: `1x1 conv -> ReLU -> 1x1 conv -> sigmoid`, so latent values lie in (0, 1)."""
    return keras.Sequential(
        [
            layers.Conv2D(int(channels), 1, activation="relu", name="add_on_0"),
            layers.Conv2D(int(channels), 1, activation="sigmoid", name="add_on_1"),
        ],
        name=name,
    )
