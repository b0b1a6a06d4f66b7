"""The `glasszoo` command: list, info, train, evaluate, explain, export, predict, demo.

`predict` serves an ONNX file with onnxruntime and NumPy only; the other
commands import Keras when they need a model.
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
    """A class name as a file-name part ("T-shirt/top" -> "T-shirt-top", "Ankle boot" -> "Ankle-boot")."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in str(name))


def _write_json(path, data):
    pathlib.Path(path).write_text(json.dumps(data, indent=2) + "\n")


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
    from glasszoo.zoo.registry import model_info

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

    out = args.out or f"runs/{args.name}/preset"
    train_preset(
        args.name, out, work_dir=args.work_dir, epochs=args.epochs, seed=args.seed, grid=not args.no_grid,
        grid_epochs=args.grid_epochs, verbose=1 if sys.stdout.isatty() else 2, max_train=args.max_train,
        distribute=args.distribute,
    )
    return 0


def cmd_evaluate(args):
    import glasszoo
    import numpy as np
    from glasszoo.data import load_dataset
    from glasszoo.explain.consistency import decision_image_consistency
    from glasszoo.zoo.evaluation import cross_entropy_and_accuracy

    model = glasszoo.load(args.name)
    meta = getattr(model, "preset_metadata", {})
    dataset = args.dataset or meta.get("data", {}).get("dataset", "fashion_mnist")
    if pathlib.Path(dataset).is_dir():
        height, width, channels = model.image_shape
        data = load_dataset(dataset, image_size=(height, width), color_mode="grayscale" if channels == 1 else "rgb")
    else:
        data = load_dataset(dataset)
    print(f"Evaluating {args.name} on the {len(data.x_test)} test images of {data.name} ({data.source})", flush=True)
    cross_entropy, accuracy = cross_entropy_and_accuracy(model, data.x_test, data.y_test, batch_size=args.batch_size, verbose=1)
    report = {"model": args.name, "dataset": data.name, "test_images": len(data.x_test), "test_accuracy": round(accuracy, 4), "test_cross_entropy": round(cross_entropy, 4)}
    if hasattr(model, "decision_images") and args.consistency:
        count = min(args.consistency, len(data.x_test))
        progbar = _progbar(count, f"Decision-image consistency on {count} test images")
        kept = []
        for start in range(0, count, args.batch_size):
            batch = data.x_test[start : min(start + args.batch_size, count)]
            kept.append(decision_image_consistency(model, batch, batch_size=args.batch_size)["kept"])
            progbar.add(len(batch))
        report["decision_image_consistency"] = round(float(np.concatenate(kept).mean()), 4)
        report["decision_image_consistency_images"] = count
    card = meta.get("metrics", {}).get("test_accuracy")
    if card is not None:
        report["model_card_test_accuracy"] = card
    if args.explanations:
        report["explanations"] = _evaluate_explanations(model, args, data)
    print(json.dumps({k: v for k, v in report.items() if k != "explanations"}, indent=2))
    if args.out:
        pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
        _write_json(pathlib.Path(args.out) / "report.json", report)
    return 0


BASELINE_FOR = {"fashion_mnist": "cnn_fashion_mnist"}


def _evaluate_explanations(model, args, data):
    """The model's explanation and post-hoc methods on it and on the black-box baseline; pictures and a table."""
    import glasszoo
    import numpy as np
    from glasszoo.explain import report_plots
    from glasszoo.explain.explanation_report import (
        evaluate_explanations,
        explanation_methods,
        summary_rows,
    )
    from glasszoo.zoo.registry import list_models

    names = "all" if args.explanations == "all" else [n.strip() for n in args.explanations.split(",")]
    count = min(args.explanation_images, len(data.x_test))
    images, labels = data.x_test[:count], data.y_test[:count]
    models = {args.name: model}
    baseline = BASELINE_FOR.get(data.name)
    if baseline and baseline != args.name and baseline in list_models() and not args.no_baseline:
        models[baseline] = glasszoo.load(baseline)
    out = pathlib.Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    results, table = {}, []
    for name, candidate in models.items():
        methods = explanation_methods(candidate, names if name == args.name else "all")
        progbar = _progbar(len(methods), f"Explanation metrics of {len(methods)} method(s) on {name} ({count} test images)")
        report = evaluate_explanations(candidate, images, labels, methods, grids=args.grids, progress=lambda _, bar=progbar: bar.add(1))
        results[name] = report
        table += [(name, *row) for row in summary_rows(report)]
        if out:
            report_plots.removal_curves(report, title=name, path=out / f"pixel_removal_{name}.png")
            shown = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)[:6]]
            report_plots.method_maps(candidate, images[shown], labels[shown], methods, class_names=data.class_names, path=out / f"maps_{name}.png")
    header = ("model", "method", "localisation", "removal least-first", "removal most-first", "rank corr. randomised")
    print(" | ".join(header))
    for row in table:
        print(" | ".join([row[0], row[1]] + [f"{v:.3f}" for v in row[2:]]))
    return results


def _images_for(model, image_args, samples):
    """`(images, stems, labels)`: the given files, or the shipped samples of the preset's dataset."""
    import numpy as np
    from glasszoo.data.image_files import read_image_files
    from glasszoo.data.samples import load_samples

    if image_args:
        images = read_image_files(image_args, model.image_shape)
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


def _predicted_classes(explanation, stems, names):
    """`[{"image", "predicted", "logit"}]` per image: the predictions.json of `explain`."""
    predicted = explanation["logits"].argmax(-1)
    return [{"image": stem, "predicted": names[p], "logit": float(explanation["logits"][i, p])} for i, (stem, p) in enumerate(zip(stems, predicted))]


def write_explanations(model, images, stems, out, with_global=True, labels=None):
    """Explains `images` and writes the pictures and arrays into `out`; returns the explanation.

    INAM: local views (decision images), an overview grid and, with
    `with_global`, kernel views. CoDA: contribution views (predicted and
    strongest other class), an overview grid and, given `labels` of at
    least 9 different classes, a 3x3 localisation grid.
    """
    import numpy as np

    if getattr(model, "family", "") == "coda":
        return _write_contribution_maps(model, images, stems, out, labels)
    if getattr(model, "family", "") == "protopnet":
        return _write_prototype_views(model, images, stems, out)
    if getattr(model, "family", "") == "cnn":
        return _write_cam_views(model, images, stems, out)
    if getattr(model, "family", "") == "prototypedl":
        from glasszoo.explain.prototypedl_plots import write_prototypedl_explanations

        return write_prototypedl_explanations(model, images, stems, out)

    from glasszoo.explain import plots

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progbar = _progbar(len(images), f"Explaining {len(images)} image(s) with {model.name}")
    parts = []
    for start in range(0, len(images), 16):
        parts.append(model.explain(images[start : start + 16]))
        progbar.add(len(parts[-1]["logits"]))
    explanation = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    np.savez_compressed(out / "explanations.npz", images=images, **explanation)
    names = model.class_names
    predicted = explanation["logits"].argmax(-1)
    for index, stem in enumerate(stems):
        plots.local_view(images, explanation, index=index, class_names=names, path=out / f"local_{stem}.png")
    plots.explanation_grid(images, explanation, class_names=names, path=out / "explanation_grid.png")
    if with_global:
        feature_values = _feature_values(model, images)
        for class_index in sorted(set(predicted.tolist()))[:3]:
            plots.strongest_kernels(model, class_index, feature_values, path=out / f"strongest_kernels_{class_index}_{_slug(names[class_index])}.png")
        influence = plots.kernel_influence(model, feature_values)
        top = int(influence.max(axis=1).argmax())
        plots.kernel_global_view(model, top, feature_values, class_names=names, path=out / f"kernel_{top:03d}_global_view.png")
    _write_json(out / "predictions.json", _predicted_classes(explanation, stems, names))
    return explanation


def _write_contribution_maps(model, images, stems, out, labels):
    import numpy as np
    from glasszoo.explain import coda_plots

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    explanation = model.explain(images)
    np.savez_compressed(out / "explanations.npz", images=images, **explanation)
    names = model.class_names
    progbar = _progbar(len(images), f"Drawing contribution maps of {len(images)} image(s) with {model.name}")
    for image, stem in zip(images, stems):
        coda_plots.contribution_view(model, image, path=out / f"local_{stem}.png")
        progbar.add(1)
    coda_plots.contribution_grid(model, images, path=out / "explanation_grid.png")
    if labels is not None:
        cells = [int(np.flatnonzero(labels == c)[0]) for c in sorted(set(labels.tolist()))][:9]
        if len(cells) == 9:
            _, scores = coda_plots.localisation_view(model, images[cells], labels[cells], rows=3, path=out / "localisation_grid.png")
            explanation["localisation_scores"] = scores
    _write_json(out / "predictions.json", _predicted_classes(explanation, stems, names))
    return explanation


def _write_cam_views(model, images, stems, out):
    """The CNN baseline: each image with its class activation map; one picture per image and a grid."""
    import numpy as np
    from glasszoo.explain.cam_plots import cam_grid

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    explanation = model.explain(images)
    np.savez_compressed(out / "explanations.npz", images=images, **explanation)
    names = model.class_names
    predicted = explanation["logits"].argmax(-1)
    titles = [f"{names[p]} ({explanation['logits'][i, p]:.2f})" for i, p in enumerate(predicted)]
    for index, stem in enumerate(stems):
        cam_grid(images[index : index + 1], explanation["class_activation_map"][index : index + 1], titles[index : index + 1], path=out / f"local_{stem}.png")
    cam_grid(images, explanation["class_activation_map"], titles, path=out / "explanation_grid.png")
    _write_json(out / "predictions.json", _predicted_classes(explanation, stems, names))
    return explanation


def _write_prototype_views(model, images, stems, out):
    """ProtoPNet: a "this looks like that" panel per image and the grid of pushed prototypes."""
    import numpy as np
    from glasszoo.explain import protopnet_plots

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    explanation = model.explain(images)
    np.savez_compressed(out / "explanations.npz", images=images, **explanation)
    names = model.class_names
    pushed = model.prototype_provenance is not None
    progbar = _progbar(len(images), f"Drawing 'this looks like that' panels of {len(images)} image(s) with {model.name}")
    for index, (image, stem) in enumerate(zip(images, stems)):
        if pushed:
            one = {k: v[index : index + 1] for k, v in explanation.items()}
            protopnet_plots.this_looks_like_that(model, image, top=3, explained=one, path=out / f"local_{stem}.png")
        progbar.add(1)
    if pushed:
        protopnet_plots.prototype_grid(model, path=out / "prototypes.png")
    else:
        print("The prototypes have not been pushed (no provenance): only the arrays are written.")
    predicted = explanation["logits"].argmax(-1)
    summary = []
    for i, (stem, p) in enumerate(zip(stems, predicted)):
        strongest = protopnet_plots.top_prototypes(explanation, i, p, 3)
        summary.append({
            "image": stem, "predicted": names[p], "logit": float(explanation["logits"][i, p]),
            "strongest_prototypes": [
                {"prototype": int(j), "similarity": round(float(explanation["prototype_similarity"][i, j]), 4),
                 "contribution": round(float(explanation["prototype_contributions"][i, j, p]), 4)}
                for j in strongest
            ],
        })
    _write_json(out / "predictions.json", summary)
    return explanation


def _feature_values(model, images):
    """Max responses of the preset's training sample (for density shading), else of `images`."""
    from glasszoo.zoo.feature_sample import read_feature_sample

    folder = getattr(model, "preset_dir", None)
    sample = read_feature_sample(folder) if folder else None
    return sample if sample is not None else model.max_responses(images)


def cmd_explain(args):
    import glasszoo

    _quiet_tensorflow()
    model = glasszoo.load(args.name)
    images, stems, _ = _images_for(model, args.images, args.samples)
    write_explanations(model, images, stems, args.out, with_global=not args.no_global)
    print(f"Wrote explanations of {len(images)} image(s) to {args.out}")
    return 0


def export_and_check(model, path, images, opset=None, model_name=None, from_keras=None):
    """Exports to ONNX, runs it in onnxruntime and returns the largest difference per output.

    `from_keras` is `model.explain(images)` when the caller has it already.
    """
    import numpy as np
    from glasszoo.export import OnnxModel, to_onnx

    to_onnx(model, path, opset=opset, model_name=model_name)
    served = OnnxModel(path)
    from_onnx = served(images)
    from_keras = model.explain(images) if from_keras is None else from_keras
    differences = {name: float(np.max(np.abs(from_onnx[name] - from_keras[name]))) for name in served.output_names}
    return served, differences


def cmd_export(args):
    import glasszoo
    from glasszoo.data.samples import load_samples

    _quiet_tensorflow()
    model = glasszoo.load(args.name)
    images = load_samples()[0][:8] if tuple(model.image_shape) == (28, 28, 1) else None
    if images is None:
        from glasszoo.export import to_onnx

        to_onnx(model, args.output, opset=args.opset, model_name=args.name)
        print(f"Wrote {args.output}")
        return 0
    served, differences = export_and_check(model, args.output, images, opset=args.opset, model_name=args.name)
    print(f"Wrote {args.output}; onnxruntime ({served.providers[0]}) vs Keras on {len(images)} images, max |difference| per output:")
    for name, value in differences.items():
        print(f"  {name:16s} {value:.2e}")
    return 0


def _read_for_serving(paths, input_shape):
    """`(images, labels)` from image files or .npy arrays, validated per file so errors name it.

    Labels are the paths, or `path[i]` for the images of a .npy array.
    """
    import numpy as np
    from glasszoo.data.image_files import read_image_files
    from glasszoo.zoo.inputs import validate_images

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
                images = read_image_files([path], input_shape)
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
    return np.concatenate(batches), labels


def _class_scores(served, outputs):
    """`(name, (B, K) logits)`: the `logits` output, else the only 2-D output of a non-glasszoo model."""
    if "logits" in outputs:
        return "logits", outputs["logits"]
    candidates = [name for name, value in outputs.items() if value.ndim == 2]
    if len(candidates) == 1:
        return candidates[0], outputs[candidates[0]]
    raise ValueError(f"{served.path} has no 'logits' output and no single (batch, classes) output to read class scores from (outputs: {', '.join(outputs)}).")


def cmd_predict(args):
    """Serves an ONNX export with onnxruntime and NumPy only; with --out, writes predictions.json, outputs.npz and pictures."""
    import numpy as np
    from glasszoo.export import OnnxModel

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1; got {args.batch_size}.")
    out = pathlib.Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (predictions.json, outputs.npz and pictures go into it).")
    served = OnnxModel(args.model)
    images, labels = _read_for_serving(args.images, served.input_shape)
    parts = [served(images[i : i + args.batch_size]) for i in range(0, len(images), args.batch_size)]
    outputs = {name: np.concatenate([part[name] for part in parts]) for name in served.output_names}
    scores_name, logits = _class_scores(served, outputs)
    notes = []
    if scores_name != "logits":
        notes.append(f"no 'logits' output: class scores read from {scores_name!r}")
    names = served.class_names
    if len(names) != logits.shape[-1]:
        if names:
            notes.append(f"the metadata names {len(names)} classes but the model has {logits.shape[-1]}: classes shown as indices")
        names = [str(k) for k in range(logits.shape[-1])]
    logits = logits.astype("float64")
    activation = served.metadata.get("output_activation", "softmax")
    if activation == "sigmoid":  # CoDA: one sigmoid per class (BCE training)
        probabilities = 1.0 / (1.0 + np.exp(-logits))
    else:
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
    family = served.metadata.get("family")
    results = []
    for i, (label, p) in enumerate(zip(labels, probabilities)):
        top = np.argsort(-p, kind="stable")[:3]
        results.append({
            "file": label, "class": names[int(top[0])], "class_index": int(top[0]), "probability": round(float(p[top[0]]), 4),
            "top3": [{"class": names[int(t)], "probability": round(float(p[t]), 4)} for t in top],
        })
    report = {
        "model": served.metadata.get("model_name", pathlib.Path(args.model).stem), "family": family,
        "activation": "sigmoid" if activation == "sigmoid" else "softmax", "providers": served.providers, "predictions": results,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "outputs.npz", **outputs)
        pictures = _serving_pictures(family, images, outputs, labels, names, probabilities, out, notes)
        for result, picture in zip(results, pictures):
            result["picture"] = picture
        _write_json(out / "predictions.json", report)
    print(json.dumps(report, indent=2))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if out is not None:
        drawn = sum(1 for r in results if r.get("picture"))
        print(f"Wrote predictions.json, outputs.npz ({', '.join(outputs)}) and {drawn} picture(s) to {out}/", file=sys.stderr)
    return 0


def _serving_pictures(family, images, outputs, labels, names, probabilities, out, notes):
    """One explanation png per image from the ONNX outputs (None per image where none can be drawn)."""
    if family is None:
        notes.append("the ONNX file has no glasszoo metadata 'family': predictions and outputs only, no pictures")
        return [None] * len(images)
    try:
        from glasszoo.explain import onnx_pictures
    except ImportError as error:  # matplotlib missing in a minimal serving install
        notes.append(f"no pictures: {error}")
        return [None] * len(images)
    problem = onnx_pictures.missing_outputs(family, outputs)
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
            onnx_pictures.explanation_picture(family, images, outputs, b, names, probabilities, title=title, path=out / name)
            written.append(name)
        except Exception as error:  # a picture must never cost the predictions
            notes.append(f"could not draw the picture of {label}: {' '.join(str(error).split())}")
            written.append(None)
        if sys.stderr.isatty():
            print(f"\rpictures {b + 1}/{len(labels)}", end="\n" if b + 1 == len(labels) else "", file=sys.stderr, flush=True)
    return written


DEMO_MODELS = ("inam_fashion_mnist", "coda_fashion_mnist", "protopnet_fashion_mnist", "prototypedl_fashion_mnist")


def _demo_one(name, out, samples):
    """Load, explain, export, serve and compare one preset; returns its summary."""
    import math

    import glasszoo
    import numpy as np

    started = time.time()
    print(f"== {name}")
    print(f"[1/4] Loading {name} (weights verified against the model card's sha256)")
    model = glasszoo.load(name)
    images, stems, labels = _images_for(model, [], samples)
    if model.family == "coda":  # the 3x3 localisation grid needs one image of 9 classes
        all_images, all_stems, all_labels = _images_for(model, [], None)
        images, stems, labels = all_images[: max(samples, 9)], all_stems[: max(samples, 9)], all_labels[: max(samples, 9)]
    print(f"[2/4] Explaining {len(images)} shipped test images of {model.preset_metadata['data']['dataset']}")
    explanation = write_explanations(model, images, stems, out, labels=labels)
    summary = {"model": name, "family": model.family, "samples": len(images)}
    summary["sample_accuracy"] = round(float((explanation["logits"].argmax(-1) == labels).mean()), 4)
    if model.family == "inam":
        from glasszoo.explain.consistency import decision_image_consistency

        summary["decision_image_consistency"] = round(decision_image_consistency(model, images)["consistency"], 4)
    if model.family == "protopnet":
        summary["contribution_sum_max_abs_error"] = float(np.abs(explanation["prototype_contributions"].sum(axis=1) - explanation["logits"]).max())
    if model.family == "prototypedl":
        summary["contribution_sum_max_abs_error"] = float(np.abs(explanation["class_evidence"].sum(axis=1) - explanation["logits"]).max())
    if model.family == "coda":
        predicted = explanation["logits"][np.arange(len(images)), explanation["target"]]
        rebuilt = explanation["contributions"].sum(axis=(1, 2)) / model.temperature + math.log(0.1 / 0.9)
        summary["completeness_max_abs_error"] = float(np.abs(rebuilt - predicted).max())
        if "localisation_scores" in explanation:
            summary["localisation_3x3_mean"] = round(float(explanation["localisation_scores"].mean()), 4)
    keras_outputs = {key: explanation[key] for key in model.explanation_outputs}
    onnx_path = out / f"{name}.onnx"
    print(f"[3/4] Exporting to {onnx_path} and running it in onnxruntime")
    served, differences = export_and_check(model, onnx_path, images, model_name=name, from_keras=keras_outputs)
    print(f"[4/4] onnxruntime ({served.providers[0]}) vs Keras, max |difference| per output:")
    for output, value in differences.items():
        print(f"      {output:16s} {value:.2e}")
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
    from glasszoo.zoo.registry import list_models

    _quiet_tensorflow()
    out = pathlib.Path(args.out)
    names = args.name or [name for name in DEMO_MODELS if name in list_models()]
    summaries = [_demo_one(name, out / name, args.samples) for name in names]
    _write_json(out / "summary.json", {"models": summaries})
    for summary in summaries:
        extras = {k: v for k, v in summary.items() if k in ("decision_image_consistency", "completeness_max_abs_error", "localisation_3x3_mean", "contribution_sum_max_abs_error")}
        print(f"{summary['model']}: sample accuracy {summary['sample_accuracy']:.3f}, {extras}")
    print(f"Pictures and summary.json per model in {out}/")
    return 0


# -- parser ---------------------------------------------------------------------
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

    p = sub.add_parser("train", help="train a preset from its recipe (grid on validation, checkpoints, model card)")
    p.add_argument("name")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
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

    p = sub.add_parser("evaluate", help="test accuracy (and decision-image consistency) of a preset")
    p.add_argument("name")
    p.add_argument("--dataset", help="dataset name (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--consistency", type=int, default=1000, help="test images for the decision-image check (0: skip)")
    p.add_argument("--explanations", help="'all' or a comma list (inherent,saliency,input_x_gradient,integrated_gradients,grad_cam,occlusion): "
                   "localisation, pixel removal and randomisation for the model and the black-box baseline")
    p.add_argument("--explanation-images", type=int, default=500, help="test images the explanation metrics draw from")
    p.add_argument("--grids", type=int, default=8, help="localisation grids (3x3, distinct classes)")
    p.add_argument("--no-baseline", action="store_true", help="skip the black-box baseline's rows")
    p.add_argument("--out", help="folder for report.json (and the explanation pictures)")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("explain", help="explain images (default: the shipped samples) and write pictures")
    p.add_argument("name")
    p.add_argument("images", nargs="*", help="image files (png, jpg, ...) or .npy arrays")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=8, help="shipped samples to use when no image is given")
    p.add_argument("--no-global", action="store_true", help="skip the kernel plots")
    p.set_defaults(run=cmd_explain)

    p = sub.add_parser("export", help="export to ONNX (logits + explanations) and check it in onnxruntime")
    p.add_argument("name")
    p.add_argument("output")
    p.add_argument("--opset", type=int)
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("predict", help="serve an ONNX export with onnxruntime only")
    p.add_argument("model", help="an .onnx file from `glasszoo export`")
    p.add_argument("images", nargs="+", help="image files (png, jpg, ...) or .npy arrays in [0, 1]")
    p.add_argument("--out", help="folder for predictions.json, outputs.npz (every ONNX output) and one explanation png per image")
    p.add_argument("--batch-size", type=int, default=32, help="images per onnxruntime run")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("demo", help="the main job: load, explain samples, export, run in onnxruntime, write pictures")
    p.add_argument("--name", action="append", help=f"preset to run (repeatable; default: {', '.join(DEMO_MODELS)})")
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
        print(f"glasszoo {args.command}: error: {error.name} is not installed; only `glasszoo predict` works without the full install (pip install glasszoo).", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
