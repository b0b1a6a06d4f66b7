"""Matplotlib views of the CNN baseline's class activation maps (CAM)."""

import numpy as np
from glasszoo.explain.figures import new_figure, save, show_image

__all__ = ["cam_grid"]


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
