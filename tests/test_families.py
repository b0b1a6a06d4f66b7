"""Conformance suite: every registered family keeps the `ZooModel` contract.

Parametrised over `glasszoo.zoo.families.families()` (like keras-hub's
`run_backbone_test` and timm's `test_models.py`), so a new family is tested
here without editing this file: its record's `test_config` builds a tiny
model for 28 x 28 x 1 images and 10 classes. Family test files keep only the
checks of their paper.
"""

import json
import zipfile

import numpy as np
import pytest
from tiny_models import build, family_names

FAMILIES = family_names()
COUNT = 7


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def model(family):
    return build(family, seed=3)


@pytest.fixture(scope="module")
def images(samples):
    return samples[0][:COUNT]


@pytest.fixture(scope="module")
def explained(model, images):
    return model.explain(images)


def _close(actual, expected, what, tolerance=1e-5):
    actual, expected = np.asarray(actual, "float64"), np.asarray(expected, "float64")
    scale = max(1.0, float(np.abs(expected).max()) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, atol=tolerance * scale, rtol=tolerance, err_msg=what)


def test_record_names_its_model_and_views(family):
    from glasszoo.zoo.base import ZooModel
    from glasszoo.zoo.families import families

    record = families()[family]
    cls = record.model_class()
    assert issubclass(cls, ZooModel) and cls.family == family
    assert next(iter(cls.explanation_outputs)) == "logits"
    views = record.views_module()
    assert callable(views.draw)
    assert set(views.REQUIRED_OUTPUTS) <= set(cls.explanation_outputs), "the views read outputs the model does not have"
    assert cls.attribution_output is None or cls.attribution_output in cls.explanation_outputs


def test_explain_returns_exactly_the_declared_outputs_batch_first(model, images, explained):
    assert list(explained) == list(model.explanation_outputs)
    assert explained["logits"].shape == (COUNT, model.num_classes)
    for name, value in explained.items():
        assert value.shape[0] == COUNT, name
        assert np.isfinite(value).all(), name
    in_pieces = model.explain(images, batch_size=3)
    for name in explained:
        _close(in_pieces[name], explained[name], f"batch size 3 vs 32: {name}")
    one = model.explain(images[0])  # one image without the batch axis
    assert one["logits"].shape == (1, model.num_classes)


def test_target_works_for_every_family(model, images, explained):
    predicted = explained["logits"].argmax(-1)
    _close_all = lambda a, b, what: [_close(a[k], b[k], f"{what}: {k}") for k in b]  # noqa: E731
    _close_all(model.explain(images, target=predicted), explained, "target = predicted class")
    other = (predicted + 1) % model.num_classes
    for_other = model.explain(images, target=other)
    assert list(for_other) == list(model.explanation_outputs)
    _close(for_other["logits"], explained["logits"], "logits do not depend on the target")
    single = model.explain(images, target=4)
    assert list(single) == list(model.explanation_outputs)
    if model.has_attribution_map:
        maps = model.attribution_map(images, other)
        assert maps.shape == (COUNT,) + model.image_shape[:2]
        _close(model.attribution_map(images, predicted), model.attribution_map(images), "attribution_map default = predicted class")
        assert not np.allclose(maps, model.attribution_map(images, predicted)), "the map does not depend on the class"
    else:
        with pytest.raises(NotImplementedError, match="no pixel attribution map"):
            model.attribution_map(images, other)


@pytest.mark.parametrize(
    "target, message",
    [
        (2.7, "whole class indices"),
        ([1, 2], "2 class indices for 7 image"),
        (-1, r"in \[0, 10\)"),
        (10, r"in \[0, 10\)"),
        ("cat", "integers"),
        (True, "integers"),
        ([[1]], "one per image"),
    ],
)
def test_bad_targets_are_refused_with_the_problem_named(model, images, target, message):
    with pytest.raises(ValueError, match=message):
        model.explain(images, target=target)


def test_bad_images_are_refused_with_the_problem_named(model, images):
    cases = [
        (images[..., 0], "Is the channel axis missing"),
        ((images * 255).astype("uint8"), "Divide 8-bit images by 255"),
        (np.where(images > 0.5, np.nan, images), "NaN or infinite"),
        (images * 2.0, r"pixel values in \[0, 1\]; got range \[0, 2\]"),
        (images[:0], "empty batch"),
        (np.zeros((2, 30, 28, 1), "float32"), "height is 30"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            model.explain(bad)


def test_self_checks_hold(model, images, explained):
    checks = model.self_checks(images, explained)
    assert "logits = forward pass" in checks
    assert model.self_check_errors(images, explained) == {}, checks


def test_the_readout_rebuilds_the_logits_or_is_declared_absent(model, images, explained):
    """Influence functions model the last layer: its readout must give the logits exactly, and its Jacobian be the derivative."""
    from glasszoo.explain.influence import logits_of, readout
    from glasszoo.explain.readout_losses import GroupedSoftmax, resolve_loss

    try:
        head = readout(model, images)
    except NotImplementedError as error:
        assert model.family in str(error) and "no linear readout" in str(error)
        return
    features, offsets, parameters = head.features, head.offsets, head.parameters
    to_class_logits = resolve_loss(head.loss).class_logits  # the outputs themselves, unless they are a model's step scores
    outputs = parameters.shape[1]
    assert features.shape[:2] == (len(images), parameters.shape[0]) and (features.ndim == 2 or features.shape[2] == outputs)
    assert outputs == model.num_classes or isinstance(head.loss, GroupedSoftmax)
    _close(to_class_logits(logits_of(features, offsets, parameters)), explained["logits"], "readout logits")
    _close(to_class_logits(head.logits(parameters)), explained["logits"], "readout head logits")
    if not head.linear:  # the Jacobian of a non-linear layer: central differences in float64
        direction = np.random.default_rng(0).normal(size=parameters.shape) * 1e-6
        numeric = (head.logits(parameters + direction) - head.logits(parameters - direction)) / 2
        expected = logits_of(features, np.zeros_like(offsets), direction)
        np.testing.assert_allclose(numeric, expected, rtol=1e-4, atol=1e-7 * np.abs(expected).max())


def test_config_round_trip_keeps_everything_including_dtype(model, images, explained):
    config = model.get_config()
    json.dumps(config)  # serialisable
    for key in ("name", "trainable", "dtype", "num_classes", "input_shape", "class_names"):
        assert key in config, key
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    again = clone.explain(images)
    for name in explained:
        _close(again[name], explained[name], f"from_config: {name}")
    policy = type(model).from_config(dict(config, dtype="bfloat16")).get_config()["dtype"]
    assert policy["config"]["name"] == "bfloat16"


def test_keras_file_and_preset_folder_round_trips(model, images, explained, tmp_path):
    import glasszoo
    import keras

    model.compile()
    path = tmp_path / "model.keras"
    model.save(str(path))
    with zipfile.ZipFile(path) as archive:
        saved = archive.read("config.json").decode()
    assert "keras.src.backend." not in saved, "the compile config names a backend-private class"
    for loaded in (keras.saving.load_model(str(path)), glasszoo.load(str(path))):
        assert type(loaded) is type(model) and loaded.get_config()["dtype"] == model.get_config()["dtype"]
        again = loaded.explain(images)
        for name in explained:
            _close(again[name], explained[name], f".keras round trip: {name}")
    folder = model.save_preset(tmp_path / "preset", metadata={"description": "a tiny test model"})
    loaded = glasszoo.load(str(folder))
    assert loaded.preset_metadata["description"] == "a tiny test model"
    assert loaded.preset_metadata["weights_sha256"]
    again = loaded.explain(images)
    for name in explained:
        _close(again[name], explained[name], f"preset folder round trip: {name}")


@pytest.fixture(scope="module")
def onnx_model(model, tmp_path_factory):
    from glasszoo.export import OnnxModel, to_onnx

    path = to_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", model_name="tiny")
    return OnnxModel(path)


@pytest.mark.parametrize("count", [1, COUNT])
def test_onnx_outputs_equal_keras_outputs(model, images, explained, onnx_model, count):
    assert sorted(onnx_model.output_names) == sorted(model.explanation_outputs)
    served = onnx_model(images[:count])
    for name in model.explanation_outputs:
        _close(served[name], explained[name][:count], f"onnxruntime vs Keras: {name}", tolerance=1e-4)
    assert onnx_model.metadata["family"] == model.family


def test_onnx_export_runs_in_the_onnx_reference_evaluator(model, images, onnx_model):
    """The plain-NumPy reference runtime gives onnxruntime's outputs (no construct only onnxruntime reads right)."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    proto = onnx.load(onnx_model.path)
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}
    empty_unsqueezes = [n.name for n in proto.graph.node if n.op_type == "Unsqueeze" and len(n.input) > 1 and constants.get(n.input[1], [0]).size == 0]
    assert not empty_unsqueezes, f"Unsqueeze with empty axes (OpenVINO inserts an axis): {empty_unsqueezes}"
    assert not [n for n in proto.graph.node if n.op_type == "GlobalMaxPool"], "GlobalMaxPool left in the graph"
    batch = images[:2]
    names = [output.name for output in proto.graph.output]
    reference = dict(zip(names, ReferenceEvaluator(proto).run(None, {"image": batch})))
    served = onnx_model(batch)
    for name in names:
        _close(np.asarray(reference[name], dtype="float32"), served[name], f"reference evaluator vs onnxruntime: {name}", tolerance=1e-4)


def test_onnx_export_runs_in_openvino_when_installed(images, onnx_model):
    """OpenVINO (not a dependency; measured here with 2026.4) converts every family and matches onnxruntime in f32."""
    openvino = pytest.importorskip("openvino")
    compiled = openvino.Core().compile_model(onnx_model.path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    # a tensor may carry several names (an output that tf2onnx renamed keeps its old one): look each output up by all
    result = {name: value for key, value in compiled({"image": images[:2]}).items() for name in key.get_names()}
    served = onnx_model(images[:2])
    for name in onnx_model.output_names:
        _close(result[name], served[name], f"OpenVINO vs onnxruntime: {name}", tolerance=1e-4)


def test_onnx_batch_dimension_is_named_batch_everywhere(onnx_model):
    """The input and every output carry the same named dynamic first dimension, so runtimes show how they relate."""
    for value in list(onnx_model.session.get_inputs()) + list(onnx_model.session.get_outputs()):
        assert value.shape[0] == "batch", f"{value.name}: {value.shape}"


@pytest.fixture(scope="module", params=["fp16", "int8"])
def reduced_export(model, tmp_path_factory, request):
    """`(precision, OnnxModel)` of the tiny model exported at a reduced precision."""
    from glasszoo.export import OnnxModel, to_onnx

    path = to_onnx(model, tmp_path_factory.mktemp("reduced") / f"model.{request.param}.onnx", model_name="tiny", precision=request.param)
    return request.param, OnnxModel(path)


# how far a reduced export's outputs may lie from the float32 export's (relative L2), on the tiny models
REDUCED_DRIFT = {"fp16": 0.02, "int8": 0.35}


def test_reduced_precision_exports_keep_the_interface_and_stay_close(model, images, onnx_model, reduced_export):
    """float32 in and out, the same outputs, finite values, locations inside the image, close to the float32 export."""
    from glasszoo.export.precision import location_output_names, output_drift

    precision, reduced = reduced_export
    assert reduced.metadata["precision"] == precision
    assert sorted(reduced.output_names) == sorted(onnx_model.output_names)
    assert [value.type for value in reduced.session.get_inputs()] == ["tensor(float)"]
    assert {value.type for value in reduced.session.get_outputs()} == {"tensor(float)"}
    served, reference = reduced(images), onnx_model(images)
    positions = location_output_names(model.explanation_outputs)
    height, width = model.image_shape[:2]
    for name in positions:
        assert np.all((served[name][..., 0] >= 0) & (served[name][..., 0] <= height - 1)), f"{precision} {name}: a row outside the image"
        assert np.all((served[name][..., 1] >= 0) & (served[name][..., 1] <= width - 1)), f"{precision} {name}: a column outside the image"
    drift = output_drift({k: v for k, v in reference.items() if k not in positions}, {k: v for k, v in served.items() if k not in positions})
    for name, values in drift.items():
        assert values["non_finite"] == 0, f"{precision} {name}: {values['non_finite']} non-finite values"
        assert served[name].shape == reference[name].shape
        assert values["relative_l2"] <= REDUCED_DRIFT[precision], f"{precision} {name}: relative L2 drift {values['relative_l2']:.3g}"


def test_reduced_precision_exports_run_in_the_onnx_reference_evaluator(images, reduced_export):
    """The reduced graphs use standard operators only: the NumPy reference runtime gives onnxruntime's outputs."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    precision, reduced = reduced_export
    proto = onnx.load(reduced.path)
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}, "an operator outside the standard domain"
    names = [output.name for output in proto.graph.output]
    reference = dict(zip(names, ReferenceEvaluator(proto).run(None, {"image": images[:2]})))
    served = reduced(images[:2])
    for name in names:
        _close(np.asarray(reference[name], dtype="float32"), served[name], f"{precision}: reference evaluator vs onnxruntime: {name}", tolerance=2e-2)


def test_reduced_precision_exports_run_in_openvino_when_installed(images, reduced_export):
    openvino = pytest.importorskip("openvino")
    precision, reduced = reduced_export
    compiled = openvino.Core().compile_model(reduced.path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    produced = compiled({"image": images[:2]})
    result = {name: value for key, value in produced.items() for name in key.get_names()}  # a cast output has two names
    served = reduced(images[:2])
    for name in reduced.output_names:
        _close(result[name], served[name], f"{precision}: OpenVINO vs onnxruntime: {name}", tolerance=2e-2)


def test_an_unknown_precision_is_refused_before_anything_is_written(model, tmp_path):
    from glasszoo.export import to_onnx

    with pytest.raises(ValueError, match="fp32, fp16, int8"):
        to_onnx(model, tmp_path / "model.onnx", precision="bf16")
    assert not list(tmp_path.iterdir())


def _pixels(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba(), dtype="int16")


def test_views_from_onnx_outputs_equal_views_from_keras_outputs(model, images, explained, onnx_model):
    from glasszoo.explain import pictures

    served = onnx_model(images)
    for index in (0, COUNT - 1):
        from_keras = _pixels(pictures.explanation_picture(model.family, images, explained, index, model.class_names))
        from_onnx = _pixels(pictures.explanation_picture(model.family, images, served, index, model.class_names))
        assert from_keras.shape == from_onnx.shape
        differing = np.mean(np.abs(from_keras - from_onnx).max(axis=-1) > 3)
        assert differing < 1e-3, f"{differing:.2%} of the pixels differ"


def test_one_training_step_changes_the_weights(family, samples):
    images, labels, _ = samples
    model = build(family, seed=4)
    model.compile()
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(images[:16], labels[:16], batch_size=8, epochs=1, verbose=0, **model.fit_arguments())
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_transfer_to_a_new_task_keeps_what_fits(family, model, images):
    fresh = build(family, seed=9, num_classes=3, class_names=["a", "b", "c"])
    copied = fresh.transfer_weights_from(model)
    assert copied, "nothing was copied to the same architecture with 3 classes"
    out = fresh.explain(images)
    assert out["logits"].shape == (COUNT, 3)
    same = build(family, seed=9)
    assert len(same.transfer_weights_from(model)) >= len(copied)
    _close(same.explain(images)["logits"], model.explain(images)["logits"], "a full copy predicts alike")
