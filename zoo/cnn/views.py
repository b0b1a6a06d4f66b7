"""Matplotlib views of the CNN baseline's class activation maps (CAM), drawn from the explanation outputs alone.

NumPy and matplotlib only: the same functions draw `glasszoo explain` (Keras)
and `glasszoo predict --out` (ONNX) pictures.
"""

import numpy as np
from glasszoo.explain.figures import class_names_or_indices, new_figure, overlay_signed, predicted_class, save, show_image

__all__ = ["REQUIRED_OUTPUTS", "cam_grid", "draw", "draw_overview"]

# outputs the pictures read, with their rank (batch axis included)
REQUIRED_OUTPUTS = {"logits": 2, "class_activation_map": 3}


def cam_grid(images, maps, titles, path=None, columns=4):
    """Each image beside its class activation map overlaid on it (jet, 45% opacity).

    Args:
        images: `(B, H, W, C)` in [0, 1].
        maps: `(B, H, W)` CAMs (any scale; each is shown on its own range).
        titles: one title per image (e.g. the predicted class and its logit).
        path: png file to write.
        columns: image pairs per row.

    Returns:
        the figure.
    """
    count = len(images)
    columns = max(1, min(int(columns), count))
    rows = -(-count // columns)
    figure, axes = new_figure(rows, 2 * columns, width=1.6, height=1.8)
    for axis in axes.ravel():
        axis.axis("off")
    for index, (image, cam, title) in enumerate(zip(images, maps, titles)):
        row, col = divmod(index, columns)
        show_image(axes[row, 2 * col], image)
        axes[row, 2 * col].set_title(title, fontsize=7)
        show_image(axes[row, 2 * col + 1], image)
        axes[row, 2 * col + 1].imshow(np.asarray(cam), cmap="jet", alpha=0.45)
        axes[row, 2 * col + 1].set_title("CAM", fontsize=7)
    return save(figure, path)


def draw(image, outputs, index, class_names=None):
    """One explained image and its signed CAM over it (explained class)."""
    image = np.asarray(image, dtype="float32")
    logits, k, names = predicted_class(outputs, index, class_names)
    figure, axes = new_figure(1, 2)
    show_image(axes[0, 0], image)
    axes[0, 0].set_title("image")
    shown = overlay_signed(axes[0, 1], image, np.asarray(outputs["class_activation_map"][index], dtype="float64"))
    axes[0, 1].set_title(f"CAM: {names[k]}")
    figure.colorbar(shown, ax=axes[0, 1], shrink=0.8)
    figure.suptitle(f"predicted: {names[k]} (logit {logits[k]:.3g})")
    return figure


def draw_overview(images, outputs, class_names=None):
    """Every explained image beside its CAM (`cam_grid`), titled with the predicted class and its logit."""
    logits = np.asarray(outputs["logits"], dtype="float64")
    names = class_names_or_indices(class_names, logits.shape[1])
    predicted = logits.argmax(-1)
    titles = [f"{names[p]} ({logits[i, p]:.2f})" for i, p in enumerate(predicted)]
    return cam_grid(images, outputs["class_activation_map"], titles)
