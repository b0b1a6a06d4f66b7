"""Adam with one learning rate per group of variables, changeable between epochs (ProtoPNet's stages)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="glasszoo")
class StagedAdam(keras.optimizers.Adam):
    """Adam whose learning rate is set per named group of variables.

    ProtoPNet trains its parts at different rates and freezes some of them
    in some stages (warm-up: backbone frozen; last-layer stage: everything
    but the last layer frozen). One optimizer with a rate variable per group
    does that inside a single `model.fit` on every Keras backend: a callback
    sets the rates between epochs, and a rate of 0 leaves a variable exactly
    unchanged (Adam's step is multiplied by it). Variables outside every
    group use `learning_rate`.

    Args:
        learning_rate: rate of variables in no group.
        group_learning_rates: dict group name -> initial rate.
        **kwargs: other `keras.optimizers.Adam` arguments.

    Example:
    >>> optimizer = StagedAdam(1e-3, {"backbone": 0.0, "head": 3e-3})
    >>> optimizer.assign_variable_groups({"backbone": model.backbone.trainable_weights,  # doctest: +SKIP
    ...                                   "head": model.head.trainable_weights})
    >>> optimizer.set_group_learning_rate("backbone", 1e-4)  # doctest: +SKIP
    """

    def __init__(self, learning_rate=1e-3, group_learning_rates=None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._initial_group_rates = {str(k): float(v) for k, v in (group_learning_rates or {}).items()}
        self._group_of_variable = {}
        self._group_rates = {}
        self._group_by_index = []

    def assign_variable_groups(self, groups):
        """Names the group of each variable (`dict group -> list of variables`); call before training."""
        unknown = set(groups) - set(self._initial_group_rates)
        if unknown:
            raise ValueError(f"Groups {sorted(unknown)} have no learning rate; known: {sorted(self._initial_group_rates)}.")
        self._group_of_variable = {id(variable): group for group, variables in groups.items() for variable in variables}

    def build(self, variables):
        super().build(variables)
        for group, rate in self._initial_group_rates.items():
            self._group_rates[group] = self.add_variable((), initializer=keras.initializers.Constant(rate), name=f"learning_rate_{group}")
        self._group_by_index = [self._group_of_variable.get(id(variable)) for variable in variables]

    def update_step(self, gradient, variable, learning_rate):
        group = self._group_by_index[self._get_variable_index(variable)] if self._group_by_index else None
        if group is not None:
            learning_rate = ops.cast(self._group_rates[group], variable.dtype)
        super().update_step(gradient, variable, learning_rate)

    def set_group_learning_rate(self, group, rate):
        """Sets a group's rate (takes effect at the next step)."""
        if group not in self._initial_group_rates:
            raise ValueError(f"Unknown group {group!r}; known: {sorted(self._initial_group_rates)}.")
        self._initial_group_rates[group] = float(rate)
        if group in self._group_rates:
            self._group_rates[group].assign(float(rate))

    def group_learning_rates(self):
        """Current rate of each group, as floats."""
        return {g: float(ops.convert_to_numpy(v)) for g, v in self._group_rates.items()} or dict(self._initial_group_rates)

    def get_config(self):
        return dict(super().get_config(), group_learning_rates=self.group_learning_rates())
