"""A generated image-folder task whose objects' places are known: coloured shapes on textured backgrounds.

Each image holds one shape (circle, square, triangle, cross, ...) of random
colour, size, rotation and place on a background of random coloured
gratings and noise, so that neither colour nor position gives the class
away: only the shape's outline does. The folder is written in the layout
`load_image_folder` reads (one sub-folder per class, PNG files), with
`objects.npz` beside the class folders: the object mask of every file, so
the localisation of an explanation on the object can be measured.

Example:
>>> from glasszoo.data.shapes import write_shapes_folder
>>> write_shapes_folder("shapes/", images_per_class=300, seed=0)  # doctest: +SKIP
>>> data = load_image_folder("shapes/")  # doctest: +SKIP
"""

import pathlib

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")


def shape_mask(shape, size, radius, centre, angle):
    """Boolean `(size, size)` mask of one shape.

    Args:
        shape: one of `SHAPES`.
        size: image side in pixels.
        radius: half the shape's extent in pixels.
        centre: `(row, column)` of its centre.
        angle: rotation in radians.

    Example:
    >>> int(shape_mask("square", 16, 5, (8, 8), 0.0).sum())
    64
    """
    rows, cols = np.mgrid[0:size, 0:size].astype("float64") + 0.5
    dy, dx = rows - centre[0], cols - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # coordinates in the shape's frame
    if shape == "circle":
        return u**2 + v**2 <= radius**2
    if shape == "ring":
        distance = np.sqrt(u**2 + v**2)
        return (distance <= radius) & (distance >= 0.55 * radius)
    if shape == "square":
        return (np.abs(u) <= radius * 0.85) & (np.abs(v) <= radius * 0.85)
    if shape == "bar":
        return (np.abs(u) <= radius) & (np.abs(v) <= radius * 0.35)
    if shape == "cross":
        arm = radius * 0.33
        return ((np.abs(u) <= radius) & (np.abs(v) <= arm)) | ((np.abs(v) <= radius) & (np.abs(u) <= arm))
    if shape == "triangle":  # equilateral, centred on its centroid
        corners = [(radius * np.cos(a), radius * np.sin(a)) for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
        inside = np.ones_like(u, dtype=bool)
        for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
            inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0
        return inside
    raise ValueError(f"Unknown shape {shape!r}; known: {SHAPES}.")


def textured_background(size, rng):
    """A float `(size, size, 3)` background in [0, 1]: two random coloured gratings plus pixel noise."""
    rows, cols = np.mgrid[0:size, 0:size].astype("float64")
    background = np.zeros((size, size, 3))
    for _ in range(2):
        frequency = rng.uniform(0.15, 0.6)
        direction = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        wave = 0.5 + 0.5 * np.sin(frequency * (np.cos(direction) * cols + np.sin(direction) * rows) + phase)
        background += wave[..., None] * rng.uniform(0.1, 0.5, size=3)
    background += rng.normal(0.0, 0.06, size=background.shape)
    return np.clip(background, 0.0, 1.0)


def shapes_image(shape, size, rng):
    """`(image, mask)`: one float `(size, size, 3)` image in [0, 1] and its boolean object mask."""
    radius = rng.uniform(0.16, 0.28) * size
    margin = radius + 1
    centre = rng.uniform(margin, size - margin, size=2)
    mask = shape_mask(shape, size, radius, centre, rng.uniform(0, 2 * np.pi))
    image = textured_background(size, rng)
    colour = rng.uniform(0.35, 1.0, size=3)
    image[mask] = np.clip(colour + rng.normal(0.0, 0.04, size=(int(mask.sum()), 3)), 0.0, 1.0)
    return image, mask


def write_shapes_folder(root, images_per_class=300, size=64, classes=4, seed=0):
    """Writes the task as PNG files, one sub-folder per class, and `objects.npz` of the masks.

    Args:
        root: folder to write (created; existing files of the same names replaced).
        images_per_class: images of each class.
        size: image side in pixels.
        classes: how many of `SHAPES` to use (2 to 6).
        seed: seed of every random choice.

    Returns:
        the root as a `pathlib.Path`. `objects.npz` maps each file's path
        relative to the root (`"circle/0000.png"`) to its `(size, size)` mask.
    """
    from PIL import Image

    if not 2 <= int(classes) <= len(SHAPES):
        raise ValueError(f"classes must be 2 to {len(SHAPES)}; got {classes!r}.")
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    masks = {}
    for shape in SHAPES[: int(classes)]:
        (root / shape).mkdir(parents=True, exist_ok=True)
        for index in range(int(images_per_class)):
            image, mask = shapes_image(shape, int(size), rng)
            name = f"{shape}/{index:04d}.png"
            Image.fromarray(np.round(image * 255).astype("uint8"), mode="RGB").save(root / name)
            masks[name] = mask
    np.savez_compressed(root / "objects.npz", **masks)
    return root


def object_masks(root, paths):
    """The `(N, H, W)` boolean masks of the given files (relative to `root`) from its `objects.npz`."""
    with np.load(pathlib.Path(root) / "objects.npz") as stored:
        return np.stack([stored[path] for path in paths])
