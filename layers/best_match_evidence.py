"""Where a prototype network's evidence lies: each prototype's score placed on the patch it was found at.

A prototype network scores a prototype by its largest similarity over the
latent patches (`max` pooling), so the logits depend on each similarity map
only at its maximum. `similarity_at_best_match` keeps that value at the
patch that reaches it (shared with patches within about 0.1 of it) and
zero elsewhere: summed over positions it is the score the logits use, so
weighting it by the last layer and summing over prototypes gives a class
map whose total is exactly the class's (centred) logit;
`receptive_field_upsample` spreads each patch's value over the input
pixels it sees, keeping that total. The upsampled similarity maps, by
contrast, also show where a prototype *would* match, which no logit reads.

Example:
>>> import numpy as np
>>> maps = np.array([[[[1.0], [3.0]], [[3.0], [2.0]]]], "float32")  # (B, h, w, P) = (1, 2, 2, 1)
>>> placed = similarity_at_best_match(maps)  # a tie at 3: shared; 2 is 1.0 below: almost nothing
>>> np.round(np.asarray(placed)[0, ..., 0], 3).tolist()
[[0.0, 1.5], [1.5, 0.0]]
"""

import numpy as np
from keras import ops

# sigma of the Gaussian that spreads a latent patch's evidence, as a fraction of its receptive field's side: a patch's
# effective receptive field is a Gaussian well inside its theoretical one (Luo et al., NeurIPS 2016). Chosen for
# protopnet_fashion_mnist (receptive field 24 px) on validation splits by four measures summed: Fashion-MNIST 3x3-grid
# localisation (8 grids), least-first pixel-removal area and share of the positive evidence on the garment (200 images,
# the garment covers 44%), and the share on the object of the shapes task's 120 validation images (its fine-tune by
# bench/finetune_folder.py; the object covers 13%): 1/8: 0.672 + 0.588 + 0.715 + 0.671; 1/6: 0.689 + 0.668 + 0.672 +
# 0.573; 1/4: 0.706 + 0.729 + 0.600 + 0.407; 1/3: 0.699 + 0.746 + 0.551 + 0.304. (The whole upsampled similarity maps,
# ProtoPNet's former map: 0.398 + 0.672 + 0.745 on Fashion-MNIST.) Wider spreads remove better and cover small objects worse.
SPREAD = 1.0 / 8.0
# the softmax over patches that shares a prototype's score, chosen by the first two measures with sigma 1/3 among 3, 10,
# 30 and 100 (100 is close to a hard arg-max): 0.695 + 0.749, 0.698 + 0.748, 0.688 + 0.745, 0.685 + 0.744
SHARPNESS = 10.0


def similarity_at_best_match(similarity_maps, sharpness=SHARPNESS):
    """Each prototype's largest similarity, shared among the patches that reach it or come within about `1 / sharpness`.

    The share of patch `i` is `softmax_i(sharpness x similarity_i)`: the best
    patch takes it all when the others are well below, near-ties share it.
    Unlike a hard arg-max, a difference of 1e-5 between runtimes (or a tiny
    change of the input) cannot move the evidence to another patch.

    Args:
        similarity_maps: `(B, h, w, P)` similarity of every prototype to
            every latent patch.
        sharpness: inverse width of the softmax, in units of similarity.

    Returns:
        `(B, h, w, P)`: summed over `(h, w)` it equals the maps' maximum, the
        prototype's score (forward ops only, so it exports).
    """
    best = ops.max(similarity_maps, axis=(1, 2), keepdims=True)
    weights = ops.exp(float(sharpness) * (similarity_maps - best))
    return weights * best / ops.sum(weights, axis=(1, 2), keepdims=True)


def receptive_field_upsample(maps, image_size, start, jump, size, spread=SPREAD):
    """`(B, H, W, C)`: each latent patch's value spread over the input by a Gaussian on its receptive field.

    Latent patch `(i, j)` sees the input window of side `size` centred at
    `(start + i jump, start + j jump)`. Its value is shared by the input
    pixels with weights `exp(-d² / 2σ²)`, `σ = spread x size`, normalised
    over the image so that every patch hands out exactly its value: the
    result sums to what `maps` sums to.

    Args:
        maps: `(B, h, w, C)` values per latent patch.
        image_size: `(H, W)` of the input.
        start, jump, size: the latent map's receptive field in input pixels
            (centre of patch 0, step between patches, window side).
        spread: σ as a fraction of the window side.

    Returns:
        `(B, H, W, C)` (forward ops only, so it exports).
    """
    sigma = float(spread) * float(size)
    rows = _gaussian_matrix(int(maps.shape[1]), int(image_size[0]), start, jump, sigma, maps.dtype)  # (H, h)
    cols = _gaussian_matrix(int(maps.shape[2]), int(image_size[1]), start, jump, sigma, maps.dtype)  # (W, w)
    return ops.einsum("yi,bijc,xj->byxc", rows, maps, cols)


def _gaussian_matrix(cells, pixels, start, jump, sigma, dtype):
    """`(pixels, cells)`: Gaussian weights of pixel centres around each cell's receptive-field centre; columns sum to 1."""
    centres = float(start) + float(jump) * np.arange(cells)
    distance = (np.arange(pixels) + 0.5)[:, None] - centres[None, :]
    matrix = np.exp(-0.5 * (distance / sigma) ** 2)
    matrix /= matrix.sum(axis=0, keepdims=True)
    return ops.convert_to_tensor(matrix.astype("float32"), dtype=dtype)
