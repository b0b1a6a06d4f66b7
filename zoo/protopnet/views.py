"""Matplotlib views of ProtoPNet explanations: "this looks like that" and the pushed prototypes.

`draw` reads the explanation outputs alone (NumPy and matplotlib), so the
same code draws `glasszoo explain` (Keras) and `glasszoo predict --out`
(ONNX) pictures; the prototype views also read the push provenance.

Boxes are `[top, bottom, left, right)` in input pixels. The high-activation
box (yellow) covers the pixels where a prototype's upsampled similarity map
reaches its 95th percentile; the receptive-field box (cyan) is the input
window the prototype's latent patch sees. Every function builds a
`matplotlib.figure.Figure` (no pyplot), optionally saves it and returns it.
"""

import numpy as np
from glasszoo.explain.figures import (
    bare,
    check_index,
    new_figure,
    overlay_signed,
    predicted_class,
    save,
    show_image,
)
from glasszoo.zoo.protopnet.push import high_activation_box
from matplotlib.patches import Rectangle

__all__ = ["REQUIRED_OUTPUTS", "draw", "model_views", "prototype_grid", "this_looks_like_that", "top_prototypes"]

# outputs the pictures read, with their rank (batch axis included)
REQUIRED_OUTPUTS = {
    "logits": 2,
    "prototype_similarity": 2,
    "upsampled_similarity_maps": 4,
    "prototype_contributions": 3,
    "class_evidence_map": 3,
}
TOP_PROTOTYPES = 3

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
    weights = np.asarray(model.last_layer.get_weights()[0])
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


def draw(image, outputs, index, class_names=None):
    """One explained image: its class evidence map and where its most contributing prototypes are found.

    The evidence map is the `class_evidence_map` output (the model's own
    map: each prototype's score times its centred last-layer weight, on the
    receptive field of the patch where it is found), so this picture and the
    Keras one agree.
    """
    image = np.asarray(image, dtype="float32")
    logits, k, names = predicted_class(outputs, index, class_names)
    contributions = np.asarray(outputs["prototype_contributions"][index, :, k], dtype="float64")
    similarity = np.asarray(outputs["prototype_similarity"][index], dtype="float64")
    maps = np.asarray(outputs["upsampled_similarity_maps"][index], dtype="float64")
    top = np.argsort(-contributions, kind="stable")[: min(TOP_PROTOTYPES, len(contributions))]
    figure, axes = new_figure(1, 2 + len(top))
    show_image(axes[0, 0], image)
    axes[0, 0].set_title("image")
    shown = overlay_signed(axes[0, 1], image, np.asarray(outputs["class_evidence_map"][index], dtype="float64"))
    axes[0, 1].set_title(f"evidence for {names[k]}")
    figure.colorbar(shown, ax=axes[0, 1], shrink=0.8)
    for axis, p in zip(axes[0, 2:], top):
        show_image(axis, image.mean(axis=-1, keepdims=True))
        axis.imshow(maps[..., p], cmap="jet", alpha=0.5)
        axis.set_title(f"prototype {p}\nsim {similarity[p]:.3g}, contrib {contributions[p]:.3g}", fontsize=9)
    figure.suptitle(f"predicted: {names[k]} (logit {logits[k]:.3g})")
    return figure


def model_views(model, images, stems, explanation, labels, out):
    """A "this looks like that" panel per image (`prototypes_<stem>.png`) and the grid of pushed prototypes.

    Needs pushed prototypes (provenance); without them nothing is drawn.
    Returns `{"pushed": bool}`.
    """
    return pushed_views(
        model, images, stems, explanation, out,
        per_image=lambda image, one, path: this_looks_like_that(model, image, top=TOP_PROTOTYPES, explained=one, path=path),
        prefix="prototypes", overview=lambda path: prototype_grid(model, path=path), overview_name="prototypes.png",
    )


def pushed_views(model, images, stems, explanation, out, per_image, prefix, overview, overview_name):
    """A prototype network's model views: `per_image(image, its outputs, path)` as `<prefix>_<stem>.png` and `overview(path)`.

    Nothing is drawn without pushed prototypes (provenance). Returns `{"pushed": bool}`.
    """
    if model.prototype_provenance is None:
        return {"pushed": False}
    for index, (image, stem) in enumerate(zip(images, stems)):
        one = {key: value[index : index + 1] for key, value in explanation.items()}
        per_image(image, one, out / f"{prefix}_{stem}.png")
    overview(out / overview_name)
    return {"pushed": True}
