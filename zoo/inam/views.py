"""Pictures of INAM explanations drawn from the explanation outputs alone (seed 000, Figure 3).

NumPy and matplotlib only: the same functions draw the pictures of
`glasszoo explain` (Keras outputs) and of `glasszoo predict --out` (ONNX
outputs). The global kernel views, which read the model, are in
`kernel_views` (`model_views` draws them).
"""

import numpy as np
from glasszoo.explain.figures import (
    PANEL_INCHES,
    check_index,
    class_names_or_indices,
    file_slug,
    new_figure,
    save,
    show_image,
    show_signed,
)

__all__ = ["REQUIRED_OUTPUTS", "draw", "draw_overview", "explanation_grid", "local_view", "model_views"]

# outputs the pictures read, with their rank (batch axis included)
REQUIRED_OUTPUTS = {"logits": 2, "decision_images": 5}
# drawn as a fourth panel when present (exports written before 2026-12-03 lack it)
PIXEL_EVIDENCE = "pixel_evidence"


def _panels(explanation):
    """Panels per row: the image, two decision images, and the first class's pixel evidence when the outputs hold it."""
    return 4 if PIXEL_EVIDENCE in explanation else 3


def _softmax(logits):
    shifted = np.exp(logits - np.max(logits))
    return shifted / shifted.sum()


def _two_classes(logits, classes):
    """The given pair of class indices, else the two largest logits."""
    if classes is not None:
        first, second = classes
        return check_index(first, len(logits), "class"), check_index(second, len(logits), "class")
    order = np.argsort(-logits, kind="stable")
    return int(order[0]), int(order[min(1, len(order) - 1)])


def _draw_explanation_row(figure, axes, image, explanation, index, classes, class_names, colorbars):
    """Image | decision image of class A | of class B (| pixel evidence of class A), on three (four) axes."""
    logits = np.asarray(explanation["logits"][index], dtype="float64")
    names = class_names_or_indices(class_names, len(logits))
    probabilities = _softmax(logits)
    show_image(axes[0], image)
    axes[0].set_title("input")
    first, second = _two_classes(logits, classes)
    for axis, k in zip(axes[1:3], (first, second)):
        artist = show_signed(axis, np.asarray(explanation["decision_images"][index, k], dtype="float64").sum(axis=-1))
        axis.set_title(f"{names[k]}\nlogit {logits[k]:.2f}, p {probabilities[k]:.2f}", fontsize=9)
        if colorbars:
            figure.colorbar(artist, ax=axis, shrink=0.8)
    if len(axes) > 3:
        evidence = np.asarray(explanation[PIXEL_EVIDENCE][index, first], dtype="float64").sum(axis=-1)
        artist = show_signed(axes[3], evidence)
        axes[3].set_title(f"{names[first]}: pixel evidence\nsum {evidence.sum():.2f} vs black image", fontsize=9)
        if colorbars:
            figure.colorbar(artist, ax=axes[3], shrink=0.8)


def local_view(image, explanation, index=0, classes=None, class_names=None, path=None):
    """Local view of one prediction (seed 000, Figure 3).

    The input image and the decision images (summed over channels, diverging
    colormap symmetric around 0, with colorbars) of two classes: by default
    the predicted class and the runner-up. Titles give each class's logit and
    softmax probability. When the outputs hold `pixel_evidence` (INAM's own
    pixel map), a fourth panel shows it for the first class.

    Args:
        image: the image `(H, W, C)` in [0, 1], or the batch `(B, H, W, C)`
            that was explained (then `index` selects it).
        explanation: dict returned by `model.explain` for the batch.
        index: int, which image of the explained batch.
        classes: optional pair of class indices to show instead.
        class_names: optional list of `K` names.
        path: optional png file to save the figure to.

    Returns:
        `matplotlib.figure.Figure`.

    Example:
    >>> explanation = model.explain(test_images[:4])
    >>> fig = local_view(test_images[2], explanation, index=2, class_names=model.class_names)
    """
    index = check_index(index, len(explanation["logits"]), "index")
    image = np.asarray(image, dtype="float32")
    image = image[index] if image.ndim == 4 else image
    figure, axes = new_figure(1, _panels(explanation), width=PANEL_INCHES * 1.2)
    _draw_explanation_row(figure, axes[0], image, explanation, index, classes, class_names, colorbars=True)
    return save(figure, path)


def explanation_grid(images, explanation, class_names=None, max_images=8, path=None):
    """Overview of several predictions: one row per image.

    Each row shows the image and the decision images of its predicted and
    runner-up class (summed over channels, symmetric diverging colormap).

    Args:
        images: float array `(B, H, W, C)` in [0, 1], the explained batch.
        explanation: dict returned by `model.explain(images)`.
        class_names: optional list of `K` names.
        max_images: int, at most this many rows.
        path: optional png file to save the figure to.

    Returns:
        `matplotlib.figure.Figure`.

    Example:
    >>> fig = explanation_grid(test_images[:8], model.explain(test_images[:8]),
    ...                        class_names=model.class_names, path="overview.png")
    """
    images = np.asarray(images, dtype="float32")
    rows = min(len(images), len(explanation["logits"]), int(max_images))
    if rows < 1:
        raise ValueError("explanation_grid needs at least one image.")
    figure, axes = new_figure(rows, _panels(explanation), width=PANEL_INCHES * 0.8, height=PANEL_INCHES * 0.9)
    for row in range(rows):
        _draw_explanation_row(figure, axes[row], images[row], explanation, row, None, class_names, colorbars=False)
        axes[row, 0].set_title(f"image {row}")
    return save(figure, path)


def draw(image, outputs, index, class_names=None):
    """The picture of one explained image: the local view of its predicted and runner-up class."""
    return local_view(image, outputs, index=index, class_names=class_names)


def draw_overview(images, outputs, class_names=None):
    """One picture of several explained images (the first 8)."""
    return explanation_grid(images, outputs, class_names=class_names)


def model_views(model, images, stems, explanation, labels, out):
    """The global views: the strongest kernels of the predicted classes and the most influential kernel's shape functions.

    Returns:
        `{}` (no summary numbers).
    """
    from glasszoo.zoo.inam import kernel_views

    values = model.feature_sample if model.feature_sample is not None else model.max_responses(images)
    names = model.class_names
    for class_index in sorted(set(explanation["logits"].argmax(-1).tolist()))[:3]:
        kernel_views.strongest_kernels(model, class_index, values, path=out / f"strongest_kernels_{class_index}_{file_slug(names[class_index])}.png")
    influence = kernel_views.kernel_influence(model, values)
    top = int(influence.max(axis=1).argmax())
    kernel_views.kernel_global_view(model, top, values, class_names=names, path=out / f"kernel_{top:03d}_global_view.png")
    return {}
