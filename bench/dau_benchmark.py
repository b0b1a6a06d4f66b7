"""DAUConv2D speed and memory: low-rank formulation vs materialised per-position weights.

Compares the dynamic alignment unit layer `glasszoo.layers.DAUConv2D`
(`glasszoo.layers.dynamic_alignment`; it never materialises the dynamic
weights) with `reference_dau_outputs`
(`glasszoo.layers.dynamic_alignment_reference`, the seed paper's
formulation: a weight vector per output channel and position) on the shapes
of the nine DAU layers of that paper's small CIFAR-10 network (32 x 32 x 3
images complement-encoded to 6 channels), one row per layer and one for the
whole stack: a benchmark of the layer, whichever model uses it. A step is
forward + backward: the gradient of `sum(outputs * cotangent)` (fixed random
cotangent) with respect to the inputs and all weights, in a `tf.function`
(graph mode; `--jit` compiles it with XLA).

Time: median over `--repeats` steps, the two formulations interleaved in one
process. Peak memory: on a GPU, `tf.config.experimental.get_memory_info`'s
peak over one (warm) step minus the memory in use before it. On CPU, each
(formulation, row) runs in a fresh subprocess that traces the step, resets
the peak resident set size (Linux `/proc/self/clear_refs`; else `ru_maxrss`,
which may hide increases below the import peak), runs the step once and
reports the peak RSS increase: the first run of the graph, so it includes
~25 MiB of one-off costs (and with `--jit`, XLA's compilation); a warm-up
step would not help, as the memory it frees stays in the process. The peak
varies by up to ~20% between processes (the order the graph's ops run in):
`--memory-repeats 3` reports the median of three (each subprocess costs a
few seconds of TensorFlow start-up; the default, 1, keeps the whole run to a
few minutes).

It also checks that both formulations give the same outputs and gradients
(max |difference|, relative to the largest value where that is above 1).
Timings on shared machines are noisy: read the ratios. Needs the TensorFlow
backend.

    python3 bench/dau_benchmark.py [--batch 16] [--repeats 5] [--memory-repeats 1] [--threads 0]
                                   [--rows 1 2 ... 9 stack] [--jit] [--json results.json]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import reset_peak_rss, rss_kib  # noqa: E402

# the nine DAU layers of the dynamic alignment paper's small CIFAR-10 network: 32 x 32 x 3 inputs,
# complement-encoded to 6 channels
INPUT_SHAPE = (32, 32, 6)
KERNEL_SIZES = [3, 3, 3, 3, 3, 3, 3, 3, 1]
STRIDES = [1, 1, 2, 1, 1, 2, 1, 1, 1]
FILTERS = [16, 16, 32, 32, 32, 64, 64, 64, 10]
RANKS = [32, 32, 64, 64, 64, 64, 64, 64, 64]
FORMULATIONS = ("low_rank", "reference")
STACK = "stack"
RESULT_MARKER = "DAU_BENCHMARK_RESULT "
GOALS = {"memory_ratio": 4.0, "speed_ratio": 1.5}


def layer_input_shapes():
    """`(H, W, C)` entering each of the 9 layers ("same" padding)."""
    shapes, (height, width, channels) = [], INPUT_SHAPE
    for stride, filters in zip(STRIDES, FILTERS):
        shapes.append((height, width, channels))
        height, width, channels = -(-height // stride), -(-width // stride), filters
    return shapes


def parse_row(text):
    return STACK if text == STACK else int(text)


def row_name(row):
    return "all 9" if row == STACK else f"layer {row}"


# -- setup (both the parent and the subprocesses) -----------------------------------------------
def check_backend():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit(
            f"bench/dau_benchmark.py needs the TensorFlow backend (graph-mode steps and memory "
            f"measurement); KERAS_BACKEND is {keras.backend.backend()!r}. Run with KERAS_BACKEND=tensorflow."
        )


def configure(args):
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # a fresh tf.function per row and formulation is intended, not retracing
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)


def gpu_present():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def build_row(row, args):
    """Layers (built, seeded by position so every process gets the same weights), inputs and cotangent."""
    import keras
    from glasszoo.layers import DAUConv2D

    indices = list(range(9)) if row == STACK else [row - 1]
    shapes = layer_input_shapes()
    layers = []
    for index in indices:
        keras.utils.set_random_seed(args.seed + index)
        layer = DAUConv2D(
            filters=FILTERS[index], kernel_size=KERNEL_SIZES[index], rank=RANKS[index],
            strides=STRIDES[index], padding="same", normalization=args.normalization,
        )
        layer.build((args.batch,) + shapes[index])
        layers.append(layer)
    rng = np.random.default_rng(args.seed + 100 + indices[0])
    shape = (args.batch,) + shapes[indices[0]]
    if indices[0] == 0:  # complement-encoded images [x, 1 - x]
        images = rng.uniform(size=shape[:-1] + (shape[-1] // 2,))
        inputs = np.concatenate([images, 1.0 - images], axis=-1)
    else:
        inputs = rng.normal(size=shape)
    output_shape = shape
    for layer in layers:
        output_shape = tuple(layer.compute_output_shape(output_shape))
    cotangent = rng.normal(size=output_shape)
    return layers, inputs.astype("float32"), cotangent.astype("float32")


def make_step(layers, formulation, jit):
    """`tf.function(inputs, cotangent) -> (outputs, [d inputs] + [d weights], checksum)`."""
    import tensorflow as tf
    from glasszoo.layers.dynamic_alignment_reference import reference_dau_outputs

    weights = [weight for layer in layers for weight in layer.trainable_weights]

    def forward(x):
        for layer in layers:
            x = layer(x) if formulation == "low_rank" else reference_dau_outputs(layer, x)
        return x

    @tf.function(jit_compile=jit)
    def step(inputs, cotangent):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = forward(inputs)
            loss = tf.reduce_sum(outputs * cotangent)
        gradients = tape.gradient(loss, [inputs] + weights)
        # one scalar that depends on every result: reading it waits for the whole step
        checksum = loss + tf.add_n([tf.reduce_sum(gradient) for gradient in gradients])
        return outputs, gradients, checksum

    return step


def run_step(step, inputs, cotangent):
    outputs, gradients, checksum = step(inputs, cotangent)
    float(checksum)
    return outputs, gradients


# -- memory ------------------------------------------------------------------------------------
def memory_worker(args):
    """Subprocess: peak RSS increase of one step of one formulation on one row, printed as JSON."""
    import gc

    import tensorflow as tf

    layers, inputs, cotangent = build_row(args.worker_row, args)
    inputs, cotangent = tf.constant(inputs), tf.constant(cotangent)
    step = make_step(layers, args.worker_formulation, args.jit)
    # trace now, so the step below only runs (and optimises) the graph; a warm-up step is no use: the
    # memory it frees stays in the process, so a second step's peak would not show in the RSS
    step.get_concrete_function(inputs, cotangent)
    gc.collect()
    baseline = rss_kib("VmRSS")
    if reset_peak_rss():
        method, hidden = "VmHWM reset", 0
    else:
        method = "ru_maxrss"
        hidden = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline, 0)
    run_step(step, inputs, cotangent)
    peak = rss_kib("VmHWM") if method == "VmHWM reset" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"peak_bytes": max(peak - baseline, 0) * 1024, "method": method, "hidden_below_bytes": hidden * 1024}
    print(RESULT_MARKER + json.dumps(result), flush=True)


def subprocess_memory(row, formulation, args):
    command = [
        sys.executable, os.path.abspath(__file__), "--worker-row", str(row), "--worker-formulation", formulation,
        "--batch", str(args.batch), "--seed", str(args.seed), "--threads", str(args.threads),
        "--normalization", args.normalization,
    ] + (["--jit"] if args.jit else [])
    runs = []
    for _ in range(args.memory_repeats):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
        if not lines:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            where = f"{row_name(row)}, {formulation}"
            raise RuntimeError(f"memory subprocess for {where} failed (rc {done.returncode}):\n{tail}")
        runs.append(json.loads(lines[-1][len(RESULT_MARKER):]))
    # the peak of one step varies between processes (scheduling of the graph's ops): report the median
    return {
        "peak_bytes": statistics.median(run["peak_bytes"] for run in runs),
        "peak_bytes_runs": [run["peak_bytes"] for run in runs],
        "method": runs[0]["method"],
        "hidden_below_bytes": max(run["hidden_below_bytes"] for run in runs),
    }


def gpu_memory(step, inputs, cotangent):
    import tensorflow as tf

    tf.config.experimental.reset_memory_stats("GPU:0")
    before = tf.config.experimental.get_memory_info("GPU:0")["current"]
    run_step(step, inputs, cotangent)
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return {"peak_bytes": peak - before, "method": "GPU allocator peak", "hidden_below_bytes": 0}


# -- one row: time, equality (and GPU memory) in this process -------------------------------------
def max_difference(reference, other):
    """Max |difference| over arrays, divided by the largest |reference| value when that is above 1."""
    absolute = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(reference, other))
    largest = max(float(np.max(np.abs(np.asarray(a)))) for a in reference)
    return absolute, absolute / max(largest, 1.0)


def measure_row(row, args, use_gpu):
    import tensorflow as tf

    layers, inputs, cotangent = build_row(row, args)
    inputs, cotangent = tf.constant(inputs), tf.constant(cotangent)
    steps = {formulation: make_step(layers, formulation, args.jit) for formulation in FORMULATIONS}
    results = {formulation: run_step(steps[formulation], inputs, cotangent) for formulation in FORMULATIONS}  # warm-up
    output_abs, output_rel = max_difference([results["reference"][0]], [results["low_rank"][0]])
    gradient_abs, gradient_rel = max_difference(results["reference"][1], results["low_rank"][1])
    output_shape = list(results["low_rank"][0].shape)
    del results
    memory = {}
    if use_gpu and args.memory != "none":
        memory = {formulation: gpu_memory(steps[formulation], inputs, cotangent) for formulation in FORMULATIONS}
    times = {formulation: [] for formulation in FORMULATIONS}
    for repeat in range(args.repeats):
        order = FORMULATIONS if repeat % 2 == 0 else FORMULATIONS[::-1]  # alternate which goes first
        for formulation in order:
            start = time.perf_counter()
            run_step(steps[formulation], inputs, cotangent)
            times[formulation].append(time.perf_counter() - start)
    return {
        "row": row,
        "input_shape": list(inputs.shape),
        "output_shape": output_shape,
        "times_s": times,
        "median_s": {formulation: statistics.median(values) for formulation, values in times.items()},
        "output_max_abs_diff": output_abs,
        "output_max_rel_diff": output_rel,
        "gradient_max_abs_diff": gradient_abs,
        "gradient_max_rel_diff": gradient_rel,
        "memory": memory,
    }


# -- report -------------------------------------------------------------------------------------
def mib(value):
    return f"{value / 2**20:.1f}" if value is not None else "-"


def ratio(numerator, denominator):
    return numerator / denominator if numerator is not None and denominator else None


def print_table(rows, args):
    header = (
        f"{'row':<8} {'input shape':<13} {'low-rank ms':>11} {'ref ms':>9} {'speed x':>8} "
        f"{'low-rank MiB':>12} {'ref MiB':>9} {'memory x':>9} {'max|d out|':>11} {'max|d grad|':>11}"
    )
    print(header)
    print("-" * len(header))
    for result in rows:
        low_time, ref_time = result["median_s"]["low_rank"], result["median_s"]["reference"]
        low_memory = result["memory"].get("low_rank", {}).get("peak_bytes")
        ref_memory = result["memory"].get("reference", {}).get("peak_bytes")
        result["speed_ratio"] = ratio(ref_time, low_time)
        result["memory_ratio"] = ratio(ref_memory, low_memory)
        shape = "x".join(str(n) for n in result["input_shape"][1:])
        memory_ratio = f"{result['memory_ratio']:.2f}" if result["memory_ratio"] is not None else "-"
        print(
            f"{row_name(result['row']):<8} {shape:<13} {low_time * 1e3:>11.1f} {ref_time * 1e3:>9.1f} "
            f"{result['speed_ratio']:>8.2f} {mib(low_memory):>12} {mib(ref_memory):>9} {memory_ratio:>9} "
            f"{result['output_max_rel_diff']:>11.1e} {result['gradient_max_rel_diff']:>11.1e}"
        )
    print(
        "ms: median step (forward + backward); MiB: peak memory of one step; x: reference / low-rank; "
        "max|d|: max |difference| (relative to the largest value where that is above 1)."
    )
    stack = [result for result in rows if result["row"] == STACK]
    if stack:
        result = stack[0]
        verdicts = []
        if result["memory_ratio"] is not None:
            verdicts.append(
                f"memory {result['memory_ratio']:.2f}x (goal >= {GOALS['memory_ratio']}x: "
                f"{'met' if result['memory_ratio'] >= GOALS['memory_ratio'] else 'missed'})"
            )
        verdicts.append(
            f"speed {result['speed_ratio']:.2f}x (goal >= {GOALS['speed_ratio']}x: "
            f"{'met' if result['speed_ratio'] >= GOALS['speed_ratio'] else 'missed'})"
        )
        print("whole stack: " + ", ".join(verdicts))
    worst = max(max(result["output_max_rel_diff"], result["gradient_max_rel_diff"]) for result in rows)
    print(f"formulations agree to 1e-5: {'yes' if worst <= 1e-5 else 'NO'} (worst {worst:.1e})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed steps per formulation and row (after one warm-up)")
    parser.add_argument("--rows", nargs="+", type=parse_row, default=list(range(1, 10)) + [STACK],
                        help="layers 1-9 and/or 'stack' (all 9 layers)")
    parser.add_argument("--normalization", choices=("sq", "l2"), default="sq")
    parser.add_argument("--jit", action="store_true", help="compile the steps with XLA (jit_compile=True)")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra- and inter-op threads (0: default)")
    parser.add_argument("--memory", choices=("auto", "none"), default="auto",
                        help="auto: GPU allocator peak on a GPU, else peak RSS of fresh subprocesses")
    parser.add_argument("--memory-repeats", type=int, default=1,
                        help="fresh subprocesses per formulation and row on CPU; the median is reported "
                        "(3 for steadier ratios)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--worker-row", type=parse_row, help=argparse.SUPPRESS)
    parser.add_argument("--worker-formulation", choices=FORMULATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    check_backend()
    configure(args)
    if args.worker_row is not None:
        memory_worker(args)
        return

    import tensorflow as tf

    use_gpu = gpu_present()
    device = "GPU" if use_gpu else f"CPU ({args.threads or 'default'} threads)"
    memory_method = "GPU allocator peak" if use_gpu else "peak RSS of a fresh subprocess"
    if args.memory == "none":
        memory_method = "none"
    print(
        f"DAUConv2D low-rank vs reference (materialised weights): the paper's 9 CIFAR-10 DAU layers, batch {args.batch}, "
        f"normalization {args.normalization!r}, TensorFlow {tf.__version__} on {device}"
        f"{', XLA' if args.jit else ''}; {args.repeats} interleaved repeats; memory: {memory_method}\n"
    )
    rows = []
    for row in args.rows:
        result = measure_row(row, args, use_gpu)
        if not use_gpu and args.memory != "none":
            result["memory"] = {formulation: subprocess_memory(row, formulation, args) for formulation in FORMULATIONS}
        rows.append(result)
        print(f"  measured {row_name(row)}", file=sys.stderr, flush=True)
    print_table(rows, args)
    if args.jit and not use_gpu and args.memory != "none":
        print("note: with --jit on CPU the peak RSS includes XLA's compilation of the step.")
    hidden = [result for result in rows for memory in result["memory"].values() if memory.get("hidden_below_bytes")]
    if hidden:
        print("note: peak RSS could not be reset; increases below the earlier peak (hidden_below_bytes) are not seen.")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "settings": {key: value for key, value in vars(args).items() if not key.startswith("worker")},
                    "device": device,
                    "memory_method": memory_method,
                    "tensorflow": tf.__version__,
                    "goals": GOALS,
                    "rows": rows,
                },
                handle,
                indent=2,
            )
        print(f"results written to {args.json}")
    return rows


if __name__ == "__main__":
    main()
