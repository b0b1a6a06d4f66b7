"""Pixel removal (seed 002, Fig. 6): how the target-class probability changes as pixels are removed by importance."""

import numpy as np
from glasszoo.explain.probabilities import probabilities_of

DEFAULT_FRACTIONS = tuple(np.round(np.linspace(0.0, 0.9, 10), 2))


def class_probabilities(model, images, batch_size=256):
    """Class probabilities of `images`: softmax of the logits, or per-class sigmoid for models trained with it
    (`output_activation = "sigmoid"`)."""
    logits = model.predict(images, batch_size=batch_size, verbose=0)
    return probabilities_of(logits, getattr(model, "output_activation", "softmax"))


def removal_order(attributions, order="least"):
    """Pixel indices `(B, H·W)` from the least (`"least"`) or the most (`"most"`) important.

    Ties are broken by pixel index, so the order is deterministic.
    """
    if order not in ("least", "most"):
        raise ValueError(f"order must be 'least' or 'most'; got {order!r}.")
    flat = np.asarray(attributions, dtype="float64").reshape(len(attributions), -1)
    return np.argsort(flat if order == "least" else -flat, axis=1, kind="stable")


def pixel_removal_curve(model, images, attributions, targets, fractions=DEFAULT_FRACTIONS, order="least", fill=0.0, batch_size=256):
    """Mean target-class probability after removing a fraction of pixels, ranked by attribution.

    Removing a pixel sets all its channels to `fill`. Removing the *least*
    important pixels first should keep (or raise) the probability for a
    faithful attribution; removing the *most* important first should drop it
    quickly.

    Args:
        model: a Keras classifier returning logits.
        images: float32 `(B, H, W, C)` in [0, 1].
        attributions: `(B, H, W)` importance of every pixel for its target.
        targets: `(B,)` class per image.
        fractions: shares of pixels removed, each in [0, 1].
        order: `"least"` or `"most"` important first.
        fill: value of removed pixels.
        batch_size: images per forward pass.

    Returns:
        dict: `fractions` `(F,)`, `probabilities` `(B, F)`, `curve` `(F,)`
        (the mean over images) and `area` (trapezoidal area under the mean
        curve divided by the fraction range, so a flat curve at p has area p).

    Example:
    >>> result = pixel_removal_curve(model, images, maps, labels, order="least")  # doctest: +SKIP
    >>> result["area"]  # doctest: +SKIP
    """
    images = np.asarray(images, dtype="float32")
    attributions = np.asarray(attributions)
    targets = np.asarray(targets, dtype="int64").reshape(-1)
    fractions = np.asarray(fractions, dtype="float64")
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C); got shape {images.shape}.")
    if attributions.shape != images.shape[:3]:
        raise ValueError(f"attributions must be (B, H, W) = {images.shape[:3]}; got {attributions.shape}.")
    if len(targets) != len(images):
        raise ValueError(f"targets must have one class per image ({len(images)}); got {len(targets)}.")
    if fractions.ndim != 1 or len(fractions) == 0 or fractions.min() < 0 or fractions.max() > 1:
        raise ValueError(f"fractions must be a non-empty list of shares in [0, 1]; got {fractions.tolist()}.")
    count, height, width, _ = images.shape
    ranking = removal_order(attributions, order)
    removed = np.rint(fractions * height * width).astype(int)
    variants = np.repeat(images[:, None], len(fractions), axis=1).reshape(count * len(fractions), height, width, -1)
    for image in range(count):
        for step, how_many in enumerate(removed):
            rows, cols = np.unravel_index(ranking[image, :how_many], (height, width))
            variants[image * len(fractions) + step, rows, cols, :] = fill
    probabilities = class_probabilities(model, variants, batch_size=batch_size).reshape(count, len(fractions), -1)
    target_probabilities = probabilities[np.arange(count), :, targets]
    curve = target_probabilities.mean(axis=0)
    span = fractions[-1] - fractions[0]
    area = float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(fractions)) / span) if span > 0 else float(curve[0])
    return {"fractions": fractions, "probabilities": target_probabilities, "curve": curve, "area": area}
