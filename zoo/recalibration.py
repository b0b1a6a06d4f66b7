"""Settings chosen after training, chosen again on a preset's own validation split (`glasszoo calibrate`).

A family's `calibrate` hook sets what `glasszoo train` fits after the
weights are final (the hierarchical model's placement floors, for
instance). When the rule behind such a setting changes, the trained
weights need not: `recalibrate_preset` rebuilds the preset's validation
split from its model card, runs the hook again, and writes the preset
with the new settings and the same weights.
"""

import datetime

import numpy as np


def card_validation_split(card):
    """`(x_val, y_val)`: the validation split a preset was trained with, rebuilt from its model card.

    Args:
        card: the preset's metadata (`model.preset_metadata`): `data.dataset`,
            `data.validation_images`, `data.held_out_classes` (optional) and
            `training.seed`.

    Raises:
        ValueError: the card does not say how its split was drawn (a preset
            trained on a folder keeps its split in the folder, not the card).

    Example:
    >>> x_val, y_val = card_validation_split(glasszoo.load("hierarchical_protopnet_fashion_mnist").preset_metadata)  # doctest: +SKIP
    """
    from glasszoo.zoo.training_data import recorded_splits

    data_card = (card or {}).get("data") or {}
    if "folder_sha256" in data_card or not data_card.get("dataset") or not data_card.get("validation_images"):
        raise ValueError(
            "The model card does not name a built-in dataset and its validation split (a preset trained on a folder "
            "keeps its split in the folder): fine-tune it again, or call model.calibrate(images, labels) on your validation images."
        )
    _, _, x_val, y_val, _ = recorded_splits(card, card.get("name", "the preset"))
    return x_val, y_val


def apply_settings(model, settings):
    """Sets each `name: value` of `settings` on `model` through its settable properties (e.g. a rule's name); a ValueError otherwise.

    Only properties with a setter are settings: the model checks the value
    itself, and nothing else of the model can be reached this way.

    Example:
    >>> apply_settings(model, {"placement_threshold": 0.6})  # doctest: +SKIP
    """
    import keras

    def is_setting(key):
        attribute = getattr(type(model), key, None)
        return not key.startswith("_") and not hasattr(keras.Model, key) and isinstance(attribute, property) and attribute.fset is not None

    for name, value in (settings or {}).items():
        if not is_setting(name):
            settable = sorted(key for key in dir(type(model)) if is_setting(key))
            raise ValueError(f"{name!r} is not a setting of {type(model).__name__}; its settings are {settable or 'none'}.")
        setattr(model, name, value)


def recalibrate_preset(source, out, settings=None, command=None):
    """Runs the model's `calibrate` hook again on its card's validation split and writes the preset to `out`.

    The weights are unchanged (checked after writing); the card's
    `calibration` and `config` are replaced, and `calibration.recalibrated`
    records when, by which command and with which versions.

    Args:
        source: a preset name or folder.
        out: the preset folder to write (it may be `source`'s own folder:
            every file is replaced atomically).
        settings: optional `{name: value}` set on the model before calibrating
            (`apply_settings`), e.g. `{"placement_evidence": "confidence"}`.
        command: the command line to record (default: the Python call).

    Returns:
        The new `calibration` dict.

    Raises:
        ValueError: the family has nothing to calibrate, or the card does not
            say how its validation split was drawn.

    Example:
    >>> recalibrate_preset("hierarchical_protopnet_fashion_mnist", "my_preset")  # doctest: +SKIP
    """
    import glasszoo
    from glasszoo.zoo.training import software_versions

    model = glasszoo.load(source)
    card = dict(model.preset_metadata or {})
    x_val, y_val = card_validation_split(card)
    apply_settings(model, settings)
    calibration = model.calibrate(x_val, y_val)
    if not calibration:
        raise ValueError(f"{source}: the {model.family} family has no settings chosen after training (its calibrate hook returns none).")
    calibration["recalibrated"] = {
        "date": datetime.date.today().isoformat(),
        "command": command or f"recalibrate_preset({str(source)!r}, {str(out)!r}, settings={settings!r})",
        "settings": dict(settings or {}),
        "validation_images": int(len(y_val)),
        "note": "the trained weights are unchanged; only the settings above were chosen again on the card's validation split",
        "versions": software_versions(),
    }
    card["calibration"] = calibration
    card["config"] = model.get_config()
    weights = [np.array(w) for w in model.get_weights()]
    model.save_preset(out, metadata=card)
    written = glasszoo.load(out).get_weights()
    if len(written) != len(weights) or not all(np.array_equal(a, b) for a, b in zip(weights, written)):
        raise RuntimeError(f"{out}: the written weights differ from {source}'s.")
    return calibration
