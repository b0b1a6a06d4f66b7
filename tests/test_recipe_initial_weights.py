"""A recipe that starts from another preset's weights (`initial_weights`): what is copied and what the card records."""

import json

import numpy as np
import pytest
from glasszoo.zoo.training import _initialise
from tiny_models import build


def test_initial_weights_are_copied_and_recorded(tmp_path):
    start = build("cnn", seed=1)
    folder = start.save_preset(tmp_path / "start")
    model = build("cnn", seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), start.get_weights()))
    record = _initialise(model, {"initial_weights": str(folder)})
    for a, b in zip(model.get_weights(), start.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert record["preset"] == str(folder) and record["layers_copied"] > 0
    card = json.loads((folder / "metadata.json").read_text())
    assert record["weights"] == "sha256:" + card["weights_sha256"]
    assert _initialise(model, {}) is None  # a recipe from scratch


def test_initial_weights_that_fit_nothing_are_refused(tmp_path):
    folder = build("cnn", seed=1).save_preset(tmp_path / "start")
    other = build("inam", seed=2)
    with pytest.raises(ValueError, match="no layer of it fits"):
        _initialise(other, {"initial_weights": str(folder)})
