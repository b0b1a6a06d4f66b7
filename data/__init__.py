"""Dataset loaders (real data, offline first)."""

from glasszoo.data.datasets import (
    DatasetUnavailable,
    ImageDataset,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    load_mnist_5k,
)

__all__ = [
    "DatasetUnavailable", "ImageDataset", "load_dataset", "load_fashion_mnist",
    "load_image_folder", "load_mnist", "load_mnist_5k",
]
