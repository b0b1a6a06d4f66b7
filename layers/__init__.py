"""Keras 3 layers of glasszoo (keras.ops only, serialisable, backend-agnostic)."""

from glasszoo.layers.additive_head import NeuralAdditiveHead
from glasszoo.layers.global_max_location import GlobalMaxPoolingWithLocation, location_one_hot
from glasszoo.layers.interpretable_conv import InterpretableConv2D
from glasszoo.layers.regularizers import Orthonormality, SumOfRegularizers, TotalVariation

__all__ = [
    "GlobalMaxPoolingWithLocation",
    "InterpretableConv2D",
    "NeuralAdditiveHead",
    "Orthonormality",
    "SumOfRegularizers",
    "TotalVariation",
    "location_one_hot",
]
