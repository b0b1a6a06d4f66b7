"""Hierarchical against flat prototype networks: leaf and coarse accuracy, and where images of an unseen class go.

Four presets, all trained here by `glasszoo train` (see their cards):
- `--hierarchical` and `--flat`: the same backbone, latent space and stages
  on all classes; compared on the test split at the leaves and at the
  first level of the hierarchical model's taxonomy (for the flat model, the
  group of its predicted class). Paired differences with standard errors.
- `--hierarchical-held-out` and `--flat-held-out`: trained without one
  class (their cards' `held_out_classes`). On the test images of that
  class: where the hierarchical model places them (`placement`: the
  deepest place whose probability reaches the threshold it chose on
  validation images of the seen classes) against what the flat model
  answers (a wrong class, or, with the same kind of threshold on its top
  softmax probability, nothing). On the seen classes' test images: leaf
  accuracy and how many stay placed at their own class.
- Object focus of the hierarchical models' pushed prototypes (blank
  prototypes; high-activation boxes mostly background).

Usage:
    python3 bench/hierarchical_study.py --out runs/hierarchical/study.json
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import markdown_table  # noqa: E402


def mean_and_error(values):
    from glasszoo.explain.explanation_report import standard_error

    values = np.asarray(values, dtype="float64")
    return {"mean": round(float(values.mean()), 4), "standard_error": round(standard_error(values), 4), "images": int(len(values))}


def cell(result):
    return f"{result['mean']:.4f} ± {result['standard_error']:.4f}"


def coarse_names(taxonomy, class_names, labels):
    """Each label's first-level group of `taxonomy` (by class name)."""
    return np.array([taxonomy.ancestor_at(class_names[int(k)], 1) for k in labels])


def compare_on_all_classes(hierarchical, flat, x_test, y_test, class_names):
    taxonomy = hierarchical.taxonomy
    predicted_h = hierarchical.predict_classes(x_test)
    predicted_f = flat.predict_classes(x_test)
    truth = coarse_names(taxonomy, class_names, y_test)
    correct = {
        "hierarchical_leaf": predicted_h == y_test,
        "flat_leaf": predicted_f == y_test,
        "hierarchical_coarse": coarse_names(taxonomy, class_names, predicted_h) == truth,
        "flat_coarse": coarse_names(taxonomy, class_names, predicted_f) == truth,
    }
    result = {key: mean_and_error(value) for key, value in correct.items()}
    for level in ("leaf", "coarse"):
        difference = correct[f"hierarchical_{level}"].astype(float) - correct[f"flat_{level}"].astype(float)
        result[f"{level}_difference_hierarchical_minus_flat"] = mean_and_error(difference)
    result["coarse_groups"] = sorted(set(truth.tolist()))
    return result


def flat_threshold(model, x_val, y_val, leaf_share=0.95):
    """The flat model's version of the placement rule: the quantile of its top softmax probability on correct validation images."""
    logits = model.predict(x_val, verbose=0, batch_size=256)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    correct = probabilities.argmax(axis=1) == y_val
    return max(0.5, float(np.quantile(probabilities[correct, y_val[correct]], 1.0 - leaf_share)))


def unseen_class_study(hierarchical, flat, full, held_out, expected_parent, flat_validation):
    """Where the held-out class's test images go, and how both models fare on the seen classes (see the module doc).

    `flat_validation` is `(x_val, y_val)`, the flat model's own validation split, on which its threshold is chosen.
    """
    from glasszoo.data.datasets import without_classes

    reduced = without_classes(full, held_out)
    unseen = np.isin(full.y_test, [full.class_names.index(name) for name in held_out])
    x_unseen = full.x_test[unseen]
    tables = hierarchical.tables
    out = hierarchical.explain(x_unseen, batch_size=256)
    placed = out["placement"].round().astype(int)  # the output itself (the graph's rule)
    names = [tables.places[v] for v in placed]
    counts = {str(name): int(count) for name, count in zip(*np.unique(names, return_counts=True))}
    result = {"held_out": held_out, "unseen_test_images": int(unseen.sum()), "placement_threshold": hierarchical.placement_threshold}
    result["hierarchical_placements"] = dict(sorted(counts.items(), key=lambda item: -item[1]))
    result["hierarchical_leaf_answers"] = _answer_counts(out["logits"].argmax(axis=1), hierarchical.class_names)
    result["expected_parent"] = expected_parent
    share = counts.get(expected_parent, 0) / len(placed)
    result["placed_at_expected_parent"] = {"mean": round(share, 4), "standard_error": round(float(np.sqrt(share * (1 - share) / len(placed))), 4), "images": int(len(placed))}
    x_val, y_val = flat_validation
    threshold = flat_threshold(flat, x_val, y_val)
    logits = flat.predict(x_unseen, verbose=0, batch_size=256)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    result["flat_leaf_answers"] = _answer_counts(probabilities.argmax(axis=1), flat.class_names)
    result["flat_threshold"] = round(threshold, 4)
    result["flat_abstains"] = mean_and_error(probabilities.max(axis=1) < threshold)
    # the seen classes' test images
    # the same rule as the `placement` output (tested equal), without explain's maps for 9,000 images
    places, edges = hierarchical.place_evidence(reduced.x_test)
    seen_placed = tables.placement(places, edges, hierarchical.placement_threshold, hierarchical.placement_floors)
    result["seen_hierarchical_leaf_accuracy"] = mean_and_error(places[:, tables.num_nodes :].argmax(axis=1) == reduced.y_test)
    result["seen_hierarchical_placed_at_their_class"] = mean_and_error(seen_placed == tables.num_nodes + reduced.y_test)
    result["seen_flat_leaf_accuracy"] = mean_and_error(flat.predict_classes(reduced.x_test) == reduced.y_test)
    seen_logits = flat.predict(reduced.x_test, verbose=0, batch_size=256)
    seen_probabilities = np.exp(seen_logits - seen_logits.max(axis=1, keepdims=True))
    seen_probabilities /= seen_probabilities.sum(axis=1, keepdims=True)
    result["seen_flat_answers_above_threshold"] = mean_and_error(seen_probabilities.max(axis=1) >= threshold)
    return result


def _answer_counts(indices, class_names):
    names, counts = np.unique([class_names[int(k)] for k in indices], return_counts=True)
    return {str(name): int(count) for name, count in sorted(zip(names, counts), key=lambda item: -item[1])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hierarchical", default="hierarchical_protopnet_fashion_mnist")
    parser.add_argument("--flat", default="protopnet_fashion_mnist")
    parser.add_argument("--hierarchical-held-out", default="hierarchical_protopnet_fashion_mnist_no_sneaker")
    parser.add_argument("--flat-held-out", default="protopnet_fashion_mnist_no_sneaker")
    parser.add_argument("--focus-images", type=int, default=1000, help="test images for the object-focus report")
    parser.add_argument("--out", default="runs/hierarchical/study.json")
    args = parser.parse_args(argv)

    import glasszoo
    from glasszoo.data import load_dataset
    from glasszoo.zoo.protopnet.object_focus import object_focus_report
    from glasszoo.zoo.training_data import recorded_splits

    report = {}
    hierarchical, flat = glasszoo.load(args.hierarchical), glasszoo.load(args.flat)
    dataset = hierarchical.preset_metadata["data"]["dataset"]
    full = load_dataset(dataset)
    report["all_classes"] = compare_on_all_classes(hierarchical, flat, full.x_test, full.y_test, full.class_names)
    held_h, held_f = glasszoo.load(args.hierarchical_held_out), glasszoo.load(args.flat_held_out)
    card = held_h.preset_metadata
    held_out = card["data"]["held_out_classes"]
    if held_f.preset_metadata["data"].get("held_out_classes") != held_out:
        raise ValueError(f"{args.hierarchical_held_out} and {args.flat_held_out} were not trained without the same classes.")
    expected_parent = hierarchical.taxonomy.parent[held_out[0]]
    _, _, x_val, y_val, _ = recorded_splits(held_f.preset_metadata, args.flat_held_out)  # the flat model's threshold is chosen on its own validation split
    study = unseen_class_study(held_h, held_f, full, held_out, expected_parent, (x_val, y_val))
    report["unseen_class"] = study
    focus = {}
    for name, model in ((args.hierarchical, hierarchical), (args.hierarchical_held_out, held_h), (args.flat, flat)):
        if model.object_threshold is not None and model.prototype_provenance is not None:
            focus[name] = object_focus_report(model, full.x_test[: args.focus_images], model.object_threshold)
            focus[name]["prototypes"] = int(model.prototype_layer.num_prototypes)
    report["object_focus"] = focus

    rows = [
        [f"leaf ({len(full.class_names)} classes)", cell(report["all_classes"]["hierarchical_leaf"]), cell(report["all_classes"]["flat_leaf"]), cell(report["all_classes"]["leaf_difference_hierarchical_minus_flat"])],
        [f"coarse ({len(report['all_classes']['coarse_groups'])} groups)", cell(report["all_classes"]["hierarchical_coarse"]), cell(report["all_classes"]["flat_coarse"]), cell(report["all_classes"]["coarse_difference_hierarchical_minus_flat"])],
    ]
    print(markdown_table(["test accuracy", args.hierarchical, args.flat, "paired difference"], rows))
    print()
    print(f"unseen class {held_out}: {study['unseen_test_images']} test images")
    print(f"  {args.hierarchical_held_out} placements (threshold {study['placement_threshold']:.3f}): {study['hierarchical_placements']}")
    print(f"  placed at {study['expected_parent']!r}: {cell(study['placed_at_expected_parent'])}")
    print(f"  {args.flat_held_out} answers: {study['flat_leaf_answers']}; abstains (top probability < {study['flat_threshold']}): {cell(study['flat_abstains'])}")
    print(f"  seen classes: hierarchical leaf accuracy {cell(study['seen_hierarchical_leaf_accuracy'])}, placed at their class {cell(study['seen_hierarchical_placed_at_their_class'])}; flat {cell(study['seen_flat_leaf_accuracy'])}")
    for name, values in focus.items():
        print(f"  object focus {name}: blank {values['blank_prototypes']}/{values['prototypes']}, background boxes {values['background_box_share']:.3f}, top peaks on background {values['top_peak_on_background']:.3f} (chance {values['background_pixel_share']:.3f})")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")
    return report


if __name__ == "__main__":
    main()
