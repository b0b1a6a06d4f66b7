"""`glasszoo calibrate`: after-training settings chosen again on a preset's own validation split, weights unchanged."""

import json

import numpy as np
import pytest

import glasszoo
from glasszoo.cli import main
from glasszoo.zoo.recalibration import apply_settings, card_validation_split, recalibrate_preset

HELD_OUT = "hierarchical_protopnet_fashion_mnist_no_sneaker"


def test_a_preset_is_recalibrated_under_a_new_rule_with_its_weights_unchanged(fashion_mnist, tmp_path, capsys):
    """The shipped no-sneaker preset, recalibrated with the similarity rule: floors are that rule's quantiles on its own split."""
    source = glasszoo.load(HELD_OUT)
    out = tmp_path / "similarity"
    assert main(["calibrate", HELD_OUT, "--set", "placement_evidence=similarity", "--out", str(out)]) == 0
    assert "weights unchanged" in capsys.readouterr().out
    model = glasszoo.load(out)
    assert model.placement_evidence == "similarity" and source.placement_evidence == "confidence"
    for old, new in zip(source.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(old, new)
    card = json.loads((out / "metadata.json").read_text())
    assert card["config"]["placement_evidence"] == "similarity"
    assert card["calibration"]["recalibrated"]["settings"] == {"placement_evidence": "similarity"}
    assert card["calibration"]["recalibrated"]["command"].startswith("glasszoo ")  # the command line (here pytest's)
    assert card["metrics"] == source.preset_metadata["metrics"]  # accuracy is the weights': unchanged
    # the floors are the 5% quantiles of the rule's evidence on the card's validation split (6,000 images of the seen classes)
    x_val, y_val = card_validation_split(card)
    assert len(y_val) == card["data"]["validation_images"] == card["calibration"]["recalibrated"]["validation_images"]
    places, evidence = model.place_evidence(x_val)
    tables = model.tables
    correct = places[:, tables.num_nodes :].argmax(axis=1) == y_val
    sandal = tables.places.index("Sandal") - 1
    through = correct & (tables.class_edges[y_val, sandal] > 0)
    assert model.placement_floors[sandal] == pytest.approx(np.quantile(evidence[through, sandal], 0.05), rel=1e-4)
    placed = tables.placement(places, evidence, model.placement_threshold, model.placement_floors)
    assert card["calibration"]["placement"]["validation_placed_at_their_class"] == pytest.approx(np.mean(placed == tables.num_nodes + y_val), abs=1e-4)


def test_what_cannot_be_recalibrated_is_refused_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["calibrate", HELD_OUT, "--set", "placement_evidence=entropy", "--out", str(out)]) == 2
    assert "placement_evidence must be one of" in capsys.readouterr().err
    assert main(["calibrate", HELD_OUT, "--set", "backbone=resnet", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "'backbone' is not a setting of HierarchicalProtoPNet" in error and "placement_evidence" in error
    assert main(["calibrate", HELD_OUT, "--set", "no_equals_sign", "--out", str(out)]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match="keeps its split in the folder"):
        card_validation_split({"data": {"dataset": "shapes", "folder_sha256": "ab", "validation_images": 10}})
    with pytest.raises(ValueError, match="not a setting"):
        apply_settings(glasszoo.load(HELD_OUT), {"trainable": False})  # Keras's own properties are not settings


def test_a_family_without_after_training_settings_is_refused(fashion_mnist, tmp_path):
    with pytest.raises(ValueError, match="has no settings chosen after training"):
        recalibrate_preset("cnn_fashion_mnist", tmp_path / "cnn")
    assert not (tmp_path / "cnn").exists()
