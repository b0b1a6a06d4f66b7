"""The zoo: the family protocol (`base.ZooModel`), family registration (`families`), presets, training.

Each family is one sub-package, `zoo/<family>/`, whose `__init__.py` holds
its `Family` record (no Keras import) and whose modules hold its model,
views, recipes and what only that family needs.
"""
