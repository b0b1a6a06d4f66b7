"""INAM (seed 000): interpretable kernels, global max-pooling and a neural additive head.

The family record only; `model`, `views`, `kernel_views`, `recipes`,
`consistency` and `feature_sample` hold the rest.
"""

from glasszoo.zoo.families import Family

FAMILY = Family(
    name="inam",
    model="glasszoo.zoo.inam.model:INAM",
    views="glasszoo.zoo.inam.views",
    recipes="glasszoo.zoo.inam.recipes:RECIPES",
    description="Interpretable kernels + global max-pool + neural additive head; decision images (Hüls et al., seed 000).",
    test_config={"num_kernels": 12, "kernel_size": 5, "tv_weight": 0.01, "ortho_weight": 0.02},
    demo_preset="inam_fashion_mnist",
)
