"""Preset folders on disk: config.json, model.weights.h5, metadata.json (with the weights' sha256)."""

import hashlib
import json
import pathlib

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"


class CorruptedWeights(ValueError):
    """A preset's weights file does not match the sha256 its metadata records."""


def sha256_of(path, chunk=1 << 20):
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path, expect=dict):
    """Reads a preset's JSON file; a `ValueError` naming the file if it is not JSON, too deeply nested, or not an `expect`."""
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}): the file is corrupted or was edited by hand.") from error
        except RecursionError:
            raise ValueError(f"{path} is nested too deeply to be a glasszoo file: the file is corrupted or was edited by hand.") from None
    if expect is not None and not isinstance(data, expect):
        raise ValueError(f"{path} must hold a JSON object; it holds a {type(data).__name__}.")
    return data


def write_json(path, data):
    """Writes `data` as indented JSON, atomically (a reader never sees half a file)."""
    from glasszoo.zoo.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_preset(folder):
    """Reads `config.json` and `metadata.json` of a preset folder.

    Returns:
        `(config, metadata)`; config has `family` and `config` keys.
    """
    folder = pathlib.Path(folder)
    config_path = folder / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{folder} is not a glasszoo preset: it has no {CONFIG_FILE}.")
    config = read_json(config_path)
    if "family" not in config or "config" not in config:
        raise ValueError(f"{config_path} must hold 'family' and 'config' keys; got {sorted(config)}.")
    metadata_path = folder / METADATA_FILE
    metadata = read_json(metadata_path) if metadata_path.exists() else {}
    return config, metadata


def verified_weights_path(folder, metadata):
    """Path of the preset's weights after checking their sha256 against the metadata.

    Raises:
        FileNotFoundError: no weights file.
        CorruptedWeights: the digest differs (truncated or altered file).
    """
    path = pathlib.Path(folder) / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"Preset {folder} has no {WEIGHTS_FILE}; load it with pretrained=False.")
    expected = metadata.get("weights_sha256")
    if not expected:
        raise CorruptedWeights(f"Preset {folder}: metadata.json records no weights_sha256, so the weights cannot be verified.")
    actual = sha256_of(path)
    if actual != expected:
        raise CorruptedWeights(
            f"Preset {folder}: {WEIGHTS_FILE} is corrupted or was changed: its sha256 is {actual}, "
            f"the model card records {expected}. Reinstall glasszoo or retrain the preset."
        )
    return path


def verified_file_path(folder, metadata, name):
    """Path of another preset file (`metadata["files"]`) after checking its sha256; None if the preset has none."""
    record = metadata.get("files", {}).get(name)
    path = pathlib.Path(folder) / name
    if record is None:
        return None
    if not path.exists():
        raise FileNotFoundError(f"Preset {folder} lacks {name}, which its model card lists.")
    actual = sha256_of(path)
    if actual != record["sha256"]:
        raise CorruptedWeights(
            f"Preset {folder}: {name} is corrupted or was changed: its sha256 is {actual}, the model card records {record['sha256']}."
        )
    return path


def write_preset(folder, family, config, weights_source, metadata, extra_files=None):
    """Writes a preset folder from a saved weights file; records its sha256 in the metadata.

    Args:
        folder: destination folder (created).
        family: family name, e.g. `"inam"`.
        config: the model's `get_config()`.
        weights_source: path of a `.weights.h5` file to copy in.
        metadata: dict (model card); `weights_sha256` is added.
        extra_files: optional dict file name -> source path of other files the
            preset carries (ProtoPNet's prototype provenance); copied in, their
            sha256 recorded under `metadata["files"]`.

    Every file is written atomically (a temporary name, then a rename), the
    metadata last: a reader sees old or new files, never half of one. (A run
    killed between two files can leave new weights beside the old card,
    whose sha256 then refuses them: re-run the command.)
    """
    from glasszoo.zoo.atomic import atomic_copy

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / WEIGHTS_FILE
    if pathlib.Path(weights_source).resolve() != target.resolve():
        atomic_copy(weights_source, target)
    files = {}
    for name, source in (extra_files or {}).items():
        if pathlib.Path(source).resolve() != (folder / name).resolve():
            atomic_copy(source, folder / name)
        files[name] = {"sha256": sha256_of(folder / name)}
    write_json(folder / CONFIG_FILE, {"family": family, "config": config})
    metadata = dict(metadata, weights_file=WEIGHTS_FILE, weights_sha256=sha256_of(target))
    if files:
        metadata["files"] = files
    write_json(folder / METADATA_FILE, metadata)
    return folder


def save_inference_weights(model, path):
    """Saves the model's weights without optimizer state (a compiled model's `save_weights` includes it), atomically."""
    from glasszoo.zoo.atomic import atomic_path

    clean = type(model).from_config(model.get_config())
    clean.set_weights(model.get_weights())
    with atomic_path(path) as temporary:
        clean.save_weights(str(temporary))
    return path
