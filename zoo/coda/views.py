"""Views of CoDA contribution maps (seed 002, Figures 2 and 7): the generic pixel-map views of `explain.map_views`.

`draw` and `draw_overview` read the explanation outputs alone (NumPy and
matplotlib), so the same code draws the pictures of `glasszoo explain`
(Keras) and of `glasszoo predict --out` (ONNX).
"""

from glasszoo.explain.map_views import (
    contribution_grid,
    contribution_view,
    draw_map,
    draw_map_overview,
    localisation_view,
    map_model_views,
    predicted_and_strongest_other,
)

__all__ = [
    "REQUIRED_OUTPUTS",
    "contribution_grid",
    "contribution_view",
    "draw",
    "draw_overview",
    "localisation_view",
    "model_views",
    "predicted_and_strongest_other",
]

# outputs the pictures read, with their rank (batch axis included)
REQUIRED_OUTPUTS = {"logits": 2, "contributions": 3}


def draw(image, outputs, index, class_names=None):
    """One explained image: the image, its contribution map (explained class) and the map over the image."""
    return draw_map(image, outputs, index, class_names, map_output="contributions", activation="sigmoid")


def draw_overview(images, outputs, class_names=None):
    """Several explained images, one row each: the image and its contribution map."""
    return draw_map_overview(images, outputs, class_names, map_output="contributions", activation="sigmoid")


model_views = map_model_views
