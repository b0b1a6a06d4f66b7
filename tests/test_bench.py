"""Smoke tests of the benchmarks in bench/: each `main` runs in-process at its smallest settings.

Checks that a markdown table is printed and that the JSON has the expected
keys. No timing is asserted (the numbers of one tiny run mean nothing).
"""

import importlib.util
import json
import pathlib

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


def bench_module(name):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the benchmarks run on the TensorFlow backend")
    spec = importlib.util.spec_from_file_location(f"glasszoo_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(name, argv, tmp_path, capsys):
    out = tmp_path / f"{name}.json"
    returned = bench_module(name).main(argv + ["--repeats", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    table_lines = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table_lines) >= 3, printed  # header, separator, at least one row
    assert table_lines[1].startswith("|---|")
    payload = json.loads(out.read_text())
    assert set(payload) == {"benchmark", "machine", "settings", "results"}
    assert payload["benchmark"] == name
    assert payload["machine"]["backend"] == "tensorflow"
    assert payload["settings"]["repeats"] == 1
    return payload, returned


def test_serving(tmp_path, capsys):
    payload, _ = run_main("serving", ["--families", "cnn", "--batches", "2"], tmp_path, capsys)
    (row,) = payload["results"]
    expected = {
        "family", "preset", "batch", "explanation_outputs",
        "keras_predict_images_per_s", "keras_call_images_per_s", "onnx_logits_images_per_s",
        "keras_explain_images_per_s", "onnx_explain_images_per_s",
        "predict_onnx_over_keras", "explain_onnx_over_keras",
    }  # fmt: skip
    assert expected <= set(row)
    assert (row["family"], row["preset"], row["batch"]) == ("cnn", "cnn_fashion_mnist", 2)
    assert set(row["explanation_outputs"]) == {"logits", "class_activation_map"}
    assert row["predict_onnx_over_keras"] > 0 and row["explain_onnx_over_keras"] > 0


def test_explain_cost(tmp_path, capsys):
    argv = ["--families", "cnn", "--batches", "2", "--ig-images", "2", "--ig-steps", "2", "--ig-batch", "6"]
    payload, _ = run_main("explain_cost", argv, tmp_path, capsys)
    results = payload["results"]
    assert set(results) == {"explain_vs_predict", "integrated_gradients_vs_explain"}
    (price,) = results["explain_vs_predict"]
    assert {"family", "batch", "predict_images_per_s", "call_images_per_s", "explain_images_per_s", "explain_over_predict", "explain_over_call"} <= set(price)
    (ig,) = results["integrated_gradients_vs_explain"]
    assert {"family", "images", "ig_steps", "explain_images_per_s", "ig_images_per_s", "ig_over_explain"} <= set(ig)
    assert (ig["images"], ig["ig_steps"]) == (2, 2)


def test_training_step(tmp_path, capsys):
    argv = ["--families", "prototypedl", "--batch", "4", "--steps", "1", "--warmup", "1"]
    payload, _ = run_main("training_step", argv, tmp_path, capsys)
    (row,) = payload["results"]
    expected = {"family", "batch", "family_forward_flops", "cnn_filters", "cnn_forward_flops", "flops_ratio", "family_step_ms", "cnn_step_ms", "step_ratio"}
    assert expected <= set(row)
    assert row["batch"] == 4
    assert 0.8 <= row["flops_ratio"] <= 1.25  # the matched CNN is within ~20% of the family's FLOPs


def test_flop_count_matches_the_gap_cnn_formula():
    """The graph counter agrees with the closed form for GapCNN (convolutions and classifier)."""
    training_step = bench_module("training_step")
    from glasszoo.zoo.cnn import GapCNN

    model = GapCNN(num_classes=10, input_shape=(28, 28, 1), filters=(8, 16, 32))
    flops, per_type, per_batch = training_step.forward_flops(model)
    assert flops == training_step.gap_cnn_flops(8, 3)
    assert per_batch == 0 and set(per_type) == {"Conv2D", "MatMul"}
