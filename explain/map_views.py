"""Views of any model with its own pixel map (`attribution_map`), e.g. contribution maps (seed 002, Figures 2 and 7).

Maps are signed: red pixels raise the class logit, blue pixels lower it, and
the colormap is symmetric around 0. Maps shown side by side share one colour
scale so that their strengths compare. `draw_map` and `draw_map_overview`
read explanation outputs alone (NumPy and matplotlib: they draw Keras and
ONNX outputs alike); the other views ask the model for the maps of further
classes. Every function builds a `matplotlib.figure.Figure` (no pyplot).
"""

import numpy as np
from glasszoo.explain.figures import (
    PANEL_INCHES,
    check_index,
    class_names_or_indices,
    new_figure,
    overlay_signed,
    overview_rows,
    predicted_class,
    save,
    show_image,
    show_signed,
)
from glasszoo.explain.localisation import cell_box, localisation_scores
from glasszoo.explain.probabilities import probabilities_of
from matplotlib.patches import Rectangle

__all__ = [
    "contribution_grid",
    "contribution_view",
    "draw_map",
    "draw_map_overview",
    "localisation_view",
    "map_model_views",
    "predicted_and_strongest_other",
]


def _probability(model_or_activation, logits, k):
    activation = getattr(model_or_activation, "output_activation", model_or_activation)
    return float(probabilities_of(np.asarray(logits)[None], activation)[0, k])


def predicted_and_strongest_other(logits):
    """`(predicted, strongest other)` class index of one row of logits."""
    order = np.argsort(-np.asarray(logits), kind="stable")
    return int(order[0]), int(order[min(1, len(order) - 1)])


def _maps_of_classes(model, image, classes):
    """Contribution maps `(len(classes), H, W)` of one image (`attribution_map`)."""
    batch = np.repeat(np.asarray(image, dtype="float32")[None], len(classes), axis=0)
    return model.attribution_map(batch, np.asarray(classes))


def _show_contributions(axis, image, contribution, bound, overlay):
    """The map alone, or over the gray image with opacity growing with |contribution|."""
    if not overlay:
        return show_signed(axis, contribution, bound=bound)
    show_image(axis, image.mean(axis=-1, keepdims=True))
    bound = max(bound, 1e-12)
    opacity = np.clip(np.abs(contribution) / bound, 0.0, 1.0) ** 0.5
    return axis.imshow(contribution, cmap="bwr", vmin=-bound, vmax=bound, alpha=opacity)


def _draw_row(figure, axes, model, image, classes, class_names, colorbar, overlay=False):
    image = np.asarray(image, dtype="float32")
    logits = model.explain(image[None])["logits"][0]
    if classes is None:
        classes = predicted_and_strongest_other(logits)
    classes = [check_index(c, len(logits), "class") for c in classes]
    maps = _maps_of_classes(model, image, classes)
    names = class_names_or_indices(class_names or getattr(model, "class_names", None), len(logits))
    bound = float(np.abs(maps).max())
    show_image(axes[0], image)
    axes[0].set_title("input", fontsize=9)
    for axis, class_index, contribution in zip(axes[1:], classes, maps):
        artist = _show_contributions(axis, image, contribution, bound, overlay)
        axis.set_title(f"{names[class_index]}\nlogit {logits[class_index]:.2f}, p {_probability(model, logits, class_index):.2f}", fontsize=9)
    if colorbar:
        figure.colorbar(artist, ax=list(axes[1:]), shrink=0.8)
    return classes


def contribution_view(model, image, classes=None, class_names=None, overlay=False, path=None):
    """One image and the contribution maps of two classes (seed 002, Figure 2).

    By default the predicted class and the strongest other class; both maps
    use one symmetric colour scale. Titles give the logit and the probability
    (sigmoid or softmax, the model's `output_activation`).

    Args:
        model: a zoo model with its own pixel map (`attribution_map`).
        image: `(H, W, C)` in [0, 1].
        classes: optional pair (or list) of class indices.
        class_names: optional names (the model's by default).
        overlay: draw each map over the (gray) image, opacity growing with
            the contribution's magnitude, instead of beside it.
        path: optional png file.

    Returns:
        `matplotlib.figure.Figure`.

    Example:
    >>> fig = contribution_view(model, test_images[0], path="why.png")  # doctest: +SKIP
    """
    count = 2 if classes is None else len(classes)
    figure, axes = new_figure(1, count + 1, width=PANEL_INCHES * 1.1)
    _draw_row(figure, axes[0], model, image, classes, class_names, colorbar=True, overlay=overlay)
    return save(figure, path)


def contribution_grid(model, images, class_names=None, max_images=8, overlay=False, path=None):
    """Several images, one row each: image, predicted class map, strongest other class map.

    Args:
        model: a zoo model with its own pixel map.
        images: `(B, H, W, C)` in [0, 1].
        class_names: optional names.
        max_images: at most this many rows.
        overlay: maps over the image (see `contribution_view`).
        path: optional png file.

    Example:
    >>> fig = contribution_grid(model, test_images[:6], path="overview.png")  # doctest: +SKIP
    """
    images = np.asarray(images, dtype="float32")
    rows = min(len(images), int(max_images))
    if rows < 1:
        raise ValueError("contribution_grid needs at least one image.")
    figure, axes = new_figure(rows, 3, width=PANEL_INCHES * 0.85, height=PANEL_INCHES * 0.9)
    for row in range(rows):
        _draw_row(figure, axes[row], model, images[row], None, class_names, colorbar=False, overlay=overlay)
    return save(figure, path)


def localisation_view(model, images, labels, rows=3, class_names=None, path=None):
    """Contribution maps on an `n x n` grid of images of different classes (seed 002, Figure 7).

    The first panel is the grid image; then, for every cell, the map of that
    cell's class over the whole grid, with the cell outlined and its
    localisation score (share of positive contribution inside the cell;
    random 1/n², ideal 1) in the title.

    Args:
        model: a zoo model with its own pixel map (resized to the grid, weights copied).
        images: `n²` images of pairwise different classes.
        labels: their class indices.
        rows: `n`.
        class_names: optional names.
        path: optional png file.

    Returns:
        `(figure, scores)`, scores `(n²,)`.

    Example:
    >>> fig, scores = localisation_view(model, nine_images, nine_labels, path="grid.png")  # doctest: +SKIP
    """
    result = localisation_scores(model, images, labels, rows)
    maps, scores = result["maps"], result["scores"]
    names = class_names_or_indices(class_names or getattr(model, "class_names", None), model.num_classes)
    height, width = np.asarray(images).shape[1:3]
    columns = rows + 1
    figure, axes = new_figure(rows, columns, width=PANEL_INCHES * 0.9, height=PANEL_INCHES * 0.9)
    show_image(axes[0, 0], result["grid_image"])
    axes[0, 0].set_title(f"{rows}x{rows} grid", fontsize=9)
    for row in range(1, rows):
        axes[row, 0].set_axis_off()
    for cell, (label, contribution) in enumerate(zip(labels, maps)):
        axis = axes[cell // rows, 1 + cell % rows]
        show_signed(axis, contribution)
        top, left, bottom, right = cell_box(cell, rows, height, width)
        axis.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor="black", linewidth=1.2))
        axis.set_title(f"{names[int(label)]}: {scores[cell]:.2f}", fontsize=8)
    figure.suptitle(f"mean localisation {scores.mean():.2f} (random {1 / rows**2:.2f})", fontsize=10)
    return save(figure, path), scores


def draw_map(image, outputs, index, class_names=None, map_output="contributions", activation="softmax"):
    """One explained image: the image, its pixel map `outputs[map_output]` (explained class) and the map over it."""
    image = np.asarray(image, dtype="float32")
    logits, k, names = predicted_class(outputs, index, class_names)
    contributions = np.asarray(outputs[map_output][index], dtype="float64")
    bound = float(np.max(np.abs(contributions)))
    figure, axes = new_figure(1, 3)
    show_image(axes[0, 0], image)
    axes[0, 0].set_title("image")
    shown = show_signed(axes[0, 1], contributions, bound)
    axes[0, 1].set_title(f"{map_output}: {names[k]}\n(sum {contributions.sum():.3g})")
    overlay_signed(axes[0, 2], image, contributions, bound)
    axes[0, 2].set_title("overlay")
    figure.colorbar(shown, ax=axes[0, 1:], shrink=0.8)
    figure.suptitle(f"predicted: {names[k]} (logit {logits[k]:.3g}, p {_probability(activation, logits, k):.3f})")
    return figure


def draw_map_overview(images, outputs, class_names=None, max_images=8, map_output="contributions", activation="softmax"):
    """Several explained images, one row each: the image and its pixel map (each map on its own scale)."""
    images, rows, logits, names = overview_rows(images, outputs, class_names, max_images)
    figure, axes = new_figure(rows, 2, width=PANEL_INCHES * 0.85, height=PANEL_INCHES * 0.9)
    for row in range(rows):
        k = int(np.argmax(logits[row]))
        show_image(axes[row, 0], images[row])
        axes[row, 0].set_title(f"{names[k]} (p {_probability(activation, logits[row], k):.2f})", fontsize=8)
        show_signed(axes[row, 1], np.asarray(outputs[map_output][row], dtype="float64"))
        axes[row, 1].set_title(map_output, fontsize=8)
    return figure


def map_model_views(model, images, stems, explanation, labels, out):
    """The maps of the predicted and the strongest other class of every image (`classes_grid.png`) and, given
    labels of at least 9 classes, a 3x3 localisation grid. Returns `{"localisation_3x3_mean": ...}` when drawn."""
    contribution_grid(model, images, path=out / "classes_grid.png")
    summary = {}
    if labels is not None:
        labels = np.asarray(labels)
        cells = [int(np.flatnonzero(labels == c)[0]) for c in sorted(set(labels.tolist()))][:9]
        if len(cells) == 9:
            _, scores = localisation_view(model, images[cells], labels[cells], rows=3, path=out / "localisation_grid.png")
            summary["localisation_3x3_mean"] = round(float(scores.mean()), 4)
    return summary
