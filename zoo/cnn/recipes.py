"""Training recipes of the cnn presets: data, split, grid, epochs (`glasszoo train NAME`)."""

RECIPES = {
    "cnn_fashion_mnist": {
        "family": "cnn",
        # a fine-tune on a new folder (`glasszoo finetune`): the budget binds before the epochs do
        "finetune": {"epochs": 30, "learning_rate": 1e-3, "batch_size": 32},
        "dataset": "fashion_mnist",
        "description": "Black-box baseline: plain CNN (3 stages of 2 conv-BN-ReLU, 32/64/128 channels, GAP, dense) on Fashion-MNIST.",
        "config": {"filters": [32, 64, 128], "dropout": 0.3},
        "grid": [],
        "validation_size": 6000,
        "notes": "A budget similar to the interpretable presets' (15 epochs on the same 54,000 training images).",
        "batch_size": 64,
        "grid_batch_size": 64,
        "epochs": 15,
        "grid_epochs": 0,
        "learning_rate": 1e-3,
        "schedule": "plateau",
    },
}
