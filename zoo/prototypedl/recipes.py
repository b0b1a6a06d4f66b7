"""Training recipes of the prototypedl presets: data, split, grid, epochs (`glasszoo train NAME`)."""

RECIPES = {
    "prototypedl_fashion_mnist": {
        "family": "prototypedl",
        # a fine-tune on a new folder (`glasszoo finetune`): cheap epochs, so many of them
        "finetune": {"epochs": 100, "learning_rate": 2e-3, "batch_size": 32},
        "dataset": "fashion_mnist",
        "description": "PrototypeDL (Li et al. 2018: conv autoencoder, 40-d latent, 15 latent prototypes, logits = squared distances @ W) on Fashion-MNIST.",
        "config": {
            "filters": [32, 32, 32, 10],
            "num_prototypes": 15,
            "classification_weight": 20.0,
            "reconstruction_weight": 1.0,
            "r1_weight": 1.0,
            "r2_weight": 1.0,
        },
        # learning rate around the paper's 2e-3, 6 epochs each on the 54,000 fit images, ranked on validation
        "grid": [{"learning_rate": 2e-3}, {"learning_rate": 1e-3}, {"learning_rate": 5e-3}],
        "validation_size": 6000,
        "notes": (
            "The paper's architecture, loss weights (20 CE + R + R1 + R2) and batch 250; the paper trains MNIST "
            "with Adam 2e-3 and elastic deformations for 1500 epochs, this preset without augmentation for 60 "
            "epochs (about 10 s an epoch on two CPU cores)."
        ),
        "batch_size": 250,
        "grid_batch_size": 250,
        "epochs": 60,
        "grid_epochs": 6,
        "learning_rate": 2e-3,
        "schedule": "plateau",
    },
}
