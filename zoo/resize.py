"""A zoo model rebuilt for another image size, with its weights."""


def resized(model, input_shape):
    """The same network for images of `input_shape` (weights copied).

    Works for every family whose layers are convolutions followed by a global
    pooling (INAM's global max, CoDA's sum, the CNN's average), as used by the
    localisation grids of several images side by side.

    Example:
    >>> grid_model = resized(model, (84, 84, 1))  # doctest: +SKIP
    """
    config = dict(model.get_config(), input_shape=[int(s) for s in input_shape])
    config["name"] = f"{model.name}_{input_shape[0]}x{input_shape[1]}"
    clone = type(model).from_config(config)
    clone.transfer_weights_from(model)
    return clone
