"""What a SENN concept means: the training images at its two ends, and the images decoded along it.

A concept `h_i` is a learned, signed scalar: the seed reads it through the
training images that set it highest (and lowest), and through the
autoencoder, whose decoder turns a concept vector back into an image.
`concept_exemplars` finds both ends of every concept on the training images
once, after training (`SENN.finish_training`); the preset carries them in
`concepts.npz` with their indices in the training split, so a view can show
them without the data set. `decoded_sweep` varies one concept over its
training range with the others at their mean and decodes each step.
"""

import numpy as np
from glasszoo.zoo.atomic import atomic_path

EXEMPLAR_FILE = "concepts.npz"
# highest/lowest_index: (k, n) positions in the training images given to `concept_exemplars` (the fit split for a
# preset); *_value: (k, n) the concept's value there; *_images: (k, n, H, W, C) those images as uint8 (display only);
# mean: (k,) mean concept values; quantiles: (k, 3) the 5th, 50th and 95th percentiles
EXEMPLAR_KEYS = (
    "highest_index", "highest_value", "highest_images", "lowest_index", "lowest_value", "lowest_images", "mean", "quantiles",
)
QUANTILES = (5.0, 50.0, 95.0)


def concept_values(model, images, batch_size=256):
    """The concepts `h(x)` of `images`, `(N, k)` float64, batch by batch."""
    from keras import ops

    parts = [
        ops.convert_to_numpy(model.concept_values(ops.convert_to_tensor(np.asarray(images[start : start + batch_size], "float32"))))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts).astype("float64")


def _as_bytes(images):
    return np.round(np.clip(np.asarray(images, "float64"), 0.0, 1.0) * 255.0).astype("uint8")


def concept_exemplars(model, images, count=8, batch_size=256):
    """The `count` images that set each concept highest and lowest, with the concepts' training statistics.

    Args:
        model: a SENN.
        images: the training images, `(N, H, W, C)` in [0, 1].
        count: exemplars per end of each concept.
        batch_size: images per forward pass.

    Returns:
        dict with the arrays of `EXEMPLAR_KEYS`.

    Example:
    >>> exemplars = concept_exemplars(model, x_fit, count=6)  # doctest: +SKIP
    >>> exemplars["highest_images"].shape  # doctest: +SKIP
    (10, 6, 28, 28, 1)
    """
    images = np.asarray(images)
    if not len(images):
        raise ValueError("concept_exemplars needs at least one image.")
    values = concept_values(model, images, batch_size)
    count = max(1, min(int(count), len(images)))
    order = np.argsort(-values, axis=0, kind="stable")  # (N, k), highest first
    highest, lowest = order[:count].T, order[::-1][:count].T  # (k, count)
    columns = np.arange(values.shape[1])[:, None]
    return {
        "highest_index": highest.astype("int64"),
        "highest_value": values[highest, columns],
        "highest_images": _as_bytes(images[highest]),
        "lowest_index": lowest.astype("int64"),
        "lowest_value": values[lowest, columns],
        "lowest_images": _as_bytes(images[lowest]),
        "mean": values.mean(axis=0),
        "quantiles": np.percentile(values, QUANTILES, axis=0).T,
    }


def save_exemplars(exemplars, path):
    """Writes the exemplars to an `.npz` file (atomically); returns its path."""
    with atomic_path(path) as temporary:
        np.savez_compressed(temporary, **{key: exemplars[key] for key in EXEMPLAR_KEYS})
    return path


def load_exemplars(path, num_concepts=None):
    """Reads an exemplar `.npz`; checks its keys and (optionally) its concept count.

    Raises:
        ValueError: not an exemplar file, or one of another concept count (the file is named).
    """
    with np.load(path, allow_pickle=False) as data:
        missing = [key for key in EXEMPLAR_KEYS if key not in data.files]
        if missing:
            raise ValueError(f"{path} is not a SENN concept file: it lacks {missing}.")
        exemplars = {key: data[key] for key in EXEMPLAR_KEYS}
    if num_concepts is not None and len(exemplars["mean"]) != num_concepts:
        raise ValueError(f"{path} describes {len(exemplars['mean'])} concepts; the model has {num_concepts}.")
    return exemplars


def decoded_sweep(model, exemplars, concept, steps=5):
    """Images decoded with concept `concept` at `steps` values from its 5th to its 95th training percentile.

    The other concepts stay at their training mean, so the images show what
    this concept alone changes in the decoder's picture.

    Returns:
        `(values (steps,), images (steps, H, W, C))`.

    Example:
    >>> values, images = decoded_sweep(model, model.concept_exemplars, concept=3)  # doctest: +SKIP
    """
    from keras import ops

    low, _, high = exemplars["quantiles"][int(concept)]
    values = np.linspace(low, high, int(steps))
    codes = np.repeat(exemplars["mean"][None, :], len(values), axis=0)
    codes[:, int(concept)] = values
    decoded = model.decode(ops.convert_to_tensor(codes.astype("float32")))
    return values, ops.convert_to_numpy(decoded)
