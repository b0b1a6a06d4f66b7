"""Whether ProtoPNet's prototypes sit on the object: object masks of latent patches and the measurements of it.

Images whose background is empty (Fashion-MNIST, MNIST, many scans) give an
object mask for free: a pixel is on the object when its brightest channel
exceeds a threshold. A latent patch's *footprint* is the block of input
pixels it covers under the backbone's downsampling (the area its upsampled
similarity paints; its receptive field is larger); the patch is on the
object when at least a given share of its footprint is.
"""

import numpy as np
from keras import ops


def object_pixels(images, threshold):
    """Bool `(B, H, W)`: the brightest channel of each pixel is above `threshold`."""
    return np.asarray(images).max(axis=-1) > threshold


def footprint_shares_tensor(images, threshold, grid_shape, prototype_size=1):
    """`(B, h - k + 1, w - k + 1)` share of object pixels in the footprint of each `k x k` patch of an `h x w` grid.

    Keras ops, so it runs inside a training step; `footprint_shares` is the
    same on NumPy arrays.

    Args:
        images: `(B, H, W, C)`; `H` and `W` multiples of the grid's `h` and `w`.
        threshold: object pixel threshold.
        grid_shape: `(h, w)` of the latent grid.
        prototype_size: `k`, patch side in latent positions.

    Example:
    >>> tuple(footprint_shares_tensor(np.ones((1, 8, 8, 1), "float32"), 0.05, (4, 4)).shape)
    (1, 4, 4)
    """
    mask = ops.cast(ops.max(images, axis=-1, keepdims=True) > threshold, "float32")
    height, width = images.shape[1], images.shape[2]
    rows, cols = grid_shape
    cells = ops.average_pool(mask, (height // rows, width // cols), strides=(height // rows, width // cols), padding="valid")
    k = int(prototype_size)
    if k > 1:
        cells = ops.average_pool(cells, (k, k), strides=(1, 1), padding="valid")
    return cells[..., 0]


def footprint_shares(images, threshold, grid_shape, prototype_size=1):
    """`footprint_shares_tensor` of a NumPy batch, as a NumPy array."""
    return ops.convert_to_numpy(footprint_shares_tensor(np.asarray(images, dtype="float32"), threshold, grid_shape, prototype_size))


def check_divisible(image_shape, grid_shape):
    """Raises a ValueError unless the image size is a multiple of the latent grid's (footprints are whole blocks)."""
    if image_shape[0] % grid_shape[0] or image_shape[1] % grid_shape[1]:
        raise ValueError(
            f"An object mask needs an input size that is a multiple of the latent grid; got {tuple(image_shape[:2])} "
            f"for a {tuple(grid_shape)} grid."
        )


def box_object_share(image, box, threshold):
    """Share of object pixels inside `box = [top, bottom, left, right)` of one image `(H, W, C)`."""
    top, bottom, left, right = box
    return float(object_pixels(image[None, top:bottom, left:right], threshold)[0].mean())


def object_focus_report(model, images, threshold, top=3, mostly=0.5, batch_size=64):
    """Where a pushed ProtoPNet's prototypes come from and where they fire on `images`.

    Args:
        model: a pushed `ProtoPNet` (its `prototype_provenance` set).
        images: held-out images `(N, H, W, C)` in [0, 1].
        threshold: object pixel threshold (`object_pixels`).
        top: prototypes per image inspected (largest contribution to the
            predicted class).
        mostly: a box is mostly background when less than this share of it
            is object.
        batch_size: images per forward pass.

    Returns:
        dict: `blank_prototypes` (pushed onto a patch whose footprint holds
        no object pixel), `background_box_prototypes` and its share (the
        high-activation box on the source image is mostly background),
        `top_peak_on_background` (share of the top prototypes of the test
        images whose upsampled similarity peaks on a background pixel) and
        `background_pixel_share` (the chance level of that figure: the share
        of background pixels, where a randomly placed peak would land), with
        standard errors over images.
    """
    from glasszoo.explain.explanation_report import standard_error

    provenance = model.prototype_provenance
    if provenance is None:
        raise ValueError("object_focus_report needs a pushed model (prototype_provenance is None).")
    grid = model.latent_shape[:2]
    size = model.prototype_layer.prototype_size
    sources = provenance["source_image"]
    rows, cols = provenance["patch_position"][:, 0], provenance["patch_position"][:, 1]
    source_shares = footprint_shares(sources, threshold, grid, size)[np.arange(len(sources)), rows, cols]
    box_shares = np.array([box_object_share(image, box, threshold) for image, box in zip(sources, provenance["high_activation_box"])])
    on_background, chance = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        out = model.explain(batch, batch_size=batch_size)
        predicted = out["logits"].argmax(-1)
        contributions = out["prototype_contributions"][np.arange(len(batch)), :, predicted]  # (b, P)
        objects = object_pixels(batch, threshold)
        upsampled = out["upsampled_similarity_maps"]
        height, width = objects.shape[1:]
        for index in range(len(batch)):
            chosen = np.argsort(-contributions[index])[:top]
            peaks = upsampled[index].reshape(height * width, -1)[:, chosen].argmax(axis=0)
            on_background.append(float(np.mean(~objects[index].reshape(-1)[peaks])))
            chance.append(float(np.mean(~objects[index])))
    on_background, chance = np.array(on_background), np.array(chance)

    return {
        "object_threshold": float(threshold),
        "blank_prototypes": int(np.sum(source_shares == 0)),
        "background_box_prototypes": int(np.sum(box_shares < mostly)),
        "background_box_share": round(float(np.mean(box_shares < mostly)), 4),
        "top_prototypes_inspected": int(top),
        "top_peak_on_background": round(float(on_background.mean()), 4),
        "top_peak_on_background_standard_error": round(standard_error(on_background), 4),
        "background_pixel_share": round(float(chance.mean()), 4),
        "background_pixel_share_standard_error": round(standard_error(chance), 4),
        "images": int(len(images)),
    }
