"""Training recipes of the B-cos presets: data, split, grid, epochs (`glasszoo train NAME`)."""

# the layers both presets share (the softmax-pooled one starts from the sum-pooled one's weights)
ARCHITECTURE = {
    "filters": [32, 64, 64, 128, 128],
    "kernel_sizes": [3, 3, 3, 3, 3, 1],
    "strides": [1, 2, 1, 2, 1, 1],
    "max_out": 2,
    "scale_factor": 100.0,
    "padding": "symmetric",
}

RECIPES = {
    "bcos_softmax_fashion_mnist": {
        "family": "bcos",
        "dataset": "fashion_mnist",
        "description": (
            "B-cos network (B = 3, MaxOut 2, input x, no bias or normalisation) whose class maps are pooled by a softmax "
            "over positions (SoftmaxEvidencePooling), fine-tuned from bcos_plain_fashion_mnist (then named bcos_fashion_mnist), on Fashion-MNIST."
        ),
        "initial_weights": "bcos_plain_fashion_mnist",
        "config": dict(ARCHITECTURE, b=3.0, temperature=3.0, input_encoding="none", pooling="softmax", pooling_sharpness=5.0),
        # the pooling's sharpness and T, ranked on the validation split by accuracy + 3x3-grid localisation
        "grid": [
            {"pooling_sharpness": 5.0, "temperature": 3.0},
            {"pooling_sharpness": 10.0, "temperature": 3.0},
            {"pooling_sharpness": 5.0, "temperature": 10.0},
        ],
        "localisation_weight": 1.0,
        "localisation_grids": 8,
        "validation_size": 6000,
        "batch_size": 128,
        "grid_batch_size": 128,
        "grid_train_size": 12800,
        "epochs": 3,
        "grid_epochs": 1,
        "learning_rate": 3e-4,
        "schedule": "cosine",
        "notes": (
            "Trained on two CPU cores (about 9 minutes an epoch). Why the softmax pooling: with the paper's sum over "
            "positions only each class's total evidence on an image of another class must be negative, and the sum-pooled "
            "preset kept positive evidence for a class on parts of other garments (its median maximum evidence per "
            "position for a wrong class was +4.8), so on 3x3 grids 38% of a class's positive contribution lay in other "
            "cells. Pooled by a softmax, an absent class needs negative evidence at every position. A first trial "
            "(sharpness 5, T 3, 1 epoch on 12,800 images from the sum-pooled weights) moved validation localisation "
            "from 0.618 to 0.847 at validation accuracy 0.869; the same fine-tune with the sum kept (the control) gave 0.642 at "
            "0.925."
        ),
    },
    "bcos_fashion_mnist": {
        "family": "bcos",
        # a fine-tune on a new folder (`glasszoo finetune`): a higher rate than the preset's for the new class layer;
        # without the penalty, as measured by bench/finetune_folder.py (its effect on a new task is not measured yet)
        "finetune": {"epochs": 30, "learning_rate": 2e-3, "batch_size": 32, "config": {"absent_evidence_weight": 0.0}},
        "dataset": "fashion_mnist",
        "description": (
            "B-cos network (B = 3, MaxOut 2, input x, no bias or normalisation, sum over positions / T = 10) fine-tuned "
            "from bcos_plain_fashion_mnist with a penalty on positive evidence for absent classes at single positions, "
            "on Fashion-MNIST."
        ),
        "initial_weights": "bcos_plain_fashion_mnist",
        "config": dict(ARCHITECTURE, b=3.0, temperature=10.0, input_encoding="none", absent_evidence_weight=0.2),
        "grid": [],  # the penalty's weight was chosen on fine-tunes of the same start (notes)
        "localisation_weight": 1.0,
        "localisation_grids": 8,
        # issue 12's two targets: the most accurate epoch among those whose validation localisation reaches 0.85
        "checkpoint_selection": "accuracy_with_localisation_floor",
        "localisation_floor": 0.85,
        "validation_size": 6000,
        "batch_size": 128,
        "epochs": 18,
        "grid_epochs": 0,
        "learning_rate": 1e-3,
        "schedule": "cosine",
        "notes": (
            "Trained on two CPU cores. Why the penalty: summed over positions, as in the paper, a class needs only its "
            "total evidence on an image of another class to be negative, and bcos_plain_fashion_mnist (validation "
            "accuracy 0.925, validation localisation 0.618) kept positive evidence for classes on parts of other "
            "garments, so on 3x3 grids 38% of a class's positive contribution lay in other cells. The penalty "
            "(absent_evidence_weight x the positive per-position evidence of absent classes, in logit units) removes "
            "that evidence while the decision stays the sum. Its weight was chosen on the validation split by "
            "fine-tuning the same weights (Adam 3e-4, cosine; validation accuracy / localisation): one epoch on 12,800 "
            "images with weight 0 (the control) 0.926 / 0.637, 0.2 0.904 / 0.815, 1.0 0.865 / too few confident classes "
            "to measure; one epoch on the 54,000 fit images with 0.1 0.912 / 0.825 and 0.2 0.910 / 0.882; four epochs "
            "with 0.2 0.915 / 0.894 (with 0.1, 0.914 / 0.860 after two). From scratch (Adam 1e-3, 4 epochs, weight "
            "0.2) B = 2 reached 0.909 / 0.695 (without the penalty 0.911 / 0.577) and B = 3 stayed at chance (0.104): "
            "the penalty pushes a fresh network's evidence below zero everywhere before it has learned any, so it "
            "starts from the trained weights. A first run (8 epochs, Adam 3e-4, the epoch with the best validation accuracy + "
            "localisation: epoch 6, validation 0.9168 / 0.882, test 0.9128) shipped first; its validation accuracy was still "
            "rising, so this recipe trains 18 epochs at the plain network's rate, 1e-3, and keeps the most accurate epoch whose "
            "validation localisation reaches 0.85 (issue 12's target): in a sum, the localisation's epoch-to-epoch noise "
            "(0.83-0.94 over these 18 epochs) chose the epoch."
        ),
    },
    "bcos_plain_fashion_mnist": {
        "family": "bcos",
        "dataset": "fashion_mnist",
        "description": "B-cos network (B = 3, MaxOut 2, input x, no bias or normalisation, sum over positions / T = 10) on Fashion-MNIST.",
        "config": dict(ARCHITECTURE, b=2.0, temperature=100.0, input_encoding="complement"),
        # B, T and the input encoding, ranked on the validation split by accuracy + 3x3-grid localisation (equal weight).
        # A first grid (B 2 / 2.5, T 10 / 100, widths 32-128 and 64-256, [x, 1 - x], 3 epochs each; 25 final epochs)
        # gave validation accuracy 0.895-0.915 and localisation 0.54-0.57 after 3 epochs, and 0.932 / 0.49 after 25:
        # localisation fell as the network fit the training set, so this grid also tries fewer final epochs.
        "grid": [
            {"b": 2.0, "temperature": 10.0},
            {"b": 2.0, "temperature": 10.0, "input_encoding": "none"},
            {"b": 2.5, "temperature": 10.0, "input_encoding": "none"},
            {"b": 3.0, "temperature": 10.0},
            {"b": 3.0, "temperature": 10.0, "input_encoding": "none"},
            {"b": 2.0, "temperature": 100.0, "input_encoding": "none"},
        ],
        "localisation_weight": 1.0,
        "localisation_grids": 8,
        "validation_size": 6000,
        "batch_size": 128,
        "grid_batch_size": 128,
        "epochs": 12,
        "grid_epochs": 4,
        "learning_rate": 1e-3,
        "schedule": "cosine",
        "notes": (
            "Trained with KERAS_BACKEND=jax on a lent H200 GPU (about 1.3 s an epoch); the weights load on every backend. "
            "The grid chose B = 3, T = 10 and the input x alone (no [x, 1 - x]): with the complement encoding, 59% of "
            "the positive contribution lay on black background pixels; without it, none does. A 25-epoch final run of "
            "the same configuration (`--no-grid` with it as the base) reached validation accuracy 0.9325 but validation "
            "localisation 0.551 +- 0.021 against 0.925 and 0.618 +- 0.016 for 12 epochs, so 12 epochs were kept by the "
            "same rule (validation accuracy + localisation). Shipped as bcos_fashion_mnist until 2026-12-03."
        ),
    },
}

# bcos_fashion_mnist's recipe with pixel holes: the same start, penalty, epochs, rate and checkpoint rule (not shipped)
RECIPES["bcos_holes_fashion_mnist"] = dict(
    RECIPES["bcos_fashion_mnist"],
    description=(
        "bcos_fashion_mnist's recipe (B-cos network, B = 3, MaxOut 2, input x, the absent-class evidence penalty, "
        "fine-tuned from bcos_plain_fashion_mnist) trained with pixel holes, on Fashion-MNIST."
    ),
    augment="pixel_holes",
    notes=(
        "Trained on two CPU cores (about 2 minutes an epoch; stopped after epoch 9 and resumed from the work folder's "
        "backup). Why the holes: on bcos_fashion_mnist, removing only the pixels of negative contribution (6% of the "
        "pixels, -0.09 logit in sum) lowered the class logit by 0.68 on average instead of raising it, because the "
        "holes change the dynamic weights; least-first removal then ties occlusion instead of beating it. Half of the "
        "training images lose a uniform 0-0.9 share of their pixels (the removal metric's range), so the weights stay "
        "stable when pixels are removed. Measured on the validation split (256 images both classify correctly and "
        "confidently, least-first own map minus occlusion, paired): bcos_fashion_mnist -0.001 +- 0.012, this recipe "
        "+0.016 +- 0.008 (the gain +0.017 +- 0.011), at validation accuracy 0.9208 against 0.9258 and validation "
        "localisation 0.865 against 0.901. A one-epoch fine-tune of bcos_fashion_mnist with holes (Adam 3e-4) had "
        "given +0.023 +- 0.010 at 0.9183. Validation accuracy lagged the recipe without holes by 1.0-1.5 points "
        "through epoch 9 and by 0.5 at the end; the floor rule kept epoch 18 (validation 0.9208 / 0.865, test 0.9155). "
        "On the full protocol (386 test images) its own map beat occlusion least-first (0.879 against 0.851, +0.028 +- "
        "0.008 paired) but lost to Input x Gradient (0.932; -0.052 +- 0.010) and localised at 0.897 (bcos_fashion_mnist "
        "0.933), so it is not shipped: the recipe stays for the record (README, B-cos)."
    ),
)
