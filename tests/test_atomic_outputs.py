"""Exports and explanation outputs are written atomically: a failure mid-write leaves the previous file, and no debris."""

import json

import numpy as np
import pytest
from tiny_models import build


class DiskFull(OSError):
    pass


def _half_write_then_fail(real):
    def writer(*args, **kwargs):
        target = args[1] if len(args) > 1 else kwargs.get("f")
        with open(target, "wb") as handle:
            handle.write(b"\x08\x07half")
        raise DiskFull(28, "No space left on device")

    return writer


def test_a_failed_export_leaves_the_previous_one(tmp_path, monkeypatch):
    import onnx
    from glasszoo.export import OnnxModel, to_onnx

    model = build("cnn")
    path = to_onnx(model, tmp_path / "model.onnx", model_name="first")
    before = path.read_bytes()
    monkeypatch.setattr(onnx, "save", _half_write_then_fail(onnx.save))
    with pytest.raises(DiskFull):
        to_onnx(model, path, model_name="second")
    assert path.read_bytes() == before
    assert OnnxModel(path).metadata["model_name"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]  # no partial file left behind
    assert json.loads((tmp_path / "model.onnx.json").read_text())["model_name"] == "first"  # the sidecar of the export in place


def test_a_failed_explanation_write_leaves_the_previous_files(tmp_path, monkeypatch, samples):
    from glasszoo.explain import explanation_files

    model = build("cnn")
    images = samples[0][:2]
    explanation_files.write_explanations(model, images, ["a", "b"], tmp_path, model_views=False)
    before = {name: (tmp_path / name).read_bytes() for name in ("explanations.npz", "predictions.json")}

    def failing_savez(file, *args, **kwargs):
        with open(file, "wb") as handle:
            handle.write(b"PK\x03\x04half")
        raise DiskFull(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", failing_savez)
    with pytest.raises(DiskFull):
        explanation_files.write_explanations(model, images[::-1], ["b", "a"], tmp_path, model_views=False)
    for name, content in before.items():
        assert (tmp_path / name).read_bytes() == content
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_predict_publishes_its_files_together(tmp_path, monkeypatch, samples, capsys):
    """`predict --out`: a failure mid-run leaves the previous run's files whole; a new run replaces them whole;
    a folder of other files is refused untouched."""
    import json

    from glasszoo import cli
    from glasszoo.export import to_onnx
    from PIL import Image

    onnx_path = to_onnx(build("cnn"), tmp_path / "model.onnx")
    files = []
    for i in (0, 1):
        files.append(tmp_path / f"image{i}.png")
        Image.fromarray(np.round(samples[0][i, ..., 0] * 255).astype("uint8")).save(files[-1])
    out = tmp_path / "served"
    assert cli.main(["predict", str(onnx_path), str(files[0]), "--out", str(out)]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert json.loads(first["predictions.json"])["predictions"][0]["file"] == str(files[0])

    def full_disk(path, data):
        raise DiskFull(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(cli, "_write_json", full_disk)
        assert cli.main(["predict", str(onnx_path), str(files[1]), "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # the previous run, whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging folder left

    assert cli.main(["predict", str(onnx_path), str(files[1]), "--out", str(out)]) == 0
    report = json.loads((out / "predictions.json").read_text())
    assert [p["file"] for p in report["predictions"]] == [str(files[1])]
    assert not set(first) - {"predictions.json", "outputs.npz"} & {p.name for p in out.iterdir()}  # the old pictures are gone

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    capsys.readouterr()
    assert cli.main(["predict", str(onnx_path), str(files[0]), "--out", str(other)]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
