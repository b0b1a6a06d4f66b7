"""A sample of training-data feature values stored with a preset (for density shading in plots)."""

import pathlib

import numpy as np

FEATURE_SAMPLE_FILE = "feature_sample.npz"


def write_feature_sample(model, images, folder, size=2000, seed=0):
    """Stores the max responses `(size, N)` of a seeded sample of training images.

    Args:
        model: a model with `feature_values(batch)`.
        images: training images `(B, H, W, C)`.
        folder: preset folder.
        size: number of images sampled.
        seed: sampling seed.
    """
    from keras import ops

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), min(size, len(images)), replace=False))
    values = np.concatenate(
        [ops.convert_to_numpy(model.feature_values(ops.convert_to_tensor(images[chosen[i : i + 256]]))) for i in range(0, len(chosen), 256)]
    )
    path = pathlib.Path(folder) / FEATURE_SAMPLE_FILE
    np.savez_compressed(path, feature_values=values.astype("float16"), image_count=len(chosen), seed=seed)
    return path


def read_feature_sample(folder):
    """`(size, N)` float32 feature values of the training sample, or None if the preset has none."""
    path = pathlib.Path(folder) / FEATURE_SAMPLE_FILE
    if not path.exists():
        return None
    with np.load(path) as data:
        return data["feature_values"].astype("float32")
