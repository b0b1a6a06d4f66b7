"""ProtoPNet's training stages as one Keras callback: warm-up, joint, push, last layer, inside `model.fit`."""

import json
import os
import pathlib
import time

import keras
import numpy as np
from glasszoo.zoo.protopnet.optimizer import StagedAdam

DEFAULT_RATES = {
    "warm": {"backbone": 0.0, "add_on": 3e-3, "prototypes": 3e-3, "last_layer": 0.0},
    "joint": {"backbone": 1e-4, "add_on": 3e-3, "prototypes": 3e-3, "last_layer": 0.0},
    "last_layer": {"backbone": 0.0, "add_on": 0.0, "prototypes": 0.0, "last_layer": 1e-4},
}


class ProtoPNetSchedule(keras.callbacks.Callback):
    """Runs ProtoPNet's stages inside one `model.fit(..., epochs=schedule.total_epochs)`.

    Epochs: `warm_epochs` with the backbone (and its BatchNorm statistics) frozen (add-on and prototypes
    train, last layer fixed at its class-connection initialisation); then
    `cycles` times: `joint_epochs` of joint training (backbone too; the
    joint rates are multiplied by `joint_decay` every `joint_decay_every`
    joint epochs), a push of the prototypes onto training patches of their
    class at the start of the next epoch, and `last_layer_epochs` in which
    only the last layer trains (BatchNorm statistics frozen, so the pushed
    prototypes stay equal to the patches their provenance names). Rates are set on the model's `StagedAdam`
    (its default optimizer), so frozen parts stay exactly unchanged.

    With a time budget (`set_time_budget`), no cycle starts that would end
    past it, judged by the last cycle's duration: training stops after the
    last-layer stage of the last cycle that fits, so it always ends on
    pushed prototypes.

    The best epoch by `monitor` among the epochs after a push (when the
    prototypes are real training patches) is kept: its weights go to
    `best_weights_path` and its provenance beside them, if a `work_dir` is
    given. Each epoch's logs get `stage` (0 warm, 1 joint, 2 last layer)
    and `pushed` (1 after a push).

    Args:
        push_images: training images without augmentation `(N, H, W, C)`.
        push_labels: their int labels `(N,)`.
        warm_epochs, joint_epochs, last_layer_epochs, cycles: the plan.
        rates: per-stage dicts of group rates (default: the reference's).
        joint_decay, joint_decay_every: the joint stage's step decay.
        work_dir: where the latest provenance and the best pushed
            checkpoint are written (resumable); None keeps them in memory.
        monitor: the logged metric that picks the best pushed epoch.
        push_batch_size: images per forward pass of the push.
        distinct_push: push no two prototypes of a class onto the same patch.
        initial_push: also push before the first epoch, so that training
            starts from prototypes that are patches of their class rather
            than random points (for a fine-tune whose new prototypes start
            far from every image's latent patches).

    Example:
    >>> schedule = ProtoPNetSchedule(x_train, y_train, warm_epochs=1, joint_epochs=2, last_layer_epochs=1)
    >>> model.compile()  # doctest: +SKIP
    >>> model.fit(x_train, y_train, epochs=schedule.total_epochs, callbacks=[schedule])  # doctest: +SKIP
    """

    STAGES = ("warm", "joint", "last_layer")

    def __init__(
        self,
        push_images,
        push_labels,
        warm_epochs=5,
        joint_epochs=10,
        last_layer_epochs=20,
        cycles=1,
        rates=None,
        joint_decay=0.1,
        joint_decay_every=5,
        work_dir=None,
        monitor="val_accuracy",
        push_batch_size=128,
        distinct_push=False,
        initial_push=False,
    ):
        super().__init__()
        self.push_images, self.push_labels = push_images, np.asarray(push_labels).reshape(-1)
        self.warm_epochs, self.joint_epochs, self.last_layer_epochs, self.cycles = (
            int(warm_epochs), int(joint_epochs), int(last_layer_epochs), int(cycles),
        )
        if self.joint_epochs < 0 or self.warm_epochs < 0 or self.last_layer_epochs < 1 or self.cycles < 1:
            raise ValueError("ProtoPNetSchedule needs last_layer_epochs >= 1, cycles >= 1 and non-negative warm/joint epochs.")
        self.rates = {stage: dict(DEFAULT_RATES[stage], **(rates or {}).get(stage, {})) for stage in self.STAGES}
        self.joint_decay, self.joint_decay_every = float(joint_decay), int(joint_decay_every)
        self.work_dir = pathlib.Path(work_dir) if work_dir else None
        self.monitor, self.push_batch_size, self.distinct_push = monitor, int(push_batch_size), bool(distinct_push)
        self.initial_push = bool(initial_push)
        self.best, self.pushed = None, False
        self.max_seconds, self._started, self._cycle_started, self.cycles_run = None, None, None, 0

    def set_time_budget(self, seconds):
        """Ends training at the end of the last cycle that fits in `seconds` of wall time from the start of `fit`.

        Args:
            seconds: float, or None for no budget (the whole plan runs).
        """
        self.max_seconds = None if seconds is None else float(seconds)

    @property
    def total_epochs(self):
        return self.warm_epochs + self.cycles * (self.joint_epochs + self.last_layer_epochs)

    def _cycle_offset(self, epoch):
        """The epoch's index within its joint/push/last-layer cycle (None in the warm-up or past the plan)."""
        if epoch < self.warm_epochs:
            return None
        cycle, offset = divmod(epoch - self.warm_epochs, self.joint_epochs + self.last_layer_epochs)
        return offset if cycle < self.cycles else None

    def plan(self, epoch):
        """`(stage, joint epochs before this one, push at the start of this epoch)` of a 0-based epoch."""
        if epoch < self.warm_epochs:
            return "warm", 0, False
        cycle, offset = divmod(epoch - self.warm_epochs, self.joint_epochs + self.last_layer_epochs)
        if cycle >= self.cycles:  # epochs past the plan keep training the last layer
            return "last_layer", self.cycles * self.joint_epochs, False
        if offset < self.joint_epochs:
            return "joint", cycle * self.joint_epochs + offset, False
        return "last_layer", (cycle + 1) * self.joint_epochs, offset == self.joint_epochs

    # -- paths -------------------------------------------------------------------------------
    def _path(self, name):
        return None if self.work_dir is None else self.work_dir / name

    @property
    def best_weights_path(self):
        return self._path("best_pushed.weights.h5")

    # -- callback hooks ------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._started = time.monotonic()
        if not isinstance(self.model.optimizer, StagedAdam):
            raise ValueError(
                "ProtoPNetSchedule sets per-part learning rates: compile the model with its default optimizer "
                f"(model.compile() or StagedAdam), not {type(self.model.optimizer).__name__}."
            )
        if self.work_dir is None:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        latest, state = self._path("latest_provenance.npz"), self._path("schedule_state.json")
        if latest.exists():  # resuming after an interruption: the prototypes in the restored weights came from this push
            self.model.load_provenance(latest)
        if state.exists():
            saved = json.loads(state.read_text())
            self.best, self.pushed = saved.get("best"), saved.get("pushed", False)

    def on_epoch_begin(self, epoch, logs=None):
        stage, joint_done, push_now = self.plan(epoch)
        if self._cycle_offset(epoch) == 0:
            self._cycle_started = time.monotonic()
        rates = dict(self.rates[stage])
        if stage == "joint" and self.joint_decay_every > 0:
            factor = self.joint_decay ** (joint_done // self.joint_decay_every)
            rates = {group: rate * factor for group, rate in rates.items()}
        for group, rate in rates.items():
            self.model.optimizer.set_group_learning_rate(group, rate)
        frozen = stage != "joint"
        if frozen != self.model.frozen_feature_statistics:  # BatchNorm mode is fixed when a step is traced
            self.model.frozen_feature_statistics = frozen
            self.model.make_train_function(force=True)
        if stage != "last_layer":
            self.pushed = False
        if epoch == 0 and self.initial_push:  # prototypes start on patches of their class; they move in training
            self.model.push_prototypes(self.push_images, self.push_labels, batch_size=self.push_batch_size, distinct=self.distinct_push)
        if push_now:
            self.model.push_prototypes(self.push_images, self.push_labels, batch_size=self.push_batch_size, distinct=self.distinct_push)
            self.pushed = True
            if self.work_dir is not None:
                self.model.save_provenance(self._path("latest_provenance.npz"))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        stage = self.plan(epoch)[0]
        logs["stage"] = float(self.STAGES.index(stage))
        logs["pushed"] = float(self.pushed)
        value = logs.get(self.monitor)
        if self.pushed and value is not None and (self.best is None or value > self.best):
            self.best = float(value)
            if self.work_dir is not None:
                weights = self.best_weights_path
                partial = weights.with_name("partial_" + weights.name)
                self.model.save_weights(str(partial))
                os.replace(partial, weights)
                self.model.save_provenance(self._path("best_provenance.npz"))
        if self._cycle_offset(epoch) == self.joint_epochs + self.last_layer_epochs - 1:  # a cycle's last epoch
            self.cycles_run += 1
            now = time.monotonic()
            if self.max_seconds is not None and self._cycle_started is not None and self._started is not None:
                if now - self._started + (now - self._cycle_started) > self.max_seconds:
                    self.model.stop_training = True  # the next cycle would end past the budget
        if self.work_dir is not None:
            state = self._path("schedule_state.json")
            partial = state.with_name(state.name + ".partial")
            partial.write_text(json.dumps({"best": self.best, "pushed": self.pushed, "epoch": epoch + 1}))
            os.replace(partial, state)

    def restore_best(self, model=None):
        """Loads the best pushed epoch's weights and provenance into `model` (the trained model by default)."""
        model = model or self.model
        if self.work_dir is None or not self.best_weights_path.exists():
            raise FileNotFoundError("No pushed epoch was checkpointed (give a work_dir and train past the first push).")
        model.load_weights(str(self.best_weights_path))
        model.load_provenance(self._path("best_provenance.npz"))
        return model

    # -- what `glasszoo train` records and selects -------------------------------------
    def describe(self):
        """The model card's description of the staged training: optimizer, stages, checkpoint selection."""
        return {
            "optimizer": "StagedAdam: per-part rates by stage " + json.dumps(self.rates)
            + f"; joint rates x{self.joint_decay} every {self.joint_decay_every} joint epochs",
            "stages": {
                "warm_epochs": self.warm_epochs, "joint_epochs": self.joint_epochs,
                "last_layer_epochs": self.last_layer_epochs, "cycles": self.cycles,
                "time_budget_s": self.max_seconds, "cycles_run": self.cycles_run,
                "push": "at the start of each last-layer stage, onto the fit split (un-augmented)",
            },
            "checkpoint_selection": "best validation accuracy among epochs after a push",
        }

    @staticmethod
    def selectable(row):
        """Whether an epoch of the training log may be chosen as the best one: only epochs after a push."""
        return row.get("pushed") == 1.0

