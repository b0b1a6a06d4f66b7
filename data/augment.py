"""Training-time augmentation as a Keras PyDataset (NumPy and Pillow only, so any backend trains with it).

Recipes and `glasszoo train/finetune --augment` name one of `AUGMENTATIONS`:

- "none": the images as they are;
- "crop": random shifts (zero padding of 1/8 of the side, then a crop back);
- "flip": left-right mirror images with probability 1/2;
- "flip_and_crop": both;
- "affine": flips, shifts and a small random rotation (up to 15 degrees) and
  scaling (0.9 to 1.1);
- "pixel_holes": half of the images lose a random share (uniform in 0 to 0.9)
  of their pixels, set to 0 (black), each pixel drawn independently.

Names join with "+" ("flip+pixel_holes").

Why pixel holes: pixel-removal metrics (least or most important pixels set to
0 first) show a model images it never saw in training. A dynamic linear model
(B-cos, CoDA) recomputes its weights from the holed image, so removing pixels
its map calls harmful can still lower the class's logit. Trained with holes,
its weights stay stable under removal, and the removal curve measures the map
rather than the model's surprise (the motivation of ROAR, Hooker et al. 2019,
which retrains on removed pixels for the same reason).

Mirroring changes the class of digits, letters and of images whose side
matters (a chest X-ray's heart is on the left): use "crop" there.
"""

import numpy as np

import keras

AUGMENTATIONS = ("none", "crop", "flip", "flip_and_crop", "affine", "horizontal_flip", "pixel_holes")

# "pixel_holes": the share of images holed, and the largest share of an image's pixels set to 0
HOLED_IMAGE_SHARE = 0.5
MAX_HOLE_SHARE = 0.9


def augmentation_parts(name):
    """The names in an augmentation name joined with "+", each checked against `AUGMENTATIONS`.

    Example:
    >>> augmentation_parts("crop+pixel_holes")
    ['crop', 'pixel_holes']
    """
    parts = [part.strip() for part in str(name).split("+")]
    unknown = [part for part in parts if part not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"Unknown augmentation {unknown[0]!r} in {name!r}; known: {', '.join(AUGMENTATIONS)} (join names with '+').")
    return parts


def augmentation_options(name, image_size):
    """`AugmentedBatches` keyword arguments of an augmentation name (or "+"-joined names) for `(height, width)` images.

    Example:
    >>> augmentation_options("flip_and_crop", (64, 64))
    {'flip': True, 'crop_padding': 8, 'affine': False, 'hole_probability': 0.0}
    >>> augmentation_options("flip+pixel_holes", (28, 28))
    {'flip': True, 'crop_padding': 0, 'affine': False, 'hole_probability': 0.5}
    """
    parts = augmentation_parts(name)
    padding = max(2, int(round(min(image_size) / 8)))
    return {
        "flip": any(part in ("flip", "flip_and_crop", "affine", "horizontal_flip") for part in parts),
        "crop_padding": padding if any(part in ("crop", "flip_and_crop", "affine") for part in parts) else 0,
        "affine": "affine" in parts,
        "hole_probability": HOLED_IMAGE_SHARE if "pixel_holes" in parts else 0.0,
    }


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled batches, each image mirrored, shifted, rotated or scaled at random as asked.

    Args:
        images: float32 `(B, H, W, C)`.
        labels: int `(B,)`.
        batch_size: images per batch.
        seed: seed of the shuffling and of every random choice (a new
            permutation each epoch).
        flip: mirror each image left-right with probability 1/2.
        crop_padding: if > 0, a random crop of the image zero-padded by this
            many pixels (the CIFAR-10 recipe: 4).
        affine: also rotate (up to 15 degrees) and scale (0.9 to 1.1) each
            image about its centre, bilinear, zero outside.
        hole_probability: the probability that an image gets pixel holes:
            a share of its pixels, drawn uniformly in `[0, max_hole_share]`
            per image, set to 0 in every channel (after the other steps).
        max_hole_share: the largest share of an image's pixels set to 0.

    Example:
    >>> batches = AugmentedBatches(x_train, y_train, batch_size=32, seed=0, crop_padding=4)  # doctest: +SKIP
    >>> model.fit(batches, epochs=10)  # doctest: +SKIP
    """

    def __init__(
        self, images, labels, batch_size=32, seed=0, flip=True, crop_padding=0, affine=False,
        hole_probability=0.0, max_hole_share=MAX_HOLE_SHARE, **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= hole_probability <= 1.0 or not 0.0 <= max_hole_share <= 1.0:
            raise ValueError(f"hole_probability and max_hole_share must lie in [0, 1]; got {hole_probability} and {max_hole_share}.")
        self.images, self.labels = images, np.asarray(labels)
        self.batch_size = int(batch_size)
        self.flip, self.crop_padding, self.affine = bool(flip), int(crop_padding), bool(affine)
        self.hole_probability, self.max_hole_share = float(hole_probability), float(max_hole_share)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.images))

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = self.images[chosen].copy()
        if self.flip:
            mirrored = self.rng.random(len(chosen)) < 0.5
            batch[mirrored] = batch[mirrored, :, ::-1]
        if self.affine:
            batch = self._rotate_and_scale(batch)
        if self.crop_padding:
            batch = self._random_crops(batch)
        if self.hole_probability:
            batch = self._pixel_holes(batch)
        return batch, self.labels[chosen]

    def peek_batch(self):
        """The first batch's images and labels without augmentation, the random state untouched (input checks)."""
        chosen = self.order[: self.batch_size]
        return self.images[chosen], self.labels[chosen]

    def _random_crops(self, batch):
        """Zero-pads by `crop_padding` and crops back to the size at a random offset per image."""
        pad = self.crop_padding
        height, width = batch.shape[1:3]
        padded = np.pad(batch, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        rows = self.rng.integers(0, 2 * pad + 1, size=len(batch))
        cols = self.rng.integers(0, 2 * pad + 1, size=len(batch))
        return np.stack([padded[i, r : r + height, c : c + width] for i, (r, c) in enumerate(zip(rows, cols))])

    def _pixel_holes(self, batch):
        """Sets a random share of the pixels of a random subset of the images to 0 (all channels of a pixel at once)."""
        count, height, width = batch.shape[:3]
        holed = self.rng.random(count) < self.hole_probability
        share = self.rng.uniform(0.0, self.max_hole_share, size=count)
        removed = (self.rng.random((count, height, width)) < share[:, None, None]) & holed[:, None, None]
        batch[removed] = 0.0
        return batch

    def _rotate_and_scale(self, batch):
        from PIL import Image

        height, width = batch.shape[1:3]
        out = np.empty_like(batch)
        for i, image in enumerate(batch):
            angle = np.deg2rad(self.rng.uniform(-15.0, 15.0))
            scale = self.rng.uniform(0.9, 1.1)
            cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
            cy, cx = height / 2.0, width / 2.0
            # output (x, y) samples the input at A (x - c) + c: a rotation by `angle` and a zoom by `scale`
            matrix = (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)
            for c in range(batch.shape[-1]):
                plane = Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F")
                out[i, ..., c] = np.asarray(plane.transform((width, height), Image.AFFINE, matrix, resample=Image.BILINEAR))
        return np.clip(out, 0.0, 1.0)

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.images))


class FlippedBatches(AugmentedBatches):
    """`AugmentedBatches` with flips on (the Fashion-MNIST recipes' augmentation); `crop_padding` as there.

    Suits datasets whose classes are mirror-symmetric (Fashion-MNIST items),
    not digits or text.

    Example:
    >>> batches = FlippedBatches(x_train, y_train, batch_size=32, seed=0)  # doctest: +SKIP
    """

    def __init__(self, images, labels, batch_size=32, seed=0, crop_padding=0, **kwargs):
        super().__init__(images, labels, batch_size=batch_size, seed=seed, flip=True, crop_padding=crop_padding, **kwargs)
