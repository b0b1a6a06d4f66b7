"""Shared helpers of the benchmarks in `bench/`: interleaved best-of timing, tables, JSON.

Not a benchmark itself. The scripts import it from their own folder
(`python3 bench/serving.py` puts `bench/` on `sys.path`).
"""

import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FAMILY_PRESETS = {
    "inam": "inam_fashion_mnist",
    "coda": "coda_fashion_mnist",
    "protopnet": "protopnet_fashion_mnist",
    "prototypedl": "prototypedl_fashion_mnist",
    "cnn": "cnn_fashion_mnist",
}


def interleaved_best(variants, repeats, budget_s=None, min_rounds=3):
    """Best (minimum) seconds of each callable, the variants run in turn.

    Every variant runs once as a warm-up (graph tracing, session allocation),
    then rounds of one run of each variant alternate, so that a slow period of
    a shared machine hits all of them alike. Stops after `repeats` rounds, or
    earlier once the rounds took `budget_s` seconds and at least
    `min(min_rounds, repeats)` rounds ran (one slow round of a shared
    machine can be several times slower than the best).

    Args:
        variants: dict name -> callable without arguments.
        repeats: int, timed rounds at most.
        budget_s: optional float, time after which no new round starts.
        min_rounds: int, rounds run whatever the budget (at most `repeats`).

    Returns:
        dict name -> {"best_s": float, "runs": int}.
    """
    for function in variants.values():
        function()
    times = {name: [] for name in variants}
    started = time.perf_counter()
    repeats = max(1, int(repeats))
    for round_index in range(repeats):
        for name, function in variants.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
        if budget_s is not None and round_index + 1 >= min(min_rounds, repeats) and time.perf_counter() - started > budget_s:
            break
    return {name: {"best_s": min(values), "runs": len(values)} for name, values in times.items()}


def markdown_table(header, rows):
    """A markdown table (string) of a header and rows of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def rate(value):
    """Images per second, to three significant figures at most."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def ratio(value):
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def machine():
    """What the numbers were measured on (recorded in the JSON)."""
    import keras
    import tensorflow as tf

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "tensorflow": tf.__version__,
    }


def write_json(path, benchmark, settings, results):
    """Writes `{"benchmark", "machine", "settings", "results"}` to `path`."""
    if not path:
        return
    payload = {"benchmark": benchmark, "machine": machine(), "settings": settings, "results": results}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2)
    print(f"wrote {path}")


def check_families(families):
    unknown = [f for f in families if f not in FAMILY_PRESETS]
    if unknown:
        raise SystemExit(f"Unknown families {unknown}; choose from {sorted(FAMILY_PRESETS)}.")
    return list(families)


def sample_images(count):
    """`count` shipped Fashion-MNIST test images (the 40 samples, repeated)."""
    import numpy as np
    from glasszoo.data.samples import load_samples

    samples = load_samples()[0]
    return np.ascontiguousarray(samples[np.arange(count) % len(samples)])
