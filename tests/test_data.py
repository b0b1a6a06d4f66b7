import gzip

import numpy as np
import pytest
from glasszoo.data import DatasetUnavailable, load_dataset, load_mnist_5k
from glasszoo.data.idx import read_idx
from glasszoo.data.image_files import read_image_files
from glasszoo.data.samples import load_samples


def test_read_idx_round_trip_and_errors(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())
    np.testing.assert_array_equal(read_idx(path), array)
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    truncated = tmp_path / "short-idx"
    truncated.write_bytes(header + array.tobytes()[:10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(truncated)


def test_fashion_mnist_from_local_files(fashion_mnist):
    assert fashion_mnist.x_train.shape == (60000, 28, 28, 1) and fashion_mnist.x_test.shape == (10000, 28, 28, 1)
    assert fashion_mnist.x_train.dtype == np.float32 and 0.0 <= fashion_mnist.x_train.min() and fashion_mnist.x_train.max() <= 1.0
    assert np.bincount(fashion_mnist.y_test).tolist() == [1000] * 10
    x_fit, y_fit, x_val, y_val = fashion_mnist.validation_split(6000, seed=0)
    assert len(x_fit) == 54000 and len(x_val) == 6000
    again = fashion_mnist.validation_split(6000, seed=0)
    np.testing.assert_array_equal(again[3], y_val)


def test_mnist_5k_is_real_digits():
    data = load_mnist_5k()
    assert data.x_train.shape == (4000, 28, 28, 1) and data.x_test.shape == (1000, 28, 28, 1)
    assert set(np.unique(data.y_train)) == set(range(10))
    assert 0.05 < data.x_train.mean() < 0.25  # dark background, bright strokes


def test_samples_are_fashion_mnist_test_images(samples, fashion_mnist):
    images, labels, names = samples
    assert images.shape == (40, 28, 28, 1) and names[0] == "T-shirt/top"
    from glasszoo.data.samples import SAMPLES_DIR

    with np.load(SAMPLES_DIR / "fashion_mnist_test_samples.npz") as raw:
        indices = raw["test_indices"]
    np.testing.assert_allclose(images, fashion_mnist.x_test[indices], atol=1e-6)
    np.testing.assert_array_equal(labels, fashion_mnist.y_test[indices])


def test_image_files_and_folders(tmp_path):
    from PIL import Image

    images, labels, _ = load_samples()
    for k in range(2):
        (tmp_path / f"class{k}").mkdir()
        for i in range(3):
            rgb = np.repeat((images[k * 4 + i, ..., 0] * 255).astype("uint8")[..., None], 3, axis=-1)
            Image.fromarray(rgb).resize((56, 56)).save(tmp_path / f"class{k}" / f"{i}.png")
    files = sorted((tmp_path / "class0").glob("*.png"))
    batch = read_image_files(files, (28, 28, 1))
    assert batch.shape == (3, 28, 28, 1) and batch.dtype == np.float32 and batch.max() <= 1.0
    assert read_image_files(files[:1], (28, 28, 3)).shape == (1, 28, 28, 3)
    folder = load_dataset(str(tmp_path), image_size=(28, 28), test_fraction=0.34, validation_fraction=0.33)
    assert folder.class_names == ["class0", "class1"] and folder.color_mode == "rgb"  # RGB files, even if grey-looking
    assert (len(folder.x_train), len(folder.x_val), len(folder.x_test)) == (2, 2, 2)
    spec = load_dataset({"folder": str(tmp_path), "image_size": [28, 28], "color_mode": "grayscale", "test_fraction": 0.34, "validation_fraction": 0.33})
    assert spec.x_train.shape[1:] == (28, 28, 1) and spec.paths == folder.paths
    with pytest.raises(FileNotFoundError):
        read_image_files([tmp_path / "missing.png"], (28, 28, 1))


def test_unknown_dataset_is_named():
    with pytest.raises(DatasetUnavailable, match="Unknown dataset 'cifar100'"):
        load_dataset("cifar100")


def test_missing_fashion_mnist_says_how_to_get_it(monkeypatch):
    import keras
    from glasszoo.data import datasets

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(datasets, "FASHION_MNIST_DIRS", ("/nonexistent",))
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    with pytest.raises(DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist()


def test_flipped_batches_cover_every_image_once_and_mirror_about_half():
    from glasszoo.data.augment import FlippedBatches

    rng = np.random.default_rng(0)
    images = rng.random((50, 4, 6, 1)).astype("float32")
    labels = np.arange(50)
    batches = FlippedBatches(images, labels, batch_size=16, seed=1)
    assert len(batches) == 4
    seen, flipped = [], 0
    for index in range(len(batches)):
        batch, batch_labels = batches[index]
        for image, label in zip(batch, batch_labels):
            if np.array_equal(image, images[label][:, ::-1]):
                flipped += 1
            else:
                np.testing.assert_array_equal(image, images[label])
        seen.extend(batch_labels.tolist())
    assert sorted(seen) == list(range(50))
    assert 10 < flipped < 40


def test_random_crops_are_shifted_windows_of_the_padded_image():
    from glasszoo.data.augment import FlippedBatches

    rng = np.random.default_rng(0)
    images = rng.random((20, 6, 6, 3)).astype("float32") + 1.0  # no zeros of its own
    batches = FlippedBatches(images, np.arange(20), batch_size=20, seed=2, crop_padding=2)
    batch, labels = batches[0]
    assert batch.shape == images.shape
    shifted = 0
    for crop, label in zip(batch, labels):
        padded_options = [images[label], images[label][:, ::-1]]
        matches = []
        for source in padded_options:
            padded = np.pad(source, ((2, 2), (2, 2), (0, 0)))
            matches += [(r, c) for r in range(5) for c in range(5) if np.array_equal(padded[r : r + 6, c : c + 6], crop)]
        assert matches, "every crop is a window of the zero-padded (possibly mirrored) image"
        shifted += (2, 2) not in matches
    assert shifted > 5


def test_pixel_holes_zero_a_share_of_the_pixels_of_about_half_the_images():
    from glasszoo.data.augment import AugmentedBatches, augmentation_options

    options = augmentation_options("pixel_holes", (8, 8))
    assert options == {"flip": False, "crop_padding": 0, "affine": False, "hole_probability": 0.5}
    rng = np.random.default_rng(0)
    images = rng.random((400, 8, 8, 3)).astype("float32") + 0.5  # no zeros of its own
    batch, labels = AugmentedBatches(images, np.arange(400), batch_size=400, seed=3, **options)[0]
    zeroed = (batch == 0.0)
    assert np.array_equal(zeroed.all(-1), zeroed.any(-1)), "a hole removes every channel of its pixel"
    share = zeroed[..., 0].mean(axis=(1, 2))
    holed = share > 0
    assert 150 < holed.sum() < 250
    assert share.max() <= 0.9 + 0.1 and 0.3 < share[holed].mean() < 0.6  # uniform in [0, 0.9]: mean 0.45
    kept = ~zeroed
    np.testing.assert_array_equal(batch[kept], images[labels][kept])
    np.testing.assert_array_equal(batch[~holed], images[labels[~holed]])


def test_augmentation_names_join_with_plus_and_unknown_names_are_refused():
    from glasszoo.data.augment import augmentation_options

    assert augmentation_options("flip+pixel_holes", (28, 28)) == {"flip": True, "crop_padding": 0, "affine": False, "hole_probability": 0.5}
    assert augmentation_options("crop", (28, 28))["hole_probability"] == 0.0
    with pytest.raises(ValueError, match="Unknown augmentation 'holes'"):
        augmentation_options("flip+holes", (28, 28))


def test_cifar10_offline_names_the_problem(monkeypatch):
    import keras
    from glasszoo.data import DatasetUnavailable, datasets

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DatasetUnavailable, match="CIFAR-10 is not cached"):
        datasets.load_dataset("cifar10")
