"""Training step of each family's architecture vs the black-box baseline of similar forward FLOPs.

For each preset (by default each family's demo preset and the black-box
baseline's, from the registry of families: see `bench_common.py`), the
preset's architecture freshly initialised (`glasszoo.load(name,
pretrained=False)`) and compiled with its family's `compile()` defaults
(loss, optimizer, metrics, `jit_compile`: a family's `compile` may turn XLA
on; the others keep Keras's "auto", which is off on CPU) is trained with
`model.train_on_batch` on one batch of `--batch` (64) images and labels of
the preset's dataset (the first training images; its shipped samples if the
dataset is not available here, noise if there are none), against a model
of the black-box family (the family whose record says `black_box=True`;
`--baseline` picks one if there are several) whose forward FLOPs are
closest to the preset's, with its own `compile()` defaults, on the same
batch.

FLOPs per image: counted analytically from the shapes of the traced
TensorFlow graph of a forward pass `model(x)` (inference mode; for a model
whose `call` also runs a decoder, for a reconstruction loss, that includes
the decoder), at batch 2 minus batch 1 (so work on the weights alone, such
as Gram matrices of dynamic alignment weights, is not counted per image):
the multiply-adds of every `Conv2D`, `Conv2DBackpropInput` (transposed
convolution), `DepthwiseConv2dNative`, `MatMul`, `BatchMatMulV2` and
`Einsum` op (for a two-operand einsum: the product of the sizes of all its
indices), FLOPs = 2 x multiply-adds. Element-wise ops, pooling, batch norm
and reductions are not counted.

The baseline is the black-box family's model class built with
`filters=(w, 2w, 4w)`, stages of widths doubling from `w`
(`--baseline-stages`; default: as many stages as the `filters` of the
black-box family's installed preset, else 3), and `w` chosen so that its
counted FLOPs are nearest the preset's (in ratio). The count of such a
network is a quadratic in `w` (convolutions between widths proportional to
`w`, a classifier on `w`-proportional features): it is fitted from the
graphs at w = 1, 2, 3, and the graph at the chosen `w` is counted too (a
local search on counted graphs if the fit misses).

Timing: `--warmup` (3) steps each, then the family's model and its baseline
alternate, `--steps` (5) training steps at a time, for `--repeats` rounds
(or until `--budget` seconds have passed, at least three rounds); the best
time of each is kept and divided by the steps. Shared machines are noisy:
read the ratios, not the absolute numbers.

    python3 bench/training_step.py [--families FAMILY ...] [--models PRESET ...] [--batch 64]
                                   [--steps 5] [--warmup 3] [--baseline FAMILY] [--baseline-stages N]
                                   [--repeats 5] [--budget 30] [--json results.json]
"""

import argparse
import fractions
import math
import os
import string
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import (
    add_selection_arguments,
    black_box_families,
    installed_presets,
    interleaved_best,
    markdown_table,
    preset_dataset,
    ratio,
    sample_images,
    select_presets,
    write_json,
)


def _shape(tensor):
    shape = tensor.shape.as_list()
    if any(size is None for size in shape):
        raise ValueError(f"{tensor.name} has an unknown size {shape}; trace with a fixed batch.")
    return shape


def _product(values):
    result = 1
    for value in values:
        result *= int(value)
    return result


def op_multiply_adds(op):
    """Multiply-adds of one graph op (0 for ops that are not counted)."""
    if op.type == "Conv2D":
        kernel = _shape(op.inputs[1])  # (kh, kw, in / groups, out)
        return _product(_shape(op.outputs[0])) * kernel[0] * kernel[1] * kernel[2]
    if op.type == "DepthwiseConv2dNative":
        kernel = _shape(op.inputs[1])  # (kh, kw, in, multiplier)
        return _product(_shape(op.outputs[0])) * kernel[0] * kernel[1]
    if op.type == "Conv2DBackpropInput":
        kernel = _shape(op.inputs[1])  # (kh, kw, out channels of the result, in channels)
        return _product(_shape(op.inputs[2])) * kernel[0] * kernel[1] * kernel[2]
    if op.type == "MatMul":
        a = _shape(op.inputs[0])
        inner = a[0] if op.get_attr("transpose_a") else a[1]
        return _product(_shape(op.outputs[0])) * inner
    if op.type.startswith("BatchMatMul"):
        a = _shape(op.inputs[0])
        inner = a[-2] if op.get_attr("adj_x") else a[-1]
        return _product(_shape(op.outputs[0])) * inner
    if op.type == "Einsum":
        equation = op.get_attr("equation").decode()
        operands = equation.split("->")[0].split(",")
        if len(operands) == 1:
            return 0
        if any("." in term for term in operands):
            raise ValueError(f"Einsum with an ellipsis is not counted: {equation}")
        sizes = {}
        for term, tensor in zip(operands, op.inputs):
            for letter, size in zip(term, _shape(tensor)):
                sizes[letter] = max(sizes.get(letter, 1), size)
        return _product(sizes[letter] for letter in sizes if letter in string.ascii_letters)
    return 0


def _graph_flops(model, batch, input_shape=None):
    """`{op type: FLOPs}` of the graph of `model(x)` traced at a fixed `batch` (2 x multiply-adds)."""
    import tensorflow as tf

    shape = tuple(input_shape) if input_shape is not None else tuple(model.image_shape)
    spec = tf.TensorSpec((batch,) + shape, tf.float32)
    graph = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec).graph
    per_type = {}
    for op in graph.get_operations():
        if op.type in ("PartitionedCall", "StatefulPartitionedCall", "While", "If", "StatelessIf", "StatelessWhile"):
            raise ValueError(f"The forward graph has a {op.type} op, whose inside is not counted.")
        count = op_multiply_adds(op)
        if count:
            per_type[op.type] = per_type.get(op.type, 0) + 2 * count
    return per_type


def forward_flops(model, input_shape=None):
    """`(FLOPs per image, {op type: FLOPs per image}, FLOPs per batch)` of `model(x)`.

    Per image: the graph at batch 2 minus the graph at batch 1, so that work
    on the weights alone (e.g. Gram matrices of alignment weights) is not
    counted per image; it is returned as the per-batch part.

    Args:
        model: a Keras model of one image input.
        input_shape: `(H, W, C)` of its images (default: `model.image_shape`).
    """
    one, two = _graph_flops(model, 1, input_shape), _graph_flops(model, 2, input_shape)
    per_image = {key: two.get(key, 0) - one.get(key, 0) for key in two}
    per_batch = sum(one.values()) - sum(per_image.values())
    return sum(per_image.values()), {k: v for k, v in per_image.items() if v}, per_batch


# -- the black-box baseline, from the registry -----------------------------------------------------------
def baseline_family(name=None):
    """`(family name, model class, default stages)` of the black-box baseline.

    Args:
        name: a family whose record says `black_box`, or None for the only
            (else the first) one.
    """
    from glasszoo.zoo.families import families

    candidates = black_box_families()
    if name is None:
        if not candidates:
            raise SystemExit("No registered family is a black box (Family.black_box); there is no baseline to compare with.")
        name = candidates[0]
    elif name not in candidates:
        raise SystemExit(f"--baseline {name!r} is not a black-box family; black-box families: {candidates}.")
    cls = families()[name].model_class()
    stages = 3
    presets = sorted(preset for preset, family in installed_presets().items() if family == name)
    if presets:
        from glasszoo.zoo.registry import model_info

        filters = (model_info(presets[0])[0].get("config") or {}).get("filters")
        if isinstance(filters, (list, tuple)) and filters:
            stages = len(filters)
    return name, cls, stages


def stage_widths(width, stages):
    """`(w, 2w, 4w, ...)`: `stages` widths doubling from `width`."""
    return tuple(int(width) * 2**stage for stage in range(stages))


def build_baseline(cls, width, stages, input_shape, num_classes):
    """The black-box class with stage widths `(w, 2w, ...)` for `input_shape` images and `num_classes` classes."""
    return cls(num_classes=num_classes, input_shape=tuple(input_shape), filters=stage_widths(width, stages))


_FITS = {}


def _quadratic_fit(cls, stages, input_shape, num_classes):
    """Exact `(a, b, c)` of `FLOPs(w) = a w^2 + b w + c`, through the counted graphs at w = 1, 2, 3."""
    key = (cls, stages, tuple(input_shape), num_classes)
    if key not in _FITS:
        f1, f2, f3 = (forward_flops(build_baseline(cls, w, stages, input_shape, num_classes))[0] for w in (1, 2, 3))
        a = fractions.Fraction(f3 - 2 * f2 + f1, 2)
        b = f2 - f1 - 3 * a
        _FITS[key] = (a, b, f1 - a - b)
    return _FITS[key]


def matching_baseline(cls, target_flops, stages, input_shape, num_classes, max_width=1024):
    """`(filters, FLOPs, model)`: the baseline with widths (w, 2w, ...) whose counted FLOPs are nearest `target_flops` (in ratio).

    `w` is chosen on the quadratic fitted to the counts at w = 1, 2, 3, then
    the graph at that `w` is counted; where the two differ (a baseline whose
    count is not quadratic in `w`), a local search on counted graphs follows
    (the count grows with `w`).
    """
    a, b, c = _quadratic_fit(cls, stages, input_shape, num_classes)

    def distance(flops):
        return abs(math.log(max(float(flops), 1.0) / target_flops))

    best = min(range(1, max_width + 1), key=lambda w: distance(a * w * w + b * w + c))
    counted = {}

    def count(width):
        if width not in counted:
            model = build_baseline(cls, width, stages, input_shape, num_classes)
            counted[width] = (forward_flops(model)[0], model)
        return counted[width][0]

    if count(best) != a * best * best + b * best + c:
        while True:
            neighbours = [w for w in (best - 1, best + 1) if 1 <= w <= max_width and distance(count(w)) < distance(count(best))]
            if not neighbours:
                break
            best = neighbours[0]
    return stage_widths(best, stages), counted[best][0], counted[best][1]


# -- data ------------------------------------------------------------------------------------------------
_BATCHES = {}


def training_batch(batch, dataset, image_shape, num_classes):
    """The first `batch` training images and labels of `dataset` (NumPy), for models of `image_shape`.

    Falls back to the dataset's shipped samples, then to uniform noise with
    random labels, where the dataset is not available here or its images
    are not of `image_shape`.
    """
    import numpy as np
    from glasszoo.data import DatasetUnavailable, load_dataset

    key = (batch, dataset, tuple(image_shape), num_classes)
    if key in _BATCHES:
        return _BATCHES[key]
    images = labels = None
    if dataset:
        try:
            data = load_dataset(dataset)
            if tuple(data.x_train.shape[1:]) == tuple(image_shape):
                images, labels = data.x_train[:batch], data.y_train[:batch]
            else:
                print(f"({dataset} images are {data.x_train.shape[1:]}, not {tuple(image_shape)}; using noise)")
        except DatasetUnavailable as error:  # no local copy: the shipped samples, repeated
            print(f"({dataset} not available: {error}; using its shipped samples if any)")
            try:
                from glasszoo.data.samples import load_samples

                samples, sample_labels = load_samples(dataset)[:2]
                if tuple(samples.shape[1:]) == tuple(image_shape):
                    index = np.arange(batch) % len(samples)
                    images, labels = samples[index], sample_labels[index]
            except (FileNotFoundError, OSError):
                pass
    if images is None:
        images = sample_images(batch, image_shape, dataset=None)
        labels = np.random.default_rng(0).integers(0, num_classes, size=batch)
    _BATCHES[key] = np.ascontiguousarray(images, dtype="float32"), np.asarray(labels, "int64")
    return _BATCHES[key]


# -- one preset --------------------------------------------------------------------------------------------
def bench_preset(preset, family, args, baseline):
    import glasszoo

    baseline_name, baseline_class, stages = baseline
    model = glasszoo.load(preset, pretrained=False)
    model.compile()
    shape, classes = tuple(model.image_shape), model.num_classes
    images, labels = training_batch(args.batch, preset_dataset(preset), shape, classes)
    flops, per_type, per_batch = forward_flops(model)
    filters, baseline_flops, reference = matching_baseline(baseline_class, flops, stages, shape, classes)
    reference.compile()

    def steps(trained):
        def run():
            for _ in range(args.steps):
                trained.train_on_batch(images, labels)

        return run

    for _ in range(max(0, args.warmup - 1)):  # interleaved_best runs one more
        model.train_on_batch(images, labels)
        reference.train_on_batch(images, labels)
    best = interleaved_best({"family": steps(model), "baseline": steps(reference)}, args.repeats, args.budget)
    row = {
        "family": family,
        "preset": preset,
        "batch": len(images),
        "family_forward_flops": flops,
        "family_flops_by_op": per_type,
        "family_flops_per_batch": per_batch,
        "family_parameters": model.count_params(),
        "family_jit_compile": bool(getattr(model, "jit_compile", False)),
        "baseline_family": baseline_name,
        "baseline_class": type(reference).__name__,
        "baseline_filters": list(filters),
        "baseline_forward_flops": baseline_flops,
        "baseline_parameters": reference.count_params(),
        "baseline_jit_compile": bool(getattr(reference, "jit_compile", False)),
        "flops_ratio": baseline_flops / flops,
        "family_step_ms": 1000 * best["family"]["best_s"] / args.steps,
        "baseline_step_ms": 1000 * best["baseline"]["best_s"] / args.steps,
        "runs": best["family"]["runs"],
    }
    row["step_ratio"] = row["family_step_ms"] / row["baseline_step_ms"]
    print(
        f"  {preset}: {flops / 1e6:.1f} MFLOPs vs {row['baseline_class']}{tuple(filters)} {baseline_flops / 1e6:.1f}; "
        f"step {row['step_ratio']:.2f}x the baseline's",
        flush=True,
    )
    return row


def table(rows):
    return markdown_table(
        [
            "family", "preset", "forward MFLOPs", "baseline filters", "baseline MFLOPs", "baseline / family FLOPs",
            "family ms/step", "baseline ms/step", "family / baseline step",
        ],  # fmt: skip
        [
            [
                r["family"],
                r["preset"],
                f"{r['family_forward_flops'] / 1e6:.1f}",
                "(" + ", ".join(str(f) for f in r["baseline_filters"]) + ")",
                f"{r['baseline_forward_flops'] / 1e6:.1f}",
                f"{r['flops_ratio']:.2f}",
                f"{r['family_step_ms']:.0f}",
                f"{r['baseline_step_ms']:.0f}",
                ratio(r["step_ratio"]),
            ]
            for r in rows
        ],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_selection_arguments(parser)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each model first")
    parser.add_argument("--baseline", metavar="FAMILY", help="the black-box family to compare with (default: the only or first one)")
    parser.add_argument(
        "--baseline-stages", type=int,
        help="stages of the matched baseline: widths (w, 2w, 4w, ...) (default: those of the black-box family's preset, else 3)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds at most")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of timed rounds per preset after which no round starts")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    presets = select_presets(args.families, args.models)
    name, cls, stages = baseline_family(args.baseline)
    stages = args.baseline_stages or stages
    baseline = (name, cls, stages)

    print(
        f"train_on_batch at batch {args.batch}, {args.steps} steps per run, best of up to {args.repeats} interleaved rounds; "
        f"baseline: black-box family {name!r} ({cls.__name__}, {stages} stages)",
        flush=True,
    )
    rows = [bench_preset(preset, family, args, baseline) for preset, family in presets.items()]
    print()
    print(table(rows))
    settings = {key: getattr(args, key) for key in ("batch", "steps", "warmup", "repeats", "budget")}
    settings.update(presets=list(presets), families=sorted(set(presets.values())), baseline=name, baseline_stages=stages)
    settings["flops"] = "2 x multiply-adds of Conv2D, transposed conv, depthwise conv, MatMul, BatchMatMul, Einsum; traced graph, batch 2 - batch 1"
    write_json(args.json, "training_step", settings, rows)
    return rows


if __name__ == "__main__":
    main()
