"""Explanation pictures drawn from ONNX outputs alone: the `glasszoo predict --out DIR` views.

This module serves installs without TensorFlow: it imports NumPy and
matplotlib (through `glasszoo.explain.figures`) and never Keras. Each family
has one view, chosen by the ONNX metadata `family`; every view takes the
dict of batched ONNX outputs, the batch index `b` and the predicted class
`k` (the largest logit), so it needs no model object.

Example:
>>> from glasszoo.export import OnnxModel  # doctest: +SKIP
>>> served = OnnxModel("coda.onnx")  # doctest: +SKIP
>>> outputs = served(images)  # doctest: +SKIP
>>> figure = explanation_picture(served.metadata["family"], images, outputs, 0, served.class_names)  # doctest: +SKIP
"""

import numpy as np

from glasszoo.explain.figures import new_figure, save, show_image, show_signed

TOP_PROTOTYPES = 3

# Outputs (and their rank with the batch axis) each view reads.
REQUIRED_OUTPUTS = {
    "inam": {"logits": 2, "decision_images": 5},
    "coda": {"logits": 2, "contributions": 3},
    "protopnet": {"logits": 2, "prototype_similarity": 2, "upsampled_similarity_maps": 4, "prototype_contributions": 3},
    "prototypedl": {"logits": 2, "reconstruction": 4, "class_evidence": 3},
    "cnn": {"logits": 2, "class_activation_map": 3},
}


def missing_outputs(family, outputs):
    """Why `family`'s view cannot be drawn from `outputs` (a message), or None when it can."""
    if family not in REQUIRED_OUTPUTS:
        known = ", ".join(sorted(REQUIRED_OUTPUTS))
        return f"no explanation picture for family {family!r} (pictures exist for {known})"
    for name, rank in REQUIRED_OUTPUTS[family].items():
        if name not in outputs:
            return f"the {family} picture needs the ONNX output {name!r}, which this model lacks"
        if np.ndim(outputs[name]) != rank:
            return f"the {family} picture needs {name!r} of rank {rank}; got shape {np.shape(outputs[name])}"
    return None


def explanation_picture(family, images, outputs, b, class_names=None, probabilities=None, title=None, path=None):
    """The family's explanation view of image `b` for its predicted class, as a matplotlib Figure.

    Args:
        family: ONNX metadata `family` ("inam", "coda", "protopnet", "prototypedl", "cnn").
        images: the batch `(B, H, W, C)` in [0, 1] the outputs were computed from.
        outputs: dict of ONNX output name -> array with batch axis first.
        b: index of the image in the batch.
        class_names: names of the K classes (None: indices).
        probabilities: `(B, K)` class probabilities for the titles (None: logits are shown).
        title: figure title (default: the predicted class and its probability).
        path: png to write (None: only return the figure).

    Raises:
        ValueError: `missing_outputs(family, outputs)` is not None.
    """
    problem = missing_outputs(family, outputs)
    if problem:
        raise ValueError(problem)
    logits = np.asarray(outputs["logits"])
    k = int(np.argmax(logits[b]))
    names = list(class_names) if class_names is not None and len(class_names) == logits.shape[-1] else [str(i) for i in range(logits.shape[-1])]
    score = f"p = {probabilities[b, k]:.3f}" if probabilities is not None else f"logit {logits[b, k]:.3g}"
    figure = DRAW[family](np.asarray(images[b]), outputs, b, k, names)
    figure.suptitle(title or f"predicted: {names[k]} ({score})")
    return save(figure, path)


def _overlay_signed(axis, image, values, bound=None):
    """The image in gray with a signed map over it (diverging colormap symmetric around 0, half transparent)."""
    show_image(axis, _gray(image)[..., None])
    shown = show_signed(axis, values, bound)
    shown.set_alpha(0.6)
    return shown


def _gray(image):
    return image[..., 0] if image.shape[-1] == 1 else image.mean(-1)


def _channel_sum(values):
    """(H, W, C) -> (H, W): a signed per-pixel map (channels summed)."""
    return values.sum(-1) if values.ndim == 3 else values


def _inam(image, outputs, b, k, names):
    figure, axes = new_figure(1, 2)
    show_image(axes[0, 0], image)
    axes[0, 0].set_title("image")
    decision = _channel_sum(np.asarray(outputs["decision_images"][b, k], dtype="float64"))
    shown = show_signed(axes[0, 1], decision)
    axes[0, 1].set_title(f"decision image: {names[k]}")
    figure.colorbar(shown, ax=axes[0, 1], shrink=0.8)
    return figure


def _coda(image, outputs, b, k, names):
    figure, axes = new_figure(1, 3)
    contributions = np.asarray(outputs["contributions"][b], dtype="float64")
    bound = float(np.max(np.abs(contributions)))
    show_image(axes[0, 0], image)
    axes[0, 0].set_title("image")
    shown = show_signed(axes[0, 1], contributions, bound)
    axes[0, 1].set_title(f"contributions: {names[k]}\n(sum {contributions.sum():.3g})")
    _overlay_signed(axes[0, 2], image, contributions, bound)
    axes[0, 2].set_title("overlay")
    figure.colorbar(shown, ax=axes[0, 1:], shrink=0.8)
    return figure


def protopnet_evidence(outputs, b, k):
    """Summed evidence map of class `k`: the upsampled similarity maps weighted by the last layer's column `k`.

    The weights are `prototype_contributions[b, :, k] / prototype_similarity[b]`
    (contributions are similarity x weight); prototypes with zero similarity
    get weight 0 (they add nothing to the logit).
    """
    similarity = np.asarray(outputs["prototype_similarity"][b], dtype="float64")
    contributions = np.asarray(outputs["prototype_contributions"][b, :, k], dtype="float64")
    safe = np.where(np.abs(similarity) > 1e-12, similarity, 1.0)
    weights = np.where(np.abs(similarity) > 1e-12, contributions / safe, 0.0)
    return np.asarray(outputs["upsampled_similarity_maps"][b], dtype="float64") @ weights


def _protopnet(image, outputs, b, k, names):
    contributions = np.asarray(outputs["prototype_contributions"][b, :, k], dtype="float64")
    similarity = np.asarray(outputs["prototype_similarity"][b], dtype="float64")
    maps = np.asarray(outputs["upsampled_similarity_maps"][b], dtype="float64")
    top = np.argsort(-contributions, kind="stable")[: min(TOP_PROTOTYPES, len(contributions))]
    figure, axes = new_figure(1, 2 + len(top))
    show_image(axes[0, 0], image)
    axes[0, 0].set_title("image")
    evidence = protopnet_evidence(outputs, b, k)
    shown = _overlay_signed(axes[0, 1], image, evidence)
    axes[0, 1].set_title(f"evidence for {names[k]}")
    figure.colorbar(shown, ax=axes[0, 1], shrink=0.8)
    for axis, p in zip(axes[0, 2:], top):
        show_image(axis, _gray(image)[..., None])
        axis.imshow(maps[..., p], cmap="jet", alpha=0.5)
        axis.set_title(f"prototype {p}\nsim {similarity[p]:.3g}, contrib {contributions[p]:.3g}", fontsize=9)
    return figure


def _prototypedl(image, outputs, b, k, names):
    figure, axes = new_figure(1, 3)
    show_image(axes[0, 0], image)
    axes[0, 0].set_title("image")
    show_image(axes[0, 1], np.asarray(outputs["reconstruction"][b], dtype="float64"))
    axes[0, 1].set_title("reconstruction")
    evidence = np.asarray(outputs["class_evidence"][b, :, k], dtype="float64")
    axis = axes[0, 2]
    axis.bar(np.arange(len(evidence)), evidence, color=np.where(evidence >= 0, "tab:red", "tab:blue"))
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel("prototype")
    axis.set_title(f"evidence for {names[k]}\n(sum = logit {evidence.sum():.3g})", fontsize=9)
    return figure


def _cnn(image, outputs, b, k, names):
    figure, axes = new_figure(1, 2)
    show_image(axes[0, 0], image)
    axes[0, 0].set_title("image")
    shown = _overlay_signed(axes[0, 1], image, np.asarray(outputs["class_activation_map"][b], dtype="float64"))
    axes[0, 1].set_title(f"CAM: {names[k]}")
    figure.colorbar(shown, ax=axes[0, 1], shrink=0.8)
    return figure


DRAW = {"inam": _inam, "coda": _coda, "protopnet": _protopnet, "prototypedl": _prototypedl, "cnn": _cnn}
