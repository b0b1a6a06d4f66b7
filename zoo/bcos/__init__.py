"""B-cos networks (Böhle, Fritz and Schiele, CVPR 2022; the CoDA authors' successor): exact, aligned contribution maps.

The family record only; `model`, `views` and `recipes` hold the rest.
"""

from glasszoo.zoo.families import Family

FAMILY = Family(
    name="bcos",
    model="glasszoo.zoo.bcos.model:BcosNet",
    views="glasszoo.zoo.bcos.views",
    recipes="glasszoo.zoo.bcos.recipes:RECIPES",
    description="B-cos network: every layer |cos|^(B-1)-weighted and bias-free, so logit = sum of the contribution map + b0.",
    test_config={"filters": [6, 8], "kernel_sizes": [3, 3, 1], "strides": [1, 2, 1]},
    demo_preset="bcos_fashion_mnist",
)
