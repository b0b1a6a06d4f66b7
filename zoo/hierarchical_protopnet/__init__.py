"""Hierarchical prototype networks (seed 001; Hase, Chen, Li and Rudin 2019): prototypes at every node of a taxonomy.

The family record only; `model`, `tables`, `views` and `recipes` hold the rest.
"""

from glasszoo.zoo.families import Family

FAMILY = Family(
    name="hierarchical_protopnet",
    model="glasszoo.zoo.hierarchical_protopnet.model:HierarchicalProtoPNet",
    views="glasszoo.zoo.hierarchical_protopnet.views",
    recipes="glasszoo.zoo.hierarchical_protopnet.recipes:RECIPES",
    description="Hierarchical prototype network: P(class) = product of P(child | node) along a taxonomy, each node deciding by its own prototypes (Hase et al. 2019, seed 001).",
    test_config={
        "backbone_stages": [[8], [12]],
        "prototype_channels": 6,
        "prototypes_per_child": 1,
        "taxonomy": {
            "tree": {"a": ["0", "1", "2", "3"], "7": None, "b": {"c": ["8", "9"], "4": None}, "d": ["5", "6"]},
            "class_names": [str(k) for k in range(10)],
        },
    },
    demo_preset="hierarchical_protopnet_fashion_mnist",
)
