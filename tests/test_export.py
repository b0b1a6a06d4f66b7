import json

import numpy as np
import pytest
from glasszoo.export import OnnxModel, to_onnx


def assert_parity(model, served, images):
    keras_out = model.explain(images)
    onnx_out = served(images)
    assert sorted(onnx_out) == sorted(keras_out)
    for name, expected in keras_out.items():
        assert onnx_out[name].shape == expected.shape, name
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(onnx_out[name], expected, atol=1e-4 * scale, rtol=1e-4, err_msg=name)
    return onnx_out


@pytest.fixture
def exported(tiny_inam, samples, tmp_path):
    tiny_inam.fit(samples[0], samples[1], epochs=1, batch_size=20, verbose=0)
    path = to_onnx(tiny_inam, tmp_path / "tiny.onnx", model_name="tiny")
    return tiny_inam, OnnxModel(path)


def test_parity_at_batch_1_and_larger(exported, samples):
    model, served = exported
    assert served.providers[-1] == "CPUExecutionProvider"
    assert served.input_name == "image" and served.input_shape == (28, 28, 1)
    assert_parity(model, served, samples[0][:1])
    out = assert_parity(model, served, samples[0][:17])
    np.testing.assert_allclose(out["contributions"].sum(1) + model.head.bias.numpy(), out["logits"], atol=1e-4)


def test_metadata(exported):
    import hashlib

    from glasszoo.export.onnx_export import sidecar_path

    model, served = exported
    assert served.metadata["model_name"] == "tiny"
    sidecar = json.loads(sidecar_path(served.path).read_text())  # the same metadata for JavaScript runtimes
    assert sidecar["class_names"] == model.class_names and sidecar["model_name"] == "tiny"
    assert sidecar["outputs"] == json.loads(served.metadata["outputs"]) and sidecar["input_shape"] == ["batch", 28, 28, 1]
    with open(served.path, "rb") as handle:
        assert sidecar["onnx_sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert served.metadata["input_range"] == "[0, 1]"
    assert served.class_names == model.class_names
    assert set(json.loads(served.metadata["outputs"])) == set(served.output_names)
    assert "glasszoo_version" in served.metadata


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((1, 28, 28), "float32"), r"got shape \(1, 28, 28\)"),
        (np.zeros((2, 1, 28, 28, 1), "float32"), "rank 5"),
        (np.zeros((1, 30, 28, 1), "float32"), "height"),
        (np.zeros((1, 28, 27, 1), "float32"), "width is 27"),
        (np.zeros((1, 28, 28, 3), "float32"), "channels"),
        (np.zeros((1, 28, 28, 1), "float64") + np.nan, "NaN"),
        (np.zeros((1, 28, 28, 1), "int32"), "dtype int32"),
        (np.full((1, 28, 28, 1), -0.5, "float32"), r"\[0, 1\]"),
    ],
)
def test_served_model_names_bad_input(exported, images, message):
    _, served = exported
    with pytest.raises(ValueError, match=message):
        served(images)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        OnnxModel("/nonexistent/model.onnx")


def test_pretrained_export_parity(samples, tmp_path):
    import glasszoo

    model = glasszoo.load("inam_fashion_mnist")
    served = OnnxModel(to_onnx(model, tmp_path / "inam.onnx"))
    assert served.metadata["model_name"] == "inam_fashion_mnist"
    assert_parity(model, served, samples[0][:1])
    assert_parity(model, served, samples[0][:24])


def test_export_prints_no_optimizer_traceback(tmp_path, capfd):
    """tf2onnx's transpose optimizer raises on B-cos graphs; the export says nothing alarming and stays exact."""
    import logging

    from tiny_models import build

    model = build("bcos", seed=0)
    path = to_onnx(model, tmp_path / "bcos.onnx")
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out and "Failed to apply" not in captured.err + captured.out
    assert not logging.getLogger("tf2onnx.optimizer").filters  # the filter does not outlive the export
    images = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    assert_parity(model, OnnxModel(path), images)
