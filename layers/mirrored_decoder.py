"""A decoder that mirrors a stack of stride-2 'same' convolutions and returns exactly to the encoder's sizes."""

import math

from keras import layers

KERNEL_SIZE = 3
STRIDE = 2


def strided_sizes(size, depth, stride=STRIDE):
    """Spatial sizes `[size, ceil(size / stride), ...]` after each of `depth` strided 'same' convolutions.

    Example:
    >>> strided_sizes(28, 4)
    [28, 14, 7, 4, 2]
    """
    sizes = [int(size)]
    for _ in range(int(depth)):
        sizes.append(math.ceil(sizes[-1] / stride))
    return sizes


def mirrored_decoder_layers(filters, heights, widths, channels, activation, kernel_size=KERNEL_SIZE, stride=STRIDE, name="decoder"):
    """Transposed convolutions that undo `len(filters)` stride-2 convolutions of widths `filters`, layer by layer.

    Layer `i` (named `{name}_{i}`) maps the encoder's size `depth - i` back to
    size `depth - 1 - i`; its output padding is chosen so that the sizes come
    back exactly (a 'same' transposed convolution with an odd kernel gives
    `(n - 1) stride + 1 + padding`).
    The widths run back through `filters[:-1]` to `channels`; the last layer
    has a sigmoid (images in (0, 1)), the others `activation`.

    Args:
        filters: output widths of the encoder's convolutions.
        heights, widths: the encoder's sizes (`strided_sizes`), `len(filters) + 1` each.
        channels: channels of the decoded image.
        activation: activation of the hidden layers.

    Example:
    >>> decoder = mirrored_decoder_layers([8, 4], [28, 14, 7], [28, 14, 7], 1, "relu")
    >>> [layer.name for layer in decoder]
    ['decoder_0', 'decoder_1']
    """
    depth = len(filters)
    out_widths = list(filters[:-1])[::-1] + [int(channels)]
    decoder = []
    for index, width in enumerate(out_widths):
        level = depth - 1 - index
        output_padding = (
            heights[level] - ((heights[level + 1] - 1) * stride + 1),
            widths[level] - ((widths[level + 1] - 1) * stride + 1),
        )
        decoder.append(
            layers.Conv2DTranspose(
                width, kernel_size, strides=stride, padding="same", output_padding=output_padding,
                activation="sigmoid" if index == depth - 1 else activation, name=f"{name}_{index}",
            )
        )
    return decoder
