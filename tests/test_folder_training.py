"""Your own images: folder -> train / finetune -> explain -> export -> predict, and the checks that come with it."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import glasszoo
from glasszoo.data.shapes import write_shapes_folder
from glasszoo.zoo.families import families
from tiny_models import build, family_names

ENVIRONMENT = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def _glasszoo(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "glasszoo", *map(str, args)], cwd=cwd, env=ENVIRONMENT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"glasszoo {' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    return write_shapes_folder(tmp_path_factory.mktemp("task") / "shapes", images_per_class=12, size=32, classes=3, seed=0)


def test_folder_to_finetune_explain_export_predict(shapes_folder, tmp_path):
    """The whole road a user takes, on the command line: a folder of RGB images to a served, explained prediction."""
    preset = tmp_path / "mine" / "preset"
    _glasszoo(
        "finetune", "bcos_fashion_mnist", "--data", shapes_folder, "--image-size", 32, 32, "--color-mode", "rgb",
        "--epochs", 1, "--batch-size", 16, "--augment", "flip_and_crop", "--out", preset, "--work-dir", tmp_path / "mine" / "work",
        cwd=tmp_path,
    )
    card = json.loads((preset / "metadata.json").read_text())
    assert card["class_names"] == ["circle", "square", "triangle"] and card["input"]["shape"] == [32, 32, 3]
    assert len(card["data"]["folder_sha256"]) == 64 and card["data"]["split"]["images_per_class"]["test"] == [2, 2, 2]
    assert card["training"]["initial_weights"]["preset"] == "bcos_fashion_mnist"
    assert card["config"]["absent_evidence_weight"] == 0.0  # the preset's training penalty is off for a new task (recipe)
    assert "adapted to the new channel count" in card["training"]["initial_weights"]["transfer"]
    assert card["training"]["augmentation"] == "flip_and_crop" and card["training"]["command"].startswith("glasszoo finetune")
    split = json.loads((preset / "split.json").read_text())
    assert sorted(split) == ["test", "train", "validation"] and len(split["test"]) == card["data"]["test_images"] == 6
    assert 0.0 <= card["metrics"]["test_accuracy"] <= 1.0

    image = shapes_folder / split["test"][0]
    _glasszoo("explain", preset, image, "--out", tmp_path / "explained", cwd=tmp_path)
    assert (tmp_path / "explained" / f"local_{image.stem}.png").exists()
    _glasszoo("export", preset, tmp_path / "mine.onnx", cwd=tmp_path)
    result = _glasszoo("predict", tmp_path / "mine.onnx", image, "--out", tmp_path / "served", cwd=tmp_path)
    predictions = json.loads((tmp_path / "served" / "predictions.json").read_text())
    model = glasszoo.load(str(preset))
    expected = model.class_names[int(np.argmax(model.explain(glasszoo.data.read_image(image)[None])["logits"]))]
    assert predictions["predictions"][0]["class"] == expected
    assert "converted" not in result.stderr  # the folder's images already have the model's shape

    # a 64 x 64 grey image is converted (said once), or refused with --strict
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype("uint8")).save(grey)
    result = _glasszoo("predict", tmp_path / "mine.onnx", grey, grey, cwd=tmp_path)
    assert result.stderr.count("converted for the model's input") == 1 and "2 grey -> colour" in result.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "glasszoo", "predict", str(tmp_path / "mine.onnx"), str(grey), "--strict"],
        cwd=tmp_path, env=ENVIRONMENT, capture_output=True, text=True, timeout=600,
    )
    assert refused.returncode != 0 and "strict mode refuses conversions" in refused.stderr


def test_train_from_scratch_on_a_folder_and_resume(shapes_folder, tmp_path):
    """`glasszoo train FAMILY --data DIR`: the family's architecture on the folder's shape; a re-run resumes."""
    black_box = next(name for name, record in families().items() if record.black_box)
    out, work = tmp_path / "preset", tmp_path / "work"
    args = ("train", black_box, "--data", shapes_folder, "--epochs", 1, "--batch-size", 16, "--out", out, "--work-dir", work)
    _glasszoo(*args, cwd=tmp_path)
    card = json.loads((out / "metadata.json").read_text())
    assert card["input"]["shape"] == [32, 32, 3] and card["data"]["color_mode"] == "rgb"
    assert card["training"]["initial_weights"] is None and card["training"]["epochs"] == 1
    assert glasszoo.load(str(out)).image_shape == (32, 32, 3)


def test_fine_tuning_recipe_takes_the_presets_shape_and_family_settings(shapes_folder):
    from glasszoo.zoo.folder_training import fine_tuning_recipe, folder_data

    spec = fine_tuning_recipe("inam_fashion_mnist", folder_data(shapes_folder))
    assert spec["dataset"]["image_size"] == [28, 28] and spec["dataset"]["color_mode"] == "grayscale"
    assert spec["family"] == "inam" and spec["initial_weights"] == "inam_fashion_mnist" and spec["grid"] == []
    assert spec["config"]["num_kernels"] == 256 and "num_classes" not in spec["config"]
    given = fine_tuning_recipe("inam_fashion_mnist", folder_data(shapes_folder, image_size=(32, 32), color_mode="rgb"), epochs=3)
    assert given["dataset"]["image_size"] == [32, 32] and given["epochs"] == 3
    # PrototypeDL's reconstruction error is a sum over pixels: its weight follows the image's size
    scaled = fine_tuning_recipe("prototypedl_fashion_mnist", folder_data(shapes_folder, image_size=(32, 32), color_mode="rgb"))
    assert scaled["config"]["reconstruction_weight"] == pytest.approx(28 * 28 / (32 * 32 * 3))
    kept = fine_tuning_recipe("prototypedl_fashion_mnist", folder_data(shapes_folder))
    assert kept["config"]["reconstruction_weight"] == 1.0
    assert given["config"]["tv_weight"] == spec["config"]["tv_weight"]  # other families keep their settings
    with pytest.raises(Exception, match="Unknown model .no_such_preset"):
        fine_tuning_recipe("no_such_preset", folder_data(shapes_folder))


def test_hierarchical_fine_tune_takes_the_flat_plan_and_builds_for_new_classes(shapes_folder):
    """The hierarchical preset fine-tunes like the flat ProtoPNet; its taxonomy and calibrated floors stay with its old classes."""
    from glasszoo.zoo.families import family_class
    from glasszoo.zoo.folder_training import fine_tuning_recipe, folder_data

    spec = fine_tuning_recipe("hierarchical_protopnet_fashion_mnist", folder_data(shapes_folder))
    flat = fine_tuning_recipe("protopnet_fashion_mnist", folder_data(shapes_folder))
    assert spec["stages"] == flat["stages"] and spec["stages"]["initial_push"]
    assert len(spec["config"]["placement_floors"]) == 12  # the preset's, for its 12 edges
    names = sorted(p.name for p in shapes_folder.iterdir() if p.is_dir())
    with pytest.warns(UserWarning, match="flat taxonomy"):
        model = family_class("hierarchical_protopnet")(**dict(spec["config"], num_classes=len(names), class_names=names, input_shape=(28, 28, 1)))
    assert model.tables.num_edges == len(names) and np.all(model.placement_floors == -1e4)  # no floor on the new edges


@pytest.mark.parametrize("family", family_names())
def test_grey_weights_adapt_to_colour_input(family):
    """A grey model's first layer becomes a colour one: the same pre-activations for a grey image given as RGB."""
    grey = build(family, seed=0)
    colour = type(grey).from_config(dict(grey.get_config(), input_shape=[28, 28, 3], name="colour"))
    report = {}
    copied = colour.transfer_weights_from(grey, adapt_input_channels=True, report=report)
    assert report["adapted"], f"{family}: no layer reading the image was adapted ({report})"
    assert set(report["adapted"]) <= set(copied) and not set(report["fresh"]) & set(copied)
    image = np.random.default_rng(1).random((8, 28, 28, 1)).astype("float32")
    adapted, original = colour.predict(np.repeat(image, 3, axis=-1), verbose=0), grey.predict(image, verbose=0)
    # a layer linear in its input gives equal logits; a normalised one (w / |w|) nearly so
    assert np.corrcoef(adapted.ravel(), original.ravel())[0, 1] > 0.99
    assert np.mean(adapted.argmax(1) == original.argmax(1)) >= 7 / 8
    plain = type(grey).from_config(dict(grey.get_config(), input_shape=[28, 28, 3], name="plain"))
    untouched = {}
    plain.transfer_weights_from(grey, report=untouched)
    assert not untouched["adapted"] and set(report["adapted"]) <= set(untouched["fresh"])


def test_load_with_another_channel_count_says_what_it_adapted():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = glasszoo.load("cnn_fashion_mnist", input_shape=(28, 28, 3), num_classes=4)
    messages = [str(w.message) for w in caught if "adapted to the new channel count" in str(w.message)]
    assert len(messages) == 1 and "newly initialised" in messages[0]
    assert model.image_shape == (28, 28, 3)


def test_time_budget_stops_before_the_budget():
    from glasszoo.zoo.training import TimeBudget

    model = build(family_names()[0], seed=0)
    model.compile()
    images = np.random.default_rng(0).random((32, 28, 28, 1)).astype("float32")
    budget = TimeBudget(0.0)
    history = model.fit(images, np.arange(32) % 10, epochs=50, batch_size=16, verbose=0, callbacks=[budget])
    assert len(history.history["loss"]) == 1 and budget.stopped_after == 1


def test_cosine_to_horizon_decays_by_batches_or_by_the_clock_whichever_ends_first():
    import keras

    from glasszoo.zoo.training import CosineToHorizon

    model = build(family_names()[0], seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    images = np.random.default_rng(0).random((32, 28, 28, 1)).astype("float32")
    rates = []
    by_steps = CosineToHorizon(0.01, steps=4)
    recorder = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: rates.append(float(model.optimizer.learning_rate.numpy())))
    model.fit(images, np.arange(32) % 10, epochs=2, batch_size=16, verbose=0, callbacks=[by_steps, recorder])
    expected = [0.005 * (1 + np.cos(np.pi * step / 4)) for step in range(4)]
    np.testing.assert_allclose(rates, expected, rtol=1e-5)
    by_clock = CosineToHorizon(0.01, steps=10**6, seconds=100.0)
    by_clock.started = __import__("time").time() - 50.0  # half the budget gone: half the rate
    assert abs(by_clock.rate() - 0.005) < 1e-4
    by_clock.started -= 1000.0  # past the budget: zero, not negative or rising again
    assert by_clock.progress() == 1.0 and by_clock.rate() == 0.0


def test_a_budgeted_fine_tune_anneals_over_its_budget(shapes_folder, tmp_path, monkeypatch):
    """`--time-budget` with the cosine schedule: the rate falls over the budget, not over the (huge) epoch count.

    The training's clock is a fake one that advances one second per reading, so
    the run is the same on a fast or a loaded machine (on the real clock a
    first epoch slowed by tracing could end the run before the rate fell).
    """
    import types

    from glasszoo.zoo import training
    from glasszoo.zoo.folder_training import fine_tuning_recipe, folder_data
    from glasszoo.zoo.training import train_preset

    readings = iter(range(10**6))
    monkeypatch.setattr(training, "time", types.SimpleNamespace(time=lambda: float(next(readings))))
    spec = fine_tuning_recipe("cnn_fashion_mnist", folder_data(shapes_folder, image_size=(28, 28)), epochs=1000, max_seconds=12.0)
    assert spec["schedule"] == "cosine"
    train_preset("budget", tmp_path / "preset", work_dir=tmp_path / "work", epochs=spec["epochs"], seed=0, verbose=0, spec=spec)
    log = (tmp_path / "work" / "training_log.csv").read_text().splitlines()
    header, rows = log[0].split(","), [line.split(",") for line in log[1:]]
    rates = [float(row[header.index("learning_rate")]) for row in rows]
    assert 1 < len(rates) < 1000 and rates[-1] < 0.2 * spec["learning_rate"], rates
    assert all(later < earlier for earlier, later in zip(rates, rates[1:])), rates


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_is_refused_at_once(policy):
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        with pytest.raises(ValueError, match=f"the dtype policy is '{policy}'. Mixed precision is not supported"):
            build(family_names()[0], seed=0)
        with pytest.raises(ValueError, match="Mixed precision is not supported"):
            glasszoo.load("cnn_fashion_mnist", num_classes=3)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("family", family_names())
def test_fit_evaluate_and_predict_check_their_inputs(family):
    model = build(family, seed=0)
    model.compile()
    good = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    labels = np.array([0, 1, 2, 3])
    name = type(model).__name__
    with pytest.raises(ValueError, match=rf"{name}\.fit: Expected images of shape \(B, 28, 28, 1\).*got shape \(4, 64, 64, 3\)"):
        model.fit(np.zeros((4, 64, 64, 3), "float32"), labels, verbose=0)
    with pytest.raises(ValueError, match=rf"{name}\.predict: Expected pixel values in \[0, 1\]; got range \[0\.\d+, 25\d\.\d+\]"):
        model.predict(good * 255, verbose=0)
    with pytest.raises(ValueError, match=rf"{name}\.evaluate: Expected float images.*Divide 8-bit images by 255"):
        model.evaluate((good * 255).astype("uint8"), labels, verbose=0)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 10\); got \[12\.0\]"):
        model.fit(good, np.array([0, 1, 2, 12]), verbose=0)
    with pytest.raises(ValueError, match=r"fit's validation_data: Expected pixel values"):
        model.fit(good, labels, validation_data=(good * 3, labels), verbose=0)
    from glasszoo.data.augment import AugmentedBatches

    with pytest.raises(ValueError, match=r"first batch of the AugmentedBatches"):
        model.fit(AugmentedBatches(good * 2, labels, batch_size=2), verbose=0)


def test_readme_fine_tuning_snippet_runs_as_written(shapes_folder, tmp_path):
    """The README's Python fine-tuning lines, run on a small generated folder in place of `my_images/`."""
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("# fine-tune on your own images")
    block = readme[start : readme.index("\n\n", start)].replace('"my_images/"', repr(str(shapes_folder)))
    block = block.replace("epochs=5", "epochs=1")
    assert "load_image_folder" in block and "model.fit" in block
    namespace = {"glasszoo": glasszoo}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the documented snippet itself
    model, data = namespace["model"], namespace["data"]
    assert model.image_shape == (28, 28, 1) and model.class_names == data.class_names == ["circle", "square", "triangle"]
    assert len(data.x_val) and model.predict_classes(data.x_test).shape == (len(data.x_test),)


def test_split_seed_fixes_the_split_while_the_training_seed_varies(shapes_folder):
    """`--split-seed` seeds the folder's split; `--seed` alone seeds both (as before)."""
    from glasszoo.cli import _folder_data, build_parser
    from glasszoo.data import load_dataset

    parse = build_parser().parse_args
    command = ["finetune", "bcos_fashion_mnist", "--data", str(shapes_folder)]
    assert _folder_data(parse([*command, "--seed", "3"]))["seed"] == 3
    fixed = [_folder_data(parse([*command, "--seed", str(seed), "--split-seed", "0"])) for seed in (1, 2)]
    assert fixed[0]["seed"] == fixed[1]["seed"] == 0
    splits = [load_dataset(spec).paths for spec in (fixed[0], fixed[1], _folder_data(parse([*command, "--seed", "3"])))]
    assert splits[0] == splits[1] and splits[0] != splits[2]


def test_augment_option_takes_joined_names_and_names_an_unknown_one(capsys):
    from glasszoo.cli import build_parser

    parse = build_parser().parse_args
    command = ["finetune", "bcos_fashion_mnist", "--data", "folder"]
    assert parse([*command, "--augment", "crop+pixel_holes"]).augment == "crop+pixel_holes"
    with pytest.raises(SystemExit):
        parse([*command, "--augment", "crop+holes"])
    assert "Unknown augmentation 'holes'" in capsys.readouterr().err
