"""Training step of each family's architecture vs a plain CNN (GapCNN) of similar forward FLOPs.

For each family, the preset's architecture freshly initialised
(`glasszoo.load(name, pretrained=False)`) and compiled with the family's
`compile()` defaults (loss, optimizer, metrics, `jit_compile`: CoDA's
`compile` turns on XLA; the others keep Keras's "auto", which is off on
CPU) is trained with `model.train_on_batch` on one batch of `--batch`
(64) Fashion-MNIST images and labels, against a `GapCNN` (the black-box
baseline, zoo/cnn.py) whose forward FLOPs are closest to the family's, with
its own `compile()` defaults, on the same batch.

FLOPs per image: counted analytically from the shapes of the traced
TensorFlow graph of a forward pass `model(x)` (inference mode; for
PrototypeDL that includes the decoder, which its `call` runs for the
reconstruction loss), at batch 2 minus batch 1 (so work on the weights
alone, CoDA's Gram matrices, is not counted per image): the multiply-adds
of every `Conv2D`, `Conv2DBackpropInput` (transposed convolution),
`DepthwiseConv2dNative`, `MatMul`, `BatchMatMulV2` and `Einsum` op (for a
two-operand einsum: the product of the sizes of all its indices), FLOPs =
2 x multiply-adds. Element-wise ops, pooling, batch norm
and reductions are not counted. The CNN has the preset's layout, stages of
widths (w, 2w, 4w), with `w` chosen so its FLOPs are nearest the family's
(`--cnn-stages` 2 gives (w, 2w)).

Timing: `--warmup` (3) steps each, then the family's model and its CNN
alternate, `--steps` (5) training steps at a time, for `--repeats` rounds
(or until `--budget` seconds have passed, at least three rounds); the best
time of each is kept and divided by the steps. Shared machines are noisy:
read the ratios, not the absolute numbers.

    python3 bench/training_step.py [--families inam coda protopnet prototypedl cnn] [--batch 64]
                                   [--steps 5] [--repeats 5] [--budget 30] [--json results.json]
"""

import argparse
import os
import string
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import (
    FAMILY_PRESETS,
    check_families,
    interleaved_best,
    markdown_table,
    ratio,
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


def _graph_flops(model, batch):
    """`{op type: FLOPs}` of the graph of `model(x)` traced at a fixed `batch` (2 x multiply-adds)."""
    import tensorflow as tf

    spec = tf.TensorSpec((batch,) + tuple(model.image_shape), tf.float32)
    graph = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec).graph
    per_type = {}
    for op in graph.get_operations():
        if op.type in ("PartitionedCall", "StatefulPartitionedCall", "While", "If", "StatelessIf", "StatelessWhile"):
            raise ValueError(f"The forward graph has a {op.type} op, whose inside is not counted.")
        count = op_multiply_adds(op)
        if count:
            per_type[op.type] = per_type.get(op.type, 0) + 2 * count
    return per_type


def forward_flops(model):
    """`(FLOPs per image, {op type: FLOPs per image}, FLOPs per batch)` of `model(x)`.

    Per image: the graph at batch 2 minus the graph at batch 1, so that work
    on the weights alone (CoDA's Gram matrices of the alignment weights) is
    not counted per image; it is returned as the per-batch part.
    """
    one, two = _graph_flops(model, 1), _graph_flops(model, 2)
    per_image = {key: two.get(key, 0) - one.get(key, 0) for key in two}
    per_batch = sum(one.values()) - sum(per_image.values())
    return sum(per_image.values()), {k: v for k, v in per_image.items() if v}, per_batch


def gap_cnn_flops(width, stages, input_shape=(28, 28, 1), num_classes=10):
    """Forward FLOPs of `GapCNN(filters=(w, 2w, ...))`: 2 x multiply-adds of its convolutions and classifier."""
    height, breadth, channels = input_shape
    total = 0
    for stage in range(stages):
        if stage:
            height, breadth = height // 2, breadth // 2
        filters = width * 2**stage
        total += height * breadth * 9 * (channels * filters + filters * filters)
        channels = filters
    return 2 * (total + channels * num_classes)


def matching_cnn(target_flops, stages, input_shape=(28, 28, 1), num_classes=10):
    """`(filters, FLOPs)` of the GapCNN with stage widths (w, 2w, ...) nearest `target_flops` (in ratio)."""
    import math

    best = min(range(1, 1025), key=lambda w: abs(math.log(gap_cnn_flops(w, stages, input_shape, num_classes) / target_flops)))
    return tuple(best * 2**stage for stage in range(stages)), gap_cnn_flops(best, stages, input_shape, num_classes)


def training_batch(batch):
    """The first `batch` Fashion-MNIST training images and labels (the shipped samples if the dataset is missing)."""
    import numpy as np
    from glasszoo.data import DatasetUnavailable, load_dataset

    try:
        data = load_dataset("fashion_mnist")
        images, labels = data.x_train[:batch], data.y_train[:batch]
    except DatasetUnavailable as error:  # no local copy: the shipped samples, repeated
        from glasszoo.data.samples import load_samples

        print(f"(Fashion-MNIST not available: {error}; using the shipped samples)")
        samples, sample_labels = load_samples()[:2]
        index = np.arange(batch) % len(samples)
        images, labels = samples[index], sample_labels[index]
    return np.ascontiguousarray(images, dtype="float32"), np.asarray(labels, "int64")


def bench_family(family, args, images, labels):
    import glasszoo
    from glasszoo.zoo.cnn import GapCNN

    model = glasszoo.load(FAMILY_PRESETS[family], pretrained=False)
    model.compile()
    flops, per_type, per_batch = forward_flops(model)
    filters, predicted = matching_cnn(flops, args.cnn_stages, tuple(model.image_shape), model.num_classes)
    cnn = GapCNN(num_classes=model.num_classes, input_shape=tuple(model.image_shape), filters=filters)
    cnn.compile()
    cnn_flops = forward_flops(cnn)[0]
    if abs(cnn_flops - predicted) > 1e-6 * predicted:
        raise RuntimeError(f"GapCNN{filters}: the formula gives {predicted} FLOPs, the graph {cnn_flops}.")

    def steps(trained):
        def run():
            for _ in range(args.steps):
                trained.train_on_batch(images, labels)

        return run

    for _ in range(max(0, args.warmup - 1)):  # interleaved_best runs one more
        model.train_on_batch(images, labels)
        cnn.train_on_batch(images, labels)
    best = interleaved_best({"family": steps(model), "cnn": steps(cnn)}, args.repeats, args.budget)
    row = {
        "family": family,
        "preset": FAMILY_PRESETS[family],
        "batch": len(images),
        "family_forward_flops": flops,
        "family_flops_by_op": per_type,
        "family_flops_per_batch": per_batch,
        "family_parameters": model.count_params(),
        "family_jit_compile": bool(getattr(model, "jit_compile", False)),
        "cnn_filters": list(filters),
        "cnn_forward_flops": cnn_flops,
        "cnn_parameters": cnn.count_params(),
        "cnn_jit_compile": bool(getattr(cnn, "jit_compile", False)),
        "flops_ratio": cnn_flops / flops,
        "family_step_ms": 1000 * best["family"]["best_s"] / args.steps,
        "cnn_step_ms": 1000 * best["cnn"]["best_s"] / args.steps,
        "runs": best["family"]["runs"],
    }
    row["step_ratio"] = row["family_step_ms"] / row["cnn_step_ms"]
    print(f"  {family}: {flops / 1e6:.1f} MFLOPs vs GapCNN{tuple(filters)} {cnn_flops / 1e6:.1f}; step {row['step_ratio']:.2f}x the CNN's", flush=True)
    return row


def table(rows):
    return markdown_table(
        ["family", "forward MFLOPs", "GapCNN filters", "CNN MFLOPs", "CNN / family FLOPs", "family ms/step", "CNN ms/step", "family / CNN step"],
        [
            [
                r["family"],
                f"{r['family_forward_flops'] / 1e6:.1f}",
                "(" + ", ".join(str(f) for f in r["cnn_filters"]) + ")",
                f"{r['cnn_forward_flops'] / 1e6:.1f}",
                f"{r['flops_ratio']:.2f}",
                f"{r['family_step_ms']:.0f}",
                f"{r['cnn_step_ms']:.0f}",
                ratio(r["step_ratio"]),
            ]
            for r in rows
        ],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILY_PRESETS), help="families to run (default: all)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each model first")
    parser.add_argument("--cnn-stages", type=int, default=3, help="stages of the matched GapCNN: widths (w, 2w, 4w, ...)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds at most")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of timed rounds per family after which no round starts")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    families = check_families(args.families)

    images, labels = training_batch(args.batch)
    print(f"train_on_batch at batch {len(images)}, {args.steps} steps per run, best of up to {args.repeats} interleaved rounds", flush=True)
    rows = [bench_family(family, args, images, labels) for family in families]
    print()
    print(table(rows))
    settings = {key: getattr(args, key) for key in ("batch", "steps", "warmup", "cnn_stages", "repeats", "budget")}
    settings["families"] = families
    settings["flops"] = "2 x multiply-adds of Conv2D, transposed conv, depthwise conv, MatMul, BatchMatMul, Einsum; traced graph, batch 2 - batch 1"
    write_json(args.json, "training_step", settings, rows)
    return rows


if __name__ == "__main__":
    main()
