"""Matplotlib views of ProtoPNet explanations: "this looks like that" and the pushed prototypes.

Boxes are `[top, bottom, left, right)` in input pixels. The high-activation
box (yellow) covers the pixels where a prototype's upsampled similarity map
reaches its 95th percentile; the receptive-field box (cyan) is the input
window the prototype's latent patch sees. Every function builds a
`matplotlib.figure.Figure` (no pyplot), optionally saves it and returns it.
"""

import keras
import numpy as np
from glasszoo.explain.figures import bare, check_index, new_figure, save, show_image
from glasszoo.zoo.protopnet_push import high_activation_box
from matplotlib.patches import Rectangle

__all__ = ["prototype_grid", "this_looks_like_that", "top_prototypes"]

HIGH_ACTIVATION_COLOUR = "yellow"
RECEPTIVE_FIELD_COLOUR = "cyan"


def draw_box(axis, box, colour, width=1.5):
    """Outlines `[top, bottom, left, right)` on an image axis."""
    top, bottom, left, right = (int(v) for v in box)
    axis.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor=colour, linewidth=width))


def _require_provenance(model):
    if getattr(model, "prototype_provenance", None) is None:
        raise ValueError("The model's prototypes have not been pushed (no provenance): push them or load a pushed preset.")
    return model.prototype_provenance


def top_prototypes(explained, index, target, count):
    """Prototype indices with the largest contribution to class `target` for image `index` of an `explain` result."""
    contributions = explained["prototype_contributions"][index, :, target]
    return np.argsort(-contributions, kind="stable")[:count]


def this_looks_like_that(model, image, top=3, target=None, path=None, explained=None):
    """The reasoning of one decision: where the test image looks like each of its most contributing prototypes.

    One row per prototype, ordered by contribution to the explained class:
    the test image with the prototype's similarity heat map and its
    high-activation box; the prototype's source training image with the
    patch it was pushed onto (receptive-field and high-activation boxes);
    and the numbers: similarity x weight = contribution.

    Args:
        model: a pushed `ProtoPNet` (has `prototype_provenance`).
        image: `(H, W, C)` in [0, 1].
        top: number of prototypes shown.
        target: the class explained (the predicted class if None).
        path: png file to write.
        explained: this image's `model.explain` result, if already computed.

    Returns:
        the figure.
    """
    provenance = _require_provenance(model)
    image = np.asarray(image, dtype="float32")
    explained = explained or model.explain(image[None])
    logits = explained["logits"][0]
    target = int(np.argmax(logits)) if target is None else check_index(target, model.num_classes, "target")
    chosen = top_prototypes(explained, 0, target, min(int(top), model.prototype_layer.num_prototypes))
    names = model.class_names
    weights = keras.ops.convert_to_numpy(model.last_layer.kernel)
    figure, axes = new_figure(len(chosen), 3, width=2.6, height=2.4)
    heading = f"predicted {names[int(np.argmax(logits))]}; explaining {names[target]} (logit {logits[target]:.2f})"
    figure.suptitle(heading, fontsize=10)
    for row, j in enumerate(chosen):
        similarity_map = explained["upsampled_similarity_maps"][0, :, :, j]
        axis = axes[row, 0]
        show_image(axis, image)
        axis.imshow(similarity_map, cmap="jet", alpha=0.45)
        draw_box(axis, high_activation_box(similarity_map), HIGH_ACTIVATION_COLOUR)
        axis.set_title("this (test image)" if row == 0 else "", fontsize=8)
        axis = axes[row, 1]
        show_image(axis, provenance["source_image"][j])
        draw_box(axis, provenance["receptive_field_box"][j], RECEPTIVE_FIELD_COLOUR, width=1.0)
        draw_box(axis, provenance["high_activation_box"][j], HIGH_ACTIVATION_COLOUR)
        axis.set_title(f"looks like prototype {j}\n({names[int(provenance['prototype_class'][j])]}, train #{int(provenance['source_index'][j])})", fontsize=8)
        axis = axes[row, 2]
        bare(axis)
        axis.axis("off")
        similarity = explained["prototype_similarity"][0, j]
        weight = float(weights[j, target])
        contribution = explained["prototype_contributions"][0, j, target]
        axis.text(
            0.02, 0.5,
            f"similarity {similarity:.3f}\n x weight {weight:.3f}\n = {contribution:.3f} to {names[target]}",
            fontsize=9, va="center", family="monospace",
        )
    return save(figure, path)


def prototype_grid(model, path=None, classes=None, per_class=None):
    """Every pushed prototype, one row per class: its source image with the high-activation box.

    Args:
        model: a pushed `ProtoPNet`.
        path: png file to write.
        classes: class indices to show (all if None).
        per_class: prototypes per class to show (all if None).

    Returns:
        the figure.
    """
    provenance = _require_provenance(model)
    classes = list(range(model.num_classes)) if classes is None else [check_index(c, model.num_classes, "class") for c in classes]
    per_class = model.prototypes_per_class if per_class is None else min(int(per_class), model.prototypes_per_class)
    figure, axes = new_figure(len(classes), per_class, width=1.3, height=1.4)
    for row, k in enumerate(classes):
        members = np.flatnonzero(provenance["prototype_class"] == k)[:per_class]
        for col, j in enumerate(members):
            axis = axes[row, col]
            show_image(axis, provenance["source_image"][j])
            draw_box(axis, provenance["high_activation_box"][j], HIGH_ACTIVATION_COLOUR, width=1.0)
            axis.set_title(f"p{j}", fontsize=7)
            if col == 0:
                axis.set_ylabel(model.class_names[k], fontsize=8)
    return save(figure, path)
