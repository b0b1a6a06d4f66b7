"""The files of `glasszoo explain` for any zoo model: arrays, one picture per image, an overview, the family's views.

Per image `local_<stem>.png` is drawn by the family's `views.draw` from the
explanation outputs, the same function `glasszoo predict --out` uses on the
ONNX outputs; `explanation_grid.png` by `views.draw_overview` where the
family has one; `views.model_views` adds the pictures that need the model
(prototype crops, kernel plots, localisation grids). `explanations.npz`
holds the images and every explanation output, `predictions.json` the
predicted class of each image.
"""

import json
import pathlib

import numpy as np
from glasszoo.explain import pictures
from glasszoo.explain.figures import file_slug
from glasszoo.explain.probabilities import probabilities_of
from glasszoo.zoo.atomic import atomic_path, atomic_write_text

PICTURE_BATCH = 16


def predictions_summary(explanation, stems, class_names, activation="softmax"):
    """`[{"image", "predicted", "class_index", "logit", "probability"}]`, one per image."""
    logits = np.asarray(explanation["logits"])
    probabilities = probabilities_of(logits, activation)
    predicted = logits.argmax(-1)
    return [
        {
            "image": stem,
            "predicted": class_names[p],
            "class_index": int(p),
            "logit": round(float(logits[i, p]), 6),
            "probability": round(float(probabilities[i, p]), 6),
        }
        for i, (stem, p) in enumerate(zip(stems, predicted))
    ]


def write_explanations(model, images, stems, out, labels=None, model_views=True, progress=None):
    """Explains `images` with `model` and writes the pictures and arrays into folder `out`.

    Args:
        model: a zoo model.
        images: float32 `(B, H, W, C)` in [0, 1].
        stems: one file-name stem per image.
        out: output folder (created).
        labels: optional true classes (some views use them, e.g. localisation grids).
        model_views: also draw the family's model views.
        progress: optional callable `progress(done_count)` after each batch.

    Returns:
        `(explanation, summary)`: the explanation dict and the numbers the
        family's model views report.

    Example:
    >>> explanation, summary = write_explanations(model, images, ["a", "b"], "out/")  # doctest: +SKIP
    """
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images, dtype="float32")
    parts = []
    for start in range(0, len(images), PICTURE_BATCH):
        parts.append(model.explain(images[start : start + PICTURE_BATCH]))
        if progress is not None:
            progress(min(start + PICTURE_BATCH, len(images)))
    explanation = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    with atomic_path(out / "explanations.npz") as temporary:
        np.savez_compressed(temporary, images=images, **explanation)
    names = model.class_names
    for index, stem in enumerate(stems):
        pictures.explanation_picture(model.family, images, explanation, index, names, path=out / f"local_{file_slug(stem)}.png")
    pictures.overview_picture(model.family, images, explanation, names, path=out / "explanation_grid.png")
    summary = {}
    draw_model_views = getattr(pictures.views_of(model.family), "model_views", None)
    if model_views and draw_model_views is not None:
        summary = draw_model_views(model, images, [file_slug(s) for s in stems], explanation, labels, out) or {}
    records = predictions_summary(explanation, stems, names, model.output_activation)
    atomic_write_text(out / "predictions.json", json.dumps(records, indent=2) + "\n")
    return explanation, summary
