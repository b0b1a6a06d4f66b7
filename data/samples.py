"""Sample images shipped with the package, so the demo and tests need no network."""

import pathlib

import numpy as np

SAMPLES_DIR = pathlib.Path(__file__).resolve().parent.parent / "samples"
SAMPLES_OF_DATASET = {"mnist_5k": "mnist"}


def load_samples(name="fashion_mnist"):
    """Sample test images shipped with glasszoo.

    `fashion_mnist`: 40 images of the Fashion-MNIST test split, 4 per class;
    `mnist`: 20 digits of the `mnist_5k` test split (see
    `glasszoo.data.load_mnist_5k`), 2 per class. Indices are in
    `test_indices`, drawn with numpy default_rng(2026).

    Args:
        name: `"fashion_mnist"` or `"mnist"`.

    Returns:
        `(images, labels, class_names)`: float32 `(count, 28, 28, 1)` in [0, 1],
        int labels, list of names.

    Example:
    >>> images, labels, names = load_samples()
    >>> images.shape
    (40, 28, 28, 1)
    """
    name = SAMPLES_OF_DATASET.get(name, name)
    path = SAMPLES_DIR / f"{name}_test_samples.npz"
    if not path.exists():
        raise FileNotFoundError(f"No shipped samples named {name!r} ({path}).")
    with np.load(path) as data:
        images = data["images"].astype("float32")[..., None] / 255.0
        return images, data["labels"].astype("int32"), [str(c) for c in data["class_names"]]
