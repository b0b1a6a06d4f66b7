"""SENN's own checks (the family protocol itself: tests/test_families.py).

- the robustness penalty equals the seed's definition
  `||grad_x f - theta^T J_x h||_F^2`, built here from full Jacobians;
- it is zero for a model linear in its concepts (relevances that do not
  depend on the image), and its random-direction estimate is unbiased;
- it trains the weights it should (second-order gradients reach the
  relevance network and the concept encoder), and it lowers itself;
- the training-only loss terms reach `fit`'s loss, and `val_loss` is the
  cross-entropy alone;
- concept exemplars are the ends of each concept, travel with presets and
  `.keras` files, and bad files are refused with their name;
- the local Lipschitz estimate: zero for constant relevances, the maximum
  ratio over the sampled points, the same points for every model.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from glasszoo.zoo.senn import concepts, robustness
from glasszoo.zoo.senn.model import SENN
from keras import ops
from tiny_models import build


@pytest.fixture(scope="module")
def images(samples):
    return samples[0][:6]


def _definition_penalty(model, images):
    """`mean_b ||J_x f(x_b) - theta(x_b)^T J_x h(x_b)||_F^2` from full per-image Jacobians (TensorFlow)."""
    x = tf.convert_to_tensor(images)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        logits = model(x)
        concept_values = model.concept_values(x)
    jacobian_f = tape.batch_jacobian(logits, x).numpy().reshape(len(images), model.num_classes, -1)  # (B, K, D)
    jacobian_h = tape.batch_jacobian(concept_values, x).numpy().reshape(len(images), model.num_concepts, -1)  # (B, k, D)
    theta = ops.convert_to_numpy(model.relevance_values(x)).astype("float64")  # (B, k, K)
    residual = jacobian_f - np.einsum("bkc,bkd->bcd", theta, jacobian_h)
    return float(np.mean(np.sum(residual**2, axis=(1, 2))))


def test_penalty_equals_the_seed_definition(images):
    model = build("senn", seed=1)
    expected = _definition_penalty(model, images)
    actual = float(model.robustness_penalty(ops.convert_to_tensor(images)))
    assert expected > 1e-3
    np.testing.assert_allclose(actual, expected, rtol=1e-4)


def test_penalty_is_zero_when_relevances_do_not_depend_on_the_image(images):
    model = build("senn", seed=2)
    model.relevance_hidden.kernel.assign(np.zeros(model.relevance_hidden.kernel.shape, "float32"))
    assert float(model.robustness_penalty(ops.convert_to_tensor(images))) == 0.0
    assert _definition_penalty(model, images) < 1e-10


def test_random_direction_estimate_is_unbiased(images):
    exact = build("senn", seed=3)
    estimate = build("senn", seed=3, robustness_directions=1)
    estimate.set_weights(exact.get_weights())
    x = ops.convert_to_tensor(images)
    target = float(exact.robustness_penalty(x))
    draws = np.array([float(estimate.robustness_penalty(x)) for _ in range(300)])
    assert abs(draws.mean() - target) < 4 * draws.std(ddof=1) / np.sqrt(len(draws)), (draws.mean(), target)
    assert draws.std() > 0  # the directions are drawn anew at each call


def test_penalty_trains_the_relevance_network_and_the_concepts(images):
    model = build("senn", seed=4)
    x = ops.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        penalty = model.robustness_penalty(x)
    variables = {"relevance kernel": model.relevance_convolutions[0].kernel, "concept kernel": model.concept_layer.kernel}
    gradients = dict(zip(variables, tape.gradient(penalty, list(variables.values()))))
    for name, gradient in gradients.items():
        assert gradient is not None and float(tf.reduce_max(tf.abs(gradient))) > 0, f"no gradient reaches the {name}"
    # the decoder is not part of the penalty
    with tf.GradientTape() as tape:
        penalty = model.robustness_penalty(x)
    assert tape.gradient(penalty, model.decoder_input.kernel) is None


def test_gradient_steps_on_the_penalty_lower_it(images):
    model = build("senn", seed=5)
    x = ops.convert_to_tensor(images)
    optimizer = keras.optimizers.Adam(1e-2)
    before = float(model.robustness_penalty(x))
    for _ in range(10):
        with tf.GradientTape() as tape:
            penalty = model.robustness_penalty(x)
        gradients = tape.gradient(penalty, model.trainable_variables)
        optimizer.apply([g if g is not None else tf.zeros_like(v) for g, v in zip(gradients, model.trainable_variables)], model.trainable_variables)
    assert float(model.robustness_penalty(x)) < 0.5 * before


def test_training_terms_reach_fit_and_validation_loss_is_cross_entropy(samples):
    x, y = samples[0][:32], samples[1][:32]
    plain = build("senn", seed=6, robustness_weight=0.0, reconstruction_weight=0.0)
    full = build("senn", seed=6, robustness_weight=1.0, reconstruction_weight=1.0, concept_sparsity=1.0)
    full.set_weights(plain.get_weights())
    losses = {}
    for name, model in (("plain", plain), ("full", full)):
        model.compile(optimizer=keras.optimizers.SGD(0.0))  # no update: both losses at the same weights
        history = model.fit(x, y, batch_size=32, epochs=1, validation_data=(x, y), verbose=0)
        losses[name] = (history.history["loss"][0], history.history["val_loss"][0])
    xt = ops.convert_to_tensor(x)
    h = full.concept_values(xt)
    extra = (
        float(full.robustness_penalty(xt))
        + float(ops.mean(ops.square(full.decode(h) - xt)))
        + float(ops.mean(ops.abs(h)))
    )
    np.testing.assert_allclose(losses["full"][0] - losses["plain"][0], extra, rtol=1e-3)
    np.testing.assert_allclose(losses["full"][1], losses["plain"][1], rtol=1e-5)  # validation: cross-entropy only
    np.testing.assert_allclose(losses["plain"][0], losses["plain"][1], rtol=1e-4)


def test_bad_constructor_arguments_are_refused():
    with pytest.raises(ValueError, match="num_concepts"):
        SENN(num_concepts=0)
    with pytest.raises(ValueError, match="robustness_weight"):
        SENN(robustness_weight=-1.0)
    with pytest.raises(ValueError, match="robustness_weight"):
        SENN(robustness_weight=float("nan"))
    with pytest.raises(ValueError, match="robustness_directions"):
        SENN(robustness_directions=0)
    with pytest.raises(ValueError, match="relevance_filters"):
        SENN(relevance_filters=[])


def test_exemplars_are_the_ends_of_each_concept(samples):
    model = build("senn", seed=7)
    images = samples[0][:40]
    found = concepts.concept_exemplars(model, images, count=3)
    values = concepts.concept_values(model, images)
    for concept in range(model.num_concepts):
        column = values[:, concept]
        np.testing.assert_allclose(found["highest_value"][concept], np.sort(column)[::-1][:3])
        np.testing.assert_allclose(found["lowest_value"][concept], np.sort(column)[:3])
        np.testing.assert_array_equal(found["highest_images"][concept], np.round(images[found["highest_index"][concept]] * 255).astype("uint8"))
    assert found["quantiles"].shape == (model.num_concepts, 3)
    assert np.all(found["quantiles"][:, 0] <= found["quantiles"][:, 2])
    values_swept, decoded = concepts.decoded_sweep(model, found, concept=1, steps=4)
    assert decoded.shape == (4,) + model.image_shape and values_swept[0] <= values_swept[-1]


def test_exemplars_travel_with_presets_and_keras_files(samples, tmp_path):
    import glasszoo

    model = build("senn", seed=8)
    model.finish_training(samples[0][:30])
    model.save_preset(tmp_path / "preset")
    assert (tmp_path / "preset" / concepts.EXEMPLAR_FILE).exists()
    loaded = glasszoo.load(tmp_path / "preset")
    for key in concepts.EXEMPLAR_KEYS:
        np.testing.assert_array_equal(loaded.concept_exemplars[key], model.concept_exemplars[key])
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(reloaded.concept_exemplars["highest_index"], model.concept_exemplars["highest_index"])


def test_a_bad_exemplar_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "concepts.npz"
    np.savez(path, mean=np.zeros(3))
    with pytest.raises(ValueError, match="concepts.npz.*lacks"):
        concepts.load_exemplars(path)
    model = build("senn", seed=9)
    exemplars = concepts.concept_exemplars(model, np.random.default_rng(0).uniform(size=(10, 28, 28, 1)).astype("float32"))
    concepts.save_exemplars(exemplars, path)
    with pytest.raises(ValueError, match="describes 4 concepts; the model has 7"):
        concepts.load_exemplars(path, num_concepts=7)


def test_local_lipschitz_is_zero_for_constant_relevances(images):
    model = build("senn", seed=10)
    for layer in model.relevance_convolutions + [model.relevance_hidden]:
        layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))
    assert np.all(robustness.local_lipschitz(model, images, samples=4) == 0.0)


def test_local_lipschitz_is_the_largest_ratio_over_the_sampled_points(images):
    model = build("senn", seed=11)
    estimate = robustness.local_lipschitz(model, images[:1], radius=0.1, samples=5, seed=3)[0]
    generator = np.random.default_rng(3)
    moved = np.clip(images[:1] + generator.uniform(-0.1, 0.1, size=(5,) + images.shape[1:]).astype("float32"), 0, 1)
    theta = model.explain(np.concatenate([images[:1], moved]))["relevances"].astype("float64")
    ratios = np.linalg.norm((theta[1:] - theta[0]).reshape(5, -1), axis=1) / np.linalg.norm((moved - images[:1]).reshape(5, -1), axis=1)
    np.testing.assert_allclose(estimate, ratios.max(), rtol=1e-5)
    summary = robustness.lipschitz_summary(model, images, radius=0.1, samples=5, seed=3)
    assert summary["images"] == len(images) and summary["standard_error"] > 0
    with pytest.raises(ValueError, match="denominator"):
        robustness.local_lipschitz(model, images, denominator="output")


@pytest.mark.slow
def test_senn_presets_reach_their_cards_and_the_penalty_stabilises_the_relevances(fashion_mnist):
    import glasszoo

    names = ("senn_fashion_mnist", "senn_no_penalty_fashion_mnist")
    if not set(names) <= set(glasszoo.list_models()):
        pytest.skip("the SENN presets are not shipped")
    lipschitz = {}
    for name in names:
        model = glasszoo.load(name)
        card = model.preset_metadata
        assert card["data"]["dataset"] == "fashion_mnist" and card["data"]["test_images"] == 10000
        accuracy = float((model.predict_classes(fashion_mnist.x_test) == fashion_mnist.y_test).mean())
        assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=2e-3)
        assert accuracy >= 0.91  # within 2 points of the black-box CNN (0.930)
        assert model.concept_exemplars is not None and model.concept_exemplars["highest_index"].shape == (10, 8)
        lipschitz[name] = robustness.local_lipschitz(model, fashion_mnist.x_test[:16], radius=0.05, samples=8).mean()
    assert lipschitz["senn_fashion_mnist"] < lipschitz["senn_no_penalty_fashion_mnist"] / 100, lipschitz
