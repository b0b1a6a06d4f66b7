"""The black-box baseline: a plain CNN ending in global average pooling (so CAM applies).

The family record only; `model`, `views` and `recipes` hold the rest.
"""

from glasszoo.zoo.families import Family

FAMILY = Family(
    name="cnn",
    model="glasszoo.zoo.cnn.model:GapCNN",
    views="glasszoo.zoo.cnn.views",
    recipes="glasszoo.zoo.cnn.recipes:RECIPES",
    description="Black-box baseline: conv-BN-ReLU stages, global average pooling, dense; CAM (Zhou et al. 2016).",
    test_config={"filters": [6, 8]},
    black_box=True,
)
