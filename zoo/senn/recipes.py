"""Training recipes of the senn presets: data, split, grid, epochs (`glasszoo train NAME`)."""

RECIPES = {}
