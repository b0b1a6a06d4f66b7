"""Training recipes: every family's (`zoo/<family>/recipes.py`) and those registered at run time.

Example:
>>> from glasszoo.zoo import recipes
>>> recipes.RECIPES["my_inam"] = dict(recipes.recipe("inam_mnist"), epochs=3)  # doctest: +SKIP
>>> # glasszoo.zoo.training.train_preset("my_inam", "runs/my_inam/preset")
"""

from glasszoo.zoo.families import families

# recipes added at run time (yours); a name here replaces a family's recipe of the same name
RECIPES = {}


def family_recipes():
    """`{preset name: recipe}` of every registered family."""
    table = {}
    for record in families().values():
        for name, spec in record.recipe_table().items():
            if name in table:
                raise ValueError(f"Two families define a recipe named {name!r}.")
            table[name] = dict(spec, family=spec.get("family", record.name))
    return table


def all_recipes():
    """`{preset name: recipe}`: the families' recipes and `RECIPES`."""
    return dict(family_recipes(), **RECIPES)


def recipe(name):
    """The recipe of a preset name; `KeyError` with the known names otherwise."""
    table = all_recipes()
    if name not in table:
        raise KeyError(f"No training recipe named {name!r}; known: {sorted(table)}.")
    return table[name]
