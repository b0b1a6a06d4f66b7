"""Keras 3 layers of glasszoo (keras.ops only, serialisable, backend-agnostic)."""

from glasszoo.layers.additive_head import NeuralAdditiveHead
from glasszoo.layers.bcos import BcosConv2D
from glasszoo.layers.complement_encoding import ComplementEncoding
from glasszoo.layers.dynamic_alignment import DAUConv2D
from glasszoo.layers.global_max_location import (
    GlobalMaxPoolingWithLocation,
)
from glasszoo.layers.imagenet_preprocessing import ImageNetPreprocessing
from glasszoo.layers.interpretable_conv import InterpretableConv2D
from glasszoo.layers.latent_prototypes import LatentPrototypes
from glasszoo.layers.prototype_layer import PrototypeLayer, log_similarity
from glasszoo.layers.regularizers import (
    Orthonormality,
    SumOfRegularizers,
    TotalVariation,
)
from glasszoo.layers.evidence_pooling import SoftmaxEvidencePooling
from glasszoo.layers.temperature_head import TemperatureSumPooling

__all__ = [
    "BcosConv2D",
    "ComplementEncoding",
    "DAUConv2D",
    "GlobalMaxPoolingWithLocation",
    "ImageNetPreprocessing",
    "InterpretableConv2D",
    "LatentPrototypes",
    "NeuralAdditiveHead",
    "Orthonormality",
    "PrototypeLayer",
    "SoftmaxEvidencePooling",
    "SumOfRegularizers",
    "TemperatureSumPooling",
    "TotalVariation",
    "log_similarity",
]
