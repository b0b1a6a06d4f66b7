"""Shared helpers of the benchmarks in `bench/`: which presets to run, images, interleaved best-of timing, tables, JSON.

Not a benchmark itself. The scripts import it from their own folder
(`python3 bench/serving.py` puts `bench/` on `sys.path`).

No family is named here: every list comes from the registry,
`glasszoo.zoo.families.families()` (the `Family` records) and the installed
presets (`glasszoo.list_models()`, each preset's family from
`glasszoo.model_info(name)[0]["family"]`). By default a benchmark runs each
family's `demo_preset` and the presets of the black-box families
(`Family.black_box`) trained on the same datasets, the baseline the others
are compared with; `--families` and `--models` choose others.
"""

import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def interleaved_best(variants, repeats, budget_s=None, min_rounds=3):
    """Best (minimum) seconds of each callable, the variants run in turn.

    Every variant runs once as a warm-up (graph tracing, session allocation),
    then rounds of one run of each variant alternate, so that a slow period of
    a shared machine hits all of them alike. Stops after `repeats` rounds, or
    earlier once the rounds took `budget_s` seconds and at least
    `min(min_rounds, repeats)` rounds ran (one slow round of a shared
    machine can be several times slower than the best).

    Args:
        variants: dict name -> callable without arguments.
        repeats: int, timed rounds at most.
        budget_s: optional float, time after which no new round starts.
        min_rounds: int, rounds run whatever the budget (at most `repeats`).

    Returns:
        dict name -> {"best_s": float, "runs": int}.
    """
    for function in variants.values():
        function()
    times = {name: [] for name in variants}
    started = time.perf_counter()
    repeats = max(1, int(repeats))
    for round_index in range(repeats):
        for name, function in variants.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
        if budget_s is not None and round_index + 1 >= min(min_rounds, repeats) and time.perf_counter() - started > budget_s:
            break
    return {name: {"best_s": min(values), "runs": len(values)} for name, values in times.items()}


def markdown_table(header, rows):
    """A markdown table (string) of a header and rows of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def rate(value):
    """Images per second, to three significant figures at most."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def ratio(value):
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def machine():
    """What the numbers were measured on (recorded in the JSON)."""
    import keras
    import tensorflow as tf

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "tensorflow": tf.__version__,
    }


def write_json(path, benchmark, settings, results):
    """Writes `{"benchmark", "machine", "settings", "results"}` to `path`."""
    if not path:
        return
    payload = {"benchmark": benchmark, "machine": machine(), "settings": settings, "results": results}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2)
    print(f"wrote {path}")


# -- which presets: from the registry of families and the installed presets ---------------------------
def installed_presets():
    """`{preset name: family name}` of every installed preset whose family is registered."""
    from glasszoo.zoo.families import families
    from glasszoo.zoo.registry import list_models, model_info

    known = families()
    presets = {}
    for name in list_models():
        family = model_info(name)[0].get("family")
        if family in known:
            presets[name] = family
    return presets


def preset_dataset(name):
    """The dataset a preset was trained on (its metadata's `data.dataset`), or None."""
    from glasszoo.zoo.registry import model_info

    return (model_info(name)[1].get("data") or {}).get("dataset")


def black_box_families():
    """Names of the families whose record says `black_box` (the baselines)."""
    from glasszoo.zoo.families import families

    return [name for name, record in families().items() if record.black_box]


def default_presets():
    """`{preset: family}` a benchmark runs by default, in the order it runs them.

    Each family's `demo_preset` (where installed), then the presets of the
    black-box families trained on a dataset of those (the baselines; any of
    their presets if no demo preset is installed).
    """
    from glasszoo.zoo.families import families

    records = families()
    presets = installed_presets()
    chosen = {record.demo_preset: name for name, record in records.items() if not record.black_box and record.demo_preset in presets}
    datasets = {preset_dataset(name) for name in chosen}
    for name, record in records.items():
        if not record.black_box:
            continue
        if record.demo_preset in presets:
            chosen[record.demo_preset] = name
        for preset, family in presets.items():
            if family == name and preset not in chosen and (not datasets or preset_dataset(preset) in datasets):
                chosen[preset] = family
    return chosen


def add_selection_arguments(parser):
    """Adds `--families` and `--models` (what `select_presets` reads) to an argparse parser."""
    parser.add_argument(
        "--families", nargs="+", metavar="FAMILY",
        help="families to run, each with its default preset: its demo preset (a black-box family: its presets "
        "on the datasets of the demo presets; else its first preset). Default: every family with such a preset",
    )  # fmt: skip
    parser.add_argument(
        "--models", nargs="+", metavar="PRESET",
        help="presets to run instead of the defaults (shell-style patterns as for glasszoo.list_models); "
        "with --families, only those of these families",
    )  # fmt: skip


def select_presets(families=None, models=None):
    """`{preset: family}` to run: the defaults (`default_presets`), or the presets `models` names, filtered by `families`.

    Args:
        families: None or family names; a family without a default preset
            runs its first installed preset.
        models: None or preset names (or shell-style patterns).

    Raises SystemExit with the known names for an unknown family or preset.
    """
    from glasszoo.zoo.families import families as registered
    from glasszoo.zoo.registry import list_models

    known = registered()
    presets = installed_presets()
    if families:
        unknown = [name for name in families if name not in known]
        if unknown:
            raise SystemExit(f"Unknown families {unknown}; choose from {sorted(known)}.")
    if models:
        chosen = {}
        for pattern in models:
            matches = [name for name in list_models(pattern) if name in presets]
            if not matches:
                raise SystemExit(f"No installed preset matches {pattern!r}; choose from {sorted(presets)}.")
            chosen.update((name, presets[name]) for name in matches)
        if families:
            chosen = {name: family for name, family in chosen.items() if family in families}
            if not chosen:
                raise SystemExit(f"None of the presets {models} belongs to the families {list(families)}.")
        return chosen
    defaults = default_presets()
    if not families:
        if not defaults:
            raise SystemExit("No preset to run: no family names an installed demo preset.")
        return defaults
    chosen = {}
    for family in families:  # in the order asked for
        own = [name for name, owner in defaults.items() if owner == family]
        if not own:
            own = sorted(name for name, owner in presets.items() if owner == family)[:1]
        if not own:
            raise SystemExit(f"Family {family!r} has no installed preset; installed: {sorted(presets)}.")
        chosen.update((name, family) for name in own)
    return chosen


# -- images -------------------------------------------------------------------------------------------
def sample_images(count, image_shape=None, dataset="fashion_mnist", seed=0):
    """`count` images: the shipped test samples of `dataset` (repeated), else uniform noise of `image_shape`.

    Args:
        count: int, images wanted.
        image_shape: `(H, W, C)` the model takes, or None (the samples' own).
        dataset: the preset's dataset (`preset_dataset`); its shipped samples
            are used when there are some of `image_shape`.
        seed: of the noise (a preset without matching samples).
    """
    import numpy as np
    from glasszoo.data.samples import load_samples

    samples = None
    try:
        samples = load_samples(dataset or "fashion_mnist")[0]
    except (FileNotFoundError, OSError, KeyError, ValueError):
        pass
    if samples is not None and (image_shape is None or tuple(samples.shape[1:]) == tuple(image_shape)):
        return np.ascontiguousarray(samples[np.arange(count) % len(samples)])
    if image_shape is None:
        raise ValueError(f"No shipped samples of {dataset!r}; give image_shape.")
    return np.random.default_rng(seed).uniform(size=(count,) + tuple(image_shape)).astype("float32")


def model_images(model, preset, count):
    """`count` images for `model` (built from `preset`): its dataset's shipped samples, else noise of its shape."""
    return sample_images(count, tuple(model.image_shape), preset_dataset(preset))


# -- peak memory of a process (Linux) -----------------------------------------------------------------
def rss_kib(field):
    """A `/proc/self/status` memory field in KiB (`VmRSS`, `VmHWM`, ...)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} missing from /proc/self/status")


def reset_peak_rss():
    """Resets the kernel's peak RSS to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return rss_kib("VmHWM") <= rss_kib("VmRSS") + 1024
    except OSError:
        return False


def held_out_class_images(card, split="test"):
    """`(images, held-out class names, full data set)`: the images of the classes a preset's card says it was trained without.

    Args:
        card: the preset's metadata (`data.dataset`, `data.held_out_classes`).
        split: `"test"` or `"train"` (the model never saw either: the classes were held out of every split).
    """
    import numpy as np
    from glasszoo.data import load_dataset

    held_out = card["data"]["held_out_classes"]
    full = load_dataset(card["data"]["dataset"])
    images, labels = (full.x_train, full.y_train) if split == "train" else (full.x_test, full.y_test)
    return images[np.isin(labels, [full.class_names.index(name) for name in held_out])], held_out, full

