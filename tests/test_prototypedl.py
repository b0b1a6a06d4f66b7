"""PrototypeDL: the prototype layer, the four losses, the explanation outputs, training, saving and export."""

import glasszoo
import numpy as np
import pytest
from glasszoo.layers import LatentPrototypes
from glasszoo.zoo.presets import write_preset
from glasszoo.layers.mirrored_decoder import strided_sizes as encoder_sizes
from glasszoo.zoo.prototypedl.model import PrototypeDL
from keras import ops

TINY = dict(filters=(6, 6, 6, 3), num_prototypes=5)


@pytest.fixture(scope="module")
def trained(samples):
    import keras

    keras.utils.set_random_seed(4)
    model = PrototypeDL(num_classes=10, input_shape=(28, 28, 1), **TINY)
    model.compile()
    history = model.fit(samples[0], samples[1], epochs=4, batch_size=20, verbose=0)
    return model, history.history["loss"]


def test_layer_distances_match_numpy(rng):
    layer = LatentPrototypes(4)
    latent = rng.normal(size=(3, 7)).astype("float32")
    got = ops.convert_to_numpy(layer(latent))
    prototypes = ops.convert_to_numpy(layer.prototypes)
    expected = ((latent[:, None, :] - prototypes[None]) ** 2).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got.min() >= 0 and layer.compute_output_shape((None, 7)) == (None, 4)
    clone = LatentPrototypes.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="num_prototypes"):
        LatentPrototypes(0)
    with pytest.raises(ValueError, match="flat latent"):
        LatentPrototypes(2).build((None, 4, 4, 2))


@pytest.mark.parametrize("shape", [(28, 28, 1), (27, 29, 3), (32, 32, 3), (8, 8, 1)])
def test_reconstruction_comes_back_at_the_input_size(shape):
    model = PrototypeDL(num_classes=3, input_shape=shape, **TINY)
    out = model.explain(np.full((2,) + shape, 0.5, "float32"))
    assert out["logits"].shape == (2, 3)
    assert out["prototype_distances"].shape == (2, 5)
    assert out["class_evidence"].shape == (2, 5, 3)
    assert out["reconstruction"].shape == (2,) + shape
    assert model.decoded_prototypes().shape == (5,) + shape
    assert 0.0 <= out["reconstruction"].min() and out["reconstruction"].max() <= 1.0  # sigmoid output
    assert model.latent_dim == encoder_sizes(shape[0], 4)[-1] * encoder_sizes(shape[1], 4)[-1] * 3


def test_reference_architecture_has_a_40_dimensional_latent():
    model = PrototypeDL()
    assert model.latent_dim == 40 and model.latent_shape == (2, 2, 10)
    assert tuple(model.prototype_layer.prototypes.shape) == (15, 40)
    assert tuple(model.classifier.kernel.shape) == (15, 10) and model.classifier.bias is None


def test_losses_match_numpy(trained, samples):
    import keras

    model, _ = trained
    images, labels = samples[0][:16], samples[1][:16]
    logits = ops.convert_to_numpy(model(images))
    added = [float(v) for v in model.losses]
    out = model.explain(images)
    distances = out["prototype_distances"].astype("float64")
    reconstruction = (((out["reconstruction"] - images).astype("float64")) ** 2).sum(axis=(1, 2, 3)).mean()
    r1 = distances.min(axis=0).mean()  # every prototype: nearest encoded image
    r2 = distances.min(axis=1).mean()  # every image: nearest prototype
    np.testing.assert_allclose(added, [reconstruction, r1, r2], rtol=1e-4)
    assert model.loss_terms(images) == pytest.approx({"reconstruction": reconstruction, "r1": r1, "r2": r2}, rel=1e-4)
    # compile() with no loss gives the full objective: 20 CE + R + R1 + R2
    shifted = logits - logits.max(-1, keepdims=True)
    cross_entropy = -(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))[np.arange(16), labels].mean()
    total = model.evaluate(images, labels, batch_size=16, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(total, 20 * cross_entropy + reconstruction + r1 + r2, rtol=1e-4)
    # the weights scale their terms; a zero weight drops the term
    keras.utils.set_random_seed(0)
    weighted = PrototypeDL(num_classes=10, **dict(TINY, reconstruction_weight=0.5, r1_weight=0.0, r2_weight=3.0))
    weighted.set_weights(model.get_weights())
    weighted(images)
    np.testing.assert_allclose([float(v) for v in weighted.losses], [0.5 * reconstruction, 3.0 * r2], rtol=1e-4)


def test_logits_are_the_sum_of_class_evidence(trained, samples):
    model, _ = trained
    out = model.explain(samples[0][:7], batch_size=3)
    np.testing.assert_allclose(out["class_evidence"].sum(axis=1), out["logits"], rtol=1e-4, atol=1e-4)
    weights = ops.convert_to_numpy(model.classifier.kernel)
    np.testing.assert_allclose(out["prototype_distances"] @ weights, out["logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["logits"], model.predict(samples[0][:7], verbose=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.prototype_classes(), weights.argmin(axis=1))


def test_fit_lowers_the_loss_and_learns(trained, samples):
    _, losses = trained
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_keras_file_round_trip(trained, samples, tmp_path):
    import keras

    model, _ = trained
    path = tmp_path / "prototypedl.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, PrototypeDL) and restored.get_config() == model.get_config()
    expected, got = model.explain(samples[0][:4]), restored.explain(samples[0][:4])
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    np.testing.assert_array_equal(restored.decoded_prototypes(), model.decoded_prototypes())
    # the compiled objective (20 CE + R + R1 + R2) comes back with the file
    x, y = samples[0][:20], samples[1][:20]
    np.testing.assert_allclose(restored.evaluate(x, y, verbose=0)[0], model.evaluate(x, y, verbose=0)[0], rtol=1e-6)
    restored.fit(x, y, epochs=1, batch_size=10, verbose=0)


def test_preset_round_trip_and_new_classes(trained, samples, tmp_path):
    model, _ = trained
    weights = tmp_path / "prototypedl.weights.h5"
    model.save_weights(weights)
    folder = write_preset(tmp_path / "tiny_prototypedl", "prototypedl", model.get_config(), weights, {"name": "tiny_prototypedl"})
    loaded = glasszoo.load(folder)
    assert isinstance(loaded, PrototypeDL)
    np.testing.assert_allclose(loaded.predict(samples[0][:3], verbose=0), model.predict(samples[0][:3], verbose=0), atol=1e-6)
    fine = glasszoo.load(folder, num_classes=4)
    assert tuple(fine.classifier.kernel.shape) == (5, 4) and len(fine.class_names) == 4
    np.testing.assert_array_equal(fine.prototype_layer.prototypes.numpy(), model.prototype_layer.prototypes.numpy())
    kept = [(fine.encoder_layers[3], model.encoder_layers[3]), (fine.decoder_layers[0], model.decoder_layers[0]), (fine.decoder_layers[3], model.decoder_layers[3])]
    for target, source in kept:
        np.testing.assert_array_equal(target.kernel.numpy(), source.kernel.numpy())
    np.testing.assert_allclose(fine.explain(samples[0][:2])["reconstruction"], model.explain(samples[0][:2])["reconstruction"], atol=1e-6)
    fine.compile()
    fine.fit(samples[0][:20], samples[1][:20] % 4, epochs=1, batch_size=10, verbose=0)


def test_bad_inputs_and_arguments(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="channels"):
        model.explain(np.zeros((1, 28, 28, 3), "float32"))
    with pytest.raises(ValueError, match="empty"):
        model.explain(np.zeros((0, 28, 28, 1), "float32"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.explain(np.full((1, 28, 28, 1), 255.0, "float32"))
    with pytest.raises(ValueError, match="rank"):
        model.explain(np.zeros((28,), "float32"))
    with pytest.raises(ValueError, match="filters"):
        PrototypeDL(filters=())
    with pytest.raises(ValueError, match="num_prototypes"):
        PrototypeDL(num_prototypes=0)
    with pytest.raises(ValueError, match="r1_weight"):
        PrototypeDL(r1_weight=-1.0)
    with pytest.raises(ValueError, match="class_names"):
        PrototypeDL(num_classes=3, class_names=["a", "b"])


def test_plots_write_files(trained, samples, tmp_path):
    from glasszoo.zoo.prototypedl.views import (
        prototype_evidence_difference,
        prototype_grid,
        prototype_view,
        prototype_views,
    )
    from glasszoo.explain.explanation_files import write_explanations

    model, _ = trained
    prototype_grid(model, path=tmp_path / "grid.png")
    prototype_view(model, samples[0][0], nearest=3, path=tmp_path / "view.png")
    prototype_views(model, samples[0][:3], path=tmp_path / "rows.png")
    for name in ("grid.png", "view.png", "rows.png"):
        assert (tmp_path / name).stat().st_size > 1000
    written, _ = write_explanations(model, samples[0][:2], ["a", "b"], tmp_path / "cli")
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == [
        "explanation_grid.png", "explanations.npz", "local_a.png", "local_b.png", "predictions.json",
        "prototype_rows.png", "prototypes.png", "prototypes_a.png", "prototypes_b.png",
    ]
    assert written["reconstruction"].shape == (2, 28, 28, 1)
    out = model.explain(samples[0][:1])
    gap = prototype_evidence_difference(out, 0, 2, 5)
    np.testing.assert_allclose(gap.sum(), out["logits"][0, 2] - out["logits"][0, 5], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_prototypedl_fashion_mnist_reaches_its_card(fashion_mnist):
    if "prototypedl_fashion_mnist" not in glasszoo.list_models():
        pytest.skip("prototypedl_fashion_mnist not shipped")
    model = glasszoo.load("prototypedl_fashion_mnist")
    card = model.preset_metadata
    assert card["data"]["dataset"] == "fashion_mnist" and card["data"]["test_images"] == 10000
    accuracy = float((model.predict_classes(fashion_mnist.x_test) == fashion_mnist.y_test).mean())
    assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=2e-3)
    assert accuracy >= 0.85
    out = model.explain(fashion_mnist.x_test[:500])
    np.testing.assert_allclose(out["class_evidence"].sum(1), out["logits"], rtol=1e-3, atol=1e-3)
    # the nearest prototype's class (most negative weight) agrees with the prediction far above chance
    nearest_class = model.prototype_classes()[out["prototype_distances"].argmin(1)]
    assert float((nearest_class == out["logits"].argmax(1)).mean()) > 0.5


def test_grad_cam_protocol(samples):
    import keras
    from glasszoo.explain import posthoc
    from glasszoo.zoo.prototypedl.model import PrototypeDL

    keras.utils.set_random_seed(0)
    model = PrototypeDL(num_classes=10, input_shape=(28, 28, 1))
    maps, logits = model.feature_maps_and_logits(samples[0][:2])
    np.testing.assert_allclose(np.asarray(logits), model.explain(samples[0][:2])["logits"], atol=1e-5)
    assert tuple(maps.shape) == (2, 2, 2, 10)
    assert posthoc.grad_cam(model, samples[0][:2], 1).shape == (2, 28, 28)
