"""Training recipes of the senn presets: data, split, grid, epochs (`glasszoo train NAME`)."""

ARCHITECTURE = {
    "num_concepts": 10,
    "concept_filters": [32, 64],
    "relevance_filters": [32, 32, 64, 64, 128],
    "relevance_strides": [1, 2, 1, 2, 2],
    "relevance_units": 256,
    "reconstruction_weight": 1.0,
    "concept_sparsity": 0.0,
}

TRAINING = {
    "family": "senn",
    # a fine-tune on a new folder (`glasszoo finetune`)
    "finetune": {"epochs": 30, "learning_rate": 1e-3, "batch_size": 32},
    "dataset": "fashion_mnist",
    "validation_size": 6000,
    "batch_size": 128,
    "grid_batch_size": 128,
    "grid_epochs": 3,
    "grid_train_size": 20000,
    "learning_rate": 1e-3,
    "schedule": "plateau",
    "augment": "flip",
    "grid_augment": False,  # the shipped preset's grid trained on the images as they are (its card's grid figures)
}

RECIPES = {
    "senn_fashion_mnist": dict(
        TRAINING,
        description=(
            "SENN (Alvarez-Melis and Jaakkola 2018): 10 concepts from a conv autoencoder, relevances from a conv net, "
            "logits = sum of relevance x concept, trained with the robustness penalty, on Fashion-MNIST."
        ),
        config=dict(ARCHITECTURE, robustness_weight=1e-2),
        # the seed's penalty weight lambda, ranked on validation accuracy (3 epochs each on 20,000 fit images)
        grid=[{"robustness_weight": 1e-2}, {"robustness_weight": 1e-1}],
        epochs=20,
        notes=(
            "The robustness penalty is exact (one input gradient per class) and squared; reconstruction is the mean "
            "squared error per pixel value. Random left-right flips; about 150 s an epoch on two CPU cores."
        ),
    ),
    # the control of the robustness measurement: the same network and training without the penalty (lambda = 0)
    "senn_no_penalty_fashion_mnist": dict(
        TRAINING,
        description="SENN as senn_fashion_mnist but trained without the robustness penalty (lambda = 0): the control of its robustness figure.",
        config=dict(ARCHITECTURE, robustness_weight=0.0),
        grid=[],
        grid_epochs=0,
        epochs=20,
        notes="Only lambda differs from senn_fashion_mnist (about 30 s an epoch on two CPU cores).",
    ),
}
