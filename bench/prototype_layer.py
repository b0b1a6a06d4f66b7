"""ProtoPNet's prototype layer: `PrototypeLayer` in float32 and float64 vs the reference's float32 convolutions.

Measures one training step of the distance computation alone, forward +
backward: the gradient of `sum(distances * cotangent)` (fixed random
cotangent) with respect to the latent maps and the prototypes, at ProtoPNet's
shapes (batch 80, 7 x 7 x 128 latent maps, 2,000 1x1 prototypes: 200 classes
x 10, as for CUB-200). Three formulations, all in Keras ops:

- `ours_float32`: `glasszoo.layers.PrototypeLayer(distance_dtype="float32")`,
  the default (`split_squared_distances`: float32 matrix products on high
  and low parts, exact cancellation next to a prototype);
- `ours_float64`: `PrototypeLayer(distance_dtype="float64")`, the
  expansion `|z|^2 - 2 z.p + |p|^2` as float64 matrix products;
- `reference_float32`: the formulation of the ProtoPNet paper's code,
  written here from its description: `|z|^2` as a convolution of `z^2` with
  a kernel of ones, minus 2 x the convolution of `z` with the prototypes as
  1x1 kernels, plus the prototypes' squared norms, through a ReLU, in
  float32 (`ReferenceDistances`).

Each Keras backend (`--backends`, default TensorFlow and PyTorch) runs in
its own subprocess with `KERAS_BACKEND` set (two backends in one process can
crash it). TensorFlow runs the step as a `tf.function` (graph mode, no XLA),
PyTorch eagerly (`loss.backward()`). Time: every formulation runs once as a
warm-up, then rounds of one step of each alternate (`bench_common.
interleaved_best`), at most `--repeats` rounds or until `--budget` seconds
have passed; the best time of each is kept. The table prints, per backend,
the milliseconds and the speed relative to the reference (reference time /
time: above 1 is faster than the reference).

Accuracy (per backend, against exact distances computed in float64 with
NumPy): the first `--pushed` prototypes are set to latent patches, as a
push does, so each has a patch at distance 0, where the similarity
`log((d + 1) / (d + 1e-4))` has slope -1e4. Reported: the largest
|similarity difference| at those patches, the largest |distance difference|
anywhere, and the largest gradient difference relative to the largest
gradient component.

Memory (`--memory rss`, the default): each (backend, formulation) runs one
step in a fresh subprocess, after tracing, with the kernel's peak resident
set size reset (Linux `/proc/self/clear_refs`); reported is the peak RSS
increase of that first step, one-off allocations included (a warm-up step
would hide the step's own peak: freed memory stays in the process). It
varies by ~10% between runs; `--memory none` skips it. One distance map is
B x h x w x P x 4 bytes = 31 MiB at the default shapes (twice that in
float64).

Timings on shared machines are noisy: read the ratios. No timing is
asserted anywhere (`tests/test_prototype_precision.py` runs this script at
tiny shapes as a smoke test).

    python3 bench/prototype_layer.py [--backends tensorflow torch] [--batch 80] [--height 7] [--width 7]
                                     [--channels 128] [--prototypes 2000] [--pushed 20] [--repeats 10]
                                     [--budget 60] [--memory rss|none] [--seed 0] [--json results.json]
"""

import argparse
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from bench_common import interleaved_best, markdown_table, ratio, reset_peak_rss, rss_kib

FORMULATIONS = ("ours_float32", "ours_float64", "reference_float32")
BASELINE = "reference_float32"
BACKENDS = ("tensorflow", "torch")
RESULT_MARKER = "PROTOTYPE_LAYER_BENCHMARK_RESULT "
SIMILARITY_EPSILON = 1e-4


# -- inputs (the same in every process: seeded NumPy) ----------------------------------------------
def make_inputs(args):
    """`(latent (B, h, w, D), prototypes (P, D), cotangent (B, h, w, P), pushed positions)`, float32.

    Latents are sigmoid outputs of normal noise (the add-on layers end in a
    sigmoid); the first `args.pushed` prototypes are copies of latent
    vectors at distinct (image, row, column) positions, the others uniform
    in [0, 1) like `PrototypeLayer`'s initialiser.
    """
    rng = np.random.default_rng(args.seed)
    latent = 1.0 / (1.0 + np.exp(-2.0 * rng.normal(size=(args.batch, args.height, args.width, args.channels))))
    prototypes = rng.uniform(size=(args.prototypes, args.channels))
    pushed = min(args.pushed, args.prototypes, args.batch * args.height * args.width)
    flat = rng.choice(args.batch * args.height * args.width, size=pushed, replace=False)
    positions = np.stack(np.unravel_index(flat, (args.batch, args.height, args.width)), axis=-1)  # (pushed, 3)
    prototypes[:pushed] = latent[positions[:, 0], positions[:, 1], positions[:, 2]]
    cotangent = rng.normal(size=(args.batch, args.height, args.width, args.prototypes))
    return latent.astype("float32"), prototypes.astype("float32"), cotangent.astype("float32"), positions


def exact_results(latent, prototypes, cotangent):
    """Distances and gradients in float64 (NumPy): the reference every formulation is compared with."""
    z = latent.astype("float64").reshape(-1, latent.shape[-1])
    p = prototypes.astype("float64")
    distances = np.maximum((z**2).sum(-1, keepdims=True) - 2.0 * z @ p.T + (p**2).sum(-1), 0.0)
    g = cotangent.astype("float64").reshape(-1, p.shape[0])
    d_latent = 2.0 * (z * g.sum(-1, keepdims=True) - g @ p)
    d_prototypes = 2.0 * (p * g.sum(0)[:, None] - g.T @ z)
    shape = latent.shape[:-1] + (p.shape[0],)
    return distances.reshape(shape), d_latent.reshape(latent.shape), d_prototypes


def log_similarity(distances):
    return np.log((distances + 1.0) / (distances + SIMILARITY_EPSILON))


# -- the formulations (in a worker: one Keras backend) --------------------------------------------
def reference_layer_class():
    import keras
    from keras import ops

    class ReferenceDistances(keras.layers.Layer):
        """The ProtoPNet paper's formulation in float32: two convolutions and the prototypes' norms."""

        def __init__(self, num_prototypes, **kwargs):
            super().__init__(**kwargs)
            self.num_prototypes = num_prototypes

        def build(self, input_shape):
            self.prototypes = self.add_weight(shape=(self.num_prototypes, 1, 1, int(input_shape[-1])), name="prototypes")

        def call(self, latent):
            ones = ops.ones((1, 1, latent.shape[-1], 1), dtype=latent.dtype)
            latent_norms = ops.conv(ops.square(latent), ones)  # (B, h, w, 1)
            products = ops.conv(latent, ops.transpose(self.prototypes, (1, 2, 3, 0)))  # 1x1 kernels: (B, h, w, P)
            prototype_norms = ops.sum(ops.square(self.prototypes), axis=(1, 2, 3))
            return ops.relu(latent_norms - 2.0 * products + prototype_norms)

    return ReferenceDistances


def build_layer(formulation, prototypes, latent_shape):
    """The formulation as a built Keras layer holding `prototypes` as its `(P, 1, 1, D)` weight."""
    from glasszoo.layers import PrototypeLayer

    count = len(prototypes)
    if formulation == BASELINE:
        layer = reference_layer_class()(count)
    else:
        layer = PrototypeLayer(count, distance_dtype=formulation.split("_")[1])
    layer.build((None,) + tuple(latent_shape[1:]))
    layer.prototypes.assign(prototypes.reshape(count, 1, 1, -1))
    return layer


def make_step(layer, latent, cotangent):
    """A callable: one forward + backward step; returns `(distances, d latent, d prototypes)` as backend tensors."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        latent, cotangent = tf.constant(latent), tf.constant(cotangent)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch(latent)
                distances = layer(latent)
                loss = tf.reduce_sum(distances * cotangent)
            d_latent, d_prototypes = tape.gradient(loss, [latent, layer.prototypes.value])
            return distances, d_latent, d_prototypes

        return step
    if backend == "torch":
        import torch

        latent, cotangent = torch.tensor(latent, requires_grad=True), torch.tensor(cotangent)
        weight = layer.prototypes.value

        def step():
            latent.grad = weight.grad = None
            distances = layer(latent)
            torch.sum(distances * cotangent).backward()
            return distances.detach(), latent.grad, weight.grad

        return step
    raise SystemExit(f"bench/prototype_layer.py runs on tensorflow or torch; KERAS_BACKEND is {backend!r}.")


def finished(results):
    """The step's results as NumPy arrays (reading them waits for the whole step)."""
    from keras import ops

    return [np.asarray(ops.convert_to_numpy(result)) for result in results]


def accuracy(results, exact, positions):
    """Largest differences from the float64 results: similarity at the pushed patches, distance, gradient."""
    distances, d_latent, d_prototypes = results
    exact_distances, exact_d_latent, exact_d_prototypes = exact
    b, i, j = positions.T
    pushed = np.arange(len(positions))
    similarity = log_similarity(distances[b, i, j, pushed].astype("float64"))
    gradient = max(
        float(np.max(np.abs(d_latent - exact_d_latent))) / float(np.max(np.abs(exact_d_latent))),
        float(np.max(np.abs(d_prototypes.reshape(exact_d_prototypes.shape) - exact_d_prototypes))) / float(np.max(np.abs(exact_d_prototypes))),
    )
    return {
        "pushed_similarity_max_abs_diff": float(np.max(np.abs(similarity - log_similarity(exact_distances[b, i, j, pushed])))) if len(pushed) else 0.0,
        "distance_max_abs_diff": float(np.max(np.abs(distances - exact_distances))),
        "gradient_max_rel_diff": gradient,
    }


def versions():
    import keras

    found = {"keras": keras.__version__, "backend": keras.backend.backend()}
    module = {"tensorflow": "tensorflow", "torch": "torch"}.get(keras.backend.backend())
    if module:
        found[module] = __import__(module).__version__
    return found


def time_worker(args):
    """Subprocess, one backend: accuracy and interleaved best-of timing of every formulation, printed as JSON."""
    latent, prototypes, cotangent, positions = make_inputs(args)
    exact = exact_results(latent, prototypes, cotangent)
    steps = {name: make_step(build_layer(name, prototypes, latent.shape), latent, cotangent) for name in FORMULATIONS}
    checks = {name: accuracy(finished(step()), exact, positions) for name, step in steps.items()}
    # reading the prototypes' gradient (P x D, the smallest result, the last one computed) waits for the whole step
    timed = interleaved_best({name: (lambda step=step: finished(step()[2:])) for name, step in steps.items()}, args.repeats, budget_s=args.budget)
    result = {"versions": versions(), "accuracy": checks, "timing": timed}
    print(RESULT_MARKER + json.dumps(result), flush=True)


# -- memory: one first step in a fresh process ---------------------------------------------------------
def memory_worker(args):
    """Subprocess, one backend and formulation: the peak RSS increase of one step, printed as JSON."""
    import gc

    import keras

    latent, prototypes, cotangent, _ = make_inputs(args)
    step = make_step(build_layer(args.worker_formulation, prototypes, latent.shape), latent, cotangent)
    if keras.backend.backend() == "tensorflow":
        step.get_concrete_function()  # trace now: the step below only runs the graph
    gc.collect()
    baseline = rss_kib("VmRSS")
    if not reset_peak_rss():
        print(RESULT_MARKER + json.dumps({"peak_bytes": None}), flush=True)
        return
    finished(step())
    print(RESULT_MARKER + json.dumps({"peak_bytes": max(rss_kib("VmHWM") - baseline, 0) * 1024}), flush=True)


# -- the parent: one subprocess per backend (and per formulation for memory) ---------------------------
def shape_arguments(args):
    names = ("batch", "height", "width", "channels", "prototypes", "pushed", "seed")
    return [item for name in names for item in (f"--{name}", str(getattr(args, name)))]


def run_worker(backend, extra, args):
    """Runs this script as a worker under `KERAS_BACKEND=backend`; its JSON result."""
    command = [sys.executable, os.path.abspath(__file__)] + shape_arguments(args) + extra
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise RuntimeError(f"the {backend} worker ({' '.join(extra)}) failed (rc {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_MARKER) :])


def mib(value):
    return "-" if value is None else f"{value / 2**20:.0f}"


def print_tables(results, args):
    backends = list(results)
    header = ["formulation"]
    for backend in backends:
        header += [f"{backend} ms", f"{backend} speed vs reference"]
    rows = []
    for name in FORMULATIONS:
        row = [name]
        for backend in backends:
            best = results[backend]["timing"]
            row += [f"{best[name]['best_s'] * 1e3:.1f}", ratio(best[BASELINE]["best_s"] / best[name]["best_s"])]
        rows.append(row)
    print(f"\nForward + backward, batch {args.batch}, latent {args.height}x{args.width}x{args.channels}, {args.prototypes} prototypes "
          f"(best of up to {args.repeats} interleaved rounds; speed = reference time / time)\n")
    print(markdown_table(header, rows))
    header = ["formulation"] + [f"{backend} {column}" for backend in backends for column in ("similarity error at pushed", "distance error", "gradient error")]
    rows = []
    for name in FORMULATIONS:
        row = [name]
        for backend in backends:
            check = results[backend]["accuracy"][name]
            row += [f"{check['pushed_similarity_max_abs_diff']:.1e}", f"{check['distance_max_abs_diff']:.1e}", f"{check['gradient_max_rel_diff']:.1e}"]
        rows.append(row)
    print(f"\nLargest differences from float64 NumPy: similarity at the {min(args.pushed, args.prototypes)} pushed patches (d = 0, slope -1e4), "
          "distances anywhere, gradients (relative to the largest component)\n")
    print(markdown_table(header, rows))
    if any("memory" in result for result in results.values()):
        header = ["formulation"] + [f"{backend} peak MiB" for backend in backends] + [f"{backend} memory vs reference" for backend in backends]
        rows = []
        for name in FORMULATIONS:
            peaks = [results[backend].get("memory", {}).get(name) for backend in backends]
            baselines = [results[backend].get("memory", {}).get(BASELINE) for backend in backends]
            relative = [ratio(peak / base) if peak and base else "-" for peak, base in zip(peaks, baselines)]
            rows.append([name] + [mib(peak) for peak in peaks] + relative)
        print("\nPeak RSS increase of one first step in a fresh process (one-off allocations included; memory = this / reference)\n")
        print(markdown_table(header, rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--batch", type=int, default=80)
    parser.add_argument("--height", type=int, default=7)
    parser.add_argument("--width", type=int, default=7)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--prototypes", type=int, default=2000)
    parser.add_argument("--pushed", type=int, default=20, help="prototypes set to latent patches (distance 0)")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds at most")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed rounds per backend after which no round starts")
    parser.add_argument("--memory", choices=("rss", "none"), default="rss", help="rss: peak RSS of one step in fresh subprocesses")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--worker", choices=("time", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-formulation", choices=FORMULATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "time":
        return time_worker(args)
    if args.worker == "memory":
        return memory_worker(args)
    results = {}
    for backend in args.backends:
        results[backend] = run_worker(backend, ["--worker", "time", "--repeats", str(args.repeats), "--budget", str(args.budget)], args)
        if args.memory == "rss":
            results[backend]["memory"] = {
                name: run_worker(backend, ["--worker", "memory", "--worker-formulation", name], args)["peak_bytes"] for name in FORMULATIONS
            }
    print_tables(results, args)
    if args.json:
        settings = {key: value for key, value in vars(args).items() if not key.startswith("worker") and key != "json"}
        payload = {
            "benchmark": "prototype_layer",
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
            "settings": settings,
            "results": results,
        }
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
