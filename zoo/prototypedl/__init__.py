"""PrototypeDL (seed 001): prototypes in an autoencoder's latent space, decodable to images.

The family record only; `model`, `views` and `recipes` hold the rest.
"""

from glasszoo.zoo.families import Family

FAMILY = Family(
    name="prototypedl",
    model="glasszoo.zoo.prototypedl.model:PrototypeDL",
    views="glasszoo.zoo.prototypedl.views",
    recipes="glasszoo.zoo.prototypedl.recipes:RECIPES",
    description="Autoencoder with latent prototypes; logits = distances @ W (Li et al. 2018, seed 001).",
    test_config={"filters": [6, 6, 6, 3], "num_prototypes": 5},
    demo_preset="prototypedl_fashion_mnist",
)
