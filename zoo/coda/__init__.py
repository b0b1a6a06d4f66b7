"""CoDA-Nets (seed 002): dynamic alignment units whose contribution maps are exact.

The family record only; `model`, `views` and `recipes` hold the rest.
"""

from glasszoo.zoo.families import Family

FAMILY = Family(
    name="coda",
    model="glasszoo.zoo.coda.model:CoDA",
    views="glasszoo.zoo.coda.views",
    recipes="glasszoo.zoo.coda.recipes:RECIPES",
    description="Convolutional dynamic alignment network; exact contribution maps (Böhle et al., seed 002).",
    test_config={"kernel_sizes": [3, 3, 3, 1], "strides": [1, 2, 2, 1], "filters": [6, 8, 8], "ranks": [4, 6, 6, 6], "temperature": 10.0},
    demo_preset="coda_fashion_mnist",
)
