"""Receptive fields of a functional convolutional network, from its layers' kernels, strides and padding."""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Geometry of one feature map in input pixels.

    Attributes:
        size: side of the square input window one position sees.
        jump: input pixels between neighbouring positions (the total stride).
        start: input coordinate of the centre of position 0 (pixel centres
            are at 0.5, 1.5, ...).
        length: spatial size of the map (height; square inputs assumed for width too).
    """

    size: int
    jump: int
    start: float
    length: int

    def of_patch(self, patch):
        """The field of `patch x patch` windows of this map: each sees `patch - 1` more steps, centred between its positions."""
        extra = patch - 1
        return ReceptiveField(self.size + extra * self.jump, self.jump, self.start + extra * self.jump / 2, self.length - extra)

    def box(self, row, col, image_shape, patch=1):
        """`[top, bottom, left, right)` input box seen by a `patch x patch` window at `(row, col)`, clipped to the image."""
        height, width = image_shape[:2]
        field = self.of_patch(patch)
        size = field.size
        centre_row = field.start + row * field.jump
        centre_col = field.start + col * field.jump
        return [
            max(int(math.floor(centre_row - size / 2)), 0),
            min(int(math.ceil(centre_row + size / 2)), height),
            max(int(math.floor(centre_col - size / 2)), 0),
            min(int(math.ceil(centre_col + size / 2)), width),
        ]


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _through(layer, field):
    """The field after `layer` (layers without spatial extent pass it through)."""
    from keras import layers

    if isinstance(layer, layers.ZeroPadding2D):
        top = layer.padding[0][0]
        return ReceptiveField(field.size, field.jump, field.start - top * field.jump, field.length + sum(layer.padding[0]))
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)):
        kernel, stride, dilation, padding = layer.kernel_size[0], layer.strides[0], _pair(layer.dilation_rate)[0], layer.padding
    elif isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        kernel, stride, dilation, padding = layer.pool_size[0], layer.strides[0], 1, layer.padding
    else:
        return field
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        length = -(-field.length // stride)
        pad_before = max((length - 1) * stride + effective - field.length, 0) // 2
    else:
        length = (field.length - effective) // stride + 1
        pad_before = 0
    return ReceptiveField(
        size=field.size + (effective - 1) * field.jump,
        jump=field.jump * stride,
        start=field.start + ((effective - 1) / 2 - pad_before) * field.jump,
        length=length,
    )


def receptive_field(model, input_size):
    """The receptive field of the output of a functional Keras model (square inputs).

    Layers are walked in graph order; where branches merge (ResNet's `Add`,
    DenseNet's `Concatenate`) the largest incoming field is kept, which is
    the field of the merged map. Layers that are not convolutions, pooling
    or zero padding keep the field unchanged.

    Args:
        model: a functional `keras.Model` (e.g. a `keras.applications` backbone).
        input_size: height (= width) of the input images.

    Returns:
        `ReceptiveField` of the model's output.

    Example:
    >>> inputs = keras.Input((28, 28, 1))
    >>> outputs = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    >>> receptive_field(keras.Model(inputs, outputs), 28)
    ReceptiveField(size=3, jump=2, start=0.5, length=14)
    """
    fields = {}
    for layer in model.layers:
        parents = [tensor._keras_history.operation for tensor in layer._inbound_nodes[0].input_tensors] if layer._inbound_nodes else []
        incoming = [fields[id(p)] for p in parents if id(p) in fields]
        if not incoming:
            field = ReceptiveField(size=1, jump=1, start=0.5, length=int(input_size))
        else:
            field = max(incoming, key=lambda f: f.size)
        if hasattr(layer, "layers") and hasattr(layer, "_inbound_nodes") and getattr(layer, "inputs", None) is not None and layer is not model:
            nested = receptive_field(layer, field.length)
            field = ReceptiveField(
                size=field.size + (nested.size - 1) * field.jump,
                jump=field.jump * nested.jump,
                start=field.start + (nested.start - 0.5) * field.jump,
                length=nested.length,
            )
        else:
            field = _through(layer, field)
        fields[id(layer)] = field
    output_layer = model.outputs[0]._keras_history.operation
    return fields[id(output_layer)]
