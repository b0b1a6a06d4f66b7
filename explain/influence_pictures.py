"""The picture of an influence query: a test image beside its most helpful and most harmful training images."""

import numpy as np
from glasszoo.explain.figures import PANEL_INCHES, class_names_or_indices, new_figure, save, show_image


def influence_picture(image, found, row, train_images, train_labels, class_names=None, title=None, path=None):
    """Row 1: the test image and its most helpful training images; row 2: its most harmful ones.

    Each training image is titled with its index, its label and its score
    `I_up,loss` (negative: helpful; the predicted change of the test loss
    when the image is removed is `-score / n`).

    Args:
        image: the test image `(H, W, C)`.
        found: `InfluenceIndex.most_influential(...)` of a batch holding it.
        row: its position in that batch.
        train_images: the training images the index was built on.
        train_labels: their labels.
        class_names: optional names.
        title: optional title (default: the class explained).
        path: optional png file.

    Returns:
        `matplotlib.figure.Figure`.

    Example:
    >>> found = index.most_influential(model, test_images[:1], count=6)  # doctest: +SKIP
    >>> influence_picture(test_images[0], found, 0, x_fit, y_fit, model.class_names, path="why.png")  # doctest: +SKIP
    """
    count = found["helpful"].shape[1]
    names = class_names_or_indices(class_names, int(max(np.max(train_labels), found["labels"].max())) + 1)
    figure, axes = new_figure(2, count + 1, width=PANEL_INCHES * 0.6, height=PANEL_INCHES * 0.72)
    show_image(axes[0, 0], np.asarray(image, dtype="float32"))
    axes[0, 0].set_title(f"test image\nloss of: {names[int(found['labels'][row])]}", fontsize=8)
    axes[1, 0].set_axis_off()
    for line, key, word in ((0, "helpful", "helpful"), (1, "harmful", "harmful")):
        for column, (index, score) in enumerate(zip(found[key][row], found[f"{key}_scores"][row]), start=1):
            axis = axes[line, column]
            show_image(axis, np.asarray(train_images[index], dtype="float32"))
            axis.set_title(f"#{index} {names[int(train_labels[index])][:10]}\n{score:+.3g}", fontsize=7)
        axes[line, 1].set_ylabel(word, fontsize=8)
    figure.suptitle(
        title or "most helpful (top) and harmful (bottom) training images; I_up,loss (negative helps)", fontsize=9
    )
    return save(figure, path)


def parts_and_influence_picture(image, found, row, agreement, train_images, train_labels, class_names=None, path=None):
    """Row 1: the test image and the source images of its top parts; row 2: its most helpful training images.

    Each part's source image is titled with the part, its label and its
    helpfulness percentile (0: the most helpful training image; 50: chance),
    so the picture shows whether the model's own reason ("this looks like
    that prototype") and influence ("these training images made it") agree.

    Args:
        image: the test image `(H, W, C)`.
        found: `InfluenceIndex.most_influential(...)` of a batch holding it.
        row: its position in that batch (and in `agreement`).
        agreement: `influence.part_source_ranks(...)` of the same batch.
        train_images, train_labels: the training data of the index.
        class_names: optional names.
        path: optional png file.

    Example:
    >>> parts_and_influence_picture(x_test[0], found, 0, agreement, x_fit, y_fit, model.class_names, path="parts.png")  # doctest: +SKIP
    """
    parts = agreement["parts"].shape[1]
    count = max(parts, found["helpful"].shape[1])
    names = class_names_or_indices(class_names, int(max(np.max(train_labels), found["labels"].max())) + 1)
    figure, axes = new_figure(2, count + 1, width=PANEL_INCHES * 0.6, height=PANEL_INCHES * 0.72)
    for axis in axes.flat:
        axis.set_axis_off()
    show_image(axes[0, 0], np.asarray(image, dtype="float32"))
    axes[0, 0].set_title(f"test image\npredicted: {names[int(found['labels'][row])]}", fontsize=8)
    for column in range(parts):
        source = int(agreement["sources"][row, column])
        axis = axes[0, column + 1]
        show_image(axis, np.asarray(train_images[source], dtype="float32"))
        axis.set_title(
            f"part {int(agreement['parts'][row, column])}: #{source}\n{names[int(train_labels[source])][:10]}, "
            f"{agreement['percentiles'][row, column]:.1f}%",
            fontsize=7,
        )
    for column, (index, score) in enumerate(zip(found["helpful"][row], found["helpful_scores"][row]), start=1):
        axis = axes[1, column]
        show_image(axis, np.asarray(train_images[index], dtype="float32"))
        axis.set_title(f"#{index} {names[int(train_labels[index])][:10]}\n{score:+.3g}", fontsize=7)
    figure.suptitle("top: source images of the top parts (helpfulness percentile: 0 most helpful, 50 chance); bottom: most helpful training images", fontsize=8)
    return save(figure, path)
