"""Which evidence tells an unseen class from a seen one: placement rules compared on the held-out-class preset.

The hierarchical ProtoPNet trained without one class (default
`hierarchical_protopnet_fashion_mnist_no_sneaker`) places an image at the
deepest place it vouches for. Its rule vouches for a child place when its
probability reaches 0.5 and a *score* of the image for that child reaches a
floor: the `1 - share` quantile of the score on the correctly classified
validation images of the seen classes through that child (chosen on those
images only). This benchmark swaps the leaf step's score and reports, for
each score and share, how many test images of the held-out class stop at
their parent (the target place) and how many validation images of the seen
classes stay placed at their own class. Scores for a child `c`, from the
similarity of each latent patch to the nearest of `c`'s prototypes:

- `best` (the model's rule with `placement_evidence="similarity"`): the best patch;
- `top3`, `top8`: the mean of the best 3 or 8 patches;
- `cover_qXX`: the XX% quantile over the image's object patches (how much of
  the object looks like `c`'s prototypes; 0 is the worst-covered patch);
- `bank_qXX`: the same quantile of the negative squared distance from each
  object patch to the nearest of a bank of object patches of 400 training
  images of `c` (a dense memory of the class instead of its prototypes);
  `--no-bank` leaves these out (they take most of the run);
- `conditional` (the model's rule with `placement_evidence="confidence"`,
  the default): not a similarity but the log-odds of `P(c | parent, x)`,
  how sure the parent node is of `c` against its siblings (from the
  `place_probabilities`: the class's over its parent's).

The steps above the leaf keep the model's own evidence and floors.

    python3 bench/novelty_rules.py [--preset NAME] [--with-class FULL_PRESET] [--bank-images 400 | --no-bank] [--shares 0.95 0.9] [--json out.json]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import held_out_class_images, markdown_table, write_json  # noqa: E402


def patch_evidence(model, images, batch_size=256):
    """`(places (n, V), best similarity of each edge (n, E), per-patch best similarity of each edge (n, hw, E), object patches (n, hw), latent patches (n, hw, D))`."""
    from glasszoo.layers.prototype_layer import log_similarity
    from keras import ops

    tables = model.tables
    similarity, latents = [], []
    for start in range(0, len(images), batch_size):
        batch = ops.convert_to_tensor(images[start : start + batch_size])
        latent = model.latent(batch, training=False)
        maps = ops.convert_to_numpy(log_similarity(model.prototype_layer(latent)))
        similarity.append(maps.reshape(len(maps), -1, tables.num_edges, tables.prototypes_per_child).max(axis=-1))
        latents.append(ops.convert_to_numpy(latent).reshape(len(maps), maps.shape[1] * maps.shape[2], -1))
    places, edges = model.place_evidence(images, batch_size)
    on_object = model.object_patches(images).reshape(len(images), -1)
    return places, edges, np.concatenate(similarity), on_object, np.concatenate(latents)


def nearest_in_bank(latents, banks, chunk=4096):
    """`(n, hw, K)` squared distance from each latent patch to the nearest patch of each class's bank."""
    flat = latents.reshape(-1, latents.shape[-1])
    nearest = np.empty((len(flat), len(banks)), "float32")
    for k, bank in enumerate(banks):
        bank_norms = np.sum(bank**2, axis=1)
        for start in range(0, len(flat), chunk):
            rows = flat[start : start + chunk]
            distances = np.sum(rows**2, axis=1)[:, None] + bank_norms[None] - 2.0 * rows @ bank.T
            nearest[start : start + chunk, k] = distances.min(axis=1)
    return nearest.reshape(latents.shape[0], latents.shape[1], len(banks))


def object_quantile(values, on_object, q):
    """`(n, C)`: the `q` quantile over each image's object patches (all patches for an image without any)."""
    on_object = on_object | ~on_object.any(axis=1, keepdims=True)
    return np.nanquantile(np.where(on_object[..., None], values, np.nan), q, axis=1)


def conditional_log_odds(places, leaf_parent):
    """`(n, K)` log-odds of `P(class | its parent node, x)` from the place probabilities `(n, V)` (leaves last)."""
    count = len(leaf_parent)
    conditional = places[:, -count:] / np.maximum(places[:, leaf_parent], 1e-300)
    conditional = np.clip(conditional, 1e-12, 1 - 1e-12)
    return np.log(conditional) - np.log1p(-conditional)


def leaf_scores(similarity, on_object, bank_distances, leaf_edge, places=None, leaf_parent=None):
    """Every score of the module doc, each `(n, K)` (per class, through the class's own edge `leaf_edge[k]`).

    `bank_distances` None leaves the bank scores out; `places` and
    `leaf_parent` (the parent place of each class) add `conditional`.
    """
    per_class = similarity[:, :, leaf_edge]  # (n, hw, K)
    ranked = -np.sort(-per_class, axis=1)
    scores = {"best": ranked[:, 0], "top3": ranked[:, :3].mean(axis=1), "top8": ranked[:, :8].mean(axis=1)}
    for q in (0.0, 0.25, 0.5, 0.75):
        scores[f"cover_q{int(q * 100):02d}"] = object_quantile(per_class, on_object, q)
    if bank_distances is not None:
        for q in (0.0, 0.1, 0.5):
            scores[f"bank_q{int(q * 100):02d}"] = object_quantile(-bank_distances, on_object, q)
    if places is not None:
        scores["conditional"] = conditional_log_odds(places, leaf_parent)
    return scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="hierarchical_protopnet_fashion_mnist_no_sneaker")
    parser.add_argument("--with-class", default="hierarchical_protopnet_fashion_mnist", help="a preset over the full taxonomy, for the held-out class's parent")
    parser.add_argument("--bank-images", type=int, default=400, help="training images per class in the patch bank")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.95, 0.9])
    parser.add_argument("--no-bank", action="store_true", help="leave out the patch-bank scores (most of the run time)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import glasszoo
    from glasszoo.zoo.training_data import recorded_splits

    model = glasszoo.load(args.preset)
    card = model.preset_metadata
    x_unseen, held_out, _ = held_out_class_images(card)
    x_fit, y_fit, x_val, y_val, _ = recorded_splits(card, args.preset)
    tables = model.tables
    parent = tables.places.index(glasszoo.load(args.with_class).taxonomy.parent[held_out[0]])
    leaf_edge = tables.num_nodes - 1 + np.arange(len(model.class_names))  # edge e leads to place e + 1

    leaf_parent = np.asarray(model.explain(x_val[:1])["place_parent"][0]).astype(int)[tables.num_nodes :]

    rng = np.random.default_rng(1)
    banks = []
    for k in range(0 if args.no_bank else len(model.class_names)):
        chosen = rng.choice(np.flatnonzero(y_fit == k), args.bank_images, replace=False)
        _, _, _, on_object, latents = patch_evidence(model, x_fit[chosen])
        banks.append(latents[on_object])
    evidence = {}
    for name, images in (("validation", x_val), ("unseen", x_unseen)):
        places, edges, similarity, on_object, latents = patch_evidence(model, images)
        bank_distances = None if args.no_bank else nearest_in_bank(latents, banks)
        evidence[name] = (places, edges, leaf_scores(similarity, on_object, bank_distances, leaf_edge, places, leaf_parent))

    places_val, edges_val, scores_val = evidence["validation"]
    places_unseen, edges_unseen, scores_unseen = evidence["unseen"]
    first_leaf = tables.num_nodes
    correct = places_val[:, first_leaf:].argmax(axis=1) == y_val
    floors = np.asarray(model.placement_floors, dtype="float64")
    rows, results = [], []
    for name in scores_val:
        for share in args.shares:
            class_floors = np.array([np.quantile(scores_val[name][correct & (y_val == k), k], 1.0 - share) for k in range(len(model.class_names))])
            leaf_floors = floors.copy()
            leaf_floors[leaf_edge] = class_floors
            outcome = {}
            for split, places, edges, scores in (("validation", places_val, edges_val, scores_val), ("unseen", places_unseen, edges_unseen, scores_unseen)):
                swapped = edges.copy()  # the model's own evidence above the leaves, the score under test at the leaf step
                swapped[:, leaf_edge] = scores[name]
                outcome[split] = tables.placement(places, swapped, model.placement_threshold, leaf_floors)
            at_parent = float(np.mean(outcome["unseen"] == parent))
            kept = float(np.mean(outcome["validation"] == first_leaf + y_val))
            results.append({"score": name, "share": share, "unseen_at_parent": round(at_parent, 4), "seen_validation_at_their_class": round(kept, 4)})
            rows.append([name, f"{share:.2f}", f"{at_parent:.3f} ± {np.sqrt(at_parent * (1 - at_parent) / len(x_unseen)):.3f}", f"{kept:.3f}"])
    print(f"{args.preset}: {len(x_unseen)} test images of {held_out}, target place {tables.places[parent]!r}; {len(y_val)} validation images of the seen classes")
    print(markdown_table(["leaf score", "share kept (floors)", "unseen at their parent", "seen validation at their class"], rows))
    write_json(args.json, "novelty_rules", dict(vars(args), held_out=held_out), results)
    return results


if __name__ == "__main__":
    main()
