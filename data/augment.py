"""Training-time augmentation as a Keras PyDataset (NumPy only, so any backend trains with it)."""

import numpy as np

import keras


class FlippedBatches(keras.utils.PyDataset):
    """Shuffled batches in which each image is mirrored left-right with probability 1/2.

    Suits datasets whose classes are mirror-symmetric (Fashion-MNIST items),
    not digits or text.

    Args:
        images: float32 `(B, H, W, C)`.
        labels: int `(B,)`.
        batch_size: images per batch.
        seed: seed of the shuffling and flips (a new permutation each epoch).
        crop_padding: if > 0, also a random crop of the image zero-padded by
            this many pixels (the CIFAR-10 recipe: 4).

    Example:
    >>> batches = FlippedBatches(x_train, y_train, batch_size=32, seed=0)  # doctest: +SKIP
    >>> model.fit(batches, epochs=10)  # doctest: +SKIP
    """

    def __init__(self, images, labels, batch_size=32, seed=0, crop_padding=0, **kwargs):
        super().__init__(**kwargs)
        self.images, self.labels = images, np.asarray(labels)
        self.batch_size = int(batch_size)
        self.crop_padding = int(crop_padding)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.images))

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = self.images[chosen].copy()
        flip = self.rng.random(len(chosen)) < 0.5
        batch[flip] = batch[flip, :, ::-1]
        if self.crop_padding:
            batch = self._random_crops(batch)
        return batch, self.labels[chosen]

    def _random_crops(self, batch):
        """Zero-pads by `crop_padding` and crops back to the size at a random offset per image."""
        pad = self.crop_padding
        height, width = batch.shape[1:3]
        padded = np.pad(batch, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        rows = self.rng.integers(0, 2 * pad + 1, size=len(batch))
        cols = self.rng.integers(0, 2 * pad + 1, size=len(batch))
        return np.stack([padded[i, r : r + height, c : c + width] for i, (r, c) in enumerate(zip(rows, cols))])

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.images))
