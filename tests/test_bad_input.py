"""Bad input through the Python API and the CLI (Keras side): each gets an error that names the problem.

The ONNX runner and `glasszoo predict` have their own battery in test_serving.py.
"""

import json
import shutil
import subprocess
import sys

import glasszoo
import numpy as np
import pytest
from glasszoo.zoo.presets import CorruptedWeights, write_preset
from tiny_models import build, family_names

SHAPE = (28, 28, 1)


FAMILIES = family_names()


@pytest.fixture(scope="module")
def models():
    return {family: build(family) for family in FAMILIES}


GOOD = np.full((2,) + SHAPE, 0.5, "float32")
BAD_IMAGES = {
    "rank": (np.zeros((28, 28), "float32"), "rank"),
    "size": (np.zeros((2, 32, 32, 1), "float32"), "height is 32"),
    "channels": (np.zeros((2, 28, 28, 3), "float32"), "channels is 3"),
    "uint8": (np.zeros((2,) + SHAPE, "uint8"), "Divide 8-bit images by 255"),
    "int64": (np.zeros((2,) + SHAPE, "int64"), "dtype int64"),
    "above one": (np.full((2,) + SHAPE, 255.0, "float32"), r"\[0, 1\]"),
    "negative": (np.full((2,) + SHAPE, -0.5, "float32"), r"\[0, 1\]"),
    "nan": (np.where(np.arange(784).reshape(1, 28, 28, 1) == 5, np.nan, 0.5).astype("float32"), "NaN"),
    "inf": (np.where(np.arange(784).reshape(1, 28, 28, 1) == 5, np.inf, 0.5).astype("float32"), "infinite"),
    "empty": (np.zeros((0,) + SHAPE, "float32"), "empty"),
    # checked before the float32 cast, and printed with enough digits to see what is wrong
    "huge float64": (np.where(np.arange(784).reshape(1, 28, 28, 1) == 5, 1e300, 0.5), r"range \[0\.5, 1e\+300\]: 1 value\(s\) outside, the first at index \(0, 0, 5, 0\)"),
    "just above one": (np.where(np.arange(784).reshape(1, 28, 28, 1) == 5, 1 + 2e-6, 0.5), r"range \[0\.5, 1\.000002\]"),
    "text": ("a picture of a shoe", "rank|dtype"),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_explain_and_predict_classes_name_the_problem(models, family, case):
    model = models[family]
    images, message = BAD_IMAGES[case]
    with pytest.raises(ValueError, match=message):
        model.explain(images)
    if case != "empty":
        with pytest.raises(ValueError, match=message):
            model.predict_classes(images)


@pytest.mark.parametrize("family", FAMILIES)
def test_float64_and_single_images_are_accepted(models, family):
    model = models[family]
    expected = model.explain(GOOD)["logits"]
    np.testing.assert_allclose(model.explain(GOOD.astype("float64"))["logits"], expected, atol=1e-5)
    np.testing.assert_allclose(model.explain(GOOD[0])["logits"], expected[:1], atol=1e-5)


@pytest.fixture
def preset_folder(models, tmp_path):
    """A preset folder of a tiny model of the first family (any family would do)."""
    model = models[FAMILIES[0]]
    weights = tmp_path / "tiny.weights.h5"
    model.save_weights(weights)
    return write_preset(tmp_path / "tiny_preset", model.family, model.get_config(), weights, {"name": "tiny_preset"})


def test_preset_files_missing_or_corrupted(preset_folder, tmp_path):
    assert glasszoo.load(preset_folder).explain(GOOD)["logits"].shape == (2, 10)

    def broken(name):
        copy = tmp_path / name
        shutil.copytree(preset_folder, copy)
        return copy

    folder = broken("no_weights")
    (folder / "model.weights.h5").unlink()
    with pytest.raises(FileNotFoundError, match="model.weights.h5"):
        glasszoo.load(folder)

    folder = broken("truncated_weights")
    data = (folder / "model.weights.h5").read_bytes()
    (folder / "model.weights.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptedWeights, match="sha256"):
        glasszoo.load(folder)

    folder = broken("no_metadata")
    (folder / "metadata.json").unlink()
    with pytest.raises(CorruptedWeights, match="no weights_sha256"):
        glasszoo.load(folder)

    folder = broken("bad_json")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        glasszoo.load(folder)

    folder = broken("number")
    (folder / "config.json").write_text("42")
    with pytest.raises(ValueError, match=r"config.json must hold a JSON object; it holds a int"):
        glasszoo.load(folder)

    folder = broken("deep")
    (folder / "metadata.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"metadata.json is nested too deeply"):
        glasszoo.load(folder)

    folder = broken("wrong_keys")
    (folder / "config.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match="'family' and 'config'"):
        glasszoo.load(folder)

    folder = broken("unknown_family")
    (folder / "config.json").write_text(json.dumps({"family": "resnet", "config": {}}))
    with pytest.raises(ValueError, match="Unknown model family 'resnet'"):
        glasszoo.load(folder)

    folder = broken("wrong_architecture")  # another class count: the weights no longer fit
    config = json.loads((folder / "config.json").read_text())
    config["config"].update(num_classes=3, class_names=["a", "b", "c"])
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CorruptedWeights, match="could not be read"):
        glasszoo.load(folder)


def test_unknown_names(preset_folder):
    name = glasszoo.list_models()[0]
    with pytest.raises(glasszoo.UnknownModel, match=f"Did you mean '{name}'"):
        glasszoo.load(name[:-2] + name[-1])
    with pytest.raises(glasszoo.UnknownModel, match="Unknown model"):
        glasszoo.model_info("no_such_model")


def _cli(*args):
    """Runs the CLI in a subprocess: exit status, stdout, stderr."""
    result = subprocess.run([sys.executable, "-m", "glasszoo", *map(str, args)], capture_output=True, text=True)
    return result.returncode, result.stdout, result.stderr


def test_cli_bad_input_gives_one_line_errors(preset_folder, tmp_path):
    from PIL import Image

    colour = tmp_path / "colour.png"
    Image.fromarray(np.zeros((40, 30, 3), "uint8")).save(colour)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    not_an_image.with_suffix(".keras").write_text("not a model")
    nan_array = tmp_path / "nan.npy"
    np.save(nan_array, np.full((28, 28, 1), np.nan, "float32"))
    big_array = tmp_path / "big.npy"
    np.save(big_array, np.full((28, 28, 1), 255.0, "float32"))
    truncated = tmp_path / "truncated"
    shutil.copytree(preset_folder, truncated)
    (truncated / "model.weights.h5").write_bytes(b"\x89HDF")
    cases = [
        (("info", "no_such_preset"), "Unknown model 'no_such_preset'"),
        (("explain", tmp_path / "missing.keras", "--out", tmp_path / "o0"), "No model file"),
        (("explain", not_an_image.with_suffix(".keras"), "--out", tmp_path / "o0b"), "could not be loaded as a Keras model file"),
        (("explain", "no_such_model", "--out", tmp_path / "o1"), "Unknown model"),
        (("explain", preset_folder, tmp_path / "missing.png", "--out", tmp_path / "o2"), "No image file"),
        (("explain", preset_folder, not_an_image, "--out", tmp_path / "o3"), "Cannot read"),
        (("explain", preset_folder, nan_array, "--out", tmp_path / "o4"), "NaN"),
        (("explain", preset_folder, big_array, "--out", tmp_path / "o5"), r"[0, 1]"),
        (("explain", truncated, "--out", tmp_path / "o6"), "sha256"),
        (("export", truncated, tmp_path / "x.onnx"), "sha256"),
    ]
    for args, message in cases:
        code, _, err = _cli(*args)
        assert code == 2, (args, err[-2000:])
        lines = [line for line in err.strip().splitlines() if line.startswith("glasszoo")]
        assert lines and message in lines[-1], (args, err[-2000:])
        assert "Traceback" not in err, (args, err[-2000:])
    # a colour image is converted to the model's channels, not refused
    code, out, err = _cli("explain", preset_folder, colour, "--out", tmp_path / "o7")
    assert code == 0, err[-2000:]


def test_image_size_is_bounded_before_memory_is_committed(tmp_path, monkeypatch):
    """One image's values are bounded (GLASSZOO_MAX_IMAGE_VALUES): checked on arrays, on a file's header before
    it is decoded, and on an ONNX file's declared input before any image is resized to it."""
    from glasszoo.data.image_files import read_image_files
    from glasszoo.export import OnnxModel
    from glasszoo.zoo.inputs import validate_images
    from PIL import Image

    monkeypatch.setenv("GLASSZOO_MAX_IMAGE_VALUES", "1000")
    validate_images(np.zeros((3, 28, 28, 1), "float32"), (28, 28, 1))  # 784 values: within the limit
    with pytest.raises(ValueError, match=r"One image has 40 x 40 x 1 = 1600 values, over the limit of 1000 per image \(set GLASSZOO_MAX_IMAGE_VALUES"):
        validate_images(np.zeros((1, 40, 40, 1), "float32"), (None, None, 1))  # a fully convolutional model's input
    monkeypatch.setenv("GLASSZOO_MAX_IMAGE_VALUES", "500")
    with pytest.raises(ValueError, match="28 x 28 x 1 = 784 values, over the limit of 500"):
        build(family_names()[0], seed=0).explain(np.zeros((1, 28, 28, 1), "float32"))  # every entry point validates
    monkeypatch.setenv("GLASSZOO_MAX_IMAGE_VALUES", "1000")

    large = tmp_path / "large.png"
    Image.new("L", (2000, 1500)).save(large)
    opened = []
    from PIL import ImageFile

    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self, *a, **k: opened.append(self.size) or real_load(self, *a, **k))
    Image.new("L", (20, 30)).save(tmp_path / "small.png")
    read_image_files([tmp_path / "small.png"], (28, 28, 1))
    assert (20, 30) in opened  # the probe sees a decode
    opened.clear()
    with pytest.raises(ValueError, match=r"Image file .*large\.png has 1500 x 2000 x 1 = 3000000 values, over the limit of 1000"):
        read_image_files([large], (28, 28, 1))
    assert opened == []  # refused from the header: never decoded
    with pytest.raises(ValueError, match=r"The model's input has 60000 x 60000 x 3"):
        read_image_files([large], (60000, 60000, 3))

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["logits"], keepdims=0, axes=[1, 2])],
        "huge", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 60000, 60000, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
    )
    huge = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    huge.ir_version = 8
    onnx.save(huge, str(tmp_path / "huge.onnx"))
    monkeypatch.delenv("GLASSZOO_MAX_IMAGE_VALUES")
    with pytest.raises(ValueError, match=r"huge\.onnx: the declared input \(batch, 60000, 60000, 3\) has 60000 x 60000 x 3 = 10800000000 values, over the limit of 33554432"):
        OnnxModel(tmp_path / "huge.onnx")
    monkeypatch.setenv("GLASSZOO_MAX_IMAGE_VALUES", "many")
    with pytest.raises(ValueError, match="GLASSZOO_MAX_IMAGE_VALUES='many' is not a whole number"):
        validate_images(np.zeros((1, 28, 28, 1), "float32"), (28, 28, 1))
