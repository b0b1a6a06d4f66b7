"""Smoke tests of the benchmarks in bench/: each `main` runs in-process at its smallest settings.

Checks that a markdown table is printed and that the JSON has the expected
keys. No timing is asserted (the numbers of one tiny run mean nothing).
No family is named: the families and presets come from the registry
(`glasszoo.zoo.families.families()`, `glasszoo.list_models()`), as in the
benchmarks themselves.
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


def common():
    return bench_module("bench_common")


def black_box_family():
    """The first family whose record says `black_box`, with an installed preset (else the test is skipped)."""
    installed = set(common().installed_presets().values())
    names = [name for name in common().black_box_families() if name in installed]
    if not names:
        pytest.skip("no black-box family with an installed preset")
    return names[0]


def smallest_default_preset(black_box=False):
    """`(preset, family)` of the default preset with the fewest parameters, of a black-box family or not."""
    import glasszoo
    from glasszoo.zoo.families import families

    records = families()
    candidates = [(preset, family) for preset, family in common().default_presets().items() if records[family].black_box == black_box]
    if not candidates:
        pytest.skip(f"no default preset of a {'black-box' if black_box else 'non-black-box'} family")
    return min(candidates, key=lambda item: (glasszoo.model_info(item[0])[1].get("parameters") or 0, item[0]))


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


def test_default_presets_come_from_the_registry():
    """Each family's installed demo preset, and the black-box families' presets on the datasets of those."""
    import glasszoo
    from glasszoo.zoo.families import families

    bench_common = common()
    installed = bench_common.installed_presets()
    defaults = bench_common.default_presets()
    records = families()
    assert defaults, "no default preset"
    for preset, family in defaults.items():
        assert installed[preset] == family == glasszoo.model_info(preset)[0]["family"]
    for name, record in records.items():
        if record.demo_preset in installed:
            assert defaults[record.demo_preset] == name
    demo_datasets = {bench_common.preset_dataset(p) for p, f in defaults.items() if not records[f].black_box}
    for preset, family in installed.items():
        if records[family].black_box and bench_common.preset_dataset(preset) in demo_datasets:
            assert preset in defaults
    # the non-black-box families first, the baselines after them
    kinds = [records[family].black_box for family in defaults.values()]
    assert kinds == sorted(kinds)


def test_select_presets():
    bench_common = common()
    family = black_box_family()
    chosen = bench_common.select_presets([family])
    assert chosen and set(chosen.values()) == {family}
    preset = next(iter(chosen))
    assert bench_common.select_presets(None, [preset]) == {preset: family}
    assert bench_common.select_presets([family], ["*"]) == {p: f for p, f in bench_common.installed_presets().items() if f == family}
    with pytest.raises(SystemExit, match="Unknown families"):
        bench_common.select_presets(["no_such_family"])
    with pytest.raises(SystemExit, match="No installed preset"):
        bench_common.select_presets(None, ["no_such_preset_*"])


def test_serving(tmp_path, capsys):
    from glasszoo.zoo.families import families

    family = black_box_family()
    payload, _ = run_main("serving", ["--families", family, "--batches", "2"], tmp_path, capsys)
    (row,) = payload["results"]
    expected = {
        "family", "preset", "batch", "explanation_outputs", "onnx_provider",
        "keras_predict_images_per_s", "keras_call_images_per_s", "onnx_logits_images_per_s",
        "keras_explain_images_per_s", "onnx_explain_images_per_s",
        "predict_onnx_over_keras", "explain_onnx_over_keras",
    }  # fmt: skip
    assert expected <= set(row)
    assert (row["family"], row["batch"]) == (family, 2)
    assert row["preset"] in common().select_presets([family])
    assert set(row["explanation_outputs"]) == set(families()[family].model_class().explanation_outputs)
    assert row["onnx_provider"] == "CPUExecutionProvider"
    assert row["predict_onnx_over_keras"] > 0 and row["explain_onnx_over_keras"] > 0
    assert payload["settings"]["presets"] == [row["preset"]]


def test_serving_of_named_presets_with_the_automatic_provider(tmp_path, capsys):
    """What the former single-family serving script measured: one preset, `OnnxModel`'s own provider choice."""
    preset, family = smallest_default_preset(black_box=False)
    payload, _ = run_main("serving", ["--models", preset, "--batches", "1", "3", "--provider", "auto"], tmp_path, capsys)
    rows = payload["results"]
    assert [(r["preset"], r["family"], r["batch"]) for r in rows] == [(preset, family, 1), (preset, family, 3)]
    assert all(r["explain_onnx_over_keras"] > 0 for r in rows)


def test_explain_cost(tmp_path, capsys):
    family = black_box_family()
    argv = ["--families", family, "--batches", "2", "--ig-images", "2", "--ig-steps", "2", "--ig-batch", "6"]
    payload, _ = run_main("explain_cost", argv, tmp_path, capsys)
    results = payload["results"]
    assert set(results) == {"explain_vs_predict", "integrated_gradients_vs_explain"}
    (price,) = results["explain_vs_predict"]
    expected = {"family", "preset", "batch", "predict_images_per_s", "call_images_per_s", "explain_images_per_s", "explain_over_predict", "explain_over_call"}
    assert expected <= set(price)
    assert price["family"] == family
    (ig,) = results["integrated_gradients_vs_explain"]
    assert {"family", "preset", "images", "ig_steps", "explain_images_per_s", "ig_images_per_s", "ig_over_explain"} <= set(ig)
    assert (ig["images"], ig["ig_steps"]) == (2, 2)


def test_training_step(tmp_path, capsys):
    preset, family = smallest_default_preset(black_box=False)
    baseline = black_box_family()
    argv = ["--models", preset, "--batch", "4", "--steps", "1", "--warmup", "1"]
    payload, _ = run_main("training_step", argv, tmp_path, capsys)
    (row,) = payload["results"]
    expected = {
        "family", "preset", "batch", "family_forward_flops", "baseline_family", "baseline_class", "baseline_filters",
        "baseline_forward_flops", "flops_ratio", "family_step_ms", "baseline_step_ms", "step_ratio",
    }  # fmt: skip
    assert expected <= set(row)
    assert (row["family"], row["preset"], row["batch"], row["baseline_family"]) == (family, preset, 4, baseline)
    stages = payload["settings"]["baseline_stages"]
    assert len(row["baseline_filters"]) == stages
    assert row["baseline_filters"] == [row["baseline_filters"][0] * 2**s for s in range(stages)]
    assert 0.8 <= row["flops_ratio"] <= 1.25  # the matched baseline is within ~20% of the family's FLOPs


def test_flop_counter_on_known_layers():
    """The graph counter gives the closed-form multiply-adds of convolutions, transposed and depthwise ones, and dense layers."""
    training_step = bench_module("training_step")
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.DepthwiseConv2D(3, padding="same"),
            keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5),
        ]
    )
    flops, per_type, per_batch = training_step.forward_flops(model, input_shape=(8, 8, 3))
    conv = 8 * 8 * 4 * (3 * 3 * 3)
    depthwise = 8 * 8 * 4 * (3 * 3)
    transposed = 8 * 8 * 4 * (3 * 3 * 2)  # every input value times every tap and output channel
    dense = 2 * 5
    assert per_type == {"Conv2D": 2 * conv, "DepthwiseConv2dNative": 2 * depthwise, "Conv2DBackpropInput": 2 * transposed, "MatMul": 2 * dense}
    assert flops == 2 * (conv + depthwise + transposed + dense) and per_batch == 0


def test_the_baseline_width_fit_matches_the_graph():
    """The black-box baseline's FLOPs fitted in the width agree with its counted graph (the width of a given count is found back)."""
    training_step = bench_module("training_step")
    name, cls, stages = training_step.baseline_family()
    assert name in common().black_box_families()
    model = training_step.build_baseline(cls, 8, stages, (28, 28, 1), 10)
    flops, per_type, per_batch = training_step.forward_flops(model)
    assert per_batch == 0 and flops > 0
    a, b, c = training_step._quadratic_fit(cls, stages, (28, 28, 1), 10)
    assert a * 64 + b * 8 + c == flops
    filters, matched, _ = training_step.matching_baseline(cls, flops, stages, (28, 28, 1), 10)
    assert filters == training_step.stage_widths(8, stages) and matched == flops


def test_dau_benchmark(tmp_path, capsys):
    """The layer benchmark (DAUConv2D against the reference formulation) on its cheapest row, without memory."""
    out = tmp_path / "dau.json"
    rows = bench_module("dau_benchmark").main(["--rows", "9", "--batch", "2", "--repeats", "1", "--memory", "none", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "formulations agree to 1e-5: yes" in printed, printed
    (row,) = rows
    assert row["row"] == 9 and row["speed_ratio"] > 0
    assert json.loads(out.read_text())["rows"][0]["row"] == 9


def test_http_load(tmp_path, capsys):
    """The load test answers every request right in each mode: in-process, HTTP micro-batched and unbatched."""
    preset, family = smallest_default_preset(black_box=False)
    payload, _ = run_main("http_load", ["--models", preset, "--requests", "12", "--clients", "3"], tmp_path, capsys)
    rows = payload["results"]
    assert [r["mode"] for r in rows] == ["in-process OnnxModel", "HTTP micro-batched (max 32, 5 ms)", "HTTP unbatched (max 1, 0 ms)"]
    for row in rows:
        assert row["preset"] == preset and row["answered"] == 12 and row["lost"] == 0 and row["wrong"] == 0
        assert row["requests_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
    assert rows[2]["mean_batch"] == 1.0 and rows[1]["mean_batch"] >= 1.0


def test_finetune_folder(tmp_path, capsys):
    """Fine-tuning from a folder: an interpretable preset and the black-box one on both tasks, tiny, with the table."""
    interpretable, _ = smallest_default_preset(black_box=False)
    black_box, _ = smallest_default_preset(black_box=True)
    out = tmp_path / "finetune_folder.json"
    argv = [
        "--models", interpretable, black_box, "--budget", "20", "--max-epochs", "1", "--images-per-class", "8",
        "--digits-per-class", "6", "--localisation-images", "4", "--ig-steps", "4", "--out", str(tmp_path / "runs"), "--json", str(out),
    ]
    rows = bench_module("finetune_folder").main(argv)
    printed = capsys.readouterr().out
    assert sum(line.startswith("|---|") for line in printed.splitlines()) == 2  # one table per task
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "finetune_folder" and len(payload["results"]) == len(rows) == 4
    for row in rows:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["wall_s"] > 0 and row["epochs_run"] >= 1
    shapes = [row for row in rows if row["task"] == "shapes"]
    for row in shapes:
        share, error = row["localisation"]["integrated_gradients"]
        assert 0.0 <= share <= 1.0 and row["localisation"]["images"] == 4
    assert any(row["black_box"] for row in shapes) and not all(row["black_box"] for row in shapes)


def test_finetune_folder_pairs_each_seed_with_the_black_box_of_that_seed():
    """The summary over training seeds: mean +- standard error over seeds, the gap paired by seed."""
    bench = bench_module("finetune_folder")
    rows = [
        {"preset": "cnn", "black_box": True, "training_seed": 0, "test_accuracy": 0.90, "validation_accuracy": 0.95},
        {"preset": "mine", "black_box": False, "training_seed": 0, "test_accuracy": 0.80, "validation_accuracy": 0.85},
        {"preset": "cnn", "black_box": True, "training_seed": 1, "test_accuracy": 0.96, "validation_accuracy": 0.97},
        {"preset": "mine", "black_box": False, "training_seed": 1, "test_accuracy": 0.92, "validation_accuracy": 0.90},
    ]
    summary = {cells[0]: cells for cells in bench.seed_summary(rows)}
    # gaps -10 and -4 points: mean -7.0, standard error 3.0 (the unpaired means would give -7.0 too, but a spread of 5.4)
    assert summary["mine"] == ["mine", "2", "0.860 ± 0.060", "-7.0 ± 3.0", "0.875 ± 0.025"]
    assert summary["cnn"][3] == "+0.0 ± 0.0"
    assert bench.seed_summary(rows[:2])[1][2:4] == ["0.800", "-10.0"]  # one seed: the values alone


def test_influence_validation(fashion_mnist, tmp_path, capsys):
    """The black-box baseline (no parts) and the smallest preset whose family has parts (prototypes)."""
    import glasszoo

    with_parts = [
        preset for preset in common().installed_presets()
        if glasszoo.load(preset).part_relevance(fashion_mnist.x_test[:1]) is not None
    ]  # fmt: skip
    smallest = min(with_parts, key=lambda preset: glasszoo.model_info(preset)[1].get("parameters") or 0)
    presets = [p for p, f in common().installed_presets().items() if f == black_box_family()][:1] + [smallest]
    argv = ["--models", *presets, "--train-size", "300", "--test-images", "2", "--removals", "6", "--agreement-images", "4"]
    payload, _ = run_main("influence_validation", argv, tmp_path, capsys)
    results = payload["results"]
    assert [result["preset"] for result in results] == presets
    for result in results:
        assert result["training_images"] == 300 and result["removals"] == 6 and len(result["pearson_r_per_image"]) == 2
        assert result["pearson_r_pooled"] > 0.8
        assert {"build_seconds", "index_mib", "query_ms", "refit_logit_change", "own_vs_refit_score_r"} <= set(result)
    assert results[0]["top_parts"] is None
    assert results[1]["top_parts"]["images"] == 4 and 0 <= results[1]["top_parts"]["helpfulness_percentile"] <= 100


def test_novelty_rule_pieces_match_brute_force():
    """The patch bank's nearest distances and the object quantiles of bench/novelty_rules.py, against loops."""
    import numpy as np

    rules = bench_module("novelty_rules")
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(3, 5, 4)).astype("float32")
    banks = [rng.normal(size=(7, 4)).astype("float32"), rng.normal(size=(2, 4)).astype("float32")]
    nearest = rules.nearest_in_bank(latents, banks, chunk=4)
    for n in range(3):
        for p in range(5):
            for k, bank in enumerate(banks):
                assert nearest[n, p, k] == pytest.approx(min(float(np.sum((latents[n, p] - row) ** 2)) for row in bank), rel=1e-4)
    values = rng.normal(size=(2, 5, 3))
    on_object = np.array([[True, False, True, True, False], [False] * 5])  # the second image has no object patch: all count
    quantiles = rules.object_quantile(values, on_object, 0.5)
    np.testing.assert_allclose(quantiles[0], np.median(values[0, [0, 2, 3]], axis=0))
    np.testing.assert_allclose(quantiles[1], np.median(values[1], axis=0))


def test_novelty_conditional_score_is_the_log_odds_of_a_class_given_its_parent():
    import numpy as np

    rules = bench_module("novelty_rules")
    # places: root, one inner node, then 3 classes (two under the node, one under the root)
    places = np.array([[1.0, 0.8, 0.6, 0.2, 0.2], [1.0, 0.5, 0.25, 0.25, 0.5]])
    leaf_parent = np.array([1, 1, 0])
    scores = rules.conditional_log_odds(places, leaf_parent)
    expected = np.array([[0.75, 0.25, 0.2], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(scores, np.log(expected / (1 - expected)))
    assert np.isfinite(rules.conditional_log_odds(np.array([[1.0, 1.0, 1.0, 0.0, 0.0]]), leaf_parent)).all()  # certain: clipped
    per_patch = np.zeros((2, 4, 6))
    with_it = rules.leaf_scores(per_patch, np.ones((2, 4), bool), None, np.array([3, 4, 5]), places, leaf_parent)
    assert "conditional" in with_it and not any(name.startswith("bank") for name in with_it)  # no bank: no bank scores


def test_placement_evidence_compares_the_two_whole_rules_on_the_same_images(fashion_mnist, capsys):
    """bench/placement_evidence.py on 200 test sneakers: both rules' shares and their paired difference, consistent."""
    import glasszoo
    import numpy as np

    bench = bench_module("placement_evidence")
    assert bench.paired_difference([1, 1, 0, 0], [0, 1, 0, 1]) == pytest.approx((0.0, np.sqrt(2 / 3) / 2))
    results = bench.main(["--limit", "200"])
    by_rule = {row["rule"]: row for row in results if "rule" in row}
    paired = results[-1]
    assert set(by_rule) == {"similarity", "confidence"} and paired["images"] == 200
    assert paired["paired_confidence_minus_similarity"] == pytest.approx(by_rule["confidence"]["at_parent"] - by_rule["similarity"]["at_parent"], abs=1e-3)
    assert paired["paired_confidence_minus_similarity"] > 0.2  # 0.377 on all 1,000 (README)
    shipped = glasszoo.load("hierarchical_protopnet_fashion_mnist_no_sneaker")
    assert by_rule["confidence"]["seen_validation_kept"] == shipped.preset_metadata["calibration"]["placement"]["validation_placed_at_their_class"]
    assert "paired, confidence - similarity" in capsys.readouterr().out
