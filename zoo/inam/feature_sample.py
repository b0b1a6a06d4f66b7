"""A sample of training-data feature values stored with an INAM preset (density shading in the kernel views)."""

import pathlib

import numpy as np

FEATURE_SAMPLE_FILE = "feature_sample.npz"


def write_feature_values(values, path):
    """Stores max responses `(size, N)` as float16 in an `.npz` file, atomically; returns the path."""
    from glasszoo.zoo.atomic import atomic_path

    values = np.asarray(values)
    with atomic_path(path) as temporary:  # the temporary name keeps the .npz suffix, so numpy adds none
        np.savez_compressed(temporary, feature_values=values.astype("float16"), image_count=len(values))
    return pathlib.Path(path)


def read_feature_sample(folder):
    """`(size, N)` float32 feature values of the training sample, or None if the preset has none."""
    path = pathlib.Path(folder) / FEATURE_SAMPLE_FILE
    if not path.exists():
        return None
    with np.load(path) as data:
        return data["feature_values"].astype("float32")
