"""A sample of training-data feature values stored with a preset (for density shading in plots)."""

import pathlib

import numpy as np

FEATURE_SAMPLE_FILE = "feature_sample.npz"


def write_feature_sample(model, images, folder, size=2000, seed=0):
    """Stores the max responses `(size, N)` of a seeded sample of training images (atomically).

    Args:
        model: a model with `max_responses(images)`.
        images: training images `(B, H, W, C)`.
        folder: preset folder.
        size: number of images sampled.
        seed: sampling seed.
    """
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), min(size, len(images)), replace=False))
    values = model.max_responses(images[chosen])
    from glasszoo.zoo.atomic import atomic_path

    path = pathlib.Path(folder) / FEATURE_SAMPLE_FILE
    with atomic_path(path) as temporary:  # the temporary name keeps the .npz suffix, so numpy adds none
        np.savez_compressed(temporary, feature_values=values.astype("float16"), image_count=len(chosen), seed=seed)
    return path


def read_feature_sample(folder):
    """`(size, N)` float32 feature values of the training sample, or None if the preset has none."""
    path = pathlib.Path(folder) / FEATURE_SAMPLE_FILE
    if not path.exists():
        return None
    with np.load(path) as data:
        return data["feature_values"].astype("float32")
