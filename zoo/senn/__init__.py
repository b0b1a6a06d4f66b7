"""SENN (seed 003; Alvarez-Melis and Jaakkola 2018): logits = sum over concepts of relevance x concept.

The family record only; `model`, `views`, `concepts` and `recipes` hold the rest.
"""

from glasszoo.zoo.families import Family

FAMILY = Family(
    name="senn",
    model="glasszoo.zoo.senn.model:SENN",
    views="glasszoo.zoo.senn.views",
    recipes="glasszoo.zoo.senn.recipes:RECIPES",
    description="Self-explaining network: logits_c = sum_i theta(x)_ic h(x)_i, concepts from an autoencoder (Alvarez-Melis and Jaakkola 2018, seed 003).",
    test_config={"num_concepts": 4, "concept_filters": [6, 6], "relevance_filters": [6, 6], "relevance_units": 8},
    demo_preset="senn_fashion_mnist",
)
