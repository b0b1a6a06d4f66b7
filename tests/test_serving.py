"""Serving without TensorFlow: `glasszoo predict` and `OnnxModel` in a process where TensorFlow/Keras cannot be imported.

The exports are tiny freshly-built models of every registered family plus
a trained black-box preset; Keras computes the reference outputs in this
process, the served ones come from a subprocess whose import system refuses
tensorflow, keras, tf2onnx, onnx, h5py, absl, jax and torch.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from tiny_models import build, family_names

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCKED = ("tensorflow", "keras", "tf2onnx", "tf_keras", "onnx", "h5py", "absl", "jax", "torch")

# Runs `glasszoo.cli.main(argv)` with an import hook that makes every blocked package fail to import.
BOOTSTRAP = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f'No module named {{name!r}} (blocked: serving must not import it)', name=name)
        return None
sys.meta_path.insert(0, NoTensorFlow())
from glasszoo.cli import main
rc = main(sys.argv[1:])
leaked = sorted(m for m in sys.modules if m.partition('.')[0] in BLOCKED)
assert not leaked, leaked
sys.exit(rc)
"""


def serve(*argv):
    """`glasszoo ARGV` in a subprocess without TensorFlow/Keras; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-c", BOOTSTRAP, *map(str, argv)], capture_output=True, text=True, env=env, cwd=ROOT)


FAMILIES = family_names()


def black_box_preset():
    """A shipped preset of a black-box family (trained: real class names), or None."""
    import glasszoo

    for name in glasszoo.list_models():
        if glasszoo.families()[glasszoo.model_info(name)[0]["family"]].black_box:
            return name
    return None


PRESET = black_box_preset()
# any family serves the bad-input tests: they are about files and images, not the model
ANY = FAMILIES[0]


@pytest.fixture(scope="module")
def served_images(tmp_path_factory, samples):
    """Two PNG files and a .npy of two images, plus the batch they give (as predict reads them)."""
    from glasszoo.data.image_files import read_image_files
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    files = []
    for i in (1, 7):
        path = folder / f"sample{i}.png"
        Image.fromarray(np.round(samples[0][i, ..., 0] * 255).astype("uint8")).save(path)
        files.append(str(path))
    np.save(folder / "pair.npy", samples[0][2:4])
    batch = np.concatenate([read_image_files(files, (28, 28, 1)), samples[0][2:4]])
    return files + [str(folder / "pair.npy")], batch


@pytest.fixture(scope="module")
def exports(tmp_path_factory, served_images):
    """family or preset name -> (onnx path, Keras `explain` on the served images, class names, ONNX output names)."""
    import glasszoo
    from glasszoo.export import to_onnx

    folder = tmp_path_factory.mktemp("onnx")
    batch = served_images[1]
    models = {family: build(family, seed=5) for family in FAMILIES}
    if PRESET:
        models[PRESET] = glasszoo.load(PRESET)
    result = {}
    for name, model in models.items():
        path = to_onnx(model, folder / f"{name}.onnx")
        result[name] = (path, model.explain(batch), list(getattr(model, "class_names", [])), sorted(model.explanation_outputs), model)
    return result


def probabilities_of(logits, activation):
    logits = logits.astype("float64")
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


@pytest.mark.parametrize("name", FAMILIES + ([PRESET] if PRESET else []))
def test_predict_without_tensorflow_writes_predictions_outputs_and_pictures(name, exports, served_images, tmp_path):
    files, batch = served_images
    onnx_path, expected, class_names, outputs, model = exports[name]
    out = tmp_path / "served"
    result = serve("predict", onnx_path, *files, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report == json.loads((out / "predictions.json").read_text())
    family = model.family
    assert report["family"] == family
    labels = [files[0], files[1], f"{files[2]}[0]", f"{files[2]}[1]"]
    assert [p["file"] for p in report["predictions"]] == labels

    with np.load(out / "outputs.npz") as served:
        assert sorted(served.files) == outputs
        for key in served.files:
            np.testing.assert_allclose(served[key], expected[key], atol=2e-3, rtol=1e-3, err_msg=key)
    activation = model.output_activation
    assert report["activation"] == activation
    probabilities = probabilities_of(expected["logits"], activation)
    names = class_names or [str(k) for k in range(10)]
    for b, prediction in enumerate(report["predictions"]):
        ranked = np.argsort(-probabilities[b])
        if probabilities[b, ranked[0]] - probabilities[b, ranked[1]] > 1e-4:  # no near-tie to flip
            assert prediction["class_index"] == ranked[0] and prediction["class"] == names[ranked[0]]
        assert prediction["probability"] == pytest.approx(probabilities[b].max(), abs=2e-4)
        top3 = prediction["top3"]
        assert len(top3) == 3 and top3[0]["class"] == prediction["class"]
        assert [t["probability"] for t in top3] == sorted((t["probability"] for t in top3), reverse=True)
        picture = out / prediction["picture"]
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 5000
    assert len(list(out.glob("explanation_*.png"))) == 4
    if name == PRESET:  # a trained preset: real class names, confident and right on these samples
        assert [p["class"] for p in report["predictions"][:2]] == ["T-shirt/top", "Trouser"]


def test_pictures_module_draws_every_family_from_arrays_alone(exports, served_images):
    from glasszoo.explain import pictures

    for family in FAMILIES:
        figure = pictures.explanation_picture(family, served_images[1], exports[family][1], 1)
        assert len(figure.axes) >= 2
        assert pictures.missing_outputs(family, exports[family][1]) is None
    assert "no explanation picture for family 'mystery'" in pictures.missing_outputs("mystery", {})
    family = FAMILIES[0]
    required = [name for name in pictures.views_of(family).REQUIRED_OUTPUTS if name != "logits"]
    if required:
        assert "lacks" in pictures.missing_outputs(family, {"logits": np.zeros((1, 2))})
        with pytest.raises(ValueError, match=required[0]):
            pictures.explanation_picture(family, served_images[1], {"logits": np.zeros((4, 10))}, 0)


def test_unknown_family_and_foreign_onnx_give_predictions_without_pictures(exports, served_images, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    files = served_images[0]
    mystery = onnx.load(str(exports[ANY][0]))
    for entry in mystery.metadata_props:
        if entry.key == "family":
            entry.value = "mystery"
    onnx.save(mystery, str(tmp_path / "mystery.onnx"))
    result = serve("predict", tmp_path / "mystery.onnx", *files, "--out", tmp_path / "mystery")
    assert result.returncode == 0, result.stderr
    assert "no explanation picture for family 'mystery'" in result.stderr
    assert {p.name for p in (tmp_path / "mystery").iterdir()} == {"predictions.json", "outputs.npz"}
    assert all(p["picture"] is None for p in json.loads(result.stdout)["predictions"])

    # A plain ONNX classifier without glasszoo metadata: flatten and one matrix product, output "scores".
    weights = np.random.default_rng(0).normal(size=(784, 4)).astype("float32")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["scores"])],
        "foreign",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 28, 28, 1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel())],
    )
    foreign = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    foreign.ir_version = 8
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    result = serve("predict", tmp_path / "foreign.onnx", *files, "--out", tmp_path / "foreign")
    assert result.returncode == 0, result.stderr
    assert "no glasszoo metadata" in result.stderr and "'scores'" in result.stderr
    report = json.loads(result.stdout)
    scores = served_images[1].reshape(4, -1) @ weights
    assert [p["class_index"] for p in report["predictions"]] == scores.argmax(-1).tolist()
    assert {p.name for p in (tmp_path / "foreign").iterdir()} == {"predictions.json", "outputs.npz"}


# -- bad inputs -------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, exports, samples):
    """name -> path of a broken ONNX file or a bad image / array file."""
    folder = tmp_path_factory.mktemp("bad")
    good = pathlib.Path(exports[ANY][0]).read_bytes()
    arrays = {
        "rank2.npy": samples[0][0, ..., 0],
        "rank5.npy": samples[0][None, :2],
        "size.npy": np.zeros((2, 32, 32, 1), "float32"),
        "channels.npy": np.zeros((2, 28, 28, 3), "float32"),
        "uint8.npy": (samples[0][:2] * 255).astype("uint8"),
        "above.npy": samples[0][:2] * 255.0,
        "below.npy": samples[0][:2] - 0.5,
        "nan.npy": np.where(samples[0][:2] > 0.5, np.nan, samples[0][:2]),
        "inf.npy": np.where(samples[0][:2] > 0.5, np.inf, samples[0][:2]),
        "empty.npy": np.zeros((0, 28, 28, 1), "float32"),
    }
    for name, array in arrays.items():
        np.save(folder / name, array)
    (folder / "truncated.onnx").write_bytes(good[: len(good) // 3])
    (folder / "random.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    (folder / "empty.onnx").write_bytes(b"")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(2).bytes(300))
    (folder / "text.png").write_text("not an image")
    (folder / "random.npy").write_bytes(np.random.default_rng(3).bytes(300))
    (folder / "a_folder.png").mkdir()
    (folder / "a_file").write_text("x")
    return folder


# (arguments after `predict ONNX`, expected words in the one-line error); "{bad}" is the bad-files folder
CLI_BAD = [
    pytest.param(["{bad}/rank2.npy"], r"rank2\.npy: Expected images of rank 4.*got shape \(28, 28\) \(rank 2\)\. Is the channel axis missing", id="rank2"),
    pytest.param(["{bad}/rank5.npy"], r"rank5\.npy: Expected images of rank 4.*rank 5", id="rank5"),
    pytest.param(["{bad}/size.npy"], r"height is 32, the model takes 28", id="size"),
    pytest.param(["{bad}/channels.npy"], r"channels is 3, the model takes 1", id="channels"),
    pytest.param(["{bad}/uint8.npy"], r"dtype uint8\. Divide 8-bit images by 255", id="uint8"),
    pytest.param(["{bad}/above.npy"], r"Expected pixel values in \[0, 1\]; got range \[0, 255\]", id="above-1"),
    pytest.param(["{bad}/below.npy"], r"Expected pixel values in \[0, 1\]; got range \[-0\.5", id="below-0"),
    pytest.param(["{bad}/nan.npy"], r"NaN or infinite", id="nan"),
    pytest.param(["{bad}/inf.npy"], r"NaN or infinite", id="inf"),
    pytest.param(["{bad}/empty.npy"], r"empty\.npy holds no images \(an empty batch", id="empty-batch"),
    pytest.param(["{bad}/missing.png"], r"No image file at .*missing\.png", id="missing-image"),
    pytest.param(["{bad}/broken.png"], r"Cannot read .*broken\.png as an image", id="corrupt-image"),
    pytest.param(["{bad}/text.png"], r"Cannot read .*text\.png as an image", id="text-image"),
    pytest.param(["{bad}/random.npy"], r"Cannot read .*random\.npy as an image or a \.npy array", id="corrupt-npy"),
    pytest.param(["{bad}/a_folder.png"], r"a_folder\.png is a folder, not an image file", id="folder-image"),
    pytest.param(["{good}", "--out", "{bad}/a_file"], r"--out .*a_file is a file; give a folder", id="out-is-a-file"),
    pytest.param(["{good}", "--batch-size", "0"], r"--batch-size must be at least 1", id="batch-size-0"),
]


@pytest.mark.parametrize("model", ["good", "missing", "truncated", "random", "empty", "folder"])
def test_cli_bad_onnx_files(model, exports, bad_files, served_images):
    path = {"good": exports[ANY][0], "missing": bad_files / "missing.onnx", "folder": bad_files / "a_folder.png"}.get(model, bad_files / f"{model}.onnx")
    result = serve("predict", path, served_images[0][0])
    if model == "good":
        assert result.returncode == 0, result.stderr
        return
    expected = {"missing": r"No ONNX file at .*missing\.onnx", "folder": r"is a folder, not an ONNX file"}.get(model, rf"Cannot load .*{model}\.onnx as an ONNX model")
    assert_one_line_error(result, expected)


@pytest.mark.parametrize("arguments, expected", CLI_BAD)
def test_cli_bad_images(arguments, expected, exports, bad_files, served_images):
    arguments = [a.format(bad=bad_files, good=served_images[0][0]) for a in arguments]
    result = serve("predict", exports[ANY][0], *arguments)
    assert_one_line_error(result, expected)


def assert_one_line_error(result, expected, command="predict"):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"glasszoo {command}: error: "), lines[0]
    assert re.search(expected, lines[0]), (expected, lines[0])
    assert result.stdout == ""


def test_commands_that_need_keras_say_so_in_a_serving_install(tmp_path):
    result = serve("export", PRESET or "any_preset", tmp_path / "model.onnx")
    assert_one_line_error(result, r"(keras|tensorflow) is not installed; only `glasszoo predict` and `glasszoo serve` work without the full install", command="export")


def test_cli_accepts_float64_arrays(exports, served_images, tmp_path):
    """float64 (and float16) arrays are converted to float32, not refused: their [0, 1] scale is unambiguous."""
    np.save(tmp_path / "float64.npy", served_images[1][2:4].astype("float64"))
    result = serve("predict", exports[ANY][0], tmp_path / "float64.npy", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "out" / "outputs.npz") as served:
        np.testing.assert_allclose(served["logits"], exports[ANY][1]["logits"][2:4], rtol=1e-5, atol=1e-4)


def test_onnx_model_bad_inputs(exports, bad_files, samples):
    from glasszoo.export import OnnxModel

    served = OnnxModel(exports[ANY][0])
    images = samples[0][:3]
    reference = served(images)["logits"]
    np.testing.assert_allclose(served(images.astype("float64"))["logits"], reference, rtol=1e-5, atol=1e-6)  # float64: converted
    np.testing.assert_allclose(served(images[0])["logits"], reference[:1], rtol=1e-5, atol=1e-6)  # one image without batch axis
    bad = {
        "rank 2": (images[0, ..., 0], r"got shape \(28, 28\) \(rank 2\)\. Is the channel axis missing"),
        "rank 5": (images[None], r"rank 4 .*got shape \(1, 3, 28, 28, 1\) \(rank 5\)"),
        "size": (np.zeros((1, 27, 28, 1), "float32"), r"height is 27, the model takes 28"),
        "channels": (np.zeros((1, 28, 28, 3), "float32"), r"channels is 3, the model takes 1"),
        "uint8": ((images * 255).astype("uint8"), r"dtype uint8\. Divide 8-bit images by 255"),
        "int64": (np.zeros((1, 28, 28, 1), "int64"), r"dtype int64"),
        "above 1": (images * 2, r"Expected pixel values in \[0, 1\]"),
        "below 0": (images - 1, r"Expected pixel values in \[0, 1\]"),
        "NaN": (np.full((1, 28, 28, 1), np.nan, "float32"), r"784 NaN or infinite"),
        "Inf": (np.full((1, 28, 28, 1), -np.inf, "float64"), r"NaN or infinite"),
        "empty batch": (np.zeros((0, 28, 28, 1), "float32"), r"empty batch"),
        "text": ("an image", r"rank 4"),
    }
    for what, (value, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            served(value)
    with pytest.raises(FileNotFoundError, match="No ONNX file"):
        OnnxModel(bad_files / "missing.onnx")
    for name in ("truncated", "random", "empty"):
        with pytest.raises(ValueError, match=rf"Cannot load .*{name}\.onnx as an ONNX model"):
            OnnxModel(bad_files / f"{name}.onnx")
    with pytest.raises(ValueError, match="is a folder"):
        OnnxModel(bad_files / "a_folder.png")


def test_serving_requirements_list_no_tensorflow():
    requirements = (ROOT / "requirements-serving.txt").read_text().splitlines()
    names = {re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower() for line in requirements if line.strip() and not line.lstrip().startswith("#")}
    assert names and not names & {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "tf-keras", "onnx", "h5py"}
    assert {"numpy", "matplotlib", "pillow"} <= names and names & {"onnxruntime", "onnxruntime-gpu"}
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name in names | {"keras", "tensorflow", "tf2onnx"}:  # the full install still has all of them
        assert f'"{name}>=' in pyproject, name
