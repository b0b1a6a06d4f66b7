"""A folder of the user's own images as train / validation / test splits, read with the one image reader.

Two layouts are understood:

- one sub-folder per class (`root/<class>/*.png`): a stratified, seeded split
  into train, validation and test (each class split in the same shares);
- `root/train/<class>/...` and `root/test/<class>/...`, with `root/val/` (or
  `root/validation/`) optional: those splits are kept as given; without a
  validation folder, the validation split is drawn (stratified) from `train/`.

Files are read by `glasszoo.data.image_reader` (the reader `explain`,
`predict` and `serve` use): every bit depth, alpha, EXIF orientation, a size
limit checked from the header. Hidden files and files whose suffix is not an
image format are skipped (and counted); a corrupt image raises an error
naming it.
"""

import collections
import hashlib
import pathlib

import numpy as np

from glasszoo.data.datasets import DatasetUnavailable, ImageDataset
from glasszoo.data.image_reader import ConversionNotes, decode_image, open_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm")
GREY_MODES = ("1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation", "valid"), "test": ("test",)}


class FolderDataset(ImageDataset):
    """An `ImageDataset` read from a folder, with a fixed validation split and the file of every image.

    Attributes (besides `ImageDataset`'s):
        x_val, y_val: the validation split (`validation_split` returns it).
        paths: `{"train" | "validation" | "test": [file, ...]}` in the order
            of the arrays, relative to the folder.
        folder_sha256: digest of the folder's content (every image file's
            relative path and bytes), recorded in model cards.
        split: how the splits were made (layout, seed, fractions, counts per class).
        color_mode: "grayscale" or "rgb"; image_size: `(H, W)`.
        skipped: files that were not read (not an image suffix, hidden).
        conversions: what was converted to the common shape (sentence), or None.
    """

    def __init__(self, name, x_train, y_train, x_val, y_val, x_test, y_test, class_names, source, **details):
        super().__init__(name, x_train, y_train, x_test, y_test, class_names, source)
        self.x_val, self.y_val = np.asarray(x_val, dtype="float32"), np.asarray(y_val, dtype="int32")
        for key, value in details.items():
            setattr(self, key, value)

    def validation_split(self, size=None, seed=0):
        """`(x_fit, y_fit, x_val, y_val)`: the folder's own split (the arguments are ignored; it was fixed on loading)."""
        return self.x_train, self.y_train, self.x_val, self.y_val

    def card(self):
        """The model card's `data` fields of this folder."""
        return {
            "dataset": self.name,
            "source": self.source,
            "folder_sha256": self.folder_sha256,
            "color_mode": self.color_mode,
            "image_size": list(self.image_size),
            "train_images": len(self.x_train),
            "validation_images": len(self.x_val),
            "test_images": len(self.x_test),
            "split": self.split,
            "skipped_files": len(self.skipped),
            "conversions": self.conversions,
        }


def load_image_folder(
    directory, image_size=None, color_mode=None, validation_fraction=0.1, test_fraction=0.2, seed=0, strict=False,
):
    """Reads a folder of images, one sub-folder per class, into stratified train / validation / test splits.

    Args:
        directory: the folder (see the module's two layouts).
        image_size: `(height, width)` every image is resized to; default:
            the size most images have (the others are resized, and said so).
        color_mode: "grayscale" or "rgb"; default: "grayscale" when every
            file is a grey image (1-, 8-, 16-bit or float), else "rgb".
        validation_fraction: share of each class drawn as the validation
            split (when the folder has no validation folder).
        test_fraction: share of each class held out as the test split (when
            the folder has no `test/` folder).
        seed: seed of the split.
        strict: refuse images that would need converting (size, channels).

    Returns:
        a `FolderDataset` (float32 NHWC in [0, 1], int labels, the files of each split).

    Raises:
        DatasetUnavailable: no folder, no class sub-folders or no images.
        ValueError: a corrupt or unreadable image (named), bad fractions or a
            class of the validation/test folders unknown to `train/`.

    Example:
    >>> data = load_image_folder("my_images/", image_size=(64, 64))  # doctest: +SKIP
    >>> data.class_names, data.x_train.shape, data.x_val.shape  # doctest: +SKIP
    (['circle', 'square'], (480, 64, 64, 3), (60, 64, 64, 3))
    """
    root = pathlib.Path(directory)
    if not root.is_dir():
        raise DatasetUnavailable(f"Image folder {root} does not exist.")
    if color_mode not in (None, "grayscale", "rgb"):
        raise ValueError(f"color_mode must be 'grayscale', 'rgb' or None (inferred); got {color_mode!r}.")
    for label, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{label} must be in [0, 1); got {value!r}.")
    if float(validation_fraction) + float(test_fraction) >= 1.0:
        raise ValueError(f"validation_fraction + test_fraction must leave images to train on; got {validation_fraction} + {test_fraction}.")

    splits, class_names, layout = _split_folders(root)
    files, skipped = {}, []
    for split, folder in splits.items():
        files[split] = []
        for index, name in enumerate(class_names):
            found, ignored = _image_files(folder / name) if (folder / name).is_dir() else ([], [])
            files[split] += [(path, index) for path in found]
            skipped += ignored
    if not files["train"]:
        raise DatasetUnavailable(f"No image files found under {root} (looked for {', '.join(IMAGE_SUFFIXES)} in the class folders).")

    headers = _read_headers([path for split in files.values() for path, _ in split])
    image_size = _common_size(headers, image_size)
    if color_mode is None:
        color_mode = "grayscale" if all(mode in GREY_MODES for _, mode in headers.values()) else "rgb"
    input_shape = (image_size[0], image_size[1], 1 if color_mode == "grayscale" else 3)
    notes = ConversionNotes(strict=strict, target=f"the common shape {input_shape}")
    file_digests = {}
    arrays = {split: _read_split(entries, input_shape, notes, file_digests) for split, entries in files.items()}
    digest = _folder_digest(file_digests, root)

    rng = np.random.default_rng(seed)
    train_paths, train_labels = [p for p, _ in files["train"]], np.array([label for _, label in files["train"]], dtype="int64")
    parts = {}
    if "test" not in files:
        test_rows, rest = _stratified_take(train_labels, test_fraction, rng, np.arange(len(train_labels)))
        parts["test"] = test_rows
    else:
        rest = np.arange(len(train_labels))
    if "validation" not in files:
        val_rows, rest = _stratified_take(train_labels, validation_fraction / (1.0 - (test_fraction if "test" not in files else 0.0)), rng, rest)
        parts["validation"] = val_rows
    parts["train"] = rest

    x, y, paths = {}, {}, {}
    for split in ("train", "validation", "test"):
        if split in parts:
            rows = parts[split]
            x[split], y[split] = arrays["train"][rows], train_labels[rows]
            paths[split] = [_relative(train_paths[i], root) for i in rows]
        else:
            x[split] = arrays[split]
            y[split] = np.array([label for _, label in files[split]], dtype="int64")
            paths[split] = [_relative(p, root) for p, _ in files[split]]
    if not len(x["validation"]):
        raise ValueError(f"{root}: the validation split is empty; raise validation_fraction or add a val/ folder.")
    counts = {split: np.bincount(y[split], minlength=len(class_names)).tolist() for split in ("train", "validation", "test")}
    split = {
        "layout": layout,
        "seed": int(seed),
        "validation_fraction": None if "validation" in files else float(validation_fraction),
        "test_fraction": None if "test" in files else float(test_fraction),
        "stratified": True,
        "images_per_class": counts,
    }
    return FolderDataset(
        root.resolve().name, x["train"], y["train"], x["validation"], y["validation"], x["test"], y["test"], class_names,
        f"image folder {root}", paths=paths, folder_sha256=digest, split=split, color_mode=color_mode,
        image_size=tuple(image_size), skipped=skipped, conversions=notes.summary(),
    )


def _split_folders(root):
    """`({split: folder}, class names, layout)`: the split folders if the root has `train/`, else the root as `train`."""
    children = {child.name.lower(): child for child in root.iterdir() if child.is_dir() and not child.name.startswith(".")}
    if "train" in children and ("test" in children or any(n in children for n in SPLIT_FOLDERS["validation"])):
        splits = {"train": children["train"]}
        for split in ("validation", "test"):
            for name in SPLIT_FOLDERS[split]:
                if name in children:
                    splits[split] = children[name]
                    break
        class_names = _class_folders(splits["train"])
        for split, folder in splits.items():
            unknown = sorted(set(_class_folders(folder)) - set(class_names))
            if unknown:
                raise ValueError(f"{folder} has class folders {unknown} that {splits['train']} lacks; every class must have training images.")
        layout = "given folders: " + ", ".join(f"{split} = {folder.name}/" for split, folder in splits.items())
        return splits, class_names, layout
    class_names = _class_folders(root)
    return {"train": root}, class_names, "one folder per class, split stratified"


def _class_folders(folder):
    names = sorted(child.name for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
    if not names:
        raise DatasetUnavailable(f"{folder} has no class sub-folders: put each class's images in a folder named after it.")
    return names


def _image_files(folder):
    """`(image files, skipped files)` under a class folder (recursively, sorted)."""
    found, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(path)
        else:
            found.append(path)
    return found, skipped


def _read_headers(paths):
    """`{path: ((height, width), mode)}`: every file's header (Pillow reads no more of the file; the size is checked)."""
    headers = {}
    for path in paths:
        image = open_image(path)
        headers[path] = ((image.height, image.width), image.mode)
        image.close()
    return headers


def _folder_digest(file_digests, root):
    """sha256 of the folder: each file's relative path and content digest, in path order."""
    digest = hashlib.sha256()
    for path in sorted(file_digests, key=lambda p: _relative(p, root)):
        digest.update(_relative(path, root).encode("utf-8") + b"\0" + file_digests[path])
    return digest.hexdigest()


def _common_size(headers, image_size):
    if image_size is not None:
        size = tuple(int(s) for s in image_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_size must be (height, width) with positive sizes; got {image_size!r}.")
        return size
    sizes = collections.Counter(size for size, _ in headers.values())
    return sizes.most_common(1)[0][0]


def _read_split(entries, input_shape, notes, file_digests):
    """The conformed images of `entries`, each file read once: its bytes are hashed (into `file_digests`) and decoded."""
    images = np.empty((len(entries),) + tuple(input_shape), dtype="float32")
    for row, (path, _) in enumerate(entries):
        data = path.read_bytes()
        file_digests[path] = hashlib.sha256(data).digest()
        image = decode_image(open_image(data, name=str(path)), str(path))
        images[row] = notes.conform(image, input_shape, str(path))
    return images


def _stratified_take(labels, fraction, rng, rows):
    """`(taken, kept)`: round(fraction x n_c) rows of each class c drawn from `rows` (seeded), the rest kept in order."""
    taken = []
    for label in np.unique(labels[rows]):
        members = rows[labels[rows] == label]
        count = int(round(len(members) * fraction))
        taken.extend(rng.permutation(members)[:count].tolist())
    taken = np.array(sorted(taken), dtype="int64")
    kept = np.setdiff1d(rows, taken)
    return taken, kept


def _relative(path, root):
    return pathlib.Path(path).relative_to(root).as_posix()
