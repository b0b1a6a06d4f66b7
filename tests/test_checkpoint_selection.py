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


def test_floor_rule_ranks_by_accuracy_among_epochs_that_reach_the_floor(monkeypatch):
    import glasszoo.zoo.checkpoint_selection as selection_module

    measured = iter([0.80, 0.90, 0.86, None, 0.84])
    monkeypatch.setattr(
        selection_module, "validation_localisation",
        lambda *args, **kwargs: (lambda value: None if value is None else {"mean": value})(next(measured)),
    )
    selection = ValidationLocalisation(np.zeros((1, 2, 2, 1)), [0], weight=1.0, floor=0.85)
    epochs = [{"val_accuracy": accuracy} for accuracy in (0.95, 0.90, 0.92, 0.97, 0.99)]
    for epoch, logs in enumerate(epochs):
        selection.on_epoch_end(epoch, logs)
    scores = [logs["val_selection"] for logs in epochs]
    # the epochs at 0.90 and 0.86 pass and rank by accuracy; the others rank below them, by localisation
    assert scores[1] == pytest.approx(0.90) and scores[2] == pytest.approx(0.92)
    assert scores[0] == pytest.approx(0.80 - 1.0) and scores[3] == pytest.approx(-1.0) and scores[4] == pytest.approx(0.84 - 1.0)
    assert int(np.argmax(scores)) == 2  # not the most accurate epoch (0.99), which misses the floor
    assert [logs["val_localisation"] for logs in epochs] == [0.80, 0.90, 0.86, 0.0, 0.84]


def test_floor_rule_needs_its_floor_and_names_it_on_the_card(tmp_path, monkeypatch):
    from glasszoo.zoo import recipes
    from glasszoo.zoo.checkpoint_selection import describe_selection
    from glasszoo.zoo.training import train_preset
    from tiny_recipes import tiny_recipe

    assert check_selection_rule("accuracy_with_localisation_floor") == "accuracy_with_localisation_floor"
    sentence = describe_selection("accuracy_with_localisation_floor", grids=8, floor=0.85)
    assert "at least 0.85" in sentence and "8 grids" in sentence
    monkeypatch.setitem(recipes.RECIPES, "tiny_no_floor", tiny_recipe(
        "cnn", epochs=1, checkpoint_selection="accuracy_with_localisation_floor", localisation_grids=4,
    ))
    with pytest.raises(ValueError, match="needs a localisation_floor"):
        train_preset("tiny_no_floor", tmp_path / "preset", work_dir=tmp_path / "work", grid=False, verbose=0, max_train=64)
    assert not (tmp_path / "preset").exists()
