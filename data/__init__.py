"""Dataset loaders (real data, offline first)."""

from glasszoo.data.datasets import (
    DatasetUnavailable,
    ImageDataset,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    load_mnist_5k,
)
from glasszoo.data.image_folder import FolderDataset, load_image_folder
from glasszoo.data.image_reader import ImageReadError, read_image

__all__ = [
    "DatasetUnavailable", "FolderDataset", "ImageDataset", "ImageReadError", "load_dataset", "load_fashion_mnist",
    "load_image_folder", "load_mnist", "load_mnist_5k", "read_image",
]
