"""Training and fine-tuning on a folder of the user's own images (`glasszoo train --data`, `glasszoo finetune`).

Both build a recipe (the dict `glasszoo.zoo.training.train_preset` trains)
whose dataset is the folder, and train it the way the presets were trained:
the validation split chooses the checkpoint, the test split is used once at
the end, every epoch is backed up (an interrupted run resumes when re-run
with the same work folder), and the result is a preset folder with its card
(the folder's sha256, the split and the file of every image in
`split.json`, class names, metrics) that every other command accepts.

- `folder_training_recipe(name, data)`: a recipe name's (or a family's)
  architecture and training, from scratch, on the folder.
- `fine_tuning_recipe(preset, data)`: the preset's architecture and weights;
  its family's fine-tuning settings (the recipe key `"finetune"`: epochs,
  rates, stages, temperature, ...), the image size and colour mode of the
  preset unless given. A new class count re-initialises the class layer;
  a new channel count adapts the layers that read the image.

Example:
>>> from glasszoo.zoo.folder_training import fine_tuning_recipe, folder_data
>>> from glasszoo.zoo.training import train_preset
>>> spec = fine_tuning_recipe("bcos_fashion_mnist", folder_data("my_images/"))  # doctest: +SKIP
>>> train_preset("my_bcos", "my_bcos/preset", work_dir="my_bcos/work", spec=spec)  # doctest: +SKIP
"""

import copy

from glasszoo.zoo.families import families, family_class
from glasszoo.zoo.recipes import all_recipes

# settings of a fine-tune when neither the preset's recipe nor its family's recipes name any
DEFAULT_FINE_TUNING = {"epochs": 10, "learning_rate": 1e-3, "batch_size": 32, "schedule": "cosine"}
TASK_KEYS = ("num_classes", "input_shape", "class_names", "name")


def folder_data(folder, image_size=None, color_mode=None, validation_fraction=0.1, test_fraction=0.2, seed=0, strict=False):
    """The recipe `dataset` entry of a folder of images (`load_image_folder`'s arguments).

    Example:
    >>> folder_data("my_images/", image_size=(64, 64))["image_size"]
    [64, 64]
    """
    spec = {"folder": str(folder), "validation_fraction": float(validation_fraction), "test_fraction": float(test_fraction), "seed": int(seed)}
    if image_size is not None:
        spec["image_size"] = [int(s) for s in image_size]
    if color_mode is not None:
        spec["color_mode"] = color_mode
    if strict:
        spec["strict"] = True
    return spec


def _family_recipes(family):
    """The recipes of a family, sorted by name (copies)."""
    table = {name: spec for name, spec in all_recipes().items() if spec["family"] == family}
    return [copy.deepcopy(table[name]) for name in sorted(table)]


def _family_recipe(family):
    """The first (by name) recipe of a family, or None."""
    recipes = _family_recipes(family)
    return recipes[0] if recipes else None


def _base_recipe(name):
    """`(recipe, family)` of a recipe name or a family name."""
    recipes = all_recipes()
    if name in recipes:
        return copy.deepcopy(recipes[name]), recipes[name]["family"]
    if name in families():
        base = _family_recipe(name)
        if base is None:
            base = {"config": {}, "learning_rate": 1e-3, "batch_size": 32, "epochs": 10}
        return base, name
    raise KeyError(f"No recipe or family named {name!r}; recipes: {sorted(recipes)}; families: {sorted(families())}.")


def _for_folder(spec, data, augment, overrides, description, command):
    """The parts every folder recipe shares: no grid, the folder, the given settings."""
    spec = dict(spec)
    spec.update(
        dataset=data, description=description, command=command, grid=[], grid_epochs=0, augment=augment,
        validation_size=None,
    )
    spec.pop("finetune", None)
    for key, value in (overrides or {}).items():
        if value is not None:
            spec[key] = value
    # 3x3 localisation grids need nine classes; a smaller task chooses its checkpoint on accuracy
    if spec.get("checkpoint_selection", "accuracy") != "accuracy" and spec.get("classes_hint", 10) < 9:
        spec["checkpoint_selection"] = "accuracy"
    spec.pop("classes_hint", None)
    spec.setdefault("grid_batch_size", spec.get("batch_size", 32))
    spec.setdefault("schedule", "plateau")
    return spec


def folder_training_recipe(name, data, augment="crop", epochs=None, learning_rate=None, batch_size=None, command=None, max_seconds=None):
    """A recipe that trains recipe `name`'s architecture (or family `name`'s first recipe's) from scratch on a folder.

    Args:
        name: a recipe name (`glasszoo list --recipes`) or a family name.
        data: `folder_data(...)`.
        augment: one of `glasszoo.data.augment.AUGMENTATIONS`.
        epochs, learning_rate, batch_size: overrides of the recipe's.
        command: the command line recorded in the card.
        max_seconds: stop training before this much wall time (`TimeBudget`).

    Example:
    >>> spec = folder_training_recipe("cnn", folder_data("my_images/"))  # doctest: +SKIP
    """
    base, family = _base_recipe(name)
    base.pop("initial_weights", None)
    overrides = {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "max_seconds": max_seconds, "classes_hint": _class_count(data)}
    description = f"{family} ({name}'s architecture) trained from scratch on the image folder {data['folder']}."
    return _for_folder(base, data, augment, overrides, description, command)


def fine_tuning_recipe(preset, data, augment="crop", epochs=None, learning_rate=None, batch_size=None, command=None, max_seconds=None):
    """A recipe that fine-tunes `preset` (a name, a preset folder) on a folder of images.

    The architecture is the preset's (its `config.json`); the training is its
    recipe's `"finetune"` settings (or its family's first recipe's, or
    `DEFAULT_FINE_TUNING`); the image size and colour mode are the preset's
    unless `data` names them.

    Args:
        preset: a preset name or folder.
        data: `folder_data(...)`.
        augment, epochs, learning_rate, batch_size, command, max_seconds: as `folder_training_recipe`.

    Example:
    >>> spec = fine_tuning_recipe("coda_fashion_mnist", folder_data("my_images/"))  # doctest: +SKIP
    >>> spec["initial_weights"]  # doctest: +SKIP
    'coda_fashion_mnist'
    """
    from glasszoo.zoo.presets import read_preset
    from glasszoo.zoo.registry import preset_folder

    folder = preset_folder(preset)
    config, card = read_preset(folder)
    family = config["family"]
    preset_name = card.get("name", str(preset))
    recipes = all_recipes()
    base = copy.deepcopy(recipes[preset_name]) if recipes.get(preset_name, {}).get("family") == family else _family_recipe(family)
    base = base or {}
    family_tuning = next((spec["finetune"] for spec in _family_recipes(family) if spec.get("finetune")), {})
    tuning = dict(DEFAULT_FINE_TUNING, **(base.get("finetune") or family_tuning))
    shape = config["config"].get("input_shape") or card.get("input", {}).get("shape")
    data = dict(data)
    if shape and "image_size" not in data:
        data["image_size"] = [int(shape[0]), int(shape[1])]
    if shape and "color_mode" not in data:
        data["color_mode"] = "grayscale" if int(shape[2]) == 1 else "rgb"
    architecture = {key: value for key, value in config["config"].items() if key not in TASK_KEYS}
    if shape and "image_size" in data:  # the family rebalances what scales with the image (before the recipe's own settings)
        old_shape = tuple(int(n) for n in shape)
        new_shape = (*data["image_size"], 1 if data.get("color_mode") == "grayscale" else 3)
        if new_shape != old_shape:
            architecture = family_class(family).config_for_new_input(architecture, old_shape, new_shape)
    architecture.update(tuning.pop("config", {}))  # e.g. another temperature for the new task
    spec = dict(base, config=architecture, family=family, initial_weights=str(preset), **tuning)
    overrides = {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "max_seconds": max_seconds, "classes_hint": _class_count(data)}
    description = f"{preset_name} fine-tuned on the image folder {data['folder']}."
    spec = _for_folder(spec, data, augment, overrides, description, command)
    spec["fine_tuning"] = {key: spec.get(key) for key in tuning}  # as run (overrides included)
    return spec


def _class_count(data):
    """The number of class folders of a folder spec (its `train/` folder's when it has one)."""
    import pathlib

    root = pathlib.Path(data["folder"])
    if not root.is_dir():
        return 0
    train = root / "train"
    folder = train if train.is_dir() else root
    return sum(1 for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
