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

    Example:
    >>> batches = FlippedBatches(x_train, y_train, batch_size=32, seed=0)  # doctest: +SKIP
    >>> model.fit(batches, epochs=10)  # doctest: +SKIP
    """

    def __init__(self, images, labels, batch_size=32, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.images, self.labels = images, np.asarray(labels)
        self.batch_size = int(batch_size)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.images))

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = self.images[chosen].copy()
        flip = self.rng.random(len(chosen)) < 0.5
        batch[flip] = batch[flip, :, ::-1]
        return batch, self.labels[chosen]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.images))
