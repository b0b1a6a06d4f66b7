"""The `glasszoo` command: list, info, train, evaluate, explain, influence, export, predict, serve, demo.

`predict` and `serve` run an ONNX file with onnxruntime and NumPy only; the
other commands import Keras when they need a model.
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _quiet_tensorflow():
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


def _progbar(total, label):
    import keras

    print(label, flush=True)
    return keras.utils.Progbar(total, unit_name="image")


def _slug(name):
    from glasszoo.explain.figures import file_slug

    return file_slug(name)


def _write_json(path, data):
    from glasszoo.zoo.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


# -- commands -----------------------------------------------------------------
def cmd_list(args):
    from glasszoo.zoo.registry import list_models, model_info

    names = list_models(args.pattern)
    rows = [("name", "family", "data", "test acc.", "params", "explanation outputs")]
    for name in names:
        config, meta = model_info(name)
        accuracy = meta.get("metrics", {}).get("test_accuracy")
        data = meta.get("data", {})
        rows.append((
            name,
            config["family"],
            f"{data.get('dataset', '?')} ({data.get('train_images', '?')} train / {data.get('test_images', '?')} test)",
            f"{accuracy:.4f}" if accuracy else "-",
            f"{meta.get('parameters', 0):,}",
            ", ".join(meta.get("explanation_outputs", {})),
        ))
    if args.markdown:
        print("| " + " | ".join(rows[0]) + " |")
        print("|" + "---|" * len(rows[0]))
        for row in rows[1:]:
            print("| " + " | ".join(f"`{v}`" if i == 0 else str(v) for i, v in enumerate(row)) + " |")
    else:
        rows = [row[:5] for row in rows]
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    if not names:
        print(f"(no model matches {args.pattern!r})")
    return 0


def cmd_info(args):
    from glasszoo.zoo.registry import is_model_file, model_info

    if is_model_file(args.name):
        import glasszoo

        _quiet_tensorflow()
        model = glasszoo.load(args.name)
        print(json.dumps({"file": args.name, "family": model.family, "class_names": model.class_names,
                          "input": list(model.image_shape), "parameters": int(model.count_params()),
                          "explanation_outputs": model.explanation_outputs, "config": model.get_config()}, indent=2, default=str))
        return 0
    config, meta = model_info(args.name)
    summary = {key: meta[key] for key in ("name", "family", "description", "class_names", "input", "data", "metrics", "parameters", "explanation_outputs", "versions", "weights_sha256") if key in meta}
    summary["config"] = config["config"]
    training = dict(meta.get("training", {}))
    training.pop("grid", None)
    summary["training"] = training
    print(json.dumps(summary, indent=2))
    return 0


def cmd_train(args):
    from glasszoo.zoo.training import train_preset

    if args.data:
        from glasszoo.zoo.folder_training import folder_training_recipe

        return _train_on_folder(args, args.name, folder_training_recipe, grid=not args.no_grid, distribute=args.distribute)
    train_preset(
        args.name, args.out or f"runs/{args.name}/preset", work_dir=args.work_dir, epochs=args.epochs, seed=args.seed,
        grid=not args.no_grid, grid_epochs=args.grid_epochs, verbose=1 if sys.stdout.isatty() else 2,
        max_train=args.max_train, distribute=args.distribute,
    )
    return 0


def cmd_finetune(args):
    from glasszoo.zoo.folder_training import fine_tuning_recipe

    _quiet_tensorflow()
    return _train_on_folder(args, args.preset, fine_tuning_recipe, grid=False)


def cmd_calibrate(args):
    from glasszoo.zoo.recalibration import recalibrate_preset

    _quiet_tensorflow()
    settings = {}
    for item in args.set or []:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise ValueError(f"--set takes NAME=VALUE; got {item!r}.")
        try:
            settings[name] = json.loads(value)
        except json.JSONDecodeError:
            settings[name] = value  # a bare word: a string
    calibration = recalibrate_preset(args.preset, args.out, settings=settings, command=_command_line())
    print(json.dumps(calibration, indent=2))
    print(f"wrote {args.out} (weights unchanged)")
    return 0


def _train_on_folder(args, source, build_recipe, **options):
    """Trains the recipe `build_recipe(source, folder data, ...)` makes (`train --data`, `finetune`)."""
    from glasszoo.zoo.training import train_preset

    run_name = f"{_slug(pathlib.Path(source).name)}_{_slug(pathlib.Path(args.data).resolve().name)}"
    spec = build_recipe(
        source, _folder_data(args), augment=args.augment, epochs=args.epochs, learning_rate=args.learning_rate,
        batch_size=args.batch_size, command=_command_line(), max_seconds=args.time_budget,
    )
    train_preset(
        run_name, args.out or f"runs/{run_name}/preset", work_dir=args.work_dir or f"runs/{run_name}", epochs=spec["epochs"],
        seed=args.seed, verbose=1 if sys.stdout.isatty() else 2, max_train=args.max_train, spec=spec, **options,
    )
    return 0


def _folder_data(args):
    from glasszoo.zoo.folder_training import folder_data

    return folder_data(
        args.data, image_size=args.image_size, color_mode=args.color_mode, validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction, seed=args.seed if args.split_seed is None else args.split_seed, strict=args.strict,
    )


def _command_line():
    import shlex

    return "glasszoo " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def cmd_evaluate(args):
    import glasszoo
    from glasszoo.data import load_dataset
    from glasszoo.zoo.evaluation import cross_entropy_and_accuracy

    _quiet_tensorflow()
    models = {name: glasszoo.load(name) for name in args.names}
    datasets = {name: args.dataset or (getattr(model, "preset_metadata", {}) or {}).get("data", {}).get("dataset", "fashion_mnist") for name, model in models.items()}
    if len(set(datasets.values())) > 1:
        raise ValueError(f"The models to evaluate together were trained on different data sets ({datasets}); give --dataset or evaluate them one by one.")
    dataset = next(iter(datasets.values()))
    if pathlib.Path(dataset).is_dir():
        shapes = {model.image_shape for model in models.values()}
        if len(shapes) > 1:
            raise ValueError(f"The models to evaluate together take different input shapes ({sorted(shapes)}); evaluate them one by one.")
        height, width, channels = shapes.pop()
        data = load_dataset(dataset, image_size=(height, width), color_mode="grayscale" if channels == 1 else "rgb")
    else:
        data = load_dataset(dataset)
    reports = {}
    for name, model in models.items():
        print(f"Evaluating {name} on the {len(data.x_test)} test images of {data.name} ({data.source})", flush=True)
        cross_entropy, accuracy = cross_entropy_and_accuracy(model, data.x_test, data.y_test, batch_size=args.batch_size, verbose=1)
        report = {"model": name, "dataset": data.name, "test_images": len(data.x_test), "test_accuracy": round(accuracy, 4), "test_cross_entropy": round(cross_entropy, 4)}
        count = min(args.consistency, len(data.x_test))
        if count:
            family_metrics = model.family_metrics(data.x_test[:count], batch_size=min(args.batch_size, 64))
            if family_metrics:
                report.update(family_metrics)
                report["family_metric_images"] = count
        card = (getattr(model, "preset_metadata", {}) or {}).get("metrics", {}).get("test_accuracy")
        if card is not None:
            report["model_card_test_accuracy"] = card
        print(json.dumps(report, indent=2), flush=True)
        reports[name] = report
    # one model: its report with the explanations inside (as before); several: every model's report beside them
    report = reports[args.names[0]] if len(reports) == 1 else {"models": reports}
    if args.explanations:
        report["explanations"] = _evaluate_explanations(models, args, data)
    if args.out:
        pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
        _write_json(pathlib.Path(args.out) / "report.json", report)
    return 0


def black_box_baseline(dataset, models=()):
    """The name of a black-box family's preset trained on `dataset` (the post-hoc comparison), or None.

    None too when one of `models` (loaded models) is itself a black box: it is the comparison then.
    """
    from glasszoo.zoo.families import families
    from glasszoo.zoo.registry import list_models, model_info

    black_boxes = {name for name, record in families().items() if record.black_box}
    if any(getattr(model, "family", None) in black_boxes for model in models):
        return None
    for name in list_models():
        config, meta = model_info(name)
        if config["family"] in black_boxes and meta.get("data", {}).get("dataset") == dataset:
            return name
    return None


def _evaluate_explanations(models, args, data):
    """The models' own explanations and post-hoc methods on them and on the black-box baseline; pictures and a table.

    Every model is scored on the same images: those that each of them (the
    baseline included) classifies correctly and confidently. With `--out`,
    each finished (model, method) is saved under `OUT/scores/` and a re-run
    of the same command reuses it (`explain.evaluation_cache`).
    """
    import glasszoo
    import numpy as np
    from glasszoo.explain import report_plots
    from glasszoo.explain.evaluation_cache import MethodScores, protocol_key
    from glasszoo.explain.explanation_report import (
        confident_correct,
        evaluate_explanations,
        explanation_methods,
        own_against_best,
        summary_rows,
    )

    names = "all" if args.explanations == "all" else [n.strip() for n in args.explanations.split(",")]
    count = min(args.explanation_images, len(data.x_test))
    images, labels = data.x_test[:count], data.y_test[:count]
    models = dict(models)
    baseline = None if args.no_baseline else black_box_baseline(data.name, models.values())
    if baseline:
        models[baseline] = glasszoo.load(baseline)
    protocol = dict(grids=4, removal_images=32, randomisation_images=8) if args.quick else dict(
        grids=args.grids, removal_images=args.removal_images, randomisation_images=args.randomisation_images
    )
    # presets that only choose the images (not scored): a new preset is scored on the images of an earlier table
    choosers = dict(models, **{name: glasszoo.load(name) for name in (args.images_correct_for or []) if name not in models})
    usable = None
    for candidate in choosers.values():
        mine = set(confident_correct(candidate, images, labels).tolist())
        usable = mine if usable is None else usable & mine
    usable = np.array(sorted(usable), dtype="int64")
    print(f"{len(usable)} of the first {count} test images are classified correctly with p > 0.5 by every model: {', '.join(choosers)}", flush=True)
    out = pathlib.Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    labels_of = {}
    for name in models:  # file-name labels, unique even for two folders of the same name
        label = _slug(pathlib.Path(name).stem)
        labels_of[name] = label if label not in labels_of.values() else f"{label}_{len(labels_of)}"
    results, table = {}, []
    for name, candidate in models.items():
        methods = explanation_methods(candidate, "all" if name == baseline else names)
        label = labels_of[name]
        saved = MethodScores(out / "scores", label, protocol_key(candidate, images, labels, usable, **protocol)) if out else None
        reused = [method for method in methods if saved is not None and saved.load(method) is not None]
        if reused:
            print(f"{name}: reusing the saved scores of {', '.join(reused)} from {out / 'scores'} (each once it scores its first grid as saved)", flush=True)
        progbar = _progbar(len(methods), f"Explanation metrics of {len(methods)} method(s) on {name} ({count} test images)")
        report = evaluate_explanations(candidate, images, labels, methods, progress=lambda _, bar=progbar: bar.add(1), usable=usable, saved=saved, **protocol)
        report["images_chosen_by"] = list(choosers)
        report["own_against_best"] = own_against_best(report)
        results[name] = report
        table += [(name, *row) for row in summary_rows(report, errors=True)]
        if out:
            report_plots.removal_curves(report, title=name, path=out / f"pixel_removal_{label}.png")
            shown = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)[:6]]
            report_plots.method_maps(candidate, images[shown], labels[shown], methods, class_names=data.class_names, path=out / f"maps_{label}.png")
    header = ("model", "method", "localisation", "removal least-first", "removal most-first", "rank corr. randomised")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for model_name, method, *figures, correlation in table:
        print("| " + " | ".join([model_name, method] + [f"{value:.3f} ± {error:.3f}" for value, error in figures] + [f"{correlation:.3f}"]) + " |")
    compared = [(name, report["own_against_best"]) for name, report in results.items() if report["own_against_best"]]
    if compared:
        print("\nOwn map minus the best post-hoc method on the same model (differences paired by grid or image; "
              "most-first: lower is better):")
        measures = list(compared[0][1])
        print("| model | " + " | ".join(measures) + " |")
        print("|---|" + "---|" * len(measures))
        for name, comparison in compared:
            cells = [
                f"{c['difference']:+.3f} ± {c['standard_error']:.3f} vs {c['best']}" + (" (own better)" if c["own_wins"] else "")
                for c in comparison.values()
            ]
            print(f"| {name} | " + " | ".join(cells) + " |")
    return results


def _images_for(model, image_args, samples, strict=False):
    """`(images, stems, labels)`: the given files, or the shipped samples of the preset's dataset."""
    import numpy as np
    from glasszoo.data.image_files import read_image_files
    from glasszoo.data.samples import load_samples

    if image_args:
        images = read_image_files(image_args, model.image_shape, strict=strict)
        stems = [pathlib.Path(p).stem for p in image_args]
        if len(stems) != len(images):  # .npy files holding several images
            stems = [f"image{i:03d}" for i in range(len(images))]
        return images, stems, None
    dataset = (getattr(model, "preset_metadata", {}) or {}).get("data", {}).get("dataset", "fashion_mnist")
    images, labels, names = load_samples(dataset)
    rank_in_class = np.array([np.sum(labels[:i] == labels[i]) for i in range(len(labels))])
    order = np.lexsort((labels, rank_in_class))[: samples or len(labels)]  # one of every class first
    images, labels = images[order], labels[order]
    return images, [f"sample{i:02d}_{_slug(names[labels[i]])}" for i in range(len(images))], labels


def cmd_explain(args):
    import glasszoo
    from glasszoo.explain.explanation_files import write_explanations

    _quiet_tensorflow()
    model = glasszoo.load(args.name)
    images, stems, labels = _images_for(model, args.images, args.samples, strict=args.strict)
    progbar = _progbar(len(images), f"Explaining {len(images)} image(s) with {model.name} ({model.family})")
    done = [0]

    def progress(count):
        progbar.add(count - done[0])
        done[0] = count

    write_explanations(model, images, stems, args.out, labels=labels, model_views=not args.no_global, progress=progress)
    print(f"Wrote explanations of {len(images)} image(s) to {args.out}")
    return 0


NEGLIGIBLE_INFLUENCE = 1e-9  # influence scores below this in size rank training images by rounding noise


def cmd_influence(args):
    import glasszoo
    import numpy as np
    from glasszoo.explain.influence import InfluenceIndex, cache_file, part_source_ranks, readout
    from glasszoo.explain.influence_pictures import influence_picture, parts_and_influence_picture
    from glasszoo.zoo.atomic import atomic_folder
    from glasszoo.zoo.training_data import training_split

    _quiet_tensorflow()
    model = glasszoo.load(args.name)
    images, stems, labels = _images_for(model, args.images, args.samples, strict=args.strict)
    readout(model, images[:1])  # a family without a linear readout says so before the training data is read
    x_fit, y_fit, where = training_split(model, args.data)
    path = cache_file(model, x_fit, y_fit, args.damping, args.cache)
    started = time.time()
    reused = path.exists()
    index = InfluenceIndex.cached(model, x_fit, y_fit, damping=args.damping, folder=args.cache)
    built = time.time() - started
    print(f"{'Loaded' if reused else 'Built'} the influence index of {where} ({index.info['parameters']} readout parameters) in {built:.1f} s: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    started = time.time()
    found = index.most_influential(model, images, count=args.count)
    query = (time.time() - started) / len(images)
    print(f"Query: {1000 * query:.0f} ms an image")
    names = list(model.class_names)
    agreement = part_source_ranks(index, model, images, x_fit) if model.part_relevance(images[:1]) is not None else None
    records = []
    with atomic_folder(args.out, replaceable=lambda folder: (folder / "influence.json").is_file()) as folder:
        for row, (image, stem) in enumerate(zip(images, stems)):
            influence_picture(image, found, row, x_fit, y_fit, names, path=folder / f"influence_{stem}.png")
            record = {"image": stem, "explained_class": names[int(found["labels"][row])]}
            if agreement is not None:
                parts_and_influence_picture(image, found, row, agreement, x_fit, y_fit, names, path=folder / f"parts_influence_{stem}.png")
                record["top_parts"] = [
                    {"part": int(part), "source_training_index": int(source), "helpfulness_percentile": float(percentile), "influence_size_percentile": float(size)}
                    for part, source, percentile, size in zip(
                        agreement["parts"][row], agreement["sources"][row], agreement["percentiles"][row], agreement["magnitude_percentiles"][row]
                    )
                ]
            for key in ("helpful", "harmful"):
                record[key] = [
                    {"training_index": int(i), "label": names[int(y_fit[i])], "score": float(score)}
                    for i, score in zip(found[key][row], found[f"{key}_scores"][row])
                ]
            if labels is not None:
                record["label"] = names[int(labels[row])]
            largest = max(abs(entry["score"]) for entry in record["helpful"] + record["harmful"])
            if largest < NEGLIGIBLE_INFLUENCE:
                record["note"] = (
                    f"every score is below {NEGLIGIBLE_INFLUENCE:g} in size (largest {largest:.2g}): the model is so sure of this image that "
                    "its loss gradient vanishes, no training image changes its loss measurably, and the order of the images shown is noise"
                )
                print(f"{stem}: {record['note']}")
            records.append(record)
        _write_json(folder / "influence.json", {
            "model": model.name, "training_data": where, "method": "influence functions on the last layer (Koh and Liang 2017): exact damped Hessian of a linear layer, Gauss-Newton of a non-linear one",
            "damping": index.damping, "index": dict(index.info, file=str(path)), "query_seconds_per_image": query,
            "score": "I_up,loss = -grad L(test)^T H^-1 grad L(train); negative helps; removing an image changes the test loss by about -score / n",
            "images": records,
            "top_parts_mean_helpfulness_percentile": None if agreement is None else agreement["mean_percentile"],
            "top_parts_mean_influence_size_percentile": None if agreement is None else agreement["mean_magnitude_percentile"],
        })  # fmt: skip
    print(f"Wrote the influential training images of {len(images)} image(s) to {args.out}")
    return 0


def export_and_check(model, path, images, opset=None, model_name=None, from_keras=None, precision="fp32", check_drift=True):
    """Exports to ONNX, runs it in onnxruntime and returns the largest difference per output.

    `from_keras` is `model.explain(images)` when the caller has it already.
    """
    import numpy as np
    from glasszoo.export import OnnxModel, to_onnx

    to_onnx(model, path, opset=opset, model_name=model_name, precision=precision, check_drift=check_drift)
    served = OnnxModel(path)
    from_onnx = served(images)
    from_keras = model.explain(images) if from_keras is None else from_keras
    differences = {name: float(np.max(np.abs(from_onnx[name] - from_keras[name]))) for name in served.output_names}
    return served, differences


def cmd_export(args):
    import glasszoo
    from glasszoo.data.samples import load_samples

    if (args.output is None) == (args.web is None):
        raise ValueError("give either OUTPUT (an .onnx file) or --web DIR.")
    if args.web is not None and args.precision != "fp32":
        raise ValueError(f"--precision {args.precision} applies to an .onnx file; the --web page runs the float32 export.")
    _quiet_tensorflow()
    model = glasszoo.load(args.name)
    if args.web is not None:
        from glasszoo.export.web_export import export_web

        folder = export_web(model, args.web, ort_web=args.ort_web, model_name=args.name, opset=args.opset)
        print(f"Wrote {folder}/ (index.html, model.onnx, metadata.json, onnxruntime-web). Serve it, e.g. "
              f"python3 -m http.server -d {folder} 8000, and open http://127.0.0.1:8000/")
        return 0
    images = load_samples()[0][:8] if tuple(model.image_shape) == (28, 28, 1) else None
    if images is None:
        from glasszoo.export import to_onnx

        to_onnx(model, args.output, opset=args.opset, model_name=args.name, precision=args.precision, check_drift=not args.no_drift_check)
        print(f"Wrote {args.output} ({args.precision})")
        return 0
    served, differences = export_and_check(
        model, args.output, images, opset=args.opset, model_name=args.name, precision=args.precision, check_drift=not args.no_drift_check
    )
    rounding = "" if args.precision == "fp32" else f" (the {args.precision} export's rounding; README: reduced precision)"
    print(f"Wrote {args.output} ({args.precision}); onnxruntime ({served.providers[0]}) vs Keras on {len(images)} images, max |difference| per output{rounding}:")
    for name, value in differences.items():
        print(f"  {name:16s} {value:.2e}")
    return 0


def _read_for_serving(paths, input_shape, strict=False):
    """`(images, labels)` from image files or .npy arrays, validated per file so errors name it.

    Labels are the paths, or `path[i]` for the images of a .npy array. The
    conversions to the model's input are printed once (refused when strict).
    """
    import numpy as np
    from glasszoo.data.image_files import read_image_files
    from glasszoo.data.image_reader import ConversionNotes
    from glasszoo.zoo.inputs import validate_images

    notes = ConversionNotes(strict=strict, target=f"the model's input {tuple(input_shape)}")

    if len(input_shape) != 3 or any(d is None for d in input_shape):
        raise ValueError(f"predict reads images for a fixed NHWC input; the model's input is (batch, {', '.join(str(d) for d in input_shape)}).")
    batches, labels = [], []
    for path in map(str, paths):
        if not pathlib.Path(path).exists():
            raise FileNotFoundError(f"No image file at {path}.")
        if pathlib.Path(path).is_dir():
            raise ValueError(f"{path} is a folder, not an image file.")
        try:
            if path.endswith(".npy"):
                images = np.load(path, allow_pickle=False)
            else:
                images = read_image_files([path], input_shape, notes=notes)
        except Exception as error:
            raise ValueError(f"Cannot read {path} as an image or a .npy array: {' '.join(str(error).split())}") from error
        if path.endswith(".npy") and images.ndim == 4 and images.shape[0] == 0:
            raise ValueError(f"{path} holds no images (an empty batch of shape {images.shape}).")
        try:
            images = validate_images(images, input_shape)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
        batches.append(images)
        labels += [f"{path}[{i}]" for i in range(len(images))] if path.endswith(".npy") else [path]
    notes.report()
    return np.concatenate(batches), labels


def cmd_predict(args):
    """Serves an ONNX export with onnxruntime and NumPy only; with --out, writes predictions.json, outputs.npz and pictures."""
    import numpy as np
    from glasszoo.export import OnnxModel

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1; got {args.batch_size}.")
    out = pathlib.Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (predictions.json, outputs.npz and pictures go into it).")
    if out is not None and out.exists() and any(out.iterdir()) and not _is_predict_output(out):
        raise ValueError(f"--out {out} holds other files; give an empty or new folder, or a previous predict output (replaced whole).")
    served = OnnxModel(args.model)
    images, labels = _read_for_serving(args.images, served.input_shape, strict=args.strict)
    parts = [served(images[i : i + args.batch_size]) for i in range(0, len(images), args.batch_size)]
    outputs = {name: np.concatenate([part[name] for part in parts]) for name in served.output_names}
    from glasszoo.export.predictions import class_names_for, class_scores, top_classes

    scores_name, logits = class_scores(outputs, served.path)
    notes = []
    if scores_name != "logits":
        notes.append(f"no 'logits' output: class scores read from {scores_name!r}")
    names = class_names_for(served.class_names, logits.shape[-1], notes)
    activation = served.metadata.get("output_activation", "softmax")
    probabilities, ranked = top_classes(logits, activation, names)
    family = served.metadata.get("family")
    results = [{"file": label, **result} for label, result in zip(labels, ranked)]
    report = {
        "model": served.metadata.get("model_name", pathlib.Path(args.model).stem), "family": family,
        "activation": "sigmoid" if activation == "sigmoid" else "softmax", "providers": served.providers, "predictions": results,
    }
    if out is not None:  # the run's files are published together: the previous run's or these, never a mixture
        from glasszoo.zoo.atomic import atomic_folder

        with atomic_folder(out, replaceable=_is_predict_output) as staging:
            np.savez_compressed(staging / "outputs.npz", **outputs)
            pictures = _serving_pictures(family, images, outputs, labels, names, probabilities, staging, notes)
            for result, picture in zip(results, pictures):
                result["picture"] = picture
            _write_json(staging / "predictions.json", report)
    print(json.dumps(report, indent=2))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if out is not None:
        drawn = sum(1 for r in results if r.get("picture"))
        print(f"Wrote predictions.json, outputs.npz ({', '.join(outputs)}) and {drawn} picture(s) to {out}/", file=sys.stderr)
    return 0


def _is_predict_output(folder):
    """True for a folder a previous `predict --out` wrote (it holds predictions.json and outputs.npz)."""
    return (folder / "predictions.json").is_file() and (folder / "outputs.npz").is_file()


def cmd_serve(args):
    """Serves an ONNX export over HTTP until SIGINT/SIGTERM (`glasszoo.serving`)."""
    from glasszoo.serving import serve

    if args.max_batch < 1:
        raise ValueError(f"--max-batch must be at least 1; got {args.max_batch}.")
    if not args.batch_window_ms >= 0:
        raise ValueError(f"--batch-window-ms must be >= 0; got {args.batch_window_ms}.")
    if not args.max_body_mb > 0 or args.max_pixels < 1:
        raise ValueError("--max-body-mb and --max-pixels must be positive.")
    providers = ["CPUExecutionProvider"] if args.provider == "cpu" else None
    serve(args.model, host=args.host, port=args.port, max_batch=args.max_batch, batch_window_ms=args.batch_window_ms,
          max_body_bytes=int(args.max_body_mb * 2**20), max_pixels=args.max_pixels, providers=providers, log_level=args.log_level)
    return 0


def _serving_pictures(family, images, outputs, labels, names, probabilities, out, notes):
    """One explanation png per image from the ONNX outputs (None per image where none can be drawn)."""
    if family is None:
        notes.append("the ONNX file has no glasszoo metadata 'family': predictions and outputs only, no pictures")
        return [None] * len(images)
    try:
        from glasszoo.explain import pictures
    except ImportError as error:  # matplotlib missing in a minimal serving install
        notes.append(f"no pictures: {error}")
        return [None] * len(images)
    problem = pictures.missing_outputs(family, outputs)
    if problem:
        notes.append(f"{problem}: predictions and outputs only")
        return [None] * len(images)
    written = []
    for b, label in enumerate(labels):
        base, _, inside = label.partition("[") if label.endswith("]") else (label, "", "")
        stem = _slug(pathlib.Path(base).stem + (f"-{inside.rstrip(']')}" if inside else ""))
        name = f"explanation_{b:03d}_{stem}.png"
        try:
            title = f"{pathlib.Path(label).name}: {names[int(probabilities[b].argmax())]} (p = {probabilities[b].max():.3f})"
            pictures.explanation_picture(family, images, outputs, b, names, probabilities, title=title, path=out / name)
            written.append(name)
        except Exception as error:  # a picture must never cost the predictions
            notes.append(f"could not draw the picture of {label}: {' '.join(str(error).split())}")
            written.append(None)
        if sys.stderr.isatty():
            print(f"\rpictures {b + 1}/{len(labels)}", end="\n" if b + 1 == len(labels) else "", file=sys.stderr, flush=True)
    return written


def demo_presets():
    """The preset each family names for the demo (`Family.demo_preset`), where it is installed."""
    from glasszoo.zoo.families import families
    from glasszoo.zoo.registry import list_models

    installed = set(list_models())
    return [record.demo_preset for record in families().values() if record.demo_preset in installed]


def _demo_one(name, out, samples):
    """Load, explain, export, serve and compare one preset; returns its summary."""
    import glasszoo
    from glasszoo.explain.explanation_files import write_explanations

    started = time.time()
    print(f"== {name}")
    print(f"[1/4] Loading {name} (weights verified against the model card's sha256)")
    model = glasszoo.load(name)
    images, stems, labels = _images_for(model, [], samples)
    print(f"[2/4] Explaining {len(images)} shipped test images of {model.preset_metadata['data']['dataset']}")
    explanation, views_summary = write_explanations(model, images, stems, out, labels=labels)
    summary = {"model": name, "family": model.family, "samples": len(images)}
    summary["sample_accuracy"] = round(float((explanation["logits"].argmax(-1) == labels).mean()), 4)
    summary["self_checks_max_abs_error"] = {check: float(f"{error:.3g}") for check, error in model.self_checks(images, explanation).items()}
    summary.update(views_summary)
    summary.update(model.family_metrics(images))
    onnx_path = out / f"{name}.onnx"
    print(f"[3/4] Exporting to {onnx_path} and running it in onnxruntime")
    served, differences = export_and_check(model, onnx_path, images, model_name=name, from_keras=explanation)
    print(f"[4/4] onnxruntime ({served.providers[0]}) vs Keras, max |difference| per output:")
    for output, value in differences.items():
        print(f"      {output:26s} {value:.2e}")
    summary.update(
        model_card_test_accuracy=model.preset_metadata.get("metrics", {}).get("test_accuracy"),
        onnx_file=str(onnx_path),
        onnx_providers=served.providers,
        onnx_max_abs_difference=differences,
        seconds=round(time.time() - started, 1),
    )
    _write_json(out / "summary.json", summary)
    return summary


def cmd_demo(args):
    _quiet_tensorflow()
    out = pathlib.Path(args.out)
    names = args.name or demo_presets()
    summaries = [_demo_one(name, out / name, args.samples) for name in names]
    _write_json(out / "summary.json", {"models": summaries})
    for summary in summaries:
        checks = summary["self_checks_max_abs_error"]
        print(f"{summary['model']}: sample accuracy {summary['sample_accuracy']:.3f}, self-check errors {checks}")
    print(f"Pictures and summary.json per model in {out}/")
    return 0


# -- parser ---------------------------------------------------------------------
def _augmentation_name(name):
    """An `--augment` value checked as the recipes' are (argparse reports the message)."""
    from glasszoo.data.augment import augmentation_parts

    try:
        augmentation_parts(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name


def _folder_arguments(p, required):
    p.add_argument("--data", required=required, metavar="DIR", help="a folder of images: one sub-folder per class, or train/ val/ test/ folders of them")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="resize to H x W (default: the preset's; train: the most common size)")
    p.add_argument("--color-mode", choices=("grayscale", "rgb"), help="default: the preset's; train: grayscale if every file is grey")
    p.add_argument("--validation-fraction", type=float, default=0.1, help="share of each class for validation (without a val/ folder)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of each class held out for the test (without a test/ folder)")
    p.add_argument("--augment", type=_augmentation_name, default="crop", metavar="NAME",
                   help="training augmentation: none, crop, flip, flip_and_crop, affine or pixel_holes, or names joined with '+' "
                   "(default crop: shifts only; flips change digits, text and sided images)")
    p.add_argument("--learning-rate", type=float, help="override the recipe's learning rate")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--strict", action="store_true", help="refuse images that need resizing or a colour conversion")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop training before this much wall time (families trained in stages ignore it)")
    p.add_argument("--split-seed", type=int, metavar="SEED", help="seed of the train/validation/test split (default: --seed); fix it to vary the training seed over one split")


def build_parser():
    parser = argparse.ArgumentParser(prog="glasszoo", description="Interpretable image classifiers: load, explain, train, export, serve.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the pretrained models")
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--markdown", action="store_true", help="print the zoo table in Markdown")
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("info", help="print a model card")
    p.add_argument("name")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("train", help="train a preset from its recipe (grid on validation, checkpoints, model card); --data: on your folder")
    p.add_argument("name", help="a recipe name; with --data also a family name (its first recipe's architecture)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    _folder_arguments(p, required=False)
    p.add_argument("--out", help="preset folder to write (default runs/NAME/preset)")
    p.add_argument("--work-dir", help="checkpoints and logs (default runs/NAME)")
    p.add_argument("--no-grid", action="store_true", help="skip the hyperparameter grid")
    p.add_argument("--grid-epochs", type=int)
    p.add_argument("--max-train", type=int, help="use at most this many training images (quick trials only)")
    p.add_argument(
        "--distribute", choices=["none", "mirrored", "multi_worker", "data_parallel"], default="none",
        help="data-parallel training: mirrored (TensorFlow, this machine's GPUs), multi_worker (TensorFlow, machines in "
        "TF_CONFIG), data_parallel (KERAS_BACKEND=jax, all devices); the recipe's batch size is the global batch",
    )
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("calibrate", help="choose a preset's after-training settings (e.g. placement floors) again on its card's validation split; weights unchanged")
    p.add_argument("preset", help="a preset name or folder trained on a built-in dataset")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="a model setting to change first (a JSON value or a word), e.g. placement_evidence=confidence; repeatable")
    p.add_argument("--out", required=True, help="preset folder to write (may be the preset's own: files are replaced atomically)")
    p.set_defaults(run=cmd_calibrate)

    p = sub.add_parser("finetune", help="fine-tune a preset on a folder of your images (one sub-folder per class)")
    p.add_argument("preset", help="a preset name or folder")
    _folder_arguments(p, required=True)
    p.add_argument("--epochs", type=int, help="epochs (default: the family's fine-tuning recipe)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and shuffling")
    p.add_argument("--out", help="preset folder to write (default runs/PRESET_FOLDER/preset)")
    p.add_argument("--work-dir", help="checkpoints and logs; re-run with the same one to resume (default runs/PRESET_FOLDER)")
    p.add_argument("--max-train", type=int, help="use at most this many training images (quick trials only)")
    p.set_defaults(run=cmd_finetune)

    p = sub.add_parser("evaluate", help="test accuracy, family metrics and explanation metrics of one or more presets")
    p.add_argument("names", nargs="+", metavar="name", help="presets (names or folders); several are scored on the same images")
    p.add_argument("--dataset", help="dataset name (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--consistency", type=int, default=1000, help="test images for the family's own explanation metrics, if it has any (0: skip)")
    p.add_argument("--explanations", help="'all' or a comma list (inherent,saliency,input_x_gradient,integrated_gradients,grad_cam,occlusion): "
                   "localisation, pixel removal and randomisation for the model and the black-box baseline")
    p.add_argument("--explanation-images", type=int, default=500, help="test images the explanation metrics draw from")
    p.add_argument("--grids", type=int, default=16, help="localisation grids (3x3, distinct classes)")
    p.add_argument("--removal-images", type=int, default=256, help="images of the pixel-removal curves")
    p.add_argument("--randomisation-images", type=int, default=8, help="images of the cascading-randomisation check")
    p.add_argument("--quick", action="store_true", help="a small protocol for tests: 4 grids, 32 removal images, 8 randomisation images")
    p.add_argument("--no-baseline", action="store_true", help="skip the black-box baseline's rows")
    p.add_argument("--images-correct-for", nargs="+", metavar="PRESET", help="presets that take part in the choice of images "
                   "without being scored: a new preset is scored on the images of an earlier run of these presets")
    p.add_argument("--out", help="folder for report.json and the explanation pictures; each finished (model, method) is "
                   "saved under OUT/scores/ and reused when the same command runs again (resume)")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("explain", help="explain images (default: the shipped samples) and write pictures")
    p.add_argument("name")
    p.add_argument("images", nargs="*", help="image files (png, jpg, ...) or .npy arrays")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=8, help="shipped samples to use when no image is given")
    p.add_argument("--no-global", action="store_true", help="skip the family's model views (kernel, prototype and grid pictures)")
    p.add_argument("--strict", action="store_true", help="refuse image files that need converting (channels, size) instead of converting them")
    p.set_defaults(run=cmd_explain)

    p = sub.add_parser("influence", help="the training images most responsible for each prediction (influence functions on the last layer)")
    p.add_argument("name")
    p.add_argument("images", nargs="*", help="image files (png, jpg, ...) or .npy arrays")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=4, help="shipped samples to use when no image is given")
    p.add_argument("--count", type=int, default=6, help="helpful and harmful training images per image")
    p.add_argument("--data", help="the data set name or folder the model was trained on (default: from its model card)")
    p.add_argument("--damping", type=float, default=None, help="added to the Hessian's diagonal (default: 1e-3 for a linear last layer; for a non-linear one 0.03 x the largest Gauss-Newton eigenvalue, pulling toward the model's weights)")
    p.add_argument("--cache", help="folder of the influence indexes (default ~/.cache/glasszoo/influence)")
    p.add_argument("--strict", action="store_true", help="refuse image files that need converting (channels, size) instead of converting them")
    p.set_defaults(run=cmd_influence)

    p = sub.add_parser("export", help="export to ONNX (logits + explanations) and check it in onnxruntime; --web: a page that explains in the browser")
    p.add_argument("name")
    p.add_argument("output", nargs="?", help="the .onnx file to write")
    p.add_argument("--web", metavar="DIR", help="write a static web folder instead: model.onnx, metadata.json, the page, onnxruntime-web")
    p.add_argument("--ort-web", metavar="DIST", help="onnxruntime-web's dist/ folder (default: searched; see the README)")
    p.add_argument("--opset", type=int)
    p.add_argument(
        "--precision", choices=["fp32", "fp16", "int8"], default="fp32",
        help="fp16: float16 arithmetic; int8: int8 weights, dynamic quantization (input and outputs stay float32)",
    )  # fmt: skip
    p.add_argument(
        "--no-drift-check", action="store_true",
        help="write an int8 export even when its logits on calibration images served as one batch move too far from float32's",
    )  # fmt: skip
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("predict", help="serve an ONNX export with onnxruntime only")
    p.add_argument("model", help="an .onnx file from `glasszoo export`")
    p.add_argument("images", nargs="+", help="image files (png, jpg, ...) or .npy arrays in [0, 1]")
    p.add_argument("--out", help="folder for predictions.json, outputs.npz (every ONNX output) and one explanation png per image")
    p.add_argument("--batch-size", type=int, default=32, help="images per onnxruntime run")
    p.add_argument("--strict", action="store_true", help="refuse image files that need converting (channels, size) instead of converting them")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("serve", help="serve an ONNX export over HTTP (onnxruntime only; micro-batched)")
    p.add_argument("model", help="an .onnx file from `glasszoo export`")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=32, help="most images run together")
    p.add_argument("--batch-window-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body (413 beyond)")
    p.add_argument("--max-pixels", type=int, default=16 * 2**20, help="most values one request may hold (413 beyond)")
    p.add_argument("--provider", choices=("auto", "cpu"), default="auto", help="onnxruntime provider (auto: CUDA when it works)")
    p.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="info", help="uvicorn's log level")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("demo", help="the main job: load, explain samples, export, run in onnxruntime, write pictures")
    p.add_argument("--name", action="append", help="preset to run (repeatable; default: each family's demo preset)")
    p.add_argument("--out", default="glasszoo-demo")
    p.add_argument("--samples", type=int, default=12)
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (KeyError, ValueError, OSError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"glasszoo {args.command}: error: {message}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:  # a serving-only install (requirements-serving.txt) has no Keras/TensorFlow
        if (error.name or "").partition(".")[0] not in ("keras", "tensorflow", "tf2onnx", "onnx", "h5py"):
            raise
        print(f"glasszoo {args.command}: error: {error.name} is not installed; only `glasszoo predict` and `glasszoo serve` work without the full install (pip install glasszoo).", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
