"""Influence functions on a model's linear readout (glasszoo.explain.influence).

- the objective's gradient and Hessian are those of the damped mean
  cross-entropy (finite differences of its value and of its gradient);
- the scores are `-g_test^T H^-1 g_i` computed one by one;
- the paper's check at small scale: leaving each of the 30 most influential
  training images out and refitting the readout to convergence changes the
  test loss as predicted (Pearson r >= 0.8 is the issue's target; a
  convex readout gives far more);
- the index round-trips through its file and the cache, bad inputs and bad
  files are refused with the problem named, and a family without a linear
  readout says so;
- the same for per-class features and the one-hot binary cross-entropy
  (a non-linear last layer: B-cos, with real-layer refits) and for a wide
  readout restricted to its principal directions (INAM).
"""

import numpy as np
import pytest
from glasszoo.explain import influence
from glasszoo.explain.probabilities import probabilities_of
from glasszoo.explain.readout_losses import GroupedSoftmax
from tiny_models import build


@pytest.fixture(scope="module")
def trained(samples):
    x, y = samples[0], samples[1]
    model = build("cnn", seed=3)
    model.compile()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    return model, x, y


def _problem(seed=0, n=30, width=4, classes=3):
    generator = np.random.default_rng(seed)
    features = generator.normal(size=(n, width))
    offsets = generator.normal(size=(n, classes))
    labels = generator.integers(0, classes, size=n)
    parameters = generator.normal(size=(width, classes))
    return features, offsets, labels, parameters


def test_gradient_and_hessian_are_those_of_the_objective():
    features, offsets, labels, parameters = _problem()
    damping, step = 0.05, 1e-6
    gradient = influence.objective_gradient(features, offsets, labels, parameters, damping)
    hessian = influence.objective_hessian(features, offsets, parameters, damping, chunk=7)  # several chunks
    flat = parameters.reshape(-1)
    for index in range(flat.size):
        moved = np.zeros_like(flat)
        moved[index] = step
        up, down = (flat + moved).reshape(parameters.shape), (flat - moved).reshape(parameters.shape)
        numeric = (
            influence.objective_value(features, offsets, labels, up, damping) - influence.objective_value(features, offsets, labels, down, damping)
        ) / (2 * step)
        assert abs(numeric - gradient.reshape(-1)[index]) < 1e-7
        column = (
            influence.objective_gradient(features, offsets, labels, up, damping) - influence.objective_gradient(features, offsets, labels, down, damping)
        ).reshape(-1) / (2 * step)
        np.testing.assert_allclose(hessian[:, index], column, atol=1e-7)
    np.testing.assert_allclose(hessian, hessian.T)


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_per_class_features_and_both_losses_have_the_objective_s_gradient_and_gauss_newton_matrix(loss):
    features, offsets, labels, parameters = _problem(seed=2)
    features = np.random.default_rng(5).normal(size=features.shape + (parameters.shape[1],))  # one set per class
    damping, step, center = 0.05, 1e-6, np.full(parameters.shape, 0.3)
    gradient = influence.objective_gradient(features, offsets, labels, parameters, damping, loss=loss, center=center)
    hessian = influence.objective_hessian(features, offsets, parameters, damping, chunk=7, loss=loss)
    flat = parameters.reshape(-1)
    for index in range(flat.size):
        moved = np.zeros_like(flat)
        moved[index] = step
        up, down = (flat + moved).reshape(parameters.shape), (flat - moved).reshape(parameters.shape)
        values = [influence.objective_value(features, offsets, labels, p, damping, loss=loss, center=center) for p in (up, down)]
        assert abs((values[0] - values[1]) / (2 * step) - gradient.reshape(-1)[index]) < 1e-7
        column = (
            influence.objective_gradient(features, offsets, labels, up, damping, loss=loss)
            - influence.objective_gradient(features, offsets, labels, down, damping, loss=loss)
        ).reshape(-1) / (2 * step)
        np.testing.assert_allclose(hessian[:, index], column, atol=1e-7)  # the layer is linear here: Gauss-Newton = Hessian
    if loss == "sigmoid":  # the binary cross-entropy of a per-class readout couples no two classes
        classes = parameters.shape[1]
        assert np.all(hessian.reshape(-1, classes, parameters.shape[0], classes)[:, 0, :, 1] == 0)


def test_a_non_linear_last_layer_is_validated_by_refitting_the_real_layer(samples):
    """B-cos: the leave-one-out refits re-evaluate the layer itself, so the check sees what Gauss-Newton leaves out."""
    x, y = samples[0], samples[1]
    # the tiny config's output scale (scale_factor 100) gives logits in the thousands, every sigmoid saturated and
    # no curvature left for a Newton step; 10 gives logits of order one, as the preset's are
    model = build("bcos", seed=1, scale_factor=10.0)
    model.compile()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    index = influence.InfluenceIndex.build(model, x, y, refit=True)
    assert index.info["layer"].startswith("non-linear") and index.loss == "sigmoid" and "damping_rule" in index.info
    assert index.features.ndim == 3 and index.info["refit_steps"] > 0
    head = index.head
    gradient = influence.objective_gradient(*head.expand(index.parameters), y, index.parameters, index.damping, loss="sigmoid", center=index.center)
    assert np.max(np.abs(gradient)) < 1e-10  # at the optimum of the real layer's proximal objective
    test_image, test_label = x[6], y[6]
    predicted = index.predicted_loss_change(model, test_image[None], target=[test_label])[0]
    most = np.argsort(-np.abs(predicted), kind="stable")[:20]
    check = influence.leave_one_out_check(index, model, test_image, test_label, most)
    assert check["pearson_r"] >= 0.8, check
    found = index.most_influential(model, x[:2], count=3)
    assert found["helpful"].shape == (2, 3)


def test_a_wide_non_linear_layer_moves_along_each_class_s_principal_directions(samples):
    """CoDA: 4,896 weights a class in the preset; here the tiny layer's are restricted to 12 directions a class."""
    x, y = samples[0], samples[1]
    model = build("coda", seed=1)
    model.compile()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    full = influence.readout(model, x)
    index = influence.InfluenceIndex.build(model, x, y, max_parameters=120, refit=True)
    assert index.info["projection"]["directions"] == 12 and index.projection.shape == (10, full.parameters.shape[0], 12)
    assert index.info["damping_rule"].startswith(f"{influence.RELATIVE_DAMPING} x the largest Gauss-Newton eigenvalue")
    assert index.features.shape == (len(x), 12, 10)
    gradient = influence.objective_gradient(*index.head.expand(index.parameters), y, index.parameters, index.damping, loss="sigmoid", center=index.center)
    assert np.max(np.abs(gradient)) < 1e-10  # the Levenberg-Marquardt refit reached the optimum of the layer's own objective
    np.testing.assert_allclose(index.test_readout(model, x[:4]).logits(np.zeros((12, 10))), full.logits(full.parameters)[:4], atol=1e-10)
    test_image, test_label = x[2], y[2]
    predicted = index.predicted_loss_change(model, test_image[None], target=[test_label])[0]
    most = np.argsort(-np.abs(predicted), kind="stable")[:15]
    assert influence.leave_one_out_check(index, model, test_image, test_label, most)["pearson_r"] >= 0.8
    again = influence.InfluenceIndex.build(model, x, y, max_parameters=120, reuse=index)  # the directions, not recomputed
    assert again.projection is index.projection and again.info["projection"] == index.info["projection"]
    with pytest.raises(ValueError, match="same training images"):
        influence.InfluenceIndex.build(model, x[:20], y[:20], max_parameters=120, reuse=index)


def test_a_wide_readout_is_restricted_to_its_principal_directions_without_changing_the_logits(samples, tmp_path):
    x, y = samples[0], samples[1]
    model = build("inam", seed=1)
    model.compile()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    full = influence.readout(model, x)
    index = influence.InfluenceIndex.build(model, x, y, damping=0.01, max_parameters=200, refit=True)
    assert index.info["projection"]["directions"] == 20 and index.info["projection"]["of"] == full.features.shape[1]
    assert 0.5 < index.info["projection"]["second_moment_share"] <= 1.0
    restricted = influence.InfluenceIndex.build(model, x, y, damping=0.01, max_parameters=200)
    # The features are float32 model outputs, computed here on 5 images and there on all of them: the
    # batch changes their last bits (5.6e-7 on one CI machine); the tolerance is float32 round-off, no more.
    np.testing.assert_allclose(restricted.test_readout(model, x[:5]).logits(restricted.parameters), full.logits(full.parameters)[:5], rtol=1e-5, atol=1e-6)
    test_image, test_label = x[3], y[3]
    predicted = index.predicted_loss_change(model, test_image[None], target=[test_label])[0]
    most = np.argsort(-np.abs(predicted), kind="stable")[:20]
    assert influence.leave_one_out_check(index, model, test_image, test_label, most)["pearson_r"] >= 0.8
    reloaded = influence.InfluenceIndex.load(restricted.save(tmp_path / "index.npz"))
    np.testing.assert_allclose(reloaded.scores(model, x[:2]), restricted.scores(model, x[:2]), rtol=1e-4, atol=1e-7)


def test_refit_reaches_the_optimum_with_and_without_a_point():
    features, offsets, labels, parameters = _problem(seed=1)
    optimum, steps = influence.refit_readout(features, offsets, labels, parameters, 0.01)
    assert steps > 0
    assert np.max(np.abs(influence.objective_gradient(features, offsets, labels, optimum, 0.01))) < 1e-10
    weights = np.ones(len(labels))
    weights[4] = 0.0
    fixed = influence._inverse(influence.objective_hessian(features, offsets, optimum, 0.01))
    without, _ = influence.refit_readout(features, offsets, labels, optimum, 0.01, weights=weights, hessian_inverse=fixed)
    assert np.max(np.abs(influence.objective_gradient(features, offsets, labels, without, 0.01, weights=weights))) < 1e-10


def test_scores_are_minus_test_gradient_times_inverse_hessian_times_training_gradient(trained):
    model, x, y = trained
    index = influence.InfluenceIndex.build(model, x, y, damping=0.01)
    scores = index.scores(model, x[:2], target=[1, 4])
    head = influence.readout(model, x)
    features, offsets, parameters = head.features, head.offsets, head.parameters
    probabilities = probabilities_of(offsets + features @ parameters)
    inverse = np.linalg.inv(influence.objective_hessian(features, offsets, parameters, 0.01))
    for row, (test, label) in enumerate(zip((0, 1), (1, 4))):
        residual = probabilities[test].copy()
        residual[label] -= 1
        test_gradient = np.outer(features[test], residual).reshape(-1)
        for i in (0, 7, 33):
            residual_i = probabilities[i].copy()
            residual_i[y[i]] -= 1
            expected = -test_gradient @ inverse @ np.outer(features[i], residual_i).reshape(-1)
            np.testing.assert_allclose(scores[row, i], expected, rtol=1e-6, atol=1e-10)


def test_leaving_out_the_most_influential_images_changes_the_test_loss_as_predicted(trained):
    model, x, y = trained
    index = influence.InfluenceIndex.build(model, x, y, damping=0.01, refit=True)
    test_image, test_label = x[5], y[5]
    predicted = index.predicted_loss_change(model, test_image[None], target=[test_label])[0]
    most = np.argsort(-np.abs(predicted), kind="stable")[:30]
    check = influence.leave_one_out_check(index, model, test_image, test_label, most)
    assert check["pearson_r"] >= 0.8, check
    assert np.sign(check["predicted"]).tolist().count(1) > 0 and np.sign(check["predicted"]).tolist().count(-1) > 0
    with pytest.raises(ValueError, match="refit=True"):
        influence.leave_one_out_check(influence.InfluenceIndex.build(model, x, y), model, test_image, test_label, most[:2])


def test_most_influential_sorts_helpful_and_harmful(trained):
    model, x, y = trained
    index = influence.InfluenceIndex.build(model, x, y)
    found = index.most_influential(model, x[:3], count=4)
    scores = index.scores(model, x[:3])
    for row in range(3):
        assert list(found["helpful_scores"][row]) == sorted(scores[row])[:4]
        assert list(found["harmful_scores"][row]) == sorted(scores[row], reverse=True)[:4]
    np.testing.assert_array_equal(found["labels"], model.predict_classes(x[:3]))


def test_the_index_round_trips_and_the_cache_reuses_it(trained, tmp_path, monkeypatch):
    model, x, y = trained
    first = influence.InfluenceIndex.cached(model, x, y, folder=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(influence.InfluenceIndex, "build", classmethod(lambda *a, **k: pytest.fail("the cache was not used")))
    second = influence.InfluenceIndex.cached(model, x, y, folder=tmp_path)
    np.testing.assert_allclose(second.scores(model, x[:2]), first.scores(model, x[:2]), rtol=1e-5, atol=1e-8)
    assert second.info["data_sha256"] == first.info["data_sha256"]
    # other training data (one label changed) is another file
    changed = y.copy()
    changed[0] = (changed[0] + 1) % 10
    assert influence.cache_file(model, x, changed, folder=tmp_path) != files[0]


def test_bad_inputs_and_files_are_refused_with_the_problem_named(trained, tmp_path):
    model, x, y = trained
    with pytest.raises(ValueError, match="one label each"):
        influence.InfluenceIndex.build(model, x, y[:-1])
    with pytest.raises(ValueError, match="damping must be positive"):
        influence.InfluenceIndex.build(model, x, y, damping=0.0)
    bad = tmp_path / "index.npz"
    np.savez(bad, features=np.zeros(2))
    with pytest.raises(ValueError, match="index.npz is not an influence index"):
        influence.InfluenceIndex.load(bad)
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="index.npz is not a readable influence index"):
        influence.InfluenceIndex.load(bad)


def test_a_family_without_a_readout_says_so(samples):
    model = build("hierarchical_protopnet", seed=0)
    model.readout_head = lambda images, batch_size=256: None  # as a family with neither readout would
    with pytest.raises(NotImplementedError, match="hierarchical_protopnet family has no linear readout"):
        influence.InfluenceIndex.build(model, samples[0][:4], samples[1][:4])


def _grouped_problem(seed=0, n=40, width=3):
    """Five outputs in two groups (a root choosing among two, a node choosing among three); four classes."""
    loss = GroupedSoftmax([0, 0, 1, 1, 1], [[1, 0, 1, 0, 0], [1, 0, 0, 1, 0], [1, 0, 0, 0, 1], [0, 1, 0, 0, 0]])
    generator = np.random.default_rng(seed)
    features = generator.normal(size=(n, width, 5))
    return loss, features, generator.normal(size=(n, 5)), generator.integers(0, 4, size=n), generator.normal(size=(width, 5))


def test_a_grouped_softmax_scores_the_path_and_has_the_objective_s_exact_hessian():
    loss, features, offsets, labels, parameters = _grouped_problem()
    outputs = influence.logits_of(features, offsets, parameters)
    class_logits = loss.class_logits(outputs)
    np.testing.assert_allclose(np.exp(class_logits).sum(axis=1), 1.0)  # the path probabilities of the four classes
    np.testing.assert_allclose(loss.losses(outputs, labels), -class_logits[np.arange(len(labels)), labels])
    damping, step = 0.05, 1e-6
    gradient = influence.objective_gradient(features, offsets, labels, parameters, damping, loss=loss)
    hessian = influence.objective_hessian(features, offsets, parameters, damping, chunk=7, loss=loss, labels=labels)
    flat = parameters.reshape(-1)
    for index in range(flat.size):
        moved = np.zeros_like(flat)
        moved[index] = step
        up, down = (flat + moved).reshape(parameters.shape), (flat - moved).reshape(parameters.shape)
        values = [influence.objective_value(features, offsets, labels, p, damping, loss=loss) for p in (up, down)]
        assert abs((values[0] - values[1]) / (2 * step) - gradient.reshape(-1)[index]) < 1e-7
        column = (
            influence.objective_gradient(features, offsets, labels, up, damping, loss=loss)
            - influence.objective_gradient(features, offsets, labels, down, damping, loss=loss)
        ).reshape(-1) / (2 * step)
        np.testing.assert_allclose(hessian[:, index], column, atol=1e-7)  # exact: the outputs are linear in the weights
    with pytest.raises(ValueError, match="at most one output of each group"):
        GroupedSoftmax([0, 0], [[1, 1]])
    with pytest.raises(ValueError, match="readout's loss must be one of"):
        influence.objective_value(features, offsets, labels, parameters, damping, loss="hinge")


def test_the_hierarchical_model_s_edge_readout_is_validated_by_leaving_images_out(samples, tmp_path):
    """Its class logits are log-softmaxes summed along paths; the edge scores are linear in the last layer."""
    x, y = samples[0], samples[1]
    model = build("hierarchical_protopnet", seed=2)
    model.compile()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    index = influence.InfluenceIndex.build(model, x, y, refit=True)
    assert isinstance(index.loss, GroupedSoftmax) and index.info["loss"] == "grouped_softmax" and index.info["layer"] == "linear"
    assert index.parameters.shape[1] == model.tables.num_edges
    test_image, test_label = x[5], y[5]
    predicted = index.predicted_loss_change(model, test_image[None], target=[test_label])[0]
    most = np.argsort(-np.abs(predicted), kind="stable")[:20]
    assert influence.leave_one_out_check(index, model, test_image, test_label, most)["pearson_r"] >= 0.9
    at_model = influence.InfluenceIndex.build(model, x, y)  # at the model's own weights: its predicted classes are the model's
    found = at_model.most_influential(model, x[:3], count=4)
    np.testing.assert_array_equal(found["labels"], np.argmax(model.predict(x[:3], verbose=0), axis=1))
    again = influence.InfluenceIndex.load(index.save(tmp_path / "hierarchical.npz"))
    assert isinstance(again.loss, GroupedSoftmax)
    np.testing.assert_allclose(again.scores(model, x[:3]), index.scores(model, x[:3]), rtol=1e-5, atol=1e-9)


def test_cli_writes_pictures_and_json_and_reuses_its_index(fashion_mnist, tmp_path, capsys):
    import json

    from glasszoo.cli import main

    model = build("cnn", seed=4)
    # a card as `glasszoo train` writes it: 59,500 validation images leave a fit split of 500
    model.save_preset(tmp_path / "tiny", metadata={"data": {"dataset": "fashion_mnist", "validation_images": 59500}, "training": {"seed": 0}})
    arguments = ["influence", str(tmp_path / "tiny"), "--samples", "2", "--count", "3", "--cache", str(tmp_path / "cache")]
    assert main(arguments + ["--out", str(tmp_path / "out")]) == 0
    assert "Built the influence index of fashion_mnist: the 500 fit images" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "influence.json").read_text())
    assert len(report["images"]) == 2 and len(report["images"][0]["helpful"]) == 3
    assert report["index"]["training_images"] == 500
    assert len(list((tmp_path / "out").glob("influence_*.png"))) == 2
    helpful = [entry["score"] for entry in report["images"][0]["helpful"]]
    assert helpful == sorted(helpful) and helpful[0] < 0
    assert main(arguments + ["--out", str(tmp_path / "out")]) == 0  # a previous run's folder is replaced
    assert "Loaded the influence index" in capsys.readouterr().out


def test_cli_names_the_missing_training_data_and_a_family_without_a_readout(samples, tmp_path, capsys, monkeypatch):
    from glasszoo.cli import main
    from glasszoo.zoo.hierarchical_protopnet.model import HierarchicalProtoPNet

    build("cnn", seed=4).save_preset(tmp_path / "bare")
    assert main(["influence", str(tmp_path / "bare"), "--out", str(tmp_path / "out")]) == 2
    assert "no model card naming its training data" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(HierarchicalProtoPNet, "readout_head", lambda self, images, batch_size=256: None)  # as if it had none
    assert main(["influence", "hierarchical_protopnet_fashion_mnist", "--out", str(tmp_path / "out"), "--samples", "1"]) == 2
    assert "hierarchical_protopnet family has no linear readout" in capsys.readouterr().err


def test_helpfulness_percentiles_rank_scores():
    percentiles = influence.helpfulness_percentiles(np.array([[0.5, -2.0, 3.0, 0.0, 1.0]]))
    np.testing.assert_allclose(percentiles, [[50.0, 0.0, 100.0, 25.0, 75.0]])


def test_part_sources_are_ranked_by_helpfulness(samples):
    x, y = samples[0], samples[1]
    model = build("prototypedl", seed=2)
    model.compile()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    index = influence.InfluenceIndex.build(model, x, y)
    agreement = influence.part_source_ranks(index, model, x[:4], x, top=2)
    sources = model.part_sources(x)
    distances = model.explain(x)["prototype_distances"]
    np.testing.assert_array_equal(sources, distances.argmin(axis=0))  # each prototype's nearest training image
    nearest = np.argsort(model.explain(x[:4])["prototype_distances"], axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(agreement["parts"], nearest)
    percentiles = influence.helpfulness_percentiles(index.scores(model, x[:4]))
    np.testing.assert_allclose(agreement["percentiles"], percentiles[np.arange(4)[:, None], sources[nearest]])
    assert 0 <= agreement["mean_percentile"] <= 100 and 0 <= agreement["mean_magnitude_percentile"] <= 100
    with pytest.raises(ValueError, match="cnn family has no parts"):
        influence.part_source_ranks(index, build("cnn", seed=0), x[:2], x)


def test_protopnet_preset_prototypes_come_from_its_rebuilt_fit_split(fashion_mnist):
    import glasszoo
    from glasszoo.zoo.training_data import training_split

    model = glasszoo.load("protopnet_fashion_mnist")
    x_fit, y_fit, where = training_split(model)
    assert len(x_fit) == 54000 and "seed 0" in where
    sources = model.part_sources(x_fit)
    np.testing.assert_array_equal(sources, model.prototype_provenance["source_index"])
    np.testing.assert_array_equal(y_fit[sources], model.prototype_provenance["prototype_class"])
    with pytest.raises(ValueError, match="not those"):
        model.part_sources(x_fit[::-1])


def test_weighted_hessian_drops_the_images_of_weight_zero():
    features, offsets, labels, parameters = _problem(seed=4)
    weights = np.ones(len(labels))
    weights[[2, 9]] = 0.0
    keep = weights > 0
    weighted = influence.objective_hessian(features, offsets, parameters, 0.0, weights=weights)
    without = influence.objective_hessian(features[keep], offsets[keep], parameters, 0.0)
    np.testing.assert_allclose(weighted * len(labels), without * keep.sum(), atol=1e-12)


def test_cli_says_when_every_score_is_negligible(fashion_mnist, tmp_path, capsys, monkeypatch):
    """A prediction so sure that its loss gradient vanishes: the order of the training images shown is noise, and the output says so."""
    import json

    from glasszoo.cli import main

    model = build("cnn", seed=4)
    model.save_preset(tmp_path / "tiny", metadata={"data": {"dataset": "fashion_mnist", "validation_images": 59500}, "training": {"seed": 0}})
    original = influence.InfluenceIndex.most_influential

    def vanishing(self, *args, **kwargs):
        found = original(self, *args, **kwargs)
        found["helpful_scores"][0] *= 1e-15  # the first image only
        found["harmful_scores"][0] *= 1e-15
        return found

    monkeypatch.setattr(influence.InfluenceIndex, "most_influential", vanishing)
    out = tmp_path / "out"
    assert main(["influence", str(tmp_path / "tiny"), "--samples", "2", "--count", "3", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    images = json.loads((out / "influence.json").read_text())["images"]
    assert "its loss gradient vanishes" in images[0]["note"] and "note" not in images[1]
    assert "the order of the images shown is noise" in capsys.readouterr().out
