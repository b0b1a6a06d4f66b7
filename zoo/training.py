"""Trains a preset from its recipe: validation-based grid, checkpoints, test evaluation, model card."""

import contextlib
import json
import math
import os
import pathlib
import platform
import time

import keras
import numpy as np
from glasszoo.zoo.atomic import atomic_path, atomic_write_text
from glasszoo.zoo.checkpoint_selection import (
    ValidationLocalisation,
    check_selection_rule,
    describe_selection,
    validation_localisation,
)
from glasszoo.zoo.distributed import distribution_scope, strategy_for
from glasszoo.zoo.evaluation import cross_entropy_and_accuracy
from glasszoo.zoo.families import family_class
from glasszoo.zoo.presets import save_inference_weights, write_json, write_preset
from glasszoo.zoo.recipes import recipe


def software_versions():
    """The versions of Python and of the packages a model card records (`{"python": ..., "keras": ...}`)."""
    import keras

    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    try:
        from glasszoo import __version__

        versions["glasszoo"] = __version__
    except ImportError:
        pass
    for package in ("onnx", "onnxruntime", "tf2onnx", "matplotlib"):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            pass
    backend = keras.backend.backend()
    versions["keras_backend"] = backend
    if backend == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    elif backend == "jax":
        import jax

        versions["jax"] = jax.__version__
    elif backend == "torch":
        import torch

        versions["torch"] = torch.__version__
    return versions


def _hardware():
    import keras

    devices = []
    if keras.backend.backend() == "jax":
        import jax

        devices = [str(d) for d in jax.devices()]
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        devices = [d.name for d in tf.config.list_physical_devices("GPU")]
    elif keras.backend.backend() == "torch":
        import torch

        devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "system": platform.system(),
        "accelerators": devices or "none (CPU only)",
    }



TRAINING_KEYS = ("learning_rate",)  # grid keys that set training, not the architecture


def _build(family, base_config, overrides, data):
    config = dict(base_config, **{k: v for k, v in overrides.items() if k not in TRAINING_KEYS})
    config.update(num_classes=len(data.class_names), input_shape=list(data.x_train.shape[1:]), class_names=data.class_names)
    return family_class(family)(**config)


def _compile(model, learning_rate):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate))


def train_preset(
    name, out_dir, work_dir=None, epochs=None, seed=0, grid=True, grid_epochs=None, verbose="auto", max_train=None,
    distribute="none", callbacks=None, spec=None,
):
    """Trains preset `name` from its recipe and writes the preset folder.

    Steps: seeded split of the training data into fit / validation; optional
    grid over the recipe's configurations for `grid_epochs` each, ranked by
    validation accuracy; training of the best for `epochs` with the best
    validation checkpoint kept (resumable from `work_dir`); head centring on
    the fit split; one evaluation on the test split; the preset folder with
    its model card.

    Args:
        name: recipe name (see `glasszoo.zoo.recipes.all_recipes()`).
        out_dir: preset folder to write (config.json, model.weights.h5, metadata.json).
        work_dir: checkpoints, logs and grid results (default `runs/<name>`).
        epochs: final training epochs (recipe default if None).
        seed: seed of the split, initialisation and shuffling.
        grid: run the recipe's grid first.
        grid_epochs: epochs per grid point (recipe default if None).
        verbose: Keras progress verbosity.
        max_train: use at most this many fit images (quick trials only).
        distribute: "none", "mirrored" (TensorFlow, the GPUs of one machine),
            "multi_worker" (TensorFlow, machines named by `TF_CONFIG`) or
            "data_parallel" (JAX, every device); see `glasszoo.zoo.distributed`.
            The global batch size stays the recipe's (each of R replicas gets
            batch / R images a step) and the learning rates are unchanged. On
            several machines only the chief writes `out_dir`; other workers
            write under `work_dir/worker_<index>`.
        callbacks: extra Keras callbacks for the final training (they run
            after the checkpoint and the log, before the epoch's backup).
        spec: a recipe dict to train instead of the recipe named `name`
            (`glasszoo.zoo.folder_training` builds one for a folder of images).

    An interrupted run resumes when re-run with the same `work_dir`: the
    grid skips the points `grid.json` holds and the final training restarts
    from the last finished epoch's backup (weights, optimizer state and
    epoch), its log cut to the epochs that backup covers. Every file is
    written atomically (`glasszoo.zoo.atomic`).

    Returns:
        the metadata dict written.
    """
    spec = recipe(name) if spec is None else spec
    strategy_for(distribute)  # first: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op
    with contextlib.ExitStack() as scope:
        distribution = scope.enter_context(distribution_scope(distribute))
        return _train_preset(name, spec, out_dir, work_dir, epochs, seed, grid, grid_epochs, verbose, max_train, distribution, callbacks, scope)


def _initialise(model, spec):
    """Copies the weights of the recipe's `initial_weights` preset into `model` (a fine-tuning recipe).

    Returns the card's record of it (`{"preset", "weights": "sha256:<hex>", "layers_copied"}`; the digest names
    the other preset's weights file, not a file of this preset), or None when the recipe starts from scratch.
    """
    source = spec.get("initial_weights")
    if not source:
        return None
    from glasszoo.zoo.registry import describe_transfer, load

    start = load(source)
    transfer = {}
    copied = model.transfer_weights_from(start, adapt_input_channels=True, report=transfer)
    if not copied:
        raise ValueError(f"Recipe initial_weights {source!r}: no layer of it fits the model to train.")
    note = describe_transfer(transfer, source)
    if note:
        print(f"[train] {note}", flush=True)
    digest = (start.preset_metadata or {}).get("weights_sha256")
    record = {"preset": str(source), "weights": f"sha256:{digest}" if digest else None, "layers_copied": len(copied)}
    if transfer["adapted"] or transfer["fresh"]:
        record["transfer"] = note
    return record


def _train_preset(name, spec, out_dir, work_dir, epochs, seed, grid, grid_epochs, verbose, max_train, distribution, extra_callbacks, scope):
    from glasszoo.data import load_dataset

    epochs = spec["epochs"] if epochs is None else int(epochs)
    grid_epochs = spec["grid_epochs"] if grid_epochs is None else int(grid_epochs)
    work_dir = pathlib.Path(work_dir or pathlib.Path("runs") / name)
    if not distribution["chief"]:  # other workers of a multi-machine run keep their files apart from the chief's
        index = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {}).get("index", 0)
        work_dir = work_dir / f"worker_{index}"
        out_dir = work_dir / "preset"
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    data = load_dataset(spec["dataset"])
    if spec.get("held_out_classes"):  # a study of unseen classes: they are in no split the model sees
        from glasszoo.data.datasets import without_classes

        data = without_classes(data, spec["held_out_classes"])
    x_fit, y_fit, x_val, y_val = data.validation_split(spec.get("validation_size"), seed=seed)  # a folder keeps its own
    if max_train:
        x_fit, y_fit = x_fit[:max_train], y_fit[:max_train]
    batch_size = spec["batch_size"]
    grid_batch_size = spec.get("grid_batch_size", batch_size)
    replicas = distribution["replicas"]
    validation = (x_val, y_val)
    sharded = distribution["kind"] == "data_parallel"
    if sharded:  # JAX shards every batch over the devices: every batch, the last one too, a multiple of their count
        if batch_size % replicas or grid_batch_size % replicas:
            raise ValueError(
                f"keras.distribution.DataParallel shards each batch over {replicas} devices: "
                f"batch sizes {batch_size} / {grid_batch_size} must be multiples of {replicas}."
            )
        x_fit, y_fit = x_fit[: len(x_fit) - len(x_fit) % replicas], y_fit[: len(y_fit) - len(y_fit) % replicas]
        validation = (x_val[: len(x_val) - len(x_val) % replicas], y_val[: len(y_val) - len(y_val) % replicas])

    grid_results = []
    chosen = {}
    # a family with its own pixel map can be chosen on its validation localisation as well as its accuracy
    localisation_weight = float(spec.get("localisation_weight", 0.0))
    localisation_grids = spec.get("localisation_grids", 8)
    # the checkpoint rule is checked before any training, the grid's included
    checkpoint_rule = check_selection_rule(spec.get("checkpoint_selection", "accuracy"))
    localisation_floor = None
    if checkpoint_rule == "accuracy_with_localisation_floor":
        if spec.get("localisation_floor") is None:
            raise ValueError(f"Recipe {name!r}: checkpoint_selection {checkpoint_rule!r} needs a localisation_floor.")
        localisation_floor = float(spec["localisation_floor"])
    selection_rule = "accuracy" + (f" + {localisation_weight} x 3x3-grid localisation" if localisation_weight else "")
    augment = spec.get("augment") or "none"
    grid_augment = augment if spec.get("grid_augment", True) else "none"
    grid_file = work_dir / "grid.json"
    if grid and spec["grid"] and grid_epochs > 0:
        previous = json.loads(grid_file.read_text()) if grid_file.exists() else []
        for point in spec["grid"]:
            done = [
                r for r in previous
                if r["overrides"] == point and r["epochs"] == grid_epochs and r["seed"] == seed and r.get("batch_size") == grid_batch_size
                and r.get("augmentation", "none") == grid_augment  # a trial on other images is not reused
            ]
            if done:
                grid_results.append(done[0])
                continue
            print(f"[grid] {point} for {grid_epochs} epochs", flush=True)
            keras.utils.set_random_seed(seed)
            model = _build(spec["family"], spec["config"], point, data)
            _initialise(model, spec)
            _compile(model, point.get("learning_rate", spec["learning_rate"]))
            tick = time.time()
            grid_size = spec.get("grid_train_size") or len(x_fit)
            inputs = _training_inputs(grid_augment, x_fit[:grid_size], y_fit[:grid_size], grid_batch_size, seed)
            history = model.fit(**inputs, epochs=grid_epochs, validation_data=validation, verbose=verbose, **model.fit_arguments())
            result = {"overrides": point, "epochs": grid_epochs, "seed": seed, "batch_size": grid_batch_size, "augmentation": grid_augment, "val_accuracy": float(max(history.history["val_accuracy"])), "seconds": round(time.time() - tick, 1)}
            if localisation_weight:
                measured = validation_localisation(model, x_val, y_val, localisation_grids, seed)
                result["val_localisation"] = measured["mean"] if measured else 0.0
            print(f"[grid] {result}", flush=True)
            grid_results.append(result)
            write_json(grid_file, grid_results)
        chosen = max(grid_results, key=lambda r: r["val_accuracy"] + localisation_weight * r.get("val_localisation", 0.0))["overrides"]
        print(f"[grid] chosen on validation {selection_rule}: {chosen}", flush=True)

    keras.utils.set_random_seed(seed)
    model = _build(spec["family"], spec["config"], chosen, data)
    initial_weights = _initialise(model, spec)
    stages = model.training_schedule(x_fit, y_fit, work_dir=work_dir, **spec.get("stages", {}))
    if stages is not None:  # families trained in stages: the schedule sets the epochs and rates
        epochs = stages.total_epochs
    steps_per_epoch = -(-len(x_fit) // batch_size)
    base_learning_rate = chosen.get("learning_rate", spec["learning_rate"])
    schedule = spec.get("schedule", "plateau")
    budget_cosine = None
    if schedule == "cosine" and spec.get("max_seconds") and stages is None:
        # whichever horizon comes first, the epochs or the wall-clock budget, ends the decay
        budget_cosine = CosineToHorizon(base_learning_rate, epochs * steps_per_epoch, seconds=float(spec["max_seconds"]))
        learning_rate = base_learning_rate
    elif schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(base_learning_rate, decay_steps=epochs * steps_per_epoch)
    elif schedule == "step":  # the CoDA paper's: divide by 1.5 every 30 epochs
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            base_learning_rate, decay_steps=30 * steps_per_epoch, decay_rate=1 / 1.5, staircase=True
        )
    else:
        learning_rate = base_learning_rate
    if stages is None:
        _compile(model, learning_rate)
    else:
        model.compile()  # the family's staged optimizer; the schedule sets its rates
    if checkpoint_rule != "accuracy" and (stages is not None or not model.has_attribution_map):
        raise ValueError(
            f"Recipe {name!r}: checkpoint_selection {checkpoint_rule!r} needs a family with its own pixel map "
            "trained without stages."
        )
    monitor = "val_accuracy" if checkpoint_rule == "accuracy" else "val_selection"
    checkpoint = work_dir / "best.weights.h5"
    log_path = work_dir / "training_log.csv"
    backup = TrainingBackup(work_dir / "backup")
    initial_epoch = backup.restore(model)  # 0 for a fresh run
    if initial_epoch == 0:  # a fresh run: no stale log or checkpoint from an earlier one
        for stale in (log_path, checkpoint):
            stale.unlink(missing_ok=True)
    else:
        print(f"[train] resuming after epoch {initial_epoch} from {backup.folder}", flush=True)
        _truncate_log(log_path, initial_epoch)  # epochs after the backup (or a half-written line) will run again
    best_so_far = max((row[monitor] for row in _read_log(log_path) if monitor in row), default=None)
    callbacks = [
        BestCheckpoint(checkpoint, monitor=monitor, best=best_so_far),
        keras.callbacks.CSVLogger(str(log_path), append=True),
    ]
    if stages is not None:  # it keeps its best epoch itself, and logs its stage columns for the CSV
        callbacks = [stages, callbacks[1]]
    elif checkpoint_rule != "accuracy":  # first: the checkpoint and the log read the keys it adds
        callbacks.insert(0, ValidationLocalisation(x_val, y_val, localisation_weight, localisation_grids, seed, floor=localisation_floor))
    elif schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", factor=0.3, patience=2, min_lr=1e-5))
    callbacks += list(extra_callbacks or [])
    if spec.get("max_seconds"):
        if stages is not None and hasattr(stages, "set_time_budget"):
            stages.set_time_budget(float(spec["max_seconds"]))  # it ends on a whole stage cycle that fits
        elif stages is not None:
            print(f"[train] max_seconds ignored: {spec['family']} trains in stages whose plan sets its epochs", flush=True)
        else:
            callbacks.append(TimeBudget(float(spec["max_seconds"])))
    if budget_cosine is not None:
        callbacks.insert(0, budget_cosine)
    callbacks.append(backup)  # last: an epoch counts as done once its checkpoint and log line are written
    fit_arguments = dict(
        epochs=epochs, initial_epoch=initial_epoch, validation_data=validation, callbacks=callbacks, verbose=verbose,
        **model.fit_arguments(),
    )
    model.fit(**_training_inputs(augment, x_fit, y_fit, batch_size, seed), **fit_arguments)
    if sharded:  # evaluation, centring and files on one device: JAX's DataParallel cannot shard odd-sized batches
        weights = model.get_weights()
        scope.close()
        model = _build(spec["family"], spec["config"], chosen, data)
        model.set_weights(weights)
    if stages is not None:
        stages.restore_best(model)
    else:
        model.load_weights(str(checkpoint))
    model.finish_training(x_fit)
    calibration = model.calibrate(x_val, y_val)
    extra_files = model.preset_files(work_dir)
    val_loss, val_accuracy = cross_entropy_and_accuracy(model, x_val, y_val)
    val_localisation = validation_localisation(model, x_val, y_val, localisation_grids, seed) if model.has_attribution_map else None
    if val_localisation is not None:
        print(f"[train] validation localisation {val_localisation['mean']:.3f} +- {val_localisation['standard_error']:.3f} ({val_localisation['grids']} grids)", flush=True)
    test_loss, test_accuracy = cross_entropy_and_accuracy(model, data.x_test, data.y_test)
    final_weights = work_dir / "final.weights.h5"
    save_inference_weights(model, final_weights)
    log = _read_log(log_path)
    candidates = [row for row in log if stages is None or stages.selectable(row)]  # staged: the schedule says which count
    best_epoch = int(max(candidates, key=lambda row: row.get(monitor, float("-inf")))["epoch"]) if candidates else None

    staging = stages.describe() if stages is not None else {
        "optimizer": f"Adam(learning_rate={base_learning_rate})" + _schedule_description(schedule, epochs),
        "stages": None,
        "checkpoint_selection": describe_selection(checkpoint_rule, localisation_weight, localisation_grids, localisation_floor),
    }
    metadata = {
        "name": name,
        "family": spec["family"],
        "description": spec["description"],
        "class_names": data.class_names,
        "input": {"shape": list(data.x_train.shape[1:]), "dtype": "float32", "range": [0.0, 1.0], "layout": "NHWC"},
        "data": dict(data.card(), train_images=len(x_fit)) if hasattr(data, "card") else {
            "dataset": data.name,
            "source": data.source,
            "train_images": len(x_fit),
            "validation_images": len(x_val),
            "test_images": len(data.x_test),
            "split": f"validation = {len(x_val)} images of the training set drawn with numpy default_rng({seed}); test split untouched until the final evaluation",
        },
        "training": {
            "command": spec.get("command") or (
                f"glasszoo train {name} --epochs {epochs} --seed {seed}" + ("" if grid else " --no-grid")
                + ("" if distribution["kind"] == "none" else f" --distribute {distribution['kind']}") + f" --out {out_dir}"
            ),
            "seed": seed,
            "epochs": epochs,
            "best_epoch": best_epoch,
            "batch_size": batch_size,
            "distribution": {
                "kind": distribution["kind"],
                "strategy": distribution["strategy"],
                "replicas": replicas,
                "workers": distribution["workers"],
                "global_batch_size": batch_size,
                "per_replica_batch_size": batch_size / replicas if batch_size % replicas else batch_size // replicas,
                "note": "the recipe's batch size is the global batch (not scaled by the replica count); learning rates unchanged",
            },
            "optimizer": staging["optimizer"],
            "stages": staging["stages"],
            "augmentation": augment,
            "grid_augmentation": grid_augment,
            **({"max_seconds": spec["max_seconds"]} if spec.get("max_seconds") else {}),
            "checkpoint_selection": staging["checkpoint_selection"],
            "grid": grid_results,
            "grid_selection": selection_rule,
            "grid_batch_size": grid_batch_size,
            "grid_train_images": int(min(spec.get("grid_train_size") or len(x_fit), len(x_fit))),
            "notes": spec.get("notes", ""),
            "initial_weights": initial_weights,
            **({"fine_tuning": spec["fine_tuning"]} if spec.get("fine_tuning") else {}),
            "chosen_overrides": chosen,
            "seconds": round(time.time() - started, 1),
            "seconds_note": "wall time of the last (possibly resumed) invocation, grid points reused from grid.json not included",
            "hardware": _hardware(),
        },
        "config": model.get_config(),
        "parameters": int(model.count_params()),
        "metrics": {
            "validation_accuracy": round(val_accuracy, 4),
            **({} if val_localisation is None else {
                "validation_localisation_3x3": round(val_localisation["mean"], 4),
                "validation_localisation_3x3_standard_error": round(val_localisation["standard_error"], 4),
                "validation_localisation_grids": val_localisation["grids"],
            }),
            "validation_cross_entropy": round(val_loss, 4),
            "test_accuracy": round(test_accuracy, 4),
            "test_cross_entropy": round(test_loss, 4),
        },
        "history": log,
        "versions": software_versions(),
    }
    if calibration:
        metadata["calibration"] = calibration
    if getattr(data, "held_out", None):
        metadata["data"]["held_out_classes"] = list(data.held_out)
    if getattr(model, "explanation_outputs", None):
        metadata["explanation_outputs"] = model.explanation_outputs
    if getattr(data, "paths", None):  # a folder of images: which file went to which split
        split_file = work_dir / "split.json"
        write_json(split_file, data.paths)
        extra_files = dict(extra_files or {}, **{"split.json": split_file})
    write_preset(out_dir, spec["family"], model.get_config(), final_weights, metadata, extra_files=extra_files)
    backup.remove()  # the preset is written: a re-run starts afresh (a run killed before this resumes after training)
    print(f"[train] {name}: validation accuracy {val_accuracy:.4f}, test accuracy {test_accuracy:.4f}; preset written to {out_dir}", flush=True)
    return metadata


def _schedule_description(schedule, epochs):
    if schedule == "cosine":
        return f", cosine decay to 0 over {epochs} epochs"
    if schedule == "step":
        return ", divided by 1.5 every 30 epochs"
    return ", ReduceLROnPlateau(val_accuracy, factor 0.3, patience 2)"


def _complete_log_lines(path):
    """The log's lines that were written in full (a kill can leave the last one without its newline)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    return lines[:-1]  # the part after the last newline is empty or a partial line


def _training_inputs(augment, images, labels, batch_size, seed):
    """`model.fit` keyword arguments for training images: augmented batches if `augment` names an augmentation.

    The grid's trials train on the recipe's augmentation as the final run
    does, unless the recipe sets `"grid_augment": False` (the trials then see
    the images as they are, as every grid did before 2026-12-04).
    """
    if augment == "none":
        return {"x": images, "y": labels, "batch_size": batch_size}
    from glasszoo.data.augment import AugmentedBatches, augmentation_options

    options = augmentation_options(augment, images.shape[1:3])
    return {"x": AugmentedBatches(images, labels, batch_size=batch_size, seed=seed, **options)}


def _read_log(path):
    """The CSV log's rows (epoch 1-based, values rounded); a partial last line or malformed row is skipped."""
    import csv

    path = pathlib.Path(path)
    lines = _complete_log_lines(path)
    if not lines:
        return []
    rows = []
    for row in csv.DictReader(lines):
        try:
            parsed = {k: (round(float(v), 5) if k != "epoch" else int(v) + 1) for k, v in row.items() if k is not None and v not in ("", None)}
        except (TypeError, ValueError):
            continue
        if "epoch" in parsed and None not in row:
            rows.append(parsed)
    return rows


def _truncate_log(path, epochs_done):
    """Keeps the header and the rows of the first `epochs_done` epochs (rewritten atomically), so a resumed run
    appends without duplicated epochs or a half-written line."""
    import csv

    lines = _complete_log_lines(path)
    if not lines:
        path.unlink(missing_ok=True)
        return
    kept = [lines[0]]
    for line, row in zip(lines[1:], csv.DictReader(lines)):
        try:
            if int(row["epoch"]) < epochs_done:
                kept.append(line)
        except (KeyError, TypeError, ValueError):
            continue
    atomic_write_text(path, "\n".join(kept) + "\n")


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the weights of the epoch with the best `monitor` value (max), atomically.

    Keras's `ModelCheckpoint` writes the file in place, so a kill during a
    save leaves a truncated checkpoint; this one writes a temporary file and
    renames it over the checkpoint.
    """

    def __init__(self, path, monitor="val_accuracy", best=None):
        super().__init__()
        self.path, self.monitor, self.best = pathlib.Path(path), monitor, best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if self.best is None or value > self.best:
            self.best = value
            with atomic_path(self.path) as temporary:
                self.model.save_weights(str(temporary))


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the epoch whose successor would end past `seconds` of wall time since `fit` began.

    The next epoch is assumed to take as long as the slowest so far, so a run
    stays within its budget (a first epoch longer than the budget still runs).

    Args:
        seconds: the wall-clock budget of the training.

    Example:
    >>> model.fit(x, y, epochs=100, callbacks=[TimeBudget(300)])  # doctest: +SKIP
    """

    def __init__(self, seconds):
        super().__init__()
        self.seconds = float(seconds)
        self.started = self.epoch_started = None
        self.slowest = 0.0
        self.stopped_after = None

    def on_train_begin(self, logs=None):
        self.started = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        self.slowest = max(self.slowest, now - self.epoch_started)
        if now - self.started + self.slowest > self.seconds:
            self.model.stop_training = True
            self.stopped_after = epoch + 1
            print(f"[train] time budget of {self.seconds:.0f} s reached after epoch {epoch + 1} ({now - self.started:.0f} s)", flush=True)


class CosineToHorizon(keras.callbacks.Callback):
    """Cosine decay of the learning rate to zero over whichever ends first: `steps` batches or `seconds` of wall time.

    A run stopped by a wall-clock budget (`TimeBudget`) does not know its
    epoch count in advance; a cosine over the epochs asked for (say 1000)
    would leave the rate where it started. This one sets the rate before
    each batch from the progress `max(batches done / steps, seconds since
    fit began / seconds)`, so the last epochs of a budgeted run are trained
    at a low rate however many there were. The rate depends on the wall
    clock, so two runs on machines of different speed differ.

    Args:
        base_rate: the rate at the start.
        steps: the batches of the whole run (epochs x steps per epoch).
        seconds: the wall-clock budget, or None for a cosine over `steps` only.

    Example:
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))  # doctest: +SKIP
    >>> model.fit(x, y, epochs=1000, callbacks=[TimeBudget(300), CosineToHorizon(1e-3, 1000 * 30, seconds=300)])  # doctest: +SKIP
    """

    def __init__(self, base_rate, steps, seconds=None):
        super().__init__()
        self.base_rate = float(base_rate)
        self.steps = max(1, int(steps))
        self.seconds = None if seconds is None else float(seconds)
        self.started = None
        self.batches = 0

    def on_train_begin(self, logs=None):
        self.started = time.time()

    def progress(self):
        """The share of the run done, in [0, 1]."""
        done = self.batches / self.steps
        if self.seconds:
            done = max(done, (time.time() - self.started) / self.seconds)
        return min(1.0, done)

    def rate(self):
        return 0.5 * self.base_rate * (1.0 + math.cos(math.pi * self.progress()))

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate())
        self.batches += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # for the log and the CSV (this callback runs before them)
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class TrainingBackup(keras.callbacks.Callback):
    """The training state after each epoch (weights with the optimizer's state, and the epoch count), atomically.

    Like Keras's `BackupAndRestore`, but a kill at any moment leaves a
    consistent backup: the weights go to a new file named by its epoch,
    then `state.json` (the commit point) is replaced to name it, then older
    weights are removed. `restore(model)` loads it before `fit` and returns
    the epoch to pass as `initial_epoch`.
    """

    STATE = "state.json"

    def __init__(self, folder):
        super().__init__()
        self.folder = pathlib.Path(folder)

    def restore(self, model):
        """Loads the backed-up weights and optimizer state into the compiled `model`; returns the epochs done (0 if none)."""
        state_path = self.folder / self.STATE
        if not state_path.exists():
            return 0
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(str(self.folder / state["weights"]))
        return int(state["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch_{epoch + 1}.weights.h5"
        with atomic_path(self.folder / name) as temporary:
            self.model.save_weights(str(temporary))
        atomic_write_text(self.folder / self.STATE, json.dumps({"epoch": epoch + 1, "weights": name}))
        for old in self.folder.glob("epoch_*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def remove(self):
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)
