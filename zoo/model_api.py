"""Methods every zoo family shares (mixed into each family's keras.Model)."""

import keras
import numpy as np
from glasszoo.zoo.inputs import validate_images


class ZooModelMethods:
    """`predict_classes`, `explain_in_batches` and `compile_from_config` for models with `image_shape` and a custom `compile`.

    Mixed in before `keras.Model`: `class CoDA(ZooModelMethods, keras.Model)`.
    """

    def predict_classes(self, images, batch_size=256):
        """Predicted class index per image (validated input)."""
        images = validate_images(images, self.image_shape)
        return np.argmax(self.predict(images, batch_size=batch_size, verbose=0), axis=-1)

    def explain_in_batches(self, images, batch_size):
        """Validates `images` and runs `explanation_graph` batch by batch: a dict of NumPy arrays.

        Raises:
            ValueError: bad images (see `validate_images`) or an empty batch.
        """
        from keras import ops

        images = validate_images(images, self.image_shape)
        if not len(images):
            raise ValueError("No images to explain: got an empty batch.")
        parts = [
            {k: ops.convert_to_numpy(v) for k, v in self.explanation_graph(ops.convert_to_tensor(images[i : i + batch_size])).items()}
            for i in range(0, len(images), batch_size)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def compile_from_config(self, config):
        """Restores the compile arguments saved in a `.keras` file (the family's own `compile`)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)
