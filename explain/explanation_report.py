"""One evaluation of a model's own explanation against post-hoc attributions, with the seeds' metrics.

For a model and a set of labelled test images, every explanation method
(the model's inherent one and the post-hoc ones) is scored by

- localisation on `n x n` grids of images of different classes (seed 002,
  eq. 11): the share of positive attribution inside the explained class's
  own cell; random 1/n², ideal 1. Only images the model classifies
  correctly and confidently on their own go into grids;
- pixel removal (seed 002, Fig. 6): target-class probability as the least
  (and, separately, the most) important pixels are removed; area under the
  mean curve (higher is better for least-first, lower for most-first);
- cascading randomisation (sanity check): rank correlation of |map| with the
  original after all layers are randomised from the top (lower is better).
"""

import numpy as np
from glasszoo.explain import posthoc
from glasszoo.explain.localisation import localisation_scores
from glasszoo.explain.pixel_removal import (
    DEFAULT_FRACTIONS,
    class_probabilities,
    pixel_removal_curve,
)
from glasszoo.explain.randomisation import cascading_randomisation

POST_HOC = ("saliency", "input_x_gradient", "integrated_gradients", "grad_cam", "occlusion")


def inherent_explanation(model):
    """`explain(model, images, targets) -> (B, H, W)`: the model's own pixel map (`attribution_map`), or None.

    None for models without one (`has_attribution_map` false, or not a zoo model).
    """
    if not getattr(model, "has_attribution_map", False):
        return None
    return lambda m, images, targets: m.attribution_map(images, np.broadcast_to(np.asarray(targets), (len(images),)))


def explanation_methods(model, names="all", integrated_gradient_steps=32):
    """`{name: explain(model, images, targets)}`: `"inherent"` (if the model has one) and post-hoc methods.

    Args:
        model: a zoo model.
        names: `"all"` or a list of names (`"inherent"`, `"saliency"`, ...).
        integrated_gradient_steps: steps of Integrated Gradients.
    """
    methods = {}
    inherent = inherent_explanation(model)
    if inherent is not None:
        methods["inherent"] = inherent
    for name in POST_HOC:
        options = {"steps": integrated_gradient_steps} if name == "integrated_gradients" else {}
        methods[name] = lambda m, images, targets, _name=name, _options=options: posthoc.attribute(_name, m, images, targets, **_options)
    if names == "all":
        return methods
    unknown = sorted(set(names) - set(methods))
    if unknown:
        raise ValueError(f"Unknown explanation method(s) {unknown} for a {getattr(model, 'family', 'Keras')} model; available: {sorted(methods)}.")
    return {name: methods[name] for name in names}


def confident_correct(model, images, labels, threshold=0.5, batch_size=256):
    """Indices of images classified correctly with target probability above `threshold`."""
    probabilities = class_probabilities(model, images, batch_size=batch_size)
    labels = np.asarray(labels)
    keep = (probabilities.argmax(axis=1) == labels) & (probabilities[np.arange(len(labels)), labels] > threshold)
    return np.flatnonzero(keep)


def distinct_class_grids(labels, candidates, rows, count, seed=0):
    """`count` lists of `rows²` candidate indices whose labels are pairwise different."""
    rng = np.random.default_rng(seed)
    by_class = {c: rng.permutation(candidates[labels[candidates] == c]) for c in np.unique(labels[candidates])}
    if len(by_class) < rows * rows:
        raise ValueError(f"A {rows}x{rows} grid needs {rows * rows} classes among the usable images; found {len(by_class)}.")
    grids = []
    for index in range(count):
        classes = rng.choice(sorted(by_class), size=rows * rows, replace=False)
        grids.append([int(by_class[c][index % len(by_class[c])]) for c in classes])
    return grids


def standard_error(values):
    """Standard error of the mean of `values` (NaN for fewer than two)."""
    values = np.asarray(values, dtype="float64")
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def evaluate_explanations(
    model, images, labels, methods, rows=3, grids=4, removal_images=32, randomisation_images=8, fractions=DEFAULT_FRACTIONS,
    confidence=0.5, seed=0, progress=None, usable=None, saved=None,
):
    """Scores every method in `methods` on the same images; returns a JSON-ready report.

    Args:
        model: a zoo model.
        images, labels: labelled test images.
        methods: from `explanation_methods`.
        rows: grid side `n` of the localisation grids.
        grids: number of localisation grids.
        removal_images: images of the pixel-removal curves.
        randomisation_images: images of the randomisation check.
        fractions: pixel shares removed.
        confidence: an image is usable when classified correctly with a
            target probability above this.
        seed: selection seed.
        progress: optional callable `progress(step_name)` called after every step.
        usable: optional indices of the images to draw from (e.g. those that
            every compared model classifies correctly and confidently, so
            all models are scored on the same images); by default this
            model's own confident, correct images.
        saved: optional `evaluation_cache.MethodScores`: a method whose
            entry it holds under its key is not computed again, and each
            method computed is saved as soon as it is done (a stopped run
            resumes where it stopped).

    Returns:
        dict: `usable_images` and, per method, `localisation` (mean, its
        standard error over grids, per grid), `pixel_removal_least` / `_most`
        (curve, area, the area's standard error over images) and
        `randomisation` (rank correlation per cascade step, and after the
        full cascade).
    """
    labels = np.asarray(labels)
    usable = confident_correct(model, images, labels, threshold=confidence) if usable is None else np.asarray(usable)
    rng = np.random.default_rng(seed)
    removal = rng.permutation(usable)[:removal_images]
    randomised = removal[:randomisation_images]
    grid_indices = distinct_class_grids(labels, usable, rows, grids, seed=seed)
    report = {"usable_images": len(usable), "evaluated_images": len(images), "grid_rows": rows, "grids": grids, "methods": {}}
    for name, explain in methods.items():
        entry = saved.load(name) if saved is not None else None
        if entry is not None and not _scores_as_saved(entry, model, images, labels, explain, grid_indices[0], rows):
            entry = None  # the method's code changed since: its maps are not those scored
        if entry is None:
            entry = _score_method(model, images, labels, explain, grid_indices, removal, randomised, rows, fractions, seed)
            if saved is not None:
                saved.save(name, entry)
        report["methods"][name] = entry
        if progress is not None:
            progress(name)
    return report


def _scores_as_saved(entry, model, images, labels, explain, first_grid, rows, tolerance=1e-4):
    """Whether `explain` still gives a saved entry's localisation on the protocol's first grid.

    The saved entry's key names the weights, images and protocol but not the
    method's code; rescoring one grid (a few maps) catches a map whose
    definition changed since the entry was written.
    """
    try:
        saved_score = float(entry["localisation"]["per_grid"][0])
        if not all("per_image" in entry[f"pixel_removal_{order}"] for order in ("least", "most")):
            return False  # saved before the per-image areas were kept: no paired removal differences from it
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    scores = localisation_scores(model, images[first_grid], labels[first_grid], rows, attribution=explain)["scores"]
    return abs(float(np.mean(scores)) - saved_score) <= tolerance


def _score_method(model, images, labels, explain, grid_indices, removal, randomised, rows, fractions, seed):
    """One method's localisation, pixel-removal and randomisation entry of `evaluate_explanations`."""
    entry = {}
    scores = [localisation_scores(model, images[cells], labels[cells], rows, attribution=explain)["scores"] for cells in grid_indices]
    per_grid = [float(np.mean(s)) for s in scores]
    entry["localisation"] = {"mean": float(np.mean(per_grid)), "standard_error": standard_error(per_grid), "per_grid": per_grid}
    maps = np.asarray(explain(model, images[removal], labels[removal]))
    for order in ("least", "most"):
        curve = pixel_removal_curve(model, images[removal], maps, labels[removal], fractions=fractions, order=order)
        probabilities, steps = curve["probabilities"], np.diff(curve["fractions"])
        span = float(steps.sum())
        per_image = ((probabilities[:, 1:] + probabilities[:, :-1]) / 2 * steps).sum(axis=1) / span if span > 0 else probabilities[:, 0]
        entry[f"pixel_removal_{order}"] = {
            "fractions": curve["fractions"].tolist(), "curve": curve["curve"].tolist(), "area": curve["area"],
            "standard_error": standard_error(per_image), "images": len(per_image),
            "per_image": [float(v) for v in per_image],  # for differences paired image by image (`own_against_best`)
        }
    steps = cascading_randomisation(model, explain, images[randomised], labels[randomised], seed=seed)
    entry["randomisation"] = {"steps": steps, "final_rank_correlation": steps[-1]["rank_correlation"]}
    return entry


def summary_rows(report, errors=False):
    """`(method, localisation, removal area least-first, most-first, rank corr. after randomisation)` rows.

    With `errors`, each of the first three figures is `(value, standard error)`.
    """
    if errors:
        return [
            (
                name,
                (entry["localisation"]["mean"], entry["localisation"].get("standard_error", float("nan"))),
                (entry["pixel_removal_least"]["area"], entry["pixel_removal_least"].get("standard_error", float("nan"))),
                (entry["pixel_removal_most"]["area"], entry["pixel_removal_most"].get("standard_error", float("nan"))),
                entry["randomisation"]["final_rank_correlation"],
            )
            for name, entry in report["methods"].items()
        ]
    return [
        (
            name,
            entry["localisation"]["mean"],
            entry["pixel_removal_least"]["area"],
            entry["pixel_removal_most"]["area"],
            entry["randomisation"]["final_rank_correlation"],
        )
        for name, entry in report["methods"].items()
    ]


# each measure of `own_against_best`: (report key, the per-unit scores' key, whether higher is better)
PAIRED_MEASURES = {
    "localisation": ("localisation", "per_grid", True),
    "removal least-first": ("pixel_removal_least", "per_image", True),
    "removal most-first": ("pixel_removal_most", "per_image", False),
}


def _figure(entry, key):
    return entry[key]["mean"] if key == "localisation" else entry[key]["area"]


def own_against_best(report, own="inherent"):
    """The model's own map against the best post-hoc method of each measure, as differences paired by grid or image.

    Every method of a report is scored on the same grids and the same
    removal images, so `own - best` is measured unit by unit (a grid for
    localisation, an image for removal) and its standard error is that of
    the mean of the per-unit differences: much smaller than the two
    figures' own standard errors when the images dominate the spread.

    Args:
        report: from `evaluate_explanations`, with the own map among its methods.
        own: the name of the own map's method.

    Returns:
        `{measure: {"best": method, "own", "best_value", "difference", "standard_error", "units", "own_wins"}}`
        for `localisation`, `removal least-first` (higher is better) and
        `removal most-first` (lower is better); `difference` is own - best
        and `own_wins` says whether the own map is the better one. Empty
        when the report has no own map or no post-hoc method.

    Example:
    >>> comparison = own_against_best(report)  # doctest: +SKIP
    >>> comparison["localisation"]["difference"], comparison["localisation"]["standard_error"]  # doctest: +SKIP
    (0.163, 0.008)
    """
    methods = report["methods"]
    rivals = [name for name in methods if name != own and name in POST_HOC]
    if own not in methods or not rivals:
        return {}
    comparison = {}
    for measure, (key, units, higher_is_better) in PAIRED_MEASURES.items():
        pick = max if higher_is_better else min
        best = pick(rivals, key=lambda name: _figure(methods[name], key))
        mine, theirs = methods[own][key].get(units), methods[best][key].get(units)
        if mine is None or theirs is None or len(mine) != len(theirs):
            raise ValueError(f"{measure}: the methods {own!r} and {best!r} were not scored on the same {units[4:]}s; evaluate them together.")
        differences = np.asarray(mine, "float64") - np.asarray(theirs, "float64")
        difference = float(differences.mean())
        comparison[measure] = {
            "best": best, "own": _figure(methods[own], key), "best_value": _figure(methods[best], key),
            "difference": difference, "standard_error": standard_error(differences), "units": len(differences),
            "own_wins": bool(difference > 0 if higher_is_better else difference < 0),
        }
    return comparison
