"""Named presets and model families: `list_models` and `load`."""

import difflib
import fnmatch
import importlib
import pathlib

from glasszoo.zoo.presets import read_preset, verified_weights_path

PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent.parent / "pretrained"

FAMILIES = {
    "inam": "glasszoo.zoo.inam:INAM",
}


class UnknownModel(KeyError):
    """No preset of that name; the message lists close matches."""

    def __str__(self):
        return str(self.args[0])


def family_class(family):
    """The keras.Model subclass of a family name (imported on demand)."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown model family {family!r}; known: {sorted(FAMILIES)}.")
    module, attribute = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), attribute)


def preset_names():
    return sorted(p.parent.name for p in PRETRAINED_DIR.glob("*/config.json"))


def list_models(pattern="*"):
    """Names of the presets matching a shell-style pattern.

    Example:
    >>> list_models("inam_*")  # doctest: +SKIP
    ['inam_fashion_mnist', 'inam_mnist']
    """
    return [name for name in preset_names() if fnmatch.fnmatch(name, pattern)]


def preset_folder(name_or_dir):
    """Folder of a preset name, or the given folder if it is a preset folder."""
    path = pathlib.Path(str(name_or_dir))
    if (path / "config.json").exists():
        return path
    folder = PRETRAINED_DIR / str(name_or_dir)
    if (folder / "config.json").exists():
        return folder
    names = preset_names()
    close = difflib.get_close_matches(str(name_or_dir), names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModel(f"Unknown model {str(name_or_dir)!r}.{hint} Available: {', '.join(names) or 'none'}.")


def model_info(name_or_dir):
    """`(config, metadata)` of a preset without building the model."""
    return read_preset(preset_folder(name_or_dir))


def load(name_or_preset_dir, pretrained=True, num_classes=None, input_shape=None, class_names=None):
    """Builds a zoo model by preset name (or preset folder), with its weights.

    Args:
        name_or_preset_dir: a name from `list_models()` or a preset folder.
        pretrained: load the preset's verified weights; `False` gives the same
            architecture freshly initialised.
        num_classes: a class count different from the preset's keeps every
            weight except the classification head's output, which is
            re-initialised (fine-tuning to a new task).
        input_shape: `(H, W, C)`; another height or width keeps all weights,
            another channel count re-initialises the first layer.
        class_names: names of the new classes.

    Raises:
        UnknownModel: no such preset (close matches named).
        CorruptedWeights: the weights do not match the card's sha256.

    Example:
    >>> model = load("inam_fashion_mnist")  # doctest: +SKIP
    >>> model.explain(images)["decision_images"].shape  # doctest: +SKIP
    """
    folder = preset_folder(name_or_preset_dir)
    config, metadata = read_preset(folder)
    cls = family_class(config["family"])
    base_config = dict(config["config"])
    target_config = dict(base_config)
    if num_classes is not None:
        target_config["num_classes"] = int(num_classes)
        target_config["class_names"] = list(class_names) if class_names else [str(k) for k in range(int(num_classes))]
    elif class_names is not None:
        target_config["class_names"] = list(class_names)
    if input_shape is not None:
        target_config["input_shape"] = list(input_shape)
    if not pretrained:
        return cls.from_config(target_config)
    weights = verified_weights_path(folder, metadata)
    source = cls.from_config(base_config)
    try:
        source.load_weights(weights)
    except Exception as error:
        raise ValueError(f"Preset {folder}: the weights file could not be read ({error}).") from error
    source.preset_metadata = metadata
    if target_config == base_config:
        return source
    model = cls.from_config(target_config)
    model.transfer_weights_from(source)
    model.preset_metadata = metadata
    return model
