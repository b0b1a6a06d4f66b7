"""Grids of images of different classes and the localisation score of contribution maps (seed 002, eq. 11)."""

import numpy as np


def compose_grid(images, rows):
    """Tiles `rows * rows` images `(N, H, W, C)` into one `(rows·H, rows·W, C)` image, row-major.

    Example:
    >>> compose_grid(np.zeros((9, 28, 28, 1)), 3).shape
    (84, 84, 1)
    """
    images = np.asarray(images)
    if len(images) != rows * rows:
        raise ValueError(f"A {rows}x{rows} grid needs {rows * rows} images; got {len(images)}.")
    height, width, channels = images.shape[1:]
    tiles = images.reshape(rows, rows, height, width, channels)
    return tiles.transpose(0, 2, 1, 3, 4).reshape(rows * height, rows * width, channels)


def cell_box(cell, rows, height, width):
    """`(top, left, bottom, right)` in grid pixels of cell `cell` (row-major) of tiles `height x width`."""
    row, col = divmod(int(cell), rows)
    return row * height, col * width, (row + 1) * height, (col + 1) * width


def positive_share_in_cell(contribution_map, cell, rows):
    """Share of the positive contribution mass that falls inside `cell` (eq. 11).

    A random map scores about `1 / rows²`; one that puts all positive
    evidence of the cell's class in that cell scores 1. A map without any
    positive value scores 0.

    Args:
        contribution_map: `(rows·H, rows·W)` map of the cell's class on the grid image.
        cell: row-major index of the cell holding an image of that class.
        rows: grid side `n`.
    """
    contribution_map = np.asarray(contribution_map, dtype="float64")
    height, width = contribution_map.shape[0] // rows, contribution_map.shape[1] // rows
    top, left, bottom, right = cell_box(cell, rows, height, width)
    positive = np.maximum(contribution_map, 0.0)
    total = positive.sum()
    return float(positive[top:bottom, left:right].sum() / total) if total > 0 else 0.0


def inherent_contributions(model, images, targets):
    """The model's own pixel maps `(B, H, W)` for `targets` (`ZooModel.attribution_map`)."""
    return model.attribution_map(images, targets)


def localisation_scores(model, images, labels, rows, attribution=inherent_contributions):
    """Eq. 11 for one grid: the positive share of each cell's class map inside that cell.

    Args:
        model: a zoo model (rebuilt at the grid's size with its weights by `model.resized`).
        images: `rows²` images of pairwise different classes.
        labels: their classes (the class explained for each cell).
        rows: grid side `n`.
        attribution: `attribution(grid_model, grid_images, targets) -> (B, n·H, n·W)`
            maps; the model's own contribution maps by default (a post-hoc
            method is compared by passing it here).

    Returns:
        dict: `grid_image`, `maps` `(n², n·H, n·W)`, `scores` `(n²,)`.
    """
    labels = np.asarray(labels)
    if len(set(labels.tolist())) != len(labels):
        raise ValueError(f"The cells of a localisation grid need pairwise different classes; got {labels.tolist()}.")
    grid_image = compose_grid(images, rows)
    grid_model = model.resized(grid_image.shape)
    maps = np.asarray(attribution(grid_model, np.repeat(grid_image[None], len(labels), axis=0), labels))
    scores = np.array([positive_share_in_cell(maps[cell], cell, rows) for cell in range(len(labels))])
    return {"grid_image": grid_image, "maps": maps, "scores": scores}
