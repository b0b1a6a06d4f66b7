"""Matplotlib views of PrototypeDL: the decoded prototypes and why one image got its class (Li et al. 2018).

`draw` reads the explanation outputs alone (NumPy and matplotlib): the same
code draws `glasszoo explain` (Keras) and `glasszoo predict --out` (ONNX)
pictures. The prototype views decode the prototypes with the model.

A PrototypeDL logit is a weighted sum of squared latent distances,
`logit_k = sum_j d_j W[j, k]`, so a prototype speaks for the class with its
most negative weight: the nearer an image is to it, the less that class is
penalised. Every function builds a `matplotlib.figure.Figure` (no pyplot),
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
from matplotlib.figure import Figure

__all__ = ["REQUIRED_OUTPUTS", "draw", "draw_overview", "model_views", "prototype_evidence_difference", "prototype_grid", "prototype_view", "prototype_views"]

# outputs the pictures read, with their rank (batch axis included)
REQUIRED_OUTPUTS = {"logits": 2, "reconstruction": 4, "class_evidence": 3}


def _softmax(logits):
    shifted = np.asarray(logits, dtype="float64") - np.max(logits)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum()


def prototype_grid(model, class_names=None, columns=5, path=None):
    """The decoded prototypes, each titled with the class it speaks for (most negative weight).

    Prototypes are sorted by that class; a title reads `p3: Trouser (w -4.1)`.

    Args:
        model: a PrototypeDL.
        class_names: optional names (the model's by default).
        columns: panels per row.
        path: optional png file.

    Returns:
        `matplotlib.figure.Figure`.

    Example:
    >>> fig = prototype_grid(glasszoo.load("prototypedl_fashion_mnist"), path="prototypes.png")  # doctest: +SKIP
    """
    decoded = model.decoded_prototypes()
    weights = np.asarray(model.classifier.kernel)
    classes = model.prototype_classes()
    names = class_names_or_indices(class_names or getattr(model, "class_names", None), weights.shape[1])
    count = len(decoded)
    columns = max(1, min(int(columns), count))
    rows = -(-count // columns)
    figure, axes = new_figure(rows, columns, width=PANEL_INCHES * 0.7, height=PANEL_INCHES * 0.8)
    order = np.argsort(classes, kind="stable")
    for axis in axes.flat[count:]:
        axis.set_axis_off()
    for axis, prototype in zip(axes.flat, order):
        show_image(axis, decoded[prototype])
        axis.set_title(f"p{prototype}: {names[classes[prototype]]}\n(w {weights[prototype, classes[prototype]]:.2f})", fontsize=8)
    figure.suptitle("decoded prototypes; class = most negative weight w (logits = distances @ W)", fontsize=10)
    return save(figure, path)


def prototype_evidence_difference(explained, index, first, second):
    """Per-prototype share of the logit gap `logit_first - logit_second` of image `index`, `(P,)`.

    `class_evidence[i, j, k] = d_ij W[j, k]`, so these values sum to the gap.
    """
    evidence = explained["class_evidence"][index]
    return evidence[:, first] - evidence[:, second]


def prototype_view(model, image, nearest=4, class_names=None, path=None):
    """One image: input, reconstruction, its nearest prototypes, and how each prototype moved the decision.

    Top row: the image (predicted class and probability), its reconstruction
    (what the latent code keeps), and the `nearest` prototypes decoded, each
    titled with its class, squared distance `d` and its share `D` of the
    logit gap (below). Bottom row: for every prototype, its share
    `d_j (W[j, predicted] - W[j, runner-up])` of the logit gap between the
    predicted class and the runner-up (bars sum to the gap; positive bars
    favour the prediction). Logits are linear in distances, so distant
    prototypes carry large shares too: "far from every Trouser prototype"
    is evidence as much as "near a T-shirt prototype".

    Args:
        model: a PrototypeDL.
        image: `(H, W, C)` in [0, 1].
        nearest: how many nearest prototypes to show.
        class_names: optional names (the model's by default).
        path: optional png file.

    Returns:
        `matplotlib.figure.Figure`.

    Example:
    >>> fig = prototype_view(model, test_images[0], path="why.png")  # doctest: +SKIP
    """
    image = np.asarray(image, dtype="float32")
    explained = model.explain(image[None])
    decoded = model.decoded_prototypes()
    logits, distances = explained["logits"][0], explained["prototype_distances"][0]
    classes = model.prototype_classes()
    names = class_names_or_indices(class_names or getattr(model, "class_names", None), len(logits))
    order = np.argsort(-logits, kind="stable")
    predicted, runner_up = int(order[0]), int(order[min(1, len(order) - 1)])
    nearest = max(1, min(int(nearest), len(distances)))
    closest = np.argsort(distances, kind="stable")[:nearest]
    gap = prototype_evidence_difference(explained, 0, predicted, runner_up)

    columns = 2 + nearest
    figure = Figure(figsize=(columns * PANEL_INCHES * 0.8, PANEL_INCHES * 1.8), layout="constrained")
    mosaic = [[f"top{c}" for c in range(columns)], ["bars"] * columns]
    axes = figure.subplot_mosaic(mosaic, height_ratios=[1.0, 0.8])
    show_image(axes["top0"], image)
    axes["top0"].set_title(f"input: {names[predicted]}\np {_softmax(logits)[predicted]:.2f}", fontsize=8)
    show_image(axes["top1"], explained["reconstruction"][0])
    axes["top1"].set_title("reconstruction", fontsize=8)
    for column, prototype in enumerate(closest, start=2):
        show_image(axes[f"top{column}"], decoded[prototype])
        axes[f"top{column}"].set_title(
            f"p{prototype} ({names[classes[prototype]]})\nd {distances[prototype]:.2f}, D {gap[prototype]:+.2f}",
            fontsize=8,
        )
    bars = axes["bars"]
    bars.bar(np.arange(len(gap)), gap, color=np.where(gap >= 0, "tab:red", "tab:blue"))
    bars.axhline(0.0, color="black", linewidth=0.6)
    bars.set_xticks(np.arange(len(gap)))
    bars.set_xticklabels([f"p{j}\n{names[classes[j]][:7]}" for j in range(len(gap))], fontsize=6)
    bars.tick_params(axis="y", labelsize=7)
    bars.set_title(
        f"share of each prototype in logit({names[predicted]}) - logit({names[runner_up]}) = {gap.sum():.2f}", fontsize=8
    )
    return save(figure, path)


def prototype_views(model, images, nearest=3, class_names=None, max_images=8, path=None):
    """Several images, one row each: input, reconstruction and the `nearest` prototypes (no bars).

    Example:
    >>> fig = prototype_views(model, test_images[:5], path="rows.png")  # doctest: +SKIP
    """
    images = np.asarray(images, dtype="float32")[: int(max_images)]
    if not len(images):
        raise ValueError("prototype_views needs at least one image.")
    explained = model.explain(images)
    decoded = model.decoded_prototypes()
    classes = model.prototype_classes()
    names = class_names_or_indices(class_names or getattr(model, "class_names", None), explained["logits"].shape[1])
    nearest = max(1, min(int(nearest), decoded.shape[0]))
    figure, axes = new_figure(len(images), 2 + nearest, width=PANEL_INCHES * 0.7, height=PANEL_INCHES * 0.8)
    for row, image in enumerate(images):
        predicted = int(np.argmax(explained["logits"][row]))
        show_image(axes[row, 0], image)
        axes[row, 0].set_title(f"{names[predicted]}", fontsize=8)
        show_image(axes[row, 1], explained["reconstruction"][row])
        axes[row, 1].set_title("reconstruction", fontsize=8)
        distances = explained["prototype_distances"][row]
        for column, prototype in enumerate(np.argsort(distances, kind="stable")[:nearest], start=2):
            show_image(axes[row, column], decoded[prototype])
            axes[row, column].set_title(f"p{prototype} {names[classes[prototype]][:11]}\nd {distances[prototype]:.2f}", fontsize=8)
    return save(figure, path)


def draw(image, outputs, index, class_names=None):
    """One explained image: the image, its reconstruction and each prototype's evidence for the predicted class."""
    image = np.asarray(image, dtype="float32")
    logits, k, names = predicted_class(outputs, index, class_names)
    figure, axes = new_figure(1, 3)
    show_image(axes[0, 0], image)
    axes[0, 0].set_title("image")
    show_image(axes[0, 1], np.asarray(outputs["reconstruction"][index], dtype="float64"))
    axes[0, 1].set_title("reconstruction")
    evidence = np.asarray(outputs["class_evidence"][index, :, k], dtype="float64")
    axis = axes[0, 2]
    axis.bar(np.arange(len(evidence)), evidence, color=np.where(evidence >= 0, "tab:red", "tab:blue"))
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel("prototype")
    axis.set_title(f"evidence for {names[k]}\n(sum = logit {evidence.sum():.3g})", fontsize=9)
    figure.suptitle(f"predicted: {names[k]} (p = {_softmax(logits)[k]:.3f})")
    return figure


def draw_overview(images, outputs, class_names=None, max_images=8):
    """Several explained images, one row each: image, reconstruction, evidence of each prototype for the predicted class."""
    images, rows, logits, names = overview_rows(images, outputs, class_names, max_images)
    figure, axes = new_figure(rows, 3, width=PANEL_INCHES * 0.8, height=PANEL_INCHES * 0.75)
    for row in range(rows):
        k = int(np.argmax(logits[row]))
        show_image(axes[row, 0], images[row])
        axes[row, 0].set_title(f"{names[k]} (p {_softmax(logits[row])[k]:.2f})", fontsize=8)
        show_image(axes[row, 1], np.asarray(outputs["reconstruction"][row], dtype="float64"))
        axes[row, 1].set_title("reconstruction", fontsize=8)
        evidence = np.asarray(outputs["class_evidence"][row, :, k], dtype="float64")
        axes[row, 2].bar(np.arange(len(evidence)), evidence, color=np.where(evidence >= 0, "tab:red", "tab:blue"))
        axes[row, 2].axhline(0.0, color="black", linewidth=0.8)
        axes[row, 2].set_title("evidence per prototype", fontsize=8)
    return figure


def model_views(model, images, stems, explanation, labels, out):
    """With the decoded prototypes: a view per image (`prototypes_<stem>.png`), rows of the first 8 images
    (`prototype_rows.png`) and the prototype grid (`prototypes.png`). Returns `{}`."""
    for image, stem in zip(images, stems):
        prototype_view(model, image, path=out / f"prototypes_{stem}.png")
    prototype_views(model, images, path=out / "prototype_rows.png")
    prototype_grid(model, path=out / "prototypes.png")
    return {}
