"""Matplotlib views of SENN: what each concept adds to a decision, and what each concept is.

`draw` and `draw_overview` read the explanation outputs alone (NumPy and
matplotlib), so `glasszoo explain` (Keras) and `glasszoo predict --out`
(ONNX) draw the same pictures. A SENN logit is `sum_i theta_ic h_i`, so a
bar per concept, `theta_ic h_i`, shows the whole decision: the bars of a
class add up to its logit. `concept_grid` shows what the concepts are: for
each, the training images that set it highest and lowest (kept with the
preset) and the images its decoder draws as it moves over its training
range. Every function builds a `matplotlib.figure.Figure` (no pyplot),
optionally saves it and returns it.
"""

import numpy as np
from glasszoo.explain.figures import (
    PANEL_INCHES,
    class_names_or_indices,
    new_figure,
    overview_rows,
    predicted_class,
    save,
    show_image,
)
from glasszoo.explain.probabilities import probabilities_of
from matplotlib.figure import Figure

__all__ = ["REQUIRED_OUTPUTS", "concept_bars", "concept_grid", "concept_view", "draw", "draw_overview", "model_views"]

# outputs the pictures read, with their rank (batch axis included)
REQUIRED_OUTPUTS = {"logits": 2, "concepts": 2, "contributions": 3, "reconstruction": 4}


def concept_bars(axis, contributions, concepts, title):
    """Draws one bar per concept (its contribution to a class), red for, blue against; concept values as labels."""
    contributions = np.asarray(contributions, dtype="float64")
    positions = np.arange(len(contributions))
    axis.bar(positions, contributions, color=np.where(contributions >= 0, "tab:red", "tab:blue"))
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xticks(positions)
    axis.set_xticklabels([f"c{i}\n{value:+.1f}" for i, value in enumerate(np.asarray(concepts, dtype="float64"))], fontsize=6)
    axis.tick_params(axis="y", labelsize=7)
    axis.set_title(title, fontsize=8)


def draw(image, outputs, index, class_names=None):
    """One explained image: the image, its reconstruction from the concepts, and each concept's contribution.

    The bars are `theta_ic h_i` for the predicted class `c` (their sum is its
    logit); under each bar, the concept's value `h_i`.
    """
    image = np.asarray(image, dtype="float32")
    logits, k, names = predicted_class(outputs, index, class_names)
    figure = Figure(figsize=(PANEL_INCHES * 3.2, PANEL_INCHES * 1.1), layout="constrained")
    axes = figure.subplot_mosaic([["image", "reconstruction", "bars", "bars"]])
    show_image(axes["image"], image)
    axes["image"].set_title("image", fontsize=9)
    show_image(axes["reconstruction"], np.asarray(outputs["reconstruction"][index], dtype="float64"))
    axes["reconstruction"].set_title("decoded from\nthe concepts", fontsize=9)
    contributions = np.asarray(outputs["contributions"][index, :, k], dtype="float64")
    concept_bars(axes["bars"], contributions, outputs["concepts"][index], f"concept contributions to {names[k]} (sum = logit {contributions.sum():.3g})")
    figure.suptitle(f"predicted: {names[k]} (p = {probabilities_of(logits)[k]:.3f})", fontsize=10)
    return figure


def draw_overview(images, outputs, class_names=None, max_images=8):
    """Several explained images, one row each: the image, its reconstruction and the concept contributions."""
    images, rows, logits, names = overview_rows(images, outputs, class_names, max_images)
    figure = Figure(figsize=(PANEL_INCHES * 2.6, PANEL_INCHES * 0.8 * rows), layout="constrained")
    axes = figure.subplots(rows, 3, squeeze=False, width_ratios=[1, 1, 2.2])
    for row in range(rows):
        k = int(np.argmax(logits[row]))
        show_image(axes[row, 0], images[row])
        axes[row, 0].set_title(f"{names[k]} (p {probabilities_of(logits[row])[k]:.2f})", fontsize=8)
        show_image(axes[row, 1], np.asarray(outputs["reconstruction"][row], dtype="float64"))
        axes[row, 1].set_title("decoded", fontsize=8)
        concept_bars(axes[row, 2], outputs["contributions"][row, :, k], outputs["concepts"][row], "contribution per concept")
    return figure


def concept_view(model, image, class_names=None, path=None):
    """One image: the image, its reconstruction, and the concept contributions to the predicted and runner-up class.

    Args:
        model: a SENN.
        image: `(H, W, C)` in [0, 1].
        class_names: optional names (the model's by default).
        path: optional png file.

    Returns:
        `matplotlib.figure.Figure`.

    Example:
    >>> fig = concept_view(glasszoo.load("senn_fashion_mnist"), test_images[0], path="why.png")  # doctest: +SKIP
    """
    image = np.asarray(image, dtype="float32")
    explained = model.explain(image[None])
    logits = explained["logits"][0]
    names = class_names_or_indices(class_names or getattr(model, "class_names", None), len(logits))
    order = np.argsort(-logits, kind="stable")
    first, second = int(order[0]), int(order[min(1, len(order) - 1)])
    probabilities = probabilities_of(logits)
    figure = Figure(figsize=(PANEL_INCHES * 3.2, PANEL_INCHES * 1.9), layout="constrained")
    axes = figure.subplot_mosaic([["image", "first", "first"], ["reconstruction", "second", "second"]])
    show_image(axes["image"], image)
    axes["image"].set_title(f"{names[first]} (p {probabilities[first]:.2f})", fontsize=9)
    show_image(axes["reconstruction"], explained["reconstruction"][0])
    axes["reconstruction"].set_title("decoded from the concepts", fontsize=8)
    for key, k in (("first", first), ("second", second)):
        contributions = explained["contributions"][0, :, k]
        concept_bars(axes[key], contributions, explained["concepts"][0], f"{names[k]} (p {probabilities[k]:.2f}): logit {contributions.sum():.3g}")
    return save(figure, path)


def concept_grid(model, exemplars=None, count=5, steps=5, path=None):
    """What each concept is: one row per concept with its lowest and highest training images and its decoded sweep.

    A row reads: the `count` training images with the lowest value of the
    concept, the `count` with the highest, then `steps` images decoded with
    the concept going from its 5th to its 95th training percentile (the
    other concepts at their mean).

    Args:
        model: a SENN.
        exemplars: `concepts.concept_exemplars(...)` (default: the model's, from its preset).
        count: training images shown per end.
        steps: decoded images per concept.
        path: optional png file.

    Raises:
        ValueError: the model has no exemplars (it was not trained by `glasszoo train` and none were given).

    Example:
    >>> fig = concept_grid(glasszoo.load("senn_fashion_mnist"), path="concepts.png")  # doctest: +SKIP
    """
    from glasszoo.zoo.senn.concepts import decoded_sweep

    exemplars = exemplars if exemplars is not None else getattr(model, "concept_exemplars", None)
    if exemplars is None:
        raise ValueError("This SENN has no concept exemplars: compute them with glasszoo.zoo.senn.concepts.concept_exemplars(model, training_images).")
    count = max(1, min(int(count), exemplars["highest_images"].shape[1]))
    concepts = len(exemplars["mean"])
    columns = 2 * count + int(steps)
    figure, axes = new_figure(concepts, columns, width=PANEL_INCHES * 0.45, height=PANEL_INCHES * 0.5)
    for concept in range(concepts):
        lowest = exemplars["lowest_images"][concept][:count][::-1]  # the lowest at the far left
        for column, picture in enumerate(lowest):
            show_image(axes[concept, column], picture.astype("float32") / 255.0)
        for column, picture in enumerate(exemplars["highest_images"][concept][:count][::-1]):  # the highest at the right
            show_image(axes[concept, count + column], picture.astype("float32") / 255.0)
        values, decoded = decoded_sweep(model, exemplars, concept, steps=steps)
        for column, (value, picture) in enumerate(zip(values, decoded)):
            axis = axes[concept, 2 * count + column]
            show_image(axis, picture)
            axis.set_title(f"{value:+.1f}", fontsize=6)
        axes[concept, 0].set_ylabel(f"c{concept}", fontsize=8)
        axes[concept, 0].axis("on")
        axes[concept, 0].set_xticks([])
        axes[concept, 0].set_yticks([])
    figure.suptitle(
        f"each concept: its {count} lowest and {count} highest training images | decoded from its 5th to 95th percentile", fontsize=9
    )
    return save(figure, path)


def model_views(model, images, stems, explanation, labels, out):
    """A view per image (`concepts_<stem>.png`) and, with exemplars, the concept grid (`concepts.png`). Returns `{}`."""
    for image, stem in zip(images, stems):
        concept_view(model, image, path=out / f"concepts_{stem}.png")
    if getattr(model, "concept_exemplars", None) is not None:
        concept_grid(model, path=out / "concepts.png")
    return {}
