import shutil

import glasszoo
import numpy as np
import pytest
from glasszoo.zoo.presets import CorruptedWeights, read_preset, write_preset


@pytest.fixture
def tiny_preset(tiny_inam, samples, tmp_path):
    images, labels, names = samples
    tiny_inam.fit(images, labels, epochs=1, batch_size=20, verbose=0)
    weights = tmp_path / "w.weights.h5"
    tiny_inam.save_weights(weights)
    folder = write_preset(tmp_path / "tiny_inam", "inam", tiny_inam.get_config(), weights, {"name": "tiny_inam"})
    return folder, tiny_inam


def test_preset_folder_round_trip(tiny_preset, samples):
    folder, original = tiny_preset
    config, metadata = read_preset(folder)
    assert config["family"] == "inam" and len(metadata["weights_sha256"]) == 64
    model = glasszoo.load(folder)
    np.testing.assert_array_equal(model.explain(samples[0][:3])["logits"], original.explain(samples[0][:3])["logits"])
    assert model.preset_metadata["name"] == "tiny_inam"


def test_not_pretrained_is_fresh(tiny_preset):
    folder, original = tiny_preset
    fresh = glasszoo.load(folder, pretrained=False)
    assert fresh.get_config() == original.get_config()
    assert not np.allclose(fresh.conv.kernel.numpy(), original.conv.kernel.numpy())


def test_new_class_count_keeps_all_but_the_head_output(tiny_preset, samples):
    folder, original = tiny_preset
    model = glasszoo.load(folder, num_classes=3, class_names=["a", "b", "c"])
    assert model.num_classes == 3 and model.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(model.conv.kernel.numpy(), original.conv.kernel.numpy())
    assert model.head.output_kernel.shape[-1] == 3
    assert not np.allclose(model.head.input_kernel.numpy(), original.head.input_kernel.numpy())  # a new head
    assert not np.any(model.head.feature_means.numpy()) and not np.any(model.head.bias.numpy())
    assert model.preset_metadata == {"fine_tuned_from": "tiny_inam"}
    assert model.explain(samples[0][:2])["logits"].shape == (2, 3)
    model.compile()
    model.fit(samples[0], samples[1] % 3, epochs=1, batch_size=20, verbose=0)


def test_same_class_count_keeps_names_and_weights(tiny_preset, samples):
    folder, original = tiny_preset
    model = glasszoo.load(folder, num_classes=10)
    assert model.class_names == original.class_names
    np.testing.assert_array_equal(model.explain(samples[0][:2])["logits"], original.explain(samples[0][:2])["logits"])


def test_new_channel_count_reinitialises_the_kernels(tiny_preset):
    folder, original = tiny_preset
    model = glasszoo.load(folder, input_shape=(28, 28, 3))
    assert model.conv.kernel.shape[2] == 3
    np.testing.assert_array_equal(model.head.output_kernel.numpy(), original.head.output_kernel.numpy())
    assert model.explain(np.zeros((1, 28, 28, 3), "float32"))["logits"].shape == (1, 10)


def test_new_image_size_keeps_the_weights(tiny_preset):
    folder, original = tiny_preset
    model = glasszoo.load(folder, input_shape=(36, 36, 1))
    np.testing.assert_array_equal(model.conv.kernel.numpy(), original.conv.kernel.numpy())
    assert model.explain(np.zeros((1, 36, 36, 1), "float32"))["decision_images"].shape == (1, 10, 36, 36, 1)


def test_corrupted_weights_are_refused(tiny_preset, tmp_path):
    folder, _ = tiny_preset
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    data = bytearray((broken / "model.weights.h5").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "model.weights.h5").write_bytes(bytes(data))
    with pytest.raises(CorruptedWeights, match="sha256"):
        glasszoo.load(broken)
    (broken / "model.weights.h5").write_bytes(bytes(data[:100]))
    with pytest.raises(CorruptedWeights, match="corrupted"):
        glasszoo.load(broken)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(glasszoo.UnknownModel) as error:
        glasszoo.load("inam_fashion_mnst")
    assert "inam_fashion_mnist" in str(error.value)
    with pytest.raises(glasszoo.UnknownModel, match="Available"):
        glasszoo.load("resnet50")


def test_list_models_pattern():
    names = glasszoo.list_models()
    assert "inam_fashion_mnist" in names
    assert glasszoo.list_models("inam_*") == [n for n in names if n.startswith("inam_")]
    assert glasszoo.list_models("nothing*") == []


def test_import_glasszoo_does_not_import_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, glasszoo; glasszoo.list_models(); glasszoo.families(); glasszoo.export.OnnxModel; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


@pytest.mark.parametrize("keras_first", [True, False], ids=["keras-then-glasszoo", "glasszoo-then-keras"])
def test_keras_load_model_finds_the_zoo_classes_after_import_glasszoo(tiny_coda, tmp_path, keras_first):
    """`keras.saving.load_model` on a zoo `.keras` file works after `import glasszoo`, whichever was imported first."""
    import os
    import subprocess
    import sys

    path = tmp_path / "model.keras"
    tiny_coda.save(str(path))
    imports = "import keras, glasszoo" if keras_first else "import glasszoo, keras"
    code = f"{imports}; model = keras.saving.load_model({str(path)!r}); print(type(model).__name__, model.family)"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["CoDA", "coda"]


def test_coda_preset_round_trip_and_new_classes(tiny_coda, samples, tmp_path):
    images, labels, _ = samples
    tiny_coda.fit(images, labels, epochs=1, batch_size=20, verbose=0)
    weights = tmp_path / "coda.weights.h5"
    tiny_coda.save_weights(weights)
    folder = write_preset(tmp_path / "tiny_coda", "coda", tiny_coda.get_config(), weights, {"name": "tiny_coda"})
    loaded = glasszoo.load(folder)
    assert loaded.family == "coda"
    np.testing.assert_allclose(loaded.explain(images[:3])["contributions"], tiny_coda.explain(images[:3])["contributions"], atol=1e-6)
    fine = glasszoo.load(folder, num_classes=3, class_names=["a", "b", "c"])
    assert fine.explain(images[:2])["logits"].shape == (2, 3)
    assert fine.preset_metadata == {"fine_tuned_from": "tiny_coda"}
    for kept, source in zip(fine.dau_layers[:-1], tiny_coda.dau_layers[:-1]):
        np.testing.assert_array_equal(kept.alignment.numpy(), source.alignment.numpy())
    assert fine.dau_layers[-1].alignment.shape != tiny_coda.dau_layers[-1].alignment.shape
    fine.compile()
    fine.fit(images[:8], labels[:8] % 3, epochs=1, batch_size=4, verbose=0)
