"""ProtoPNet (seed 001): "this looks like that" prototypical part networks.

The family record only; `model`, `views`, `recipes`, `push`, `schedule`,
`optimizer` and `backbones` hold the rest.
"""

from glasszoo.zoo.families import Family

FAMILY = Family(
    name="protopnet",
    model="glasszoo.zoo.protopnet.model:ProtoPNet",
    views="glasszoo.zoo.protopnet.views",
    recipes="glasszoo.zoo.protopnet.recipes:RECIPES",
    description="Prototypical part network: similarity to pushed training patches (Chen et al. 2019, seed 001).",
    test_config={"backbone_stages": [[8], [12]], "prototype_channels": 6, "prototypes_per_class": 2},
    demo_preset="protopnet_fashion_mnist",
)
