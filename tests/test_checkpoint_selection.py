"""A recipe can keep the epoch with the best validation accuracy + weight x localisation of the model's own map.

`ValidationLocalisation` adds `val_localisation` and `val_selection` to each
epoch's logs; `train_preset` then checkpoints, logs and reports the epoch
with the best `val_selection` (recipe key `checkpoint_selection`), and
refuses the rule where it cannot be measured.
"""

import numpy as np
import pytest
from glasszoo.zoo.checkpoint_selection import ValidationLocalisation, check_selection_rule, validation_localisation
from tiny_models import build


def _digits():
    from glasszoo.data import load_dataset

    data = load_dataset("mnist_5k")
    return data.x_train[:3000], data.y_train[:3000], data.x_test, data.y_test


def test_callback_adds_localisation_and_selection_to_the_logs():
    import keras

    x, y, x_val, y_val = _digits()
    keras.utils.set_random_seed(0)
    model = build("cnn", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    selection = ValidationLocalisation(x_val, y_val, weight=2.0, grids=4, seed=3)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(dict(logs))

    model.fit(x, y, epochs=8, batch_size=32, validation_data=(x_val, y_val), callbacks=[selection, Record()], verbose=0)
    last = seen[-1]
    measured = validation_localisation(model, x_val, y_val, grids=4, seed=3)
    assert measured is not None, "the tiny CNN should classify 9 digit classes confidently after 8 epochs"
    assert last["val_localisation"] == pytest.approx(measured["mean"], abs=1e-6)
    assert 0.0 < last["val_localisation"] <= 1.0
    for logs in seen:
        assert logs["val_selection"] == pytest.approx(logs["val_accuracy"] + 2.0 * logs["val_localisation"])


def test_training_keeps_the_epoch_with_the_best_selection(tmp_path, monkeypatch):
    from glasszoo.zoo import recipes
    from glasszoo.zoo.training import train_preset
    from tiny_recipes import tiny_recipe

    monkeypatch.setitem(recipes.RECIPES, "tiny_selection", tiny_recipe(
        "cnn", epochs=8, learning_rate=1e-2, validation_size=1000, checkpoint_selection="accuracy+localisation",
        localisation_weight=1.0, localisation_grids=4,
    ))
    card = train_preset("tiny_selection", tmp_path / "preset", work_dir=tmp_path / "work", grid=False, verbose=0)
    history = card["history"]
    assert all("val_selection" in row and "val_localisation" in row for row in history)
    assert max(row["val_localisation"] for row in history) > 0.0  # measured, not the fallback of an untrained model
    best = max(history, key=lambda row: row["val_selection"])
    assert card["training"]["best_epoch"] == best["epoch"]
    assert "localisation" in card["training"]["checkpoint_selection"]
    # the preset holds the kept epoch's weights: its validation accuracy is that epoch's
    assert card["metrics"]["validation_accuracy"] == pytest.approx(best["val_accuracy"], abs=2e-3)


def test_rule_is_refused_where_it_cannot_be_measured(tmp_path, monkeypatch):
    from glasszoo.zoo import recipes
    from glasszoo.zoo.training import train_preset
    from tiny_recipes import tiny_recipe

    with pytest.raises(ValueError, match="checkpoint_selection must be one of"):
        check_selection_rule("localisation")
    monkeypatch.setitem(recipes.RECIPES, "tiny_no_map", tiny_recipe(
        "prototypedl", epochs=1, checkpoint_selection="accuracy+localisation", localisation_weight=1.0,
    ))
    with pytest.raises(ValueError, match="needs a family with its own pixel map"):
        train_preset("tiny_no_map", tmp_path / "preset", work_dir=tmp_path / "work", grid=False, verbose=0, max_train=64)
    assert not (tmp_path / "preset").exists()
