"""Which epoch a training run keeps: validation accuracy, optionally weighed with its own map's localisation.

A family whose explanation is a pixel map (B-cos, CoDA) can fit the
training set better while its maps spread (the B-cos preset: validation
localisation 0.618 after 12 epochs, 0.551 after 25), so a recipe may ask
for the checkpoint with the best `val_accuracy + weight x val_localisation`
instead of the best accuracy alone (recipe key `"checkpoint_selection":
"accuracy+localisation"`, weight `"localisation_weight"`), or for the best
validation accuracy among the epochs whose localisation reaches a floor
(`"accuracy_with_localisation_floor"`, floor `"localisation_floor"`): a
sum lets the localisation's epoch-to-epoch noise (±0.02 on 8 grids)
outweigh accuracy differences of a few tenths of a point.
"""

import keras
import numpy as np

SELECTION_RULES = ("accuracy", "accuracy+localisation", "accuracy_with_localisation_floor")


def validation_localisation(model, images, labels, grids=8, seed=0, rows=3):
    """Localisation (seed 002, eq. 11) of the model's own map on `grids` `rows x rows` grids of validation images.

    Cells hold images of pairwise different classes that the model classifies
    correctly with probability above 0.5.

    Args:
        model: a zoo model with a pixel map (`has_attribution_map`).
        images: validation images `(N, H, W, C)`.
        labels: their integer labels `(N,)`.
        grids: number of grids.
        seed: seed of the grids' choice.
        rows: grid side.

    Returns:
        `{"mean", "standard_error", "grids"}` (the standard error over
        grids), or None when fewer than `rows²` classes have such images
        (a barely trained model).

    Example:
    >>> validation_localisation(model, x_val, y_val, grids=8)["mean"]  # doctest: +SKIP
    0.62
    """
    from glasszoo.explain.explanation_report import confident_correct, distinct_class_grids
    from glasszoo.explain.localisation import localisation_scores

    labels = np.asarray(labels)
    usable = confident_correct(model, images, labels)
    try:
        chosen = distinct_class_grids(labels, usable, rows, grids, seed=seed)
    except ValueError:
        return None
    per_grid = [float(np.mean(localisation_scores(model, images[cells], labels[cells], rows)["scores"])) for cells in chosen]
    spread = float(np.std(per_grid, ddof=1) / np.sqrt(len(per_grid))) if len(per_grid) > 1 else float("nan")
    return {"mean": float(np.mean(per_grid)), "standard_error": spread, "grids": len(per_grid)}


def check_selection_rule(rule):
    """`rule` if it is one of `SELECTION_RULES`; a ValueError naming them otherwise."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"checkpoint_selection must be one of {', '.join(SELECTION_RULES)}; got {rule!r}.")
    return rule


def describe_selection(rule, localisation_weight=0.0, grids=8, floor=None):
    """The card's sentence for a selection rule."""
    if rule == "accuracy":
        return "best validation accuracy"
    if rule == "accuracy_with_localisation_floor":
        return (
            f"best validation accuracy among the epochs whose own map's 3x3-grid localisation ({grids} grids, "
            f"measured each epoch) is at least {floor} (none reaching it: the best localisation)"
        )
    return f"best validation accuracy + {localisation_weight} x 3x3-grid localisation of its own map ({grids} grids, measured each epoch)"


class ValidationLocalisation(keras.callbacks.Callback):
    """Adds the epoch's `val_localisation` and `val_selection` to its logs.

    `val_selection = val_accuracy + weight * val_localisation` (a model
    whose map cannot be measured yet, too few confidently correct classes,
    counts localisation 0). With a `floor`, `val_selection = val_accuracy`
    where `val_localisation >= floor` and `val_localisation - 1` elsewhere,
    so every epoch that reaches the floor ranks above every epoch that
    does not, and among those that do, accuracy alone decides. Put it before the callbacks that read these
    keys (the checkpoint and the CSV log): Keras hands every callback the
    same logs.

    Args:
        images: validation images.
        labels: their integer labels.
        weight: the localisation's weight in `val_selection`.
        grids: grids measured each epoch.
        seed: seed of the grids' choice (the same every epoch).
        floor: the localisation an epoch needs to be ranked by accuracy
            alone (None: the weighted sum; `weight` is then unused).

    Example:
    >>> selection = ValidationLocalisation(x_val, y_val, weight=1.0)
    >>> model.fit(x, y, validation_data=(x_val, y_val),
    ...           callbacks=[selection, BestCheckpoint(path, monitor="val_selection")])  # doctest: +SKIP
    """

    def __init__(self, images, labels, weight=1.0, grids=8, seed=0, floor=None):
        super().__init__()
        self.images, self.labels = images, np.asarray(labels)
        self.weight, self.grids, self.seed = float(weight), int(grids), int(seed)
        self.floor = None if floor is None else float(floor)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "val_accuracy" not in logs:
            return
        measured = validation_localisation(self.model, self.images, self.labels, self.grids, self.seed)
        localisation = measured["mean"] if measured else 0.0
        logs["val_localisation"] = localisation
        if self.floor is None:
            logs["val_selection"] = float(logs["val_accuracy"]) + self.weight * localisation
        else:
            logs["val_selection"] = float(logs["val_accuracy"]) if localisation >= self.floor else localisation - 1.0
