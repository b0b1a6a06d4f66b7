"""Views of B-cos explanations: the contribution map of the explained class and, for colour inputs, the
paper's rendering of the dynamic linear map as an RGBA image.

`draw` and `draw_overview` read the explanation outputs alone (NumPy and
matplotlib): the same code draws `glasszoo explain` (Keras) and `glasszoo
predict --out` (ONNX) pictures. `model_views` adds the maps of the predicted
and the strongest other class and a 3x3 localisation grid.
"""

import numpy as np
from glasszoo.explain.figures import new_figure, predicted_class, show_image, show_signed
from glasszoo.explain.map_views import draw_map, draw_map_overview, map_model_views

__all__ = ["REQUIRED_OUTPUTS", "draw", "draw_overview", "linear_map_rgba", "model_views"]

# outputs the pictures read, with their rank (batch axis included)
REQUIRED_OUTPUTS = {"logits": 2, "contributions": 3, "linear_map": 4}
ALPHA_PERCENTILE = 99.5


def linear_map_rgba(linear_map, contributions, percentile=ALPHA_PERCENTILE):
    """The dynamic linear map of an RGB input as an RGBA image `(H, W, 4)` (B-cos paper, Fig. 1).

    The encoded input is `[r, g, b, 1 - r, 1 - g, 1 - b]`; at every pixel the
    colour of channel c is the share of its positive weight on `c` against
    `1 - c` (the colour the unit is aligned with), and the opacity is the
    positive contribution scaled by its `percentile`-th percentile over the
    image, so only the evidence for the class is shown.

    Args:
        linear_map: `(H, W, 6)` weights `W(x)_c` on the encoded input.
        contributions: `(H, W)` contribution map of the same class.
        percentile: the contribution that gets full opacity.
    """
    weights = np.maximum(np.asarray(linear_map, dtype="float64"), 0.0)
    channels = weights.shape[-1] // 2
    direct, complement = weights[..., :channels], weights[..., channels:]
    colour = direct / np.maximum(direct + complement, 1e-12)
    positive = np.maximum(np.asarray(contributions, dtype="float64"), 0.0)
    peak = np.percentile(positive, percentile) if positive.any() else 1.0
    alpha = np.clip(positive / max(peak, 1e-12), 0.0, 1.0)
    return np.concatenate([colour, alpha[..., None]], axis=-1)


def draw(image, outputs, index, class_names=None):
    """One explained image: image, contribution map and overlay; for RGB inputs the RGBA linear map instead of the overlay."""
    image = np.asarray(image, dtype="float32")
    if image.shape[-1] != 3 or np.shape(outputs["linear_map"])[-1] != 6:  # the rendering needs RGB in [x, 1 - x]
        return draw_map(image, outputs, index, class_names, map_output="contributions", activation="sigmoid")
    logits, k, names = predicted_class(outputs, index, class_names)
    contributions = np.asarray(outputs["contributions"][index], dtype="float64")
    figure, axes = new_figure(1, 3)
    show_image(axes[0, 0], image)
    axes[0, 0].set_title("image")
    shown = show_signed(axes[0, 1], contributions)
    axes[0, 1].set_title(f"contributions: {names[k]}\n(sum {contributions.sum():.3g})")
    figure.colorbar(shown, ax=axes[0, 1], shrink=0.8)
    show_image(axes[0, 2], np.zeros_like(image))
    axes[0, 2].imshow(linear_map_rgba(outputs["linear_map"][index], contributions))
    axes[0, 2].set_title(f"linear map W(x): {names[k]}")
    figure.suptitle(f"predicted: {names[k]} (logit {logits[k]:.3g})")
    return figure


def draw_overview(images, outputs, class_names=None):
    """Several explained images, one row each: the image and its contribution map."""
    return draw_map_overview(images, outputs, class_names, map_output="contributions", activation="sigmoid")


model_views = map_model_views
