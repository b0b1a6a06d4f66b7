"""Sanity check by cascading randomisation (Adebayo et al., the check seed 002 reports passing).

An explanation that explains the model must change when the model's weights
are destroyed. Starting from the output, each layer's weights in turn are
replaced by random values with the same mean and standard deviation (the
layers above stay randomised: a cascade); after every step the explanation
is recomputed and compared with the original by Spearman rank correlation.
High correlation after randomisation means the explanation does not depend
on what the model learned.
"""

import numpy as np


def rank_correlation(first, second):
    """Spearman rank correlation of two arrays (ranks by sort order; constant input gives 0).

    Example:
    >>> rank_correlation(np.array([1.0, 2, 3]), np.array([10.0, 20, 30]))
    1.0
    """
    first, second = np.ravel(first), np.ravel(second)
    if first.shape != second.shape:
        raise ValueError(f"rank_correlation needs arrays of the same size; got {first.size} and {second.size}.")
    ranks = [np.argsort(np.argsort(values, kind="stable"), kind="stable").astype("float64") for values in (first, second)]
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return 0.0
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def layers_from_the_top(model):
    """The model's layers that own trainable weights, output side first."""
    layers = [layer for layer in model.layers if layer.trainable_weights]
    if not layers:
        raise ValueError(f"Model {model.name!r} has no layer with trainable weights to randomise.")
    return layers[::-1]


def _randomise(layer, rng):
    for variable in layer.trainable_weights:
        values = np.asarray(variable.numpy())
        spread = float(values.std()) or 0.05
        variable.assign(rng.normal(float(values.mean()), spread, size=values.shape).astype(values.dtype))


def cascading_randomisation(model, explain, images, targets, absolute=True, seed=0):
    """Rank correlation of the explanation with the original as layers are randomised from the top.

    The model is copied (`from_config` + weights), so `model` is untouched.

    Args:
        model: a Keras model (zoo or plain) with `get_config`/`from_config`.
        explain: `explain(model, images, targets) -> (B, H, W)` maps.
        images: float32 `(B, H, W, C)`.
        targets: `(B,)` classes explained (fixed for every step).
        absolute: compare |maps| (the usual choice: sign flips count as the same evidence).
        seed: seed of the random weights.

    Returns:
        list of dicts `{"layer": name, "rank_correlation": mean over images}`,
        the first entry (`"none"`) being the unchanged model (1.0).

    Example:
    >>> steps = cascading_randomisation(model, lambda m, x, t: m.explain(x, target=t)["contributions"],
    ...                                 images, labels)  # doctest: +SKIP
    """
    rng = np.random.default_rng(seed)
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    transform = np.abs if absolute else np.asarray

    def compare(maps):
        return float(np.mean([rank_correlation(transform(a), transform(b)) for a, b in zip(original, maps)]))

    original = np.asarray(explain(copy, images, targets))
    steps = [{"layer": "none", "rank_correlation": compare(original)}]
    for layer in layers_from_the_top(copy):
        _randomise(layer, rng)
        steps.append({"layer": layer.name, "rank_correlation": compare(np.asarray(explain(copy, images, targets)))})
    return steps
