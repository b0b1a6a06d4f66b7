"""Tiny training recipes and per-example training setups from the family registry (resume and distribution tests).

Also imported by test subprocesses (`tiny_models.subprocess_env` puts tests/ on their path).

A family's training step may depend on more than each example on its own:
random masks (dropout), loss terms over the whole batch (a minimum over it)
and BatchNorm on batch statistics. The tests that compare one device with
several replicas switch these off through the generic knobs below, applied
only where a family's model accepts them (its constructor's arguments, its
attributes); what cannot be switched off (BatchNorm without a frozen mode)
is reported, so the tests widen their tolerance for it.
"""

import inspect

from tiny_models import build, family_names

RANDOM_ARGUMENTS = {"dropout": 0.0}  # random masks: replicas draw other masks than one device does
BATCH_ARGUMENTS = {"r1_weight": 0.0}  # loss terms over the whole batch (each replica sees half of it)
BATCH_ATTRIBUTES = {"frozen_feature_statistics": True}  # BatchNorm in inference mode (fixed statistics)
BATCH_NORM_LAYERS = ("BatchNormalization",)


def model_class(family):
    from glasszoo.zoo.families import families

    return families()[family].model_class()


def accepted_arguments(family, arguments):
    """The entries of `arguments` that the family's model constructor takes."""
    parameters = inspect.signature(model_class(family).__init__).parameters
    return {name: value for name, value in arguments.items() if name in parameters}


def is_staged(family):
    """True for a family trained in stages (`training_schedule` returns a callback that sets the epochs)."""
    from glasszoo.zoo.base import ZooModel

    return model_class(family).training_schedule is not ZooModel.training_schedule


def _layer_kinds(model):
    return {type(layer).__name__ for layer in model._flatten_layers(include_self=False)}


def build_deterministic(family, seed=0, per_example=False):
    """The tiny model without random masks; `per_example`: also without batch-wide terms and batch statistics.

    Returns `(model, setup)`: setup has `arguments` and `attributes` applied,
    `batch_coupled` (what the step shares across the batch as built: the
    family's defaults for these) and `batch_statistics` (BatchNorm that still
    normalises with the statistics of each (per-replica) batch).
    """
    arguments = accepted_arguments(family, RANDOM_ARGUMENTS)
    batch_arguments = accepted_arguments(family, BATCH_ARGUMENTS)
    if per_example:
        arguments.update(batch_arguments)
    model = build(family, seed, **arguments)
    attributes = {name: value for name, value in BATCH_ATTRIBUTES.items() if hasattr(model, name)}
    if per_example:
        for name, value in attributes.items():
            setattr(model, name, value)
    batch_norm = bool(_layer_kinds(model) & set(BATCH_NORM_LAYERS))
    batch_statistics = batch_norm and not (per_example and attributes)
    setup = {
        "arguments": arguments,
        "attributes": attributes if per_example else {},
        "batch_coupled": sorted(batch_arguments) + sorted(attributes) + (["BatchNormalization"] if batch_norm else []),
        "batch_statistics": batch_statistics,
    }
    return model, setup


def plain_family():
    """The first registered family whose tiny model trains without stages, random masks or batch coupling.

    The training-machinery tests train it in several processes, so a family whose compiled steps are not
    XLA-compiled here (`model.jit_compile` after `compile()`) comes first: XLA compiles each step function
    in seconds, in every process.
    """
    plain = []
    for family in family_names():
        if is_staged(family) or accepted_arguments(family, dict(RANDOM_ARGUMENTS, **BATCH_ARGUMENTS)):
            continue
        model, setup = build_deterministic(family)
        if setup["batch_coupled"] or "Dropout" in _layer_kinds(model):
            continue
        model.compile()
        if not model.jit_compile:
            return family
        plain.append(family)
    if plain:
        return plain[0]
    raise LookupError("No registered family trains without stages, random masks or batch coupling.")


def tiny_recipe(family=None, **changes):
    """A `glasszoo.zoo.recipes` recipe of the family's tiny test model on the 5,000 MNIST digits (default: `plain_family()`)."""
    from glasszoo.zoo.families import families

    family = plain_family() if family is None else family
    recipe = {
        "family": family,
        "dataset": "mnist_5k",
        "description": f"tiny {family} for a test of the training machinery",
        "config": dict(families()[family].test_config),
        "grid": [],
        "validation_size": 200,
        "batch_size": 32,
        "grid_batch_size": 32,
        "epochs": 4,
        "grid_epochs": 0,
        "learning_rate": 1e-3,
        "schedule": "plateau",
    }
    recipe.update(changes)
    return recipe
