"""Pictures of an explanation report: pixel-removal curves and the methods' maps side by side."""

import numpy as np
from glasszoo.explain.figures import (
    PANEL_INCHES,
    new_figure,
    save,
    show_image,
    show_signed,
)


def removal_curves(report, title="", path=None):
    """Mean target probability vs removed share, least-first (left) and most-first (right), one line per method.

    Example:
    >>> removal_curves(report["explanations"][preset_name], path="curves.png")  # doctest: +SKIP
    """
    figure, axes = new_figure(1, 2, width=PANEL_INCHES * 1.8, height=PANEL_INCHES * 1.4)
    for axis, order in zip(axes[0], ("least", "most")):
        for name, entry in report["methods"].items():
            curve = entry[f"pixel_removal_{order}"]
            axis.plot(curve["fractions"], curve["curve"], marker="o", markersize=3, label=f"{name} ({curve['area']:.2f})")
        axis.set_xlabel(f"share of pixels removed, {order} important first")
        axis.set_ylabel("mean target probability")
        axis.set_ylim(0, 1.02)
        axis.legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return save(figure, path)


def method_maps(model, images, labels, methods, class_names=None, path=None):
    """Rows: the images, then each method's map of the true class (symmetric colours per map).

    Example:
    >>> method_maps(model, images[:6], labels[:6], explanation_methods(model), path="maps.png")  # doctest: +SKIP
    """
    images, labels = np.asarray(images, dtype="float32"), np.asarray(labels)
    names = list(class_names) if class_names is not None else [str(c) for c in range(int(labels.max()) + 1)]
    figure, axes = new_figure(1 + len(methods), len(images), width=PANEL_INCHES * 0.7, height=PANEL_INCHES * 0.75)
    for column, image in enumerate(images):
        show_image(axes[0, column], image)
        axes[0, column].set_title(names[labels[column]], fontsize=8)
    for row, (name, explain) in enumerate(methods.items(), start=1):
        maps = np.asarray(explain(model, images, labels))
        for column in range(len(images)):
            show_signed(axes[row, column], maps[column])
        axes[row, 0].set_ylabel(name, fontsize=8)
    return save(figure, path)
