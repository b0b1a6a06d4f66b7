"""Exports and explanation outputs are written atomically: a failure mid-write leaves the previous file, and no debris."""

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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no partial file left behind


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
