"""Training recipes of every family's presets, gathered from the families (`zoo/<family>/recipes.py`)."""

from glasszoo.zoo.families import families


def all_recipes():
    """`{preset name: recipe}` of every registered family."""
    table = {}
    for record in families().values():
        for name, spec in record.recipe_table().items():
            if name in table:
                raise ValueError(f"Two families define a recipe named {name!r}.")
            table[name] = dict(spec, family=spec.get("family", record.name))
    return table


def recipe(name):
    """The recipe of a preset name; `KeyError` with the known names otherwise."""
    table = all_recipes()
    if name not in table:
        raise KeyError(f"No training recipe named {name!r}; known: {sorted(table)}.")
    return table[name]
