"""The explanation evaluation: grids of distinct classes, every method scored on the same images."""

import numpy as np
import pytest
from glasszoo.explain.explanation_report import (
    distinct_class_grids,
    evaluate_explanations,
    explanation_methods,
    inherent_explanation,
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
