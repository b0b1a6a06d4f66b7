"""Accuracy and cross-entropy of a classifier on a labelled split (no compile needed)."""

import numpy as np


def cross_entropy_and_accuracy(model, images, labels, batch_size=512, verbose=0):
    """Mean cross-entropy of the logits (without any training penalty) and accuracy.

    Softmax cross-entropy, or for models with `output_activation = "sigmoid"`
    (CoDA) the binary cross-entropy of every class against one-hot targets,
    averaged over classes as the training loss is.

    Args:
        model: a Keras model returning logits.
        images: float32 `(B, H, W, C)`.
        labels: int class indices `(B,)`.
        batch_size: images per forward pass.
        verbose: Keras progress bar (1) or none (0).

    Returns:
        `(cross_entropy, accuracy)` as floats.

    Example:
    >>> cross_entropy_and_accuracy(model, data.x_test, data.y_test)  # doctest: +SKIP
    (0.31, 0.89)
    """
    labels = np.asarray(labels)
    logits = model.predict(images, batch_size=batch_size, verbose=verbose).astype("float64")
    if getattr(model, "output_activation", "softmax") == "sigmoid":
        targets = np.eye(logits.shape[1])[labels]
        losses = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
        return float(losses.mean()), float((logits.argmax(axis=1) == labels).mean())
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    cross_entropy = float(-log_probabilities[np.arange(len(labels)), labels].mean())
    return cross_entropy, float((logits.argmax(axis=1) == labels).mean())
