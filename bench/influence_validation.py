"""Influence functions on the presets' readouts: cost of the index and of a query, and the paper's leave-one-out check.

For each preset whose family has a linear readout (`linear_readout`), on
the split it was fitted on (rebuilt from its card,
`glasszoo.zoo.training_data`):

- **cost**: the seconds to build the influence index (one pass over the
  training images, the exact Hessian, its inverse), the size of its `.npz`,
  and the milliseconds of one query (one test image: its readout, one
  `P x P` product, one pass over the stored features), best of `--repeats`;
- **validation** (Koh and Liang 2017, their Fig. 2): the readout is first
  refitted to the optimum of its damped cross-entropy on the training
  features (Newton); then for each of `--test-images` test images (the first
  of the test split), the `--removals` training images with the largest
  predicted |change| of its test loss are each left out in turn, the
  readout refitted without it to convergence, and the actual change of the
  test loss compared with the predicted `-I_up,loss / n`. Reported: Pearson
  r per test image (mean +- standard error over the test images) and over
  all pairs pooled, and how far the refit moved the readout (largest
  |change of a test logit| on the test images). The index users query is
  built at the model's own readout, which training (dropout, other
  penalties, early stopping) leaves away from that optimum; so also: the
  correlation of its scores with the refitted index's over all training
  images, and the overlap of their 100 most helpful images (mean over the
  test images).
- **parts** (families with prototypes: `part_sources`): on the first
  `--agreement-images` test images, where the training images of each
  image's top 3 parts rank by helpfulness and by |influence| among all
  training images (0: first; 50: chance), mean +- standard error.

Example:
    python bench/influence_validation.py --models cnn_fashion_mnist --test-images 5 --removals 30
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_common  # noqa: E402


def _validate(preset, args):
    import glasszoo
    import numpy as np
    from glasszoo.data import load_dataset
    from glasszoo.explain import influence
    from glasszoo.zoo.training_data import training_split

    model = glasszoo.load(preset)
    try:
        influence.readout(model, np.zeros((1,) + tuple(model.image_shape), "float32"))
    except NotImplementedError as error:
        return {"preset": preset, "skipped": str(error)}
    x_fit, y_fit, where = training_split(model)
    if args.train_size:
        x_fit, y_fit = x_fit[: args.train_size], y_fit[: args.train_size]
    dataset = load_dataset(bench_common.preset_dataset(preset) or "fashion_mnist")
    x_test, y_test = dataset.x_test[: args.test_images], dataset.y_test[: args.test_images]

    started = time.time()
    index = influence.InfluenceIndex.build(model, x_fit, y_fit, damping=args.damping)
    build_seconds = time.time() - started
    with tempfile.TemporaryDirectory() as folder:
        size = os.path.getsize(index.save(os.path.join(folder, "index.npz")))
    query = []
    for _ in range(max(1, args.repeats)):
        started = time.time()
        index.most_influential(model, x_test[:1], count=8)
        query.append(time.time() - started)

    started = time.time()
    refitted = influence.InfluenceIndex.build(model, x_fit, y_fit, damping=args.damping, refit=True, reuse=index)
    test_head = index.test_readout(model, x_test)
    moved = float(np.max(np.abs(refitted.test_readout(model, x_test).logits(refitted.parameters) - test_head.logits(index.parameters))))
    # how close the answer users get (the model's own readout) is to the validated one (the refitted readout)
    own, validated = index.scores(model, x_test), refitted.scores(model, x_test)
    agreement = [float(np.corrcoef(a, b)[0, 1]) for a, b in zip(own, validated)]
    top = 100
    overlap = [
        len(set(np.argsort(a)[:top]) & set(np.argsort(b)[:top])) / top for a, b in zip(own, validated)
    ]
    correlations, predicted, actual = [], [], []
    for image, label in zip(x_test, y_test):
        change = refitted.predicted_loss_change(model, image[None], target=[label])[0]
        removed = np.argsort(-np.abs(change), kind="stable")[: args.removals]
        check = influence.leave_one_out_check(refitted, model, image, label, removed)
        correlations.append(check["pearson_r"])
        predicted.extend(check["predicted"])
        actual.extend(check["actual"])
    validation_seconds = time.time() - started
    parts = None
    if args.agreement_images and model.part_relevance(x_test[:1]) is not None:
        try:
            ranks = influence.part_source_ranks(index, model, dataset.x_test[: args.agreement_images], x_fit)
            parts = {
                "images": int(args.agreement_images),
                "helpfulness_percentile": ranks["mean_percentile"],
                "helpfulness_standard_error": ranks["standard_error"],
                "size_percentile": ranks["mean_magnitude_percentile"],
                "size_standard_error": ranks["magnitude_standard_error"],
            }
        except ValueError as error:  # e.g. a push's provenance indexes the whole fit split, not --train-size of it
            parts = {"skipped": str(error)}
    correlations = np.array(correlations)
    error = float(correlations.std(ddof=1) / np.sqrt(len(correlations))) if len(correlations) > 1 else float("nan")
    return {
        "preset": preset,
        "training_data": where,
        "training_images": int(len(y_fit)),
        "damping": index.damping,
        "layer": index.info.get("layer"),
        "projection": index.info.get("projection"),
        "readout_parameters": int(index.info["parameters"]),
        "build_seconds": build_seconds,
        "index_mib": size / 2**20,
        "query_ms": 1000 * min(query),
        "refit_steps": refitted.info["refit_steps"],
        "refit_logit_change": moved,
        "own_vs_refit_score_r": float(np.mean(agreement)),
        "own_vs_refit_top100_helpful_overlap": float(np.mean(overlap)),
        "test_images": int(len(y_test)),
        "removals": int(args.removals),
        "pearson_r_per_image": correlations.tolist(),
        "pearson_r_mean": float(correlations.mean()),
        "pearson_r_standard_error": error,
        "pearson_r_pooled": float(np.corrcoef(predicted, actual)[0, 1]),
        "largest_actual_change": float(np.max(np.abs(actual))),
        "validation_seconds": validation_seconds,
        "top_parts": parts,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_common.add_selection_arguments(parser)
    parser.add_argument("--train-size", type=int, default=0, help="use the first N fit images only (0: all)")
    parser.add_argument("--test-images", type=int, default=5, help="test images of the leave-one-out check")
    parser.add_argument("--removals", type=int, default=30, help="training images left out per test image")
    parser.add_argument("--damping", type=float, default=None, help="default: influence.resolved_damping (1e-3 linear; 0.03 x the largest Gauss-Newton eigenvalue, non-linear)")
    parser.add_argument("--agreement-images", type=int, default=200, help="test images whose top-3 parts' sources are ranked (families with parts)")
    parser.add_argument("--repeats", type=int, default=5, help="timed queries (best kept)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    presets = bench_common.select_presets(args.families, args.models)
    results = []
    for preset in presets:
        print(f"[influence] {preset}", flush=True)
        results.append(_validate(preset, args))
    rows = []
    for result in results:
        if "skipped" in result:
            rows.append([result["preset"], "-", "-", "-", "-", "-", "no linear readout", "-", "-"])
            continue
        rows.append([
            result["preset"], str(result["training_images"]), str(result["readout_parameters"]),
            f"{result['build_seconds']:.1f}", f"{result['index_mib']:.1f}", f"{result['query_ms']:.0f}",
            f"{result['pearson_r_mean']:.4f} ± {result['pearson_r_standard_error']:.4f}", f"{result['pearson_r_pooled']:.4f}",
            f"{result['own_vs_refit_score_r']:.3f}, {result['own_vs_refit_top100_helpful_overlap']:.2f}",
        ])  # fmt: skip
    print(bench_common.markdown_table(
        ["preset", "training images", "readout parameters", "index build (s)", "index (MiB)", "query (ms)",
         "Pearson r per test image (mean ± SE)", "Pearson r pooled", "own vs refit: score r, top-100 overlap"], rows,
    ))  # fmt: skip
    settings = {key: value for key, value in vars(args).items() if key != "json"}
    bench_common.write_json(args.json, "influence_validation", settings, results)
    return results


if __name__ == "__main__":
    main()
