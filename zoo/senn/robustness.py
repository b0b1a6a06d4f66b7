"""How much a SENN explanation moves when the image barely does: the seed's local Lipschitz estimate.

Alvarez-Melis and Jaakkola measure the stability of an explanation `e(x)`
(for SENN, the relevances `theta(x)`) by

    L(x) = max over x' in a ball B_r(x) of ||e(x) - e(x')||_2 / ||x - x'||_2

(their eq. 5, "continuous" version; they search the ball with Bayesian
optimisation). Here the ball is the L-infinity ball of radius `radius`
intersected with [0, 1], searched by random sampling: `samples` uniform
points per image, the largest ratio kept. A random search finds a lower
bound of the true maximum, the same for every model it compares, so the
estimates of two models on the same images, radius, samples and seed are
comparable. `denominator="concepts"` divides by `||h(x) - h(x')||` instead
(stability in concept space).
"""

import numpy as np

DENOMINATORS = ("input", "concepts")


def local_lipschitz(model, images, radius=0.05, samples=32, seed=0, denominator="input", batch_size=256):
    """The local Lipschitz estimate of the relevances `theta(x)` at each image, `(N,)` float64.

    Args:
        model: a SENN (anything whose `explain` returns `relevances` and `concepts`).
        images: `(N, H, W, C)` in [0, 1].
        radius: L-infinity radius of the ball searched.
        samples: random points per image.
        seed: seed of the points (the same seed gives the same points for any model).
        denominator: `"input"` (`||x - x'||`) or `"concepts"` (`||h(x) - h(x')||`).
        batch_size: images per forward pass.

    Example:
    >>> estimates = local_lipschitz(model, test_images[:100])  # doctest: +SKIP
    >>> estimates.mean(), estimates.std(ddof=1) / np.sqrt(len(estimates))  # doctest: +SKIP
    """
    if denominator not in DENOMINATORS:
        raise ValueError(f"denominator must be one of {DENOMINATORS}; got {denominator!r}.")
    images = np.asarray(images, dtype="float32")
    if not len(images):
        raise ValueError("local_lipschitz needs at least one image.")
    if not radius > 0 or int(samples) < 1:
        raise ValueError(f"radius must be positive and samples at least 1; got {radius!r} and {samples!r}.")
    samples = int(samples)
    generator = np.random.default_rng(seed)
    base = model.explain(images, batch_size=batch_size)
    estimates = np.zeros(len(images))
    for index, image in enumerate(images):
        noise = generator.uniform(-radius, radius, size=(samples,) + image.shape).astype("float32")
        moved = np.clip(image[None] + noise, 0.0, 1.0)
        out = model.explain(moved, batch_size=batch_size)
        change = np.linalg.norm((out["relevances"] - base["relevances"][index]).reshape(samples, -1).astype("float64"), axis=1)
        if denominator == "input":
            distance = np.linalg.norm((moved - image[None]).reshape(samples, -1).astype("float64"), axis=1)
        else:
            distance = np.linalg.norm((out["concepts"] - base["concepts"][index]).astype("float64"), axis=1)
        ratios = np.where(distance > 0, change / np.maximum(distance, 1e-12), 0.0)
        estimates[index] = ratios.max()
    return estimates


def lipschitz_summary(model, images, radius=0.05, samples=32, seed=0, denominator="input"):
    """`{"mean", "standard_error", "median", "images", "radius", "samples", "denominator"}` of `local_lipschitz`."""
    estimates = local_lipschitz(model, images, radius=radius, samples=samples, seed=seed, denominator=denominator)
    error = float(estimates.std(ddof=1) / np.sqrt(len(estimates))) if len(estimates) > 1 else float("nan")
    return {
        "mean": float(estimates.mean()),
        "standard_error": error,
        "median": float(np.median(estimates)),
        "images": int(len(estimates)),
        "radius": float(radius),
        "samples": int(samples),
        "denominator": denominator,
    }
