"""The price of an explanation, per family: Keras `explain` vs `predict`, and Integrated Gradients vs `explain`.

For each preset (by default each family's demo preset and the black-box
baseline's, from the registry of families: see `bench_common.py`), on the
shipped test samples of the preset's dataset (repeated to the batch), in
Keras (TensorFlow backend, CPU):

1. inherent explanation against prediction, at each `--batches` size:
   `model.explain(images, batch_size=batch)` (every output of
   `model.explanation_outputs`) against `model.predict(images, batch_size=batch)`; and, for
   reference, against a direct call `model(images)` (`predict` pays a fixed
   cost per call for its data pipeline, which dominates at batch 1). Ratio
   = explain time / predict time: how many predictions one explanation
   costs.
2. post-hoc against inherent: `glasszoo.explain.posthoc.integrated_gradients`
   with `--ig-steps` (50) steps (51 gradient evaluations per image, the
   explained class being the predicted one, path points batched
   `--ig-batch` (255) to a gradient pass) against `model.explain` on the
   same `--ig-images` (32) images in one batch. Ratio = IG time / explain
   time: "IG is Nx slower than the inherent explanation".

Timing: one warm-up each, then the compared variants run in turn for
`--repeats` rounds (or until `--budget` seconds have passed, at least three
rounds); the best time of each is kept. Shared machines are noisy: read the
ratios, not the absolute numbers.

    python3 bench/explain_cost.py [--families FAMILY ...] [--models PRESET ...] [--batches 1 256]
                                  [--ig-images 32] [--ig-steps 50] [--ig-batch 255]
                                  [--repeats 5] [--budget 20] [--json results.json]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import (
    add_selection_arguments,
    interleaved_best,
    markdown_table,
    model_images,
    rate,
    ratio,
    select_presets,
    write_json,
)


def bench_preset(preset, family, args):
    import glasszoo
    from glasszoo.explain.posthoc import integrated_gradients

    model = glasszoo.load(preset)
    rows = []
    for batch in args.batches:
        images = model_images(model, preset, batch)
        best = interleaved_best(
            {
                "predict": lambda images=images, batch=batch: model.predict(images, batch_size=batch, verbose=0),
                "call": lambda images=images: model(images, training=False),
                "explain": lambda images=images, batch=batch: model.explain(images, batch_size=batch),
            },
            args.repeats,
            args.budget,
        )
        rows.append(
            {
                "family": family,
                "preset": preset,
                "comparison": "explain_vs_predict",
                "batch": batch,
                "predict_images_per_s": batch / best["predict"]["best_s"],
                "call_images_per_s": batch / best["call"]["best_s"],
                "explain_images_per_s": batch / best["explain"]["best_s"],
                "explain_over_predict": best["explain"]["best_s"] / best["predict"]["best_s"],
                "explain_over_call": best["explain"]["best_s"] / best["call"]["best_s"],
                "runs": best["explain"]["runs"],
            }
        )
        print(f"  {preset} batch {batch}: explain / predict {rows[-1]['explain_over_predict']:.2f}x", flush=True)
    images = model_images(model, preset, args.ig_images)
    best = interleaved_best(
        {
            "explain": lambda: model.explain(images, batch_size=len(images)),
            "integrated_gradients": lambda: integrated_gradients(model, images, steps=args.ig_steps, batch_size=args.ig_batch),
        },
        args.repeats,
        args.budget,
    )
    ig = {
        "family": family,
        "preset": preset,
        "comparison": "integrated_gradients_vs_explain",
        "images": len(images),
        "ig_steps": args.ig_steps,
        "explain_images_per_s": len(images) / best["explain"]["best_s"],
        "ig_images_per_s": len(images) / best["integrated_gradients"]["best_s"],
        "ig_over_explain": best["integrated_gradients"]["best_s"] / best["explain"]["best_s"],
        "runs": best["integrated_gradients"]["runs"],
    }
    print(f"  {preset} IG ({args.ig_steps} steps) / explain on {len(images)} images: {ig['ig_over_explain']:.1f}x", flush=True)
    return rows, ig


def tables(price_rows, ig_rows):
    first = markdown_table(
        ["family", "preset", "batch", "predict img/s", "model(x) img/s", "explain img/s", "explain / predict", "explain / model(x)"],
        [
            [
                r["family"],
                r["preset"],
                r["batch"],
                rate(r["predict_images_per_s"]),
                rate(r["call_images_per_s"]),
                rate(r["explain_images_per_s"]),
                ratio(r["explain_over_predict"]),
                ratio(r["explain_over_call"]),
            ]
            for r in price_rows
        ],
    )
    second = markdown_table(
        ["family", "preset", "images", "explain img/s", "IG img/s", "IG / explain"],
        [[r["family"], r["preset"], r["images"], rate(r["explain_images_per_s"]), rate(r["ig_images_per_s"]), ratio(r["ig_over_explain"])] for r in ig_rows],
    )
    return first, second


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_selection_arguments(parser)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--ig-images", type=int, default=32, help="images explained by both IG and explain")
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--ig-batch", type=int, default=255, help="path points per gradient pass of IG")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds at most")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timed rounds per comparison after which no round starts")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    presets = select_presets(args.families, args.models)

    print(f"Keras explain vs predict, and Integrated Gradients ({args.ig_steps} steps) vs explain; best of up to {args.repeats} interleaved rounds", flush=True)
    price_rows, ig_rows = [], []
    for preset, family in presets.items():
        rows, ig = bench_preset(preset, family, args)
        price_rows += rows
        ig_rows.append(ig)
    first, second = tables(price_rows, ig_rows)
    print()
    print(first)
    print()
    print(second)
    settings = {key: getattr(args, key) for key in ("batches", "ig_images", "ig_steps", "ig_batch", "repeats", "budget")}
    settings["presets"] = list(presets)
    settings["families"] = sorted(set(presets.values()))
    results = {"explain_vs_predict": price_rows, "integrated_gradients_vs_explain": ig_rows}
    write_json(args.json, "explain_cost", settings, results)
    return results


if __name__ == "__main__":
    main()
