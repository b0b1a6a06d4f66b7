"""The images a preset was trained on, rebuilt from its model card (for influence queries).

`glasszoo train` records the data set, the validation size and the seed of
the split in the card; the fit split is then `load_dataset(name)
.validation_split(size, seed)`'s first part, image for image. A preset
trained on a folder of the user's images is given its folder again
(`data=`): the folder's own split is used, and its sha256 is checked against
the card's.
"""

import pathlib


def training_split(model, data=None):
    """`(images, labels, description)` of the split `model` was fitted on (`recorded_splits`' fit part).

    Args:
        model: a zoo model loaded from a preset (its card is read), or any model when `data` is given.
        data: None (from the card), a data set name (`fashion_mnist`, ...) or
            a folder of images (one sub-folder per class).

    Raises:
        ValueError: neither the card nor `data` names the training images, or
            the folder is not the one the card records.

    Example:
    >>> x_fit, y_fit, where = training_split(glasszoo.load("cnn_fashion_mnist"))  # doctest: +SKIP
    >>> where  # doctest: +SKIP
    'fashion_mnist: the 54000 fit images (validation 6000 drawn with seed 0)'
    """
    x_fit, y_fit, _, _, description = recorded_splits(getattr(model, "preset_metadata", None) or {}, model.name, data)
    return x_fit, y_fit, description


def recorded_splits(card, name_of_model, data=None):
    """`(x_fit, y_fit, x_val, y_val, description)`: the fit and validation splits a model card records, rebuilt.

    Args:
        card: the preset's metadata (`model.preset_metadata`).
        name_of_model: how errors name the model.
        data: None (from the card), a data set name or a folder of images, as `training_split`.

    Raises:
        ValueError: as `training_split`.

    Example:
    >>> _, _, x_val, y_val, _ = recorded_splits(model.preset_metadata, model.name)  # doctest: +SKIP
    """
    from glasszoo.data import load_dataset
    from glasszoo.data.datasets import LOADERS

    recorded = card.get("data", {})
    seed = int(card.get("training", {}).get("seed", 0))
    name = data if data is not None else recorded.get("dataset")
    if name is None:
        raise ValueError(
            f"{name_of_model} has no model card naming its training data; give the data set name or folder it was trained on (--data)."
        )
    name = str(name)
    if name not in LOADERS and not pathlib.Path(name).is_dir():
        raise ValueError(
            f"{name_of_model} was trained on {name!r}, which is neither a known data set ({', '.join(sorted(LOADERS))}) nor a folder here; "
            "give the folder it was trained on (--data)."
        )
    if name in LOADERS:
        dataset = load_dataset(name)
        if recorded.get("held_out_classes"):  # trained without them: the same relabelled split
            from glasszoo.data.datasets import without_classes

            dataset = without_classes(dataset, recorded["held_out_classes"])
        size = recorded.get("validation_images")
        if size is None:
            raise ValueError(f"{name_of_model}'s card does not record its validation size, so its fit split cannot be rebuilt.")
        x_fit, y_fit, x_val, y_val = dataset.validation_split(int(size), seed=seed)
        return x_fit, y_fit, x_val, y_val, f"{name}: the {len(y_fit)} fit images (validation {size} drawn with seed {seed})"
    split = recorded.get("split") if isinstance(recorded.get("split"), dict) else {}
    options = {"seed": int(split.get("seed", seed))}
    for key in ("validation_fraction", "test_fraction"):
        if split.get(key) is not None:
            options[key] = float(split[key])
    if recorded.get("image_size"):
        options["image_size"] = tuple(recorded["image_size"])
    if recorded.get("color_mode"):
        options["color_mode"] = recorded["color_mode"]
    dataset = load_dataset(name, **options)
    expected = recorded.get("folder_sha256")
    if expected and getattr(dataset, "folder_sha256", None) != expected:
        raise ValueError(f"The folder {name} is not the one {name_of_model} was trained on: its sha256 differs from the card's.")
    x_fit, y_fit, x_val, y_val = dataset.validation_split()
    return x_fit, y_fit, x_val, y_val, f"{name}: the folder's {len(y_fit)} training images"
