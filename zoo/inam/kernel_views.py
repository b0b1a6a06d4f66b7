"""Global views of an INAM (seed 000, Figure 2): what a kernel is and how its maximal response moves every class logit.

They read the model's weights (Keras); the per-image views that need only the
explanation outputs are in `views`. Every function builds a `matplotlib.figure.Figure` directly (no pyplot state, no
GUI backend needed), optionally saves it as a png and returns it.
"""

import numpy as np
from glasszoo.explain.figures import (
    PANEL_INCHES,
    bare,
    check_index,
    class_names_or_indices,
    new_figure,
    save,
    show_image,
    show_signed,
)
from keras import ops
from matplotlib.figure import Figure

__all__ = ["compute_feature_values", "kernel_global_view", "kernel_influence", "strongest_kernels"]

GRID_POINTS = 200
DENSITY_BINS = 30


# -- numbers ---------------------------------------------------------------
def compute_feature_values(model, images, batch_size=256):
    """Maximal responses `X_l` of every kernel for a NumPy array of images.

    Args:
        model: an INAM.
        images: float array `(B, H, W, C)` in [0, 1].
        batch_size: images per forward pass.

    Returns:
        float array `(B, N)`.

    Example:
    >>> values = compute_feature_values(model, train_images[:1000])
    >>> values.shape
    (1000, 16)
    """
    return model.max_responses(np.asarray(images, dtype="float32"), batch_size=batch_size)


def _centred_shape_functions(model, values, batch_size=1024):
    """Centred `g~_l(values[:, l])` as NumPy: `(G, N)` -> `(G, N, K)`."""
    values = np.asarray(values, dtype="float32")
    shift = ops.convert_to_numpy(model.head.centring_shift())
    parts = [
        ops.convert_to_numpy(model.head.shape_functions(ops.convert_to_tensor(values[start : start + batch_size])))
        for start in range(0, len(values), batch_size)
    ]
    return np.concatenate(parts) + shift


def kernel_influence(model, feature_values):
    """Influence of every kernel on every class.

    The influence of kernel `l` on class `k` is the mean over the data of
    `|g~_lk(X_l)|`, the size of its centred contribution to that logit.

    Args:
        model: an INAM.
        feature_values: array `(num_images, N)` of maximal responses, e.g.
            from `compute_feature_values` on training images.

    Returns:
        non-negative float array `(N, K)`.

    Example:
    >>> influence = kernel_influence(model, values)
    >>> influence.shape
    (16, 10)
    """
    feature_values = _check_feature_values(model, feature_values)
    return np.abs(_centred_shape_functions(model, feature_values)).mean(axis=0)


def _check_feature_values(model, feature_values):
    feature_values = np.asarray(feature_values, dtype="float32")
    if feature_values.ndim != 2 or feature_values.shape[1] != model.num_kernels or not len(feature_values):
        raise ValueError(
            f"feature_values must be a non-empty (num_images, {model.num_kernels}) array; "
            f"got shape {feature_values.shape}."
        )
    return feature_values


_check_index = check_index


def _feature_grid(values):
    """`GRID_POINTS` strengths spanning the data range (widened if it is a point)."""
    low, high = float(np.min(values)), float(np.max(values))
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, GRID_POINTS, dtype="float32")


def _kernel(model, kernel_index):
    """Kernel `l` as `(n, n, C)` NumPy."""
    return ops.convert_to_numpy(model.conv.kernel)[..., kernel_index]


_names = class_names_or_indices


# -- drawing ---------------------------------------------------------------
_new_figure, _save, _bare, _show_signed, _show_image = new_figure, save, bare, show_signed, show_image


def _show_kernel(axis, kernel):
    """One kernel `(n, n, C)`: min-max RGB for 3 channels, else signed (channels summed)."""
    if kernel.shape[-1] == 3:
        low, high = float(kernel.min()), float(kernel.max())
        _bare(axis)
        return axis.imshow((kernel - low) / max(high - low, 1e-12))
    return _show_signed(axis, kernel.sum(axis=-1))


# -- public views -------------------------------------------------------------
def kernel_global_view(model, kernel_index, feature_values, class_names=None, path=None):
    """Global view of one kernel (seed 000, Figure 2).

    Left: the kernel (diverging colormap around 0 for one channel, min-max
    scaled RGB for three). Right: the centred shape function of that kernel
    for every class over the data range of its maximal response `X_l`, with
    the data density of `X_l` shaded in gray behind the lines.

    Args:
        model: an INAM.
        kernel_index: int, the kernel `l`.
        feature_values: array `(num_images, N)` of maximal responses of
            (training) images, e.g. from `compute_feature_values`.
        class_names: optional list of `K` names (default: `model.class_names`).
        path: optional png file to save the figure to.

    Returns:
        `matplotlib.figure.Figure`.

    Example:
    >>> values = compute_feature_values(model, train_images)
    >>> fig = kernel_global_view(model, 3, values, path="kernel_3.png")
    """
    feature_values = _check_feature_values(model, feature_values)
    kernel_index = _check_index(kernel_index, model.num_kernels, "kernel_index")
    names = _names(class_names if class_names is not None else model.class_names, model.num_classes)
    data = feature_values[:, kernel_index]
    grid = _feature_grid(data)
    curves = _centred_shape_functions(model, np.repeat(grid[:, None], model.num_kernels, axis=1))[:, kernel_index]

    figure = Figure(figsize=(3 * PANEL_INCHES, 1.2 * PANEL_INCHES), layout="constrained")
    kernel_axis, curve_axis = figure.subplots(1, 2, width_ratios=[1, 2])
    artist = _show_kernel(kernel_axis, _kernel(model, kernel_index))
    kernel_axis.set_title(f"kernel {kernel_index}")
    if artist.get_array().ndim == 2:
        figure.colorbar(artist, ax=kernel_axis, shrink=0.8)

    density_axis = curve_axis.twinx()
    density_axis.hist(data, bins=DENSITY_BINS, range=(grid[0], grid[-1]), density=True, color="0.85")
    density_axis.set_ylabel("data density", color="0.5")
    density_axis.tick_params(axis="y", colors="0.5")
    curve_axis.set_zorder(density_axis.get_zorder() + 1)
    curve_axis.patch.set_visible(False)
    for k, name in enumerate(names):
        curve_axis.plot(grid, curves[:, k], label=name)
    curve_axis.axhline(0.0, color="0.4", linewidth=0.6)
    curve_axis.set_xlim(grid[0], grid[-1])
    curve_axis.set_xlabel(f"feature strength X_{kernel_index}")
    curve_axis.set_ylabel("contribution to class logit")
    curve_axis.legend(fontsize=7, ncol=max(1, len(names) // 6), loc="best")
    return _save(figure, path)


def strongest_kernels(model, class_index, feature_values, top=8, path=None):
    """The kernels with the largest influence on one class.

    Influence as in `kernel_influence`. The figure shows the `top` kernels,
    strongest first, with their influence in the titles; their indices and
    influences are attached as `figure.kernel_indices` and `figure.influence`.

    Args:
        model: an INAM.
        class_index: int, the class `k`.
        feature_values: array `(num_images, N)` of maximal responses.
        top: int, number of kernels to show (at most `N`).
        path: optional png file to save the figure to.

    Returns:
        `matplotlib.figure.Figure` with `kernel_indices` (int array `(top,)`)
        and `influence` (float array `(top,)`).

    Example:
    >>> fig = strongest_kernels(model, 7, values, top=8, path="class_7.png")
    >>> fig.kernel_indices
    array([12,  3,  5,  0,  9, 14,  2,  6])
    """
    class_index = _check_index(class_index, model.num_classes, "class_index")
    influence = kernel_influence(model, feature_values)[:, class_index]
    top = max(1, min(int(top), model.num_kernels))
    chosen = np.argsort(-influence, kind="stable")[:top]

    cols = min(top, 4)
    rows = -(-top // cols)
    figure, axes = _new_figure(rows, cols, height=PANEL_INCHES * 1.1)
    for axis in axes.flat[top:]:
        axis.remove()
    for axis, l in zip(axes.flat, chosen):
        _show_kernel(axis, _kernel(model, l))
        axis.set_title(f"kernel {l}\ninfluence {influence[l]:.3g}", fontsize=9)
    figure.suptitle(f"strongest kernels for class {model.class_names[class_index]}")
    figure.kernel_indices = chosen
    figure.influence = influence[chosen]
    return _save(figure, path)
