"""Saved scores of one explanation method on one model, so a long evaluation can stop and resume.

The full explanation protocol (16 localisation grids, 256 removal images)
takes up to an hour per model on two CPU cores. `MethodScores` keeps each
finished (model, method) entry of `evaluate_explanations` in its own JSON
file, written atomically, under a key that names everything the entry
depends on: the model's weights (a sha256 over every variable), the images
the protocol draws from, the protocol's sizes and seed, and the method. A
later run with the same key reuses the entry; any change (new weights,
another image set, another protocol) computes it afresh.
"""

import hashlib
import json
import pathlib

import numpy as np

# bump when the metrics' code changes what an entry holds, so older entries are not reused
SCORES_VERSION = 1


def weights_fingerprint(model):
    """sha256 over the names, shapes and values of every variable of `model` (its exact state).

    Example:
    >>> weights_fingerprint(glasszoo.load("cnn_fashion_mnist"))[:12]  # doctest: +SKIP
    '3f9c0a1b77de'
    """
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable))
        digest.update(f"{variable.path}:{value.shape}:{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def images_fingerprint(images, labels, usable):
    """sha256 of the labelled images a protocol draws from and of the usable indices among them."""
    digest = hashlib.sha256()
    for array in (np.asarray(images, dtype="float32"), np.asarray(labels, dtype="int64"), np.asarray(usable, dtype="int64")):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class MethodScores:
    """A folder of saved `evaluate_explanations` entries, one JSON file per (model, method).

    Args:
        folder: where the entries live (created on the first save).
        model_label: a file-name-safe label of the model (entries of
            several models can share a folder).
        key: a JSON-ready dict of everything the entries depend on
            (`protocol_key`).

    Example:
    >>> scores = MethodScores("runs/eval/scores", "cnn_fashion_mnist", key)  # doctest: +SKIP
    >>> scores.load("occlusion") is None  # nothing saved yet  # doctest: +SKIP
    True
    """

    def __init__(self, folder, model_label, key):
        self.folder = pathlib.Path(folder)
        self.model_label = str(model_label)
        self.key = json.loads(json.dumps(key))  # as it reads back from a file

    def path(self, method):
        return self.folder / f"{self.model_label}__{method}.json"

    def load(self, method):
        """The saved entry of `method` under this key, or None (none saved, another key, or unreadable)."""
        path = self.path(method)
        if not path.exists():
            return None
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("key") != dict(self.key, method=method):
            return None
        return saved.get("entry")

    def save(self, method, entry):
        """Writes `entry` for `method` atomically (a reader or a resumed run never sees half of it)."""
        from glasszoo.zoo.atomic import atomic_write_text

        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path(method), json.dumps({"key": dict(self.key, method=method), "entry": entry}) + "\n")


def protocol_key(model, images, labels, usable, **protocol):
    """The key of `MethodScores`: weights, image set and protocol options (`grids`, `removal_images`, ...)."""
    return {
        "version": SCORES_VERSION,
        "weights_sha256": weights_fingerprint(model),
        "images_sha256": images_fingerprint(images, labels, usable),
        "protocol": {name: ([float(v) for v in value] if isinstance(value, (tuple, list, np.ndarray)) else value) for name, value in sorted(protocol.items())},
    }
