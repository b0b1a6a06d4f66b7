"""The explanation evaluation: grids of distinct classes, every method scored on the same images."""

import numpy as np
import pytest
from glasszoo.explain.explanation_report import (
    distinct_class_grids,
    evaluate_explanations,
    explanation_methods,
    inherent_explanation,
    own_against_best,
    summary_rows,
)


def test_distinct_class_grids():
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 4])
    grids = distinct_class_grids(labels, np.arange(9), rows=2, count=3)
    assert len(grids) == 3
    for cells in grids:
        assert len(cells) == 4 and len(set(labels[cells].tolist())) == 4
    with pytest.raises(ValueError, match="needs 9 classes"):
        distinct_class_grids(labels, np.arange(9), rows=3, count=1)


def test_methods_by_family(tiny_inam, tiny_coda):
    assert inherent_explanation(object()) is None
    assert next(iter(explanation_methods(tiny_coda))) == "inherent"
    with pytest.raises(ValueError, match="Unknown explanation method"):
        explanation_methods(tiny_inam, ["inherent", "lime"])


def test_report_scores_each_method_on_the_pretrained_inam(samples):
    import glasszoo

    images, labels, _ = samples
    model = glasszoo.load("inam_fashion_mnist")
    methods = explanation_methods(model, ["inherent", "saliency"])
    report = evaluate_explanations(model, images, labels, methods, rows=2, grids=2, removal_images=4, randomisation_images=2)
    assert report["usable_images"] >= 20  # correct with probability > 0.5
    rows = summary_rows(report)
    assert [r[0] for r in rows] == ["inherent", "saliency"]
    for _, localisation, least, most, correlation in rows:
        assert 0 <= localisation <= 1 and 0 <= least <= 1 and 0 <= most <= 1 and -1 <= correlation <= 1
    entry = report["methods"]["inherent"]
    assert entry["localisation"]["standard_error"] >= 0 and entry["pixel_removal_least"]["images"] == 4
    assert np.std(entry["localisation"]["per_grid"], ddof=1) / np.sqrt(2) == pytest.approx(entry["localisation"]["standard_error"])
    for (_, (localisation, error), *_), plain in zip(summary_rows(report, errors=True), rows):
        assert localisation == plain[1] and error >= 0
    assert entry["randomisation"]["steps"][0]["rank_correlation"] == pytest.approx(1.0)
    assert len(entry["pixel_removal_least"]["curve"]) == 10
    assert entry["pixel_removal_least"]["area"] > entry["pixel_removal_most"]["area"]
    for order in ("least", "most"):  # the area of the mean curve is the mean of the images' areas
        assert np.mean(entry[f"pixel_removal_{order}"]["per_image"]) == pytest.approx(entry[f"pixel_removal_{order}"]["area"])
    comparison = own_against_best(report)
    rival = report["methods"]["saliency"]
    assert comparison["localisation"]["best"] == "saliency"
    assert comparison["localisation"]["difference"] == pytest.approx(entry["localisation"]["mean"] - rival["localisation"]["mean"])
    assert comparison["removal most-first"]["difference"] == pytest.approx(entry["pixel_removal_most"]["area"] - rival["pixel_removal_most"]["area"])
    assert comparison["removal least-first"]["units"] == 4


def _entry(per_grid, least, most):
    """A report entry holding only what `own_against_best` reads."""
    return {
        "localisation": {"mean": float(np.mean(per_grid)), "per_grid": per_grid},
        "pixel_removal_least": {"area": float(np.mean(least)), "per_image": least},
        "pixel_removal_most": {"area": float(np.mean(most)), "per_image": most},
    }


def test_own_against_best_picks_the_best_rival_of_each_measure_and_pairs_the_units():
    report = {"methods": {
        "inherent": _entry([0.9, 0.8, 0.7], [0.50, 0.60, 0.70, 0.80], [0.30, 0.20, 0.25, 0.15]),
        "occlusion": _entry([0.5, 0.6, 0.4], [0.55, 0.62, 0.74, 0.81], [0.10, 0.12, 0.11, 0.10]),
        "saliency": _entry([0.7, 0.6, 0.5], [0.40, 0.50, 0.60, 0.70], [0.40, 0.30, 0.35, 0.30]),
    }}
    comparison = own_against_best(report)
    localisation, least, most = comparison["localisation"], comparison["removal least-first"], comparison["removal most-first"]
    assert localisation["best"] == "saliency" and localisation["difference"] == pytest.approx(0.2)
    assert localisation["standard_error"] == pytest.approx(0.0, abs=1e-12)  # the same lead on every grid
    assert localisation["own_wins"] and localisation["units"] == 3
    assert least["best"] == "occlusion" and least["difference"] == pytest.approx(-0.03) and not least["own_wins"]
    differences = np.array([-0.05, -0.02, -0.04, -0.01])
    assert least["standard_error"] == pytest.approx(differences.std(ddof=1) / 2)
    assert most["best"] == "occlusion" and most["difference"] == pytest.approx(0.1175) and not most["own_wins"]  # lower is better
    assert own_against_best({"methods": {"saliency": report["methods"]["saliency"]}}) == {}
    report["methods"]["occlusion"]["pixel_removal_least"]["per_image"] = [0.5, 0.6]
    with pytest.raises(ValueError, match="not scored on the same images"):
        own_against_best(report)
