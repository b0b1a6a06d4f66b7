"""Methods every zoo family shares (mixed into each family's keras.Model)."""

import keras
import numpy as np
from glasszoo.zoo.inputs import validate_images


class ZooModelMethods:
    """`predict_classes` and `compile_from_config` for models with `image_shape` and a custom `compile`.

    Mixed in before `keras.Model`: `class CoDA(ZooModelMethods, keras.Model)`.
    """

    def predict_classes(self, images, batch_size=256):
        """Predicted class index per image (validated input)."""
        images = validate_images(images, self.image_shape)
        return np.argmax(self.predict(images, batch_size=batch_size, verbose=0), axis=-1)

    def compile_from_config(self, config):
        """Restores the compile arguments saved in a `.keras` file (the family's own `compile`)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)
