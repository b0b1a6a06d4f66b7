"""Serving speed of each family's preset: onnxruntime vs Keras, measured side by side.

For each preset (by default each family's demo preset and the black-box
baseline's, from the registry of families: see `bench_common.py`) and each
batch size, two comparisons on the same images (the shipped test samples of
the preset's dataset, repeated to the batch):

- logits: Keras `model.predict(images, batch_size=batch)` against
  onnxruntime running the exported graph pruned to its `logits` output
  (`onnx.utils.Extractor` on the file `glasszoo.export.to_onnx` writes, so
  only the nodes the logits need); a direct eager call `model(images)` is
  timed too (a column for reference: `predict` pays a fixed cost per call
  for its data pipeline, which dominates at batch 1);
- explanations: Keras `model.explain(images, batch_size=batch)` (every
  output of `model.explanation_outputs`) against onnxruntime running the
  whole exported graph (`glasszoo.export.OnnxModel`): the same outputs.

onnxruntime runs on its CPU provider; `--provider auto` lets `OnnxModel`
choose (CUDA where available). One preset at a few batch sizes, e.g.
`--models NAME --batches 1 32 256`, is what the former single-family
serving script measured.

Timing: one warm-up each, then the five variants of a (preset, batch) run in
turn for `--repeats` rounds (or until `--budget` seconds have passed, at
least three rounds); the best time of each is kept. Prints images/s and the
ratio onnxruntime / Keras (above 1: onnxruntime is faster). Shared machines
are noisy: read the ratios, not the absolute numbers.

    python3 bench/serving.py [--families FAMILY ...] [--models PRESET ...] [--batches 1 256]
                             [--provider cpu|auto] [--repeats 5] [--budget 20] [--json results.json]
"""

import argparse
import os
import sys
import tempfile

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


def logits_only(path, out_path):
    """The exported graph at `path` cut to its `logits` output, written to `out_path`."""
    import onnx
    import onnx.utils

    proto = onnx.load(str(path))
    extracted = onnx.utils.Extractor(proto).extract_model([i.name for i in proto.graph.input], ["logits"])
    del extracted.metadata_props[:]
    extracted.metadata_props.extend(proto.metadata_props)
    onnx.save(extracted, str(out_path))
    return out_path


def bench_preset(preset, family, batches, repeats, budget, folder, provider="cpu"):
    import glasszoo
    from glasszoo.export import OnnxModel, to_onnx
    from glasszoo.export.runtime import CPU

    providers = [CPU] if provider == "cpu" else None
    model = glasszoo.load(preset)
    full_path = to_onnx(model, os.path.join(folder, f"{preset}.onnx"))
    served = OnnxModel(full_path, providers=providers)
    served_logits = OnnxModel(logits_only(full_path, os.path.join(folder, f"{preset}_logits.onnx")), providers=providers)
    rows = []
    for batch in batches:
        images = model_images(model, preset, batch)
        variants = {
            "keras_predict": lambda images=images, batch=batch: model.predict(images, batch_size=batch, verbose=0),
            "keras_call": lambda images=images: model(images, training=False),
            "onnx_logits": lambda images=images: served_logits(images),
            "keras_explain": lambda images=images, batch=batch: model.explain(images, batch_size=batch),
            "onnx_explain": lambda images=images: served(images),
        }
        best = interleaved_best(variants, repeats, budget)
        row = {
            "family": family,
            "preset": preset,
            "batch": batch,
            "explanation_outputs": sorted(served.output_names),
            "onnx_provider": served.providers[0],
        }
        for name, result in best.items():
            row[f"{name}_images_per_s"] = batch / result["best_s"]
            row[f"{name}_runs"] = result["runs"]
        row["predict_onnx_over_keras"] = best["keras_predict"]["best_s"] / best["onnx_logits"]["best_s"]
        row["explain_onnx_over_keras"] = best["keras_explain"]["best_s"] / best["onnx_explain"]["best_s"]
        rows.append(row)
        print(f"  {preset} batch {batch}: predict {row['predict_onnx_over_keras']:.2f}x, explain {row['explain_onnx_over_keras']:.2f}x", flush=True)
    return rows


def table(rows):
    header = [
        "family",
        "preset",
        "batch",
        "Keras predict img/s",
        "Keras model(x) img/s",
        "ORT logits img/s",
        "ORT / predict",
        "Keras explain img/s",
        "ORT explain img/s",
        "ORT / explain",
    ]
    cells = [
        [
            r["family"],
            r["preset"],
            r["batch"],
            rate(r["keras_predict_images_per_s"]),
            rate(r["keras_call_images_per_s"]),
            rate(r["onnx_logits_images_per_s"]),
            ratio(r["predict_onnx_over_keras"]),
            rate(r["keras_explain_images_per_s"]),
            rate(r["onnx_explain_images_per_s"]),
            ratio(r["explain_onnx_over_keras"]),
        ]
        for r in rows
    ]
    return markdown_table(header, cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_selection_arguments(parser)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--provider", choices=("cpu", "auto"), default="cpu", help="onnxruntime's CPU provider, or OnnxModel's automatic choice")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds at most")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timed rounds per (preset, batch) after which no round starts")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    presets = select_presets(args.families, args.models)

    import onnxruntime

    provider = "CPUExecutionProvider" if args.provider == "cpu" else "automatic provider"
    print(f"onnxruntime {onnxruntime.__version__} ({provider}) vs Keras; best of up to {args.repeats} interleaved rounds", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for preset, family in presets.items():
            rows += bench_preset(preset, family, args.batches, args.repeats, args.budget, folder, args.provider)
    print()
    print(table(rows))
    settings = {
        "presets": list(presets),
        "families": sorted(set(presets.values())),
        "batches": args.batches,
        "provider": args.provider,
        "repeats": args.repeats,
        "budget_s": args.budget,
        "onnxruntime": onnxruntime.__version__,
    }
    write_json(args.json, "serving", settings, rows)
    return rows


if __name__ == "__main__":
    main()
