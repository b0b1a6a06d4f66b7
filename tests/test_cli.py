import json
import subprocess
import sys

import numpy as np
import pytest
from glasszoo.cli import demo_presets, main
from glasszoo.zoo.registry import list_models


def test_list_and_info(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "inam_fashion_mnist" in out and "test acc." in out
    assert main(["info", "inam_fashion_mnist"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["metrics"]["test_accuracy"] > 0.85
    assert "decision_images" in card["explanation_outputs"]


def test_unknown_name_exits_with_a_clear_message(capsys):
    assert main(["info", "inam_fashon_mnist"]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'inam_fashon_mnist'" in err and "inam_fashion_mnist" in err


def test_explain_export_and_predict_without_tensorflow(tmp_path, capsys):
    from glasszoo.data.samples import load_samples
    from PIL import Image

    images, labels, names = load_samples()
    files = []
    for i in (0, 20):
        path = tmp_path / f"image{i}.png"
        Image.fromarray((images[i, ..., 0] * 255).astype("uint8")).save(path)
        files.append(str(path))
    assert main(["explain", "inam_fashion_mnist", *files, "--out", str(tmp_path / "explained")]) == 0
    written = {p.name for p in (tmp_path / "explained").iterdir()}
    assert {"local_image0.png", "local_image20.png", "explanation_grid.png", "explanations.npz", "predictions.json"} <= written
    assert any(name.startswith("kernel_") for name in written)
    onnx_path = tmp_path / "inam.onnx"
    assert main(["export", "inam_fashion_mnist", str(onnx_path)]) == 0
    assert "decision_images" in capsys.readouterr().out
    served_dir = tmp_path / "served"
    code = (
        "import sys; from glasszoo.cli import main; rc = main(['predict', sys.argv[1], *sys.argv[3:], '--out', sys.argv[2]]); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'serving imported tensorflow'; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(onnx_path), str(served_dir), *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)["predictions"]
    assert json.loads((served_dir / "predictions.json").read_text())["predictions"] == predictions
    with np.load(tmp_path / "explained" / "explanations.npz") as explained:  # Keras, same files
        keras_classes = [names[k] for k in explained["logits"].argmax(-1)]
    assert [p["class"] for p in predictions] == keras_classes
    assert [p["file"] for p in predictions] == files and all(len(p["top3"]) == 3 for p in predictions)
    with np.load(served_dir / "outputs.npz") as served:
        assert served["decision_images"].shape == (2, 10, 28, 28, 1)
    assert sorted(p.name for p in served_dir.glob("explanation_*.png")) == ["explanation_000_image0.png", "explanation_001_image20.png"]


def test_demo_writes_pictures_and_parity(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "glasszoo", "demo", "--out", str(out), "--samples", "6"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = {s["model"]: s for s in json.loads((out / "summary.json").read_text())["models"]}
    assert "inam_fashion_mnist" in summaries
    from glasszoo.explain import pictures

    assert set(summaries) == set(demo_presets())
    for name, summary in summaries.items():
        assert max(summary["onnx_max_abs_difference"].values()) < 1e-3
        assert max(summary["self_checks_max_abs_error"].values()) < 1e-3
        assert len(list((out / name).glob("local_*.png"))) == summary["samples"]
        if hasattr(pictures.views_of(summary["family"]), "draw_overview"):
            assert (out / name / "explanation_grid.png").stat().st_size > 1000
        assert (out / name / f"{name}.onnx").exists()


def test_list_markdown_is_the_zoo_table(capsys):
    assert main(["list", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| name | family | data | test acc.")
    assert any(line.startswith("| `inam_fashion_mnist` | inam | fashion_mnist") for line in lines)


def test_evaluate_reports_accuracy_and_consistency(tmp_path, capsys):
    assert main(["evaluate", "inam_mnist", "--consistency", "20", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["test_images"] == 1000 and report["family_metric_images"] == 20
    assert report["test_accuracy"] == pytest.approx(report["model_card_test_accuracy"], abs=2e-3)
    assert 0.0 <= report["decision_image_consistency"] <= 1.0


def test_train_writes_a_verified_preset_with_its_card(tmp_path):
    import glasszoo

    out, work = tmp_path / "preset", tmp_path / "work"
    args = ["train", "inam_mnist", "--epochs", "1", "--no-grid", "--max-train", "256", "--out", str(out), "--work-dir", str(work)]
    assert main(args) == 0
    model = glasszoo.load(out)
    card = model.preset_metadata
    assert card["training"]["epochs"] == 1 and card["data"]["train_images"] == 256
    assert set(card["metrics"]) == {"validation_accuracy", "validation_cross_entropy", "test_accuracy", "test_cross_entropy"}
    assert {"keras", "numpy", "onnxruntime", "tf2onnx"} <= set(card["versions"])
    assert (work / "best.weights.h5").exists() and (work / "training_log.csv").exists()
    assert (out / "feature_sample.npz").exists()
    assert np.any(model.head.feature_means.numpy())


def test_train_with_cosine_schedule_and_flips(tmp_path, monkeypatch):
    from glasszoo.zoo import recipes

    spec = dict(recipes.recipe("inam_mnist"), schedule="cosine", augment="horizontal_flip")
    monkeypatch.setitem(recipes.RECIPES, "inam_mnist_variant", spec)
    args = ["train", "inam_mnist_variant", "--epochs", "1", "--no-grid", "--max-train", "128", "--out", str(tmp_path / "p"), "--work-dir", str(tmp_path / "w")]
    assert main(args) == 0
    card = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert "cosine" in card["training"]["optimizer"] and card["training"]["augmentation"] == "horizontal_flip"


def test_the_grid_trials_train_on_the_recipes_augmentation_unless_it_says_not(tmp_path, monkeypatch):
    from glasszoo.data import augment
    from glasszoo.zoo import recipes

    spec = dict(recipes.recipe("inam_mnist"), augment="pixel_holes", grid=[{"learning_rate": 1e-3}], grid_epochs=1, grid_train_size=64)
    monkeypatch.setitem(recipes.RECIPES, "inam_mnist_holes", spec)
    holed = []
    original = augment.AugmentedBatches._pixel_holes

    def counting(self, batch):
        holed.append(len(self.images))  # the training set it draws from: the grid's 64 images or the final run's 128
        return original(self, batch)

    monkeypatch.setattr(augment.AugmentedBatches, "_pixel_holes", counting)
    args = ["train", "inam_mnist_holes", "--epochs", "1", "--max-train", "128", "--out", str(tmp_path / "p"), "--work-dir", str(tmp_path / "w")]
    assert main(args) == 0
    card = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert card["training"]["augmentation"] == "pixel_holes" and len(card["training"]["grid"]) == 1
    assert set(holed) == {64, 128}, "the grid's trials and the final run both train with the holes"
    assert card["training"]["grid_augmentation"] == "pixel_holes"

    holed.clear()
    monkeypatch.setitem(recipes.RECIPES, "inam_mnist_holes", dict(spec, grid_augment=False))
    args = ["train", "inam_mnist_holes", "--epochs", "1", "--max-train", "128", "--out", str(tmp_path / "q"), "--work-dir", str(tmp_path / "v")]
    assert main(args) == 0
    assert set(holed) == {128}, "a recipe can keep its grid on the images as they are (SENN's shipped grid)"
    assert json.loads((tmp_path / "q" / "metadata.json").read_text())["training"]["grid_augmentation"] == "none"


def test_evaluate_explanations_writes_report_and_pictures(tmp_path, capsys):
    if "inam_mnist" not in list_models():
        pytest.skip("inam_mnist not shipped")
    out = tmp_path / "eval"
    assert main(["evaluate", "inam_mnist", "--explanations", "inherent", "--explanation-images", "120", "--grids", "1", "--consistency", "0", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())["explanations"]["inam_mnist"]
    entry = report["methods"]["inherent"]
    assert 0 <= entry["localisation"]["mean"] <= 1
    assert entry["pixel_removal_least"]["area"] > entry["pixel_removal_most"]["area"]
    assert (out / "pixel_removal_inam_mnist.png").exists() and (out / "maps_inam_mnist.png").exists()
    assert "localisation" in capsys.readouterr().out


def test_evaluate_scores_several_models_on_the_same_images_and_resumes(tmp_path, capsys, monkeypatch, fashion_mnist):
    from glasszoo.explain import explanation_report

    out = tmp_path / "eval"
    args = ["evaluate", "protopnet_fashion_mnist", "cnn_fashion_mnist", "--explanations", "inherent,saliency", "--explanation-images", "150",
            "--grids", "2", "--removal-images", "6", "--randomisation-images", "2", "--consistency", "0", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"protopnet_fashion_mnist", "cnn_fashion_mnist"}  # the CNN is the comparison: no third model
    scored = report["explanations"]
    assert set(scored) == {"protopnet_fashion_mnist", "cnn_fashion_mnist"}
    assert scored["protopnet_fashion_mnist"]["usable_images"] == scored["cnn_fashion_mnist"]["usable_images"] > 50
    assert scored["protopnet_fashion_mnist"]["images_chosen_by"] == ["protopnet_fashion_mnist", "cnn_fashion_mnist"]
    assert set(scored["protopnet_fashion_mnist"]["methods"]) == {"inherent", "saliency"}
    assert sorted(p.name for p in (out / "scores").iterdir()) == [
        "cnn_fashion_mnist__inherent.json", "cnn_fashion_mnist__saliency.json",
        "protopnet_fashion_mnist__inherent.json", "protopnet_fashion_mnist__saliency.json",
    ]
    printed = capsys.readouterr().out
    assert "| protopnet_fashion_mnist | inherent |" in printed and "|---|" in printed
    # the own map against the best post-hoc method, paired image by image (the black box's CAM is its own map too)
    paired = scored["protopnet_fashion_mnist"]["own_against_best"]
    assert set(paired) == {"localisation", "removal least-first", "removal most-first"}
    assert paired["removal least-first"]["best"] == "saliency" and paired["removal least-first"]["units"] == 6
    assert "Own map minus the best post-hoc method" in printed and "vs saliency" in printed

    # the same command again reuses every saved (model, method) and computes nothing
    def no_scoring(*args, **kwargs):
        raise AssertionError("a saved method was scored again")

    monkeypatch.setattr(explanation_report, "_score_method", no_scoring)
    assert main(args) == 0
    assert json.loads((out / "report.json").read_text())["explanations"] == scored
    assert "reusing the saved scores of inherent, saliency" in capsys.readouterr().out
    # another protocol is another key: nothing saved applies
    with pytest.raises(AssertionError, match="scored again"):
        main([*args[:-2], "--grids", "3", "--out", str(out)])
    # a saved entry whose method now draws other maps (a code change the key cannot see) is scored again
    saved_file = out / "scores" / "cnn_fashion_mnist__saliency.json"
    saved = json.loads(saved_file.read_text())
    saved["entry"]["localisation"]["per_grid"][0] += 0.01
    saved_file.write_text(json.dumps(saved))
    with pytest.raises(AssertionError, match="scored again"):
        main(args)
    # so is one saved before the images' removal areas were kept (no paired differences could come from it)
    saved_file = out / "scores" / "protopnet_fashion_mnist__inherent.json"
    saved = json.loads(saved_file.read_text())
    del saved["entry"]["pixel_removal_least"]["per_image"]
    saved_file.write_text(json.dumps(saved))
    with pytest.raises(AssertionError, match="scored again"):
        main(args)


def test_evaluate_scores_a_new_preset_on_the_images_of_an_earlier_run(tmp_path, fashion_mnist):
    out = tmp_path / "eval"
    common = ["--explanations", "inherent", "--explanation-images", "150", "--grids", "2", "--removal-images", "4",
              "--randomisation-images", "1", "--consistency", "0", "--no-baseline"]
    assert main(["evaluate", "cnn_fashion_mnist", "protopnet_fashion_mnist", *common, "--out", str(out / "both")]) == 0
    both = json.loads((out / "both" / "report.json").read_text())["explanations"]
    # the CNN alone, its images chosen by both presets: the same images and grids as in the run of both
    assert main(["evaluate", "cnn_fashion_mnist", *common, "--images-correct-for", "protopnet_fashion_mnist", "--out", str(out / "one")]) == 0
    one = json.loads((out / "one" / "report.json").read_text())["explanations"]["cnn_fashion_mnist"]
    assert one["images_chosen_by"] == ["cnn_fashion_mnist", "protopnet_fashion_mnist"]
    assert one["usable_images"] == both["cnn_fashion_mnist"]["usable_images"]
    assert one["methods"]["inherent"] == both["cnn_fashion_mnist"]["methods"]["inherent"]
    # without it the CNN draws from the images it alone gets right: more of them, other grids
    assert main(["evaluate", "cnn_fashion_mnist", *common, "--out", str(out / "alone")]) == 0
    alone = json.loads((out / "alone" / "report.json").read_text())["explanations"]["cnn_fashion_mnist"]
    assert alone["usable_images"] > one["usable_images"]


def test_saved_method_scores_are_keyed_by_weights_images_and_protocol(tmp_path):
    from glasszoo.explain.evaluation_cache import MethodScores, protocol_key, weights_fingerprint
    from tiny_models import build

    model = build("cnn", seed=0)
    images = np.random.default_rng(0).random((6, 28, 28, 1)).astype("float32")
    labels = np.arange(6)
    key = protocol_key(model, images, labels, [0, 2], grids=2, fractions=np.array([0.0, 0.5]))
    scores = MethodScores(tmp_path, "tiny", key)
    assert scores.load("saliency") is None
    scores.save("saliency", {"localisation": {"mean": 0.5}})
    assert MethodScores(tmp_path, "tiny", key).load("saliency") == {"localisation": {"mean": 0.5}}
    assert scores.load("occlusion") is None
    assert MethodScores(tmp_path, "tiny", protocol_key(model, images, labels, [0, 3], grids=2, fractions=[0.0, 0.5])).load("saliency") is None
    assert MethodScores(tmp_path, "tiny", protocol_key(model, images, labels, [0, 2], grids=3, fractions=[0.0, 0.5])).load("saliency") is None
    before = weights_fingerprint(model)
    model.weights[0].assign(model.weights[0] + 1e-3)
    assert weights_fingerprint(model) != before
    assert MethodScores(tmp_path, "tiny", protocol_key(model, images, labels, [0, 2], grids=2, fractions=[0.0, 0.5])).load("saliency") is None
    scores.path("saliency").write_text("{half a file")
    assert scores.load("saliency") is None
