"""Serving speed of an INAM preset: onnxruntime vs Keras `explain`, measured side by side.

Prints images per second and their ratio for a few batch sizes. Timings on
shared machines are noisy: read the ratio, not the absolute numbers.

    python3 bench/inam_serving.py [--name inam_fashion_mnist] [--repeats 5]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def best_time(function, repeats):
    function()  # warm-up (graph tracing, session allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="inam_fashion_mnist")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    args = parser.parse_args()

    import glasszoo
    from glasszoo.data.samples import load_samples
    from glasszoo.export import OnnxModel, to_onnx

    model = glasszoo.load(args.name)
    samples = load_samples()[0]
    with tempfile.TemporaryDirectory() as folder:
        served = OnnxModel(to_onnx(model, os.path.join(folder, "model.onnx")))
        print(f"{args.name}: logits + all explanation outputs; onnxruntime on {served.providers[0]}")
        print(f"{'batch':>6} {'keras img/s':>12} {'onnx img/s':>12} {'onnx / keras':>13}")
        for batch in args.batches:
            images = samples[np.arange(batch) % len(samples)]
            keras_time = best_time(lambda: model.explain(images, batch_size=batch), args.repeats)
            onnx_time = best_time(lambda: served(images), args.repeats)
            print(f"{batch:>6} {batch / keras_time:>12.1f} {batch / onnx_time:>12.1f} {keras_time / onnx_time:>12.2f}x")


if __name__ == "__main__":
    main()
