"""The hierarchical model's two placement rules, whole, on the images of the class it was trained without.

A held-out-class preset (its card's `held_out_classes`) is calibrated with
each `placement_evidence` in turn (`calibrate_placement`, 5% floors by
default, on the validation split its card records: seen classes only), and
each rule places the held-out class's images. Printed per rule: the share
placed at the class's parent in the full taxonomy (`--parent`, default
the parent in `hierarchical_protopnet_fashion_mnist`), at the root and
elsewhere, and the seen validation images kept at their own class; then the
paired difference (confidence minus similarity) on the same images.

`--split train` reads the held-out class's images from the data set's
training split: the preset never saw them, and the test split stays
untouched (the way the rule was chosen on the no-sandal preset).

    python3 bench/placement_evidence.py [--preset NAME_OR_FOLDER] [--split train|test] [--share 0.95] [--limit N] [--json out.json]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import held_out_class_images, markdown_table, write_json  # noqa: E402

RULES = ("similarity", "confidence")


def placements_by_rule(model, x_val, y_val, images, share):
    """`{rule: (placements of images (n,), share of the correct validation images kept at their class)}`; the model is left on the last rule."""
    results = {}
    for rule in RULES:
        model.placement_evidence = rule
        record = model.calibrate_placement(x_val, y_val, leaf_share=share)
        results[rule] = (model.placements(images), record["validation_placed_at_their_class"])
    return results


def paired_difference(first, second):
    """`(mean, standard error)` of `first - second` over paired 0/1 outcomes."""
    difference = np.asarray(first, dtype="float64") - np.asarray(second, dtype="float64")
    return float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(len(difference)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="hierarchical_protopnet_fashion_mnist_no_sneaker")
    parser.add_argument("--with-class", default="hierarchical_protopnet_fashion_mnist", help="a preset over the full taxonomy, for the held-out class's parent")
    parser.add_argument("--split", choices=["train", "test"], default="test", help="where the held-out class's images come from")
    parser.add_argument("--share", type=float, default=0.95, help="leaf_share of calibrate_placement")
    parser.add_argument("--limit", type=int, default=None, help="at most this many held-out images (quick runs)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import glasszoo
    from glasszoo.zoo.recalibration import card_validation_split

    model = glasszoo.load(args.preset)
    card = model.preset_metadata
    unseen, held_out, _ = held_out_class_images(card, args.split)
    unseen = unseen[: args.limit]
    x_val, y_val = card_validation_split(card)
    tables = model.tables
    parent = tables.places.index(glasszoo.load(args.with_class).taxonomy.parent[held_out[0]])
    outcome = placements_by_rule(model, x_val, y_val, unseen, args.share)
    rows, results = [], []
    for rule, (placed, kept) in outcome.items():
        at_parent, at_root = float(np.mean(placed == parent)), float(np.mean(placed == 0))
        error = np.sqrt(at_parent * (1 - at_parent) / len(placed))
        rows.append([rule, f"{at_parent:.3f} ± {error:.3f}", f"{at_root:.3f}", f"{1 - at_parent - at_root:.3f}", f"{kept:.4f}"])
        results.append({"rule": rule, "at_parent": round(at_parent, 4), "at_parent_standard_error": round(error, 4), "at_root": round(at_root, 4), "seen_validation_kept": kept})
    mean, error = paired_difference(outcome["confidence"][0] == parent, outcome["similarity"][0] == parent)
    print(f"{args.preset}: {len(unseen)} {args.split}-split images of {held_out}, parent {tables.places[parent]!r}; floors at the {1 - args.share:.2f} quantile")
    print(markdown_table(["placement evidence", "at the parent", "at the root", "elsewhere", "seen validation kept"], rows))
    print(f"paired, confidence - similarity, at the parent: {mean:+.3f} ± {error:.3f}")
    results.append({"paired_confidence_minus_similarity": round(mean, 4), "standard_error": round(error, 4), "images": int(len(unseen))})
    write_json(args.json, "placement_evidence", dict(vars(args), held_out=held_out), results)
    return results


if __name__ == "__main__":
    main()
