"""Named presets: `list_models`, `model_info` and `load` (a preset name, a preset folder or a `.keras` file)."""

import difflib
import fnmatch
import pathlib

from glasszoo.zoo.families import family_class
from glasszoo.zoo.presets import CorruptedWeights, read_preset, verified_weights_path

PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent.parent / "pretrained"


class UnknownModel(KeyError):
    """No preset of that name; the message lists close matches."""

    def __str__(self):
        return str(self.args[0])


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


def is_model_file(name_or_path):
    """True for a path ending in `.keras` (a whole saved model)."""
    return str(name_or_path).endswith(".keras")


def load_model_file(path):
    """A zoo model saved with `model.save("x.keras")`; errors name the file."""
    import keras

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}.")
    import glasszoo.zoo.base  # noqa: F401  (registers every family's classes with Keras)

    try:
        model = keras.saving.load_model(str(path))
    except Exception as error:
        raise ValueError(f"{path} could not be loaded as a Keras model file: {' '.join(str(error).split())[:500]}") from error
    if not hasattr(model, "explanation_graph"):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a glasszoo model.")
    model.preset_metadata, model.preset_dir = {"name": path.stem, "source_file": str(path)}, None
    return model


def load(name_or_preset_dir, pretrained=True, num_classes=None, input_shape=None, class_names=None):
    """Builds a zoo model by preset name (or preset folder, or `.keras` file), with its weights.

    Args:
        name_or_preset_dir: a name from `list_models()`, a preset folder
            (`model.save_preset`) or a `.keras` file (`model.save`).
        pretrained: load the preset's verified weights; `False` gives the same
            architecture freshly initialised.
        num_classes: a class count different from the preset's keeps the
            feature extractor (INAM: the interpretable kernels) and
            re-initialises the head (fine-tuning to a new task).
        input_shape: `(H, W, C)`; another height or width keeps all weights,
            another channel count re-initialises the kernels.
        class_names: names of the new classes.

    Raises:
        UnknownModel: no such preset (close matches named).
        CorruptedWeights: the weights do not match the card's sha256.

    Example:
    >>> model = load("inam_fashion_mnist")  # doctest: +SKIP
    >>> model.explain(images)["decision_images"].shape  # doctest: +SKIP
    """
    if is_model_file(name_or_preset_dir):
        if (pretrained, num_classes, input_shape, class_names) != (True, None, None, None):
            raise ValueError("A .keras file loads as saved: build a changed model with load(preset folder, ...) instead.")
        return load_model_file(name_or_preset_dir)
    folder = preset_folder(name_or_preset_dir)
    config, metadata = read_preset(folder)
    cls = family_class(config["family"])
    base_config = dict(config["config"])
    target_config = dict(base_config)
    if num_classes is not None and int(num_classes) != base_config["num_classes"]:
        target_config["num_classes"] = int(num_classes)
        target_config["class_names"] = [str(k) for k in range(int(num_classes))]
    if class_names is not None:
        target_config["class_names"] = list(class_names)
    if input_shape is not None:
        target_config["input_shape"] = list(input_shape)
    if not pretrained:
        model = cls.from_config(target_config)
        model.preset_metadata, model.preset_dir = {"architecture_of": metadata.get("name", str(folder))}, None
        return model
    weights = verified_weights_path(folder, metadata)
    source = cls.from_config(base_config)
    try:
        source.load_weights(weights)
    except Exception as error:
        raise CorruptedWeights(f"Preset {folder}: the weights file could not be read ({error}).") from error
    source.load_preset_files(folder, metadata)  # files beside the weights (a family's own, e.g. push provenance)
    source.preset_metadata, source.preset_dir = metadata, folder
    if target_config == base_config:
        return source
    model = cls.from_config(target_config)
    transfer = {}
    model.transfer_weights_from(source, adapt_input_channels=True, report=transfer)
    describe_transfer(transfer, metadata.get("name", str(folder)), warn=True)
    # a changed model is not the one the card describes: keep only where it came from
    model.preset_metadata, model.preset_dir = {"fine_tuned_from": metadata.get("name", str(folder))}, None
    return model


def describe_transfer(report, source_name, warn=False):
    """One sentence on a `transfer_weights_from` report: what was adapted to new channels and what starts afresh.

    Args:
        report: the dict `transfer_weights_from(..., report=)` filled.
        source_name: the model the weights came from.
        warn: also issue it as a `UserWarning` (when anything was adapted).

    Returns:
        the sentence, or None when every layer was copied as it was.
    """
    import warnings

    def names(paths):
        return ", ".join("/".join(part for part in path if part != "<own>") or "<model>" for path in paths)

    parts = []
    if report.get("adapted"):
        parts.append(
            f"adapted to the new channel count (grey kernels repeated over the colour channels and divided by their count, "
            f"or colour kernels summed): {names(report['adapted'])}"
        )
    if report.get("fresh"):
        parts.append(f"newly initialised (their shapes differ): {names(report['fresh'])}")
    if not parts:
        return None
    sentence = f"Weights from {source_name}: {len(report.get('copied', []))} layers copied; " + "; ".join(parts) + "."
    if warn and report.get("adapted"):
        warnings.warn(sentence, stacklevel=3)
    return sentence
