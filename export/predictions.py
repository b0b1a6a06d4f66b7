"""What a served model's outputs say: its class scores, probabilities and top classes (NumPy only).

Shared by `glasszoo predict` and `glasszoo serve`, so both answer alike.
"""

import numpy as np

from glasszoo.explain.probabilities import probabilities_of


def class_scores(outputs, source="the model"):
    """`(name, (B, K) scores)`: the `logits` output, else the only 2-D output of a non-glasszoo model.

    Args:
        outputs: dict output name -> array.
        source: what to name in the error (e.g. the ONNX file).

    Example:
    >>> class_scores({"logits": np.zeros((1, 3))})[0]
    'logits'
    """
    if "logits" in outputs:
        return "logits", outputs["logits"]
    candidates = [name for name, value in outputs.items() if np.ndim(value) == 2]
    if len(candidates) == 1:
        return candidates[0], outputs[candidates[0]]
    raise ValueError(
        f"{source} has no 'logits' output and no single (batch, classes) output to read class scores from "
        f"(outputs: {', '.join(outputs)})."
    )


def class_names_for(names, classes, notes=None):
    """`names` when it names `classes` classes, else the indices as strings (with a note appended to `notes`)."""
    if len(names) == classes:
        return list(names)
    if names and notes is not None:
        notes.append(f"the metadata names {len(names)} classes but the model has {classes}: classes shown as indices")
    return [str(k) for k in range(classes)]


def top_classes(scores, activation, names, k=3):
    """`(probabilities (B, K), [per image: {"class", "class_index", "probability", "top3"}])`.

    Args:
        scores: `(B, K)` logits.
        activation: the model's output activation (`"softmax"` or `"sigmoid"`).
        names: `K` class names.
        k: how many classes `top3` lists.

    Example:
    >>> _, result = top_classes(np.array([[0.0, 2.0]]), "softmax", ["a", "b"], k=2)
    >>> result[0]["class"], result[0]["probability"]
    ('b', 0.8808)
    """
    probabilities = probabilities_of(scores, activation)
    results = []
    for score, p in zip(np.asarray(scores, "float64"), probabilities):
        top = np.argsort(-score, kind="stable")[:k]  # by score: probabilities that saturate (0 or 1) would tie
        results.append({
            "class": names[int(top[0])], "class_index": int(top[0]), "probability": round(float(p[top[0]]), 4),
            "top3": [{"class": names[int(t)], "probability": round(float(p[t]), 4)} for t in top],
        })
    return probabilities, results
