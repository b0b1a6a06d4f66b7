"""Explanation pictures drawn from the explanation outputs alone, by the family's views module.

`glasszoo explain` (outputs of `model.explain`, Keras) and `glasszoo predict
--out` (outputs of the ONNX file, onnxruntime) draw their per-image pictures
here, with the same function of the same family, so the two cannot disagree.
This module imports NumPy and, through the views, matplotlib; never Keras:
it serves installs without TensorFlow. The family comes from the model's
`family` attribute or the ONNX metadata `family`.

Example:
>>> from glasszoo.export import OnnxModel  # doctest: +SKIP
>>> served = OnnxModel("model.onnx")  # doctest: +SKIP
>>> outputs = served(images)  # doctest: +SKIP
>>> figure = explanation_picture(served.metadata["family"], images, outputs, 0, served.class_names)  # doctest: +SKIP
"""

import numpy as np
from glasszoo.explain.figures import save
from glasszoo.zoo.families import families


def views_of(family):
    """The views module of `family`; a ValueError naming the families with pictures otherwise."""
    known = families()
    if family not in known:
        raise ValueError(f"no explanation picture for family {family!r} (pictures exist for {', '.join(known)})")
    return known[family].views_module()


def missing_outputs(family, outputs):
    """Why `family`'s picture cannot be drawn from `outputs` (a message), or None when it can."""
    try:
        views = views_of(family)
    except ValueError as error:
        return str(error)
    for name, rank in getattr(views, "REQUIRED_OUTPUTS", {"logits": 2}).items():
        if name not in outputs:
            return f"the {family} picture needs the output {name!r}, which this model lacks"
        if np.ndim(outputs[name]) != rank:
            return f"the {family} picture needs {name!r} of rank {rank}; got shape {np.shape(outputs[name])}"
    return None


def explanation_picture(family, images, outputs, b, class_names=None, probabilities=None, title=None, path=None):
    """The family's picture of image `b` of an explained batch, as a matplotlib Figure.

    Args:
        family: the family name (model attribute or ONNX metadata `family`).
        images: the batch `(B, H, W, C)` in [0, 1] the outputs were computed from.
        outputs: dict of output name -> array with the batch axis first.
        b: index of the image in the batch.
        class_names: names of the K classes (None: indices).
        probabilities: optional `(B, K)` class probabilities for the default title.
        title: figure title (default: the family's own).
        path: png to write (None: only return the figure).

    Raises:
        ValueError: `missing_outputs(family, outputs)` is not None.
    """
    problem = missing_outputs(family, outputs)
    if problem:
        raise ValueError(problem)
    logits = np.asarray(outputs["logits"])
    names = list(class_names) if class_names is not None and len(class_names) == logits.shape[-1] else None
    figure = views_of(family).draw(np.asarray(images[b]), outputs, b, names)
    if title is not None:
        figure.suptitle(title)
    elif probabilities is not None:
        k = int(np.argmax(logits[b]))
        figure.suptitle(f"predicted: {(names or [str(i) for i in range(logits.shape[-1])])[k]} (p = {probabilities[b, k]:.3f})")
    return save(figure, path)


def overview_picture(family, images, outputs, class_names=None, path=None):
    """The family's picture of several explained images, or None when its views have none."""
    draw_overview = getattr(views_of(family), "draw_overview", None)
    if draw_overview is None:
        return None
    return save(draw_overview(np.asarray(images), outputs, class_names), path)
