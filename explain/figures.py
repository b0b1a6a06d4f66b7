"""Drawing helpers shared by the explanation views: figures without pyplot, images, signed maps."""

import numpy as np
from matplotlib.figure import Figure

DIVERGING_CMAP = "bwr"
SAVE_DPI = 120
PANEL_INCHES = 2.4


def new_figure(rows, cols, width=PANEL_INCHES, height=PANEL_INCHES):
    """Figure and a `(rows, cols)` array of axes, without pyplot state or a GUI backend."""
    figure = Figure(figsize=(cols * width, rows * height), layout="constrained")
    return figure, figure.subplots(rows, cols, squeeze=False)


def save(figure, path):
    """Saves `figure` as png when `path` is given; returns the figure."""
    if path is not None:
        figure.savefig(path, dpi=SAVE_DPI)
    return figure


def bare(axis):
    axis.set_xticks([])
    axis.set_yticks([])


def show_signed(axis, values, bound=None):
    """Signed 2-D map with the diverging colormap, symmetric around 0 (red positive, blue negative)."""
    if bound is None:
        bound = float(np.max(np.abs(values)))
    bound = max(float(bound), 1e-12)
    bare(axis)
    return axis.imshow(values, cmap=DIVERGING_CMAP, vmin=-bound, vmax=bound)


def show_image(axis, image):
    """Input image `(H, W, C)` in [0, 1]: gray for 1 channel, RGB for 3."""
    bare(axis)
    image = np.clip(image, 0.0, 1.0)
    if image.shape[-1] == 1:
        return axis.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    return axis.imshow(image)


def check_index(index, size, what):
    """`int(index)` if it is in `[0, size)`, else a ValueError naming `what`."""
    if not 0 <= int(index) < size:
        raise ValueError(f"{what} must be in [0, {size}); got {index}.")
    return int(index)


def class_names_or_indices(class_names, num_classes):
    return list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]


def file_slug(name):
    """A name as a file-name part ("T-shirt/top" -> "T-shirt-top", "Ankle boot" -> "Ankle-boot")."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in str(name))


def overlay_signed(axis, image, values, bound=None, alpha=0.6):
    """The image in gray with a signed map over it (diverging colours symmetric around 0, half transparent)."""
    show_image(axis, np.asarray(image, dtype="float32").mean(axis=-1, keepdims=True))
    shown = show_signed(axis, values, bound)
    shown.set_alpha(alpha)
    return shown


def overview_rows(images, outputs, class_names=None, max_images=8):
    """`(images float32, rows, logits float64, names)` of an overview picture: one row per image, at most `max_images`.

    Raises:
        ValueError: no image.
    """
    images = np.asarray(images, dtype="float32")
    rows = min(len(images), int(max_images))
    if rows < 1:
        raise ValueError("draw_overview needs at least one image.")
    logits = np.asarray(outputs["logits"], dtype="float64")
    return images, rows, logits, class_names_or_indices(class_names, logits.shape[1])


def predicted_class(outputs, index, class_names=None):
    """`(logits (K,), predicted class k, K names)` of image `index` of a batch of explanation outputs."""
    logits = np.asarray(outputs["logits"][index], dtype="float64")
    return logits, int(np.argmax(logits)), class_names_or_indices(class_names, len(logits))
