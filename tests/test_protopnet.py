"""ProtoPNet: distances, costs, stages, push and provenance, serialisation, ONNX."""

import glasszoo
import numpy as np
import pytest
from glasszoo.layers.prototype_layer import PrototypeLayer, log_similarity
from glasszoo.zoo.presets import CorruptedWeights, write_preset
from glasszoo.zoo.protopnet.model import ProtoPNet, class_connection
from glasszoo.zoo.protopnet.optimizer import StagedAdam
from glasszoo.zoo.protopnet.schedule import ProtoPNetSchedule
from glasszoo.zoo.receptive_field import receptive_field

TINY = dict(num_classes=10, input_shape=(28, 28, 1), backbone_stages=[[8], [12]], prototype_channels=6, prototypes_per_class=2)


def tiny_protopnet(seed=0, **overrides):
    import keras

    keras.utils.set_random_seed(seed)
    return ProtoPNet(**dict(TINY, **overrides))


@pytest.fixture(scope="module")
def trained(samples):
    """A tiny ProtoPNet trained through every stage with a push (module-wide: the stages take a few seconds)."""
    images, labels = samples[0], samples[1]
    model = tiny_protopnet()
    model.compile()
    schedule = ProtoPNetSchedule(images, labels, warm_epochs=1, joint_epochs=2, last_layer_epochs=1, cycles=1)
    snapshots = {}

    import keras

    class Snapshots(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots[epoch] = [w.copy() for w in model.get_weights()]

    history = model.fit(images, labels, epochs=schedule.total_epochs, batch_size=10, callbacks=[schedule, Snapshots()], verbose=0)
    return model, schedule, history, snapshots


def numpy_distances(latent, prototypes):
    """Brute force: (B, h', w', P) squared distances of every k x k patch to every prototype."""
    size = prototypes.shape[1]
    b, h, w, _ = latent.shape
    out = np.zeros((b, h - size + 1, w - size + 1, len(prototypes)))
    for i in range(h - size + 1):
        for j in range(w - size + 1):
            patch = latent[:, i : i + size, j : j + size, :]
            out[:, i, j, :] = ((patch[:, None] - prototypes[None]) ** 2).sum(axis=(2, 3, 4))
    return out


@pytest.mark.parametrize("size", [1, 2])
def test_prototype_layer_distances_match_brute_force(rng, size):
    latent = rng.uniform(size=(2, 5, 6, 4)).astype("float32")
    layer = PrototypeLayer(num_prototypes=3, prototype_size=size)
    got = np.asarray(layer(latent))
    np.testing.assert_allclose(got, numpy_distances(latent, layer.prototypes.numpy()), atol=1e-5)
    assert got.min() >= 0.0
    assert layer.compute_output_shape((None, 5, 6, 4)) == (None, 6 - size, 7 - size, 3)


def test_log_similarity():
    d = np.array([0.0, 1.0, 100.0], "float32")
    np.testing.assert_allclose(np.asarray(log_similarity(d)), np.log((d + 1) / (d + 1e-4)), rtol=1e-6)


def test_class_connection_initialisation():
    model = tiny_protopnet()
    weights = model.last_layer.kernel.numpy()
    np.testing.assert_array_equal(weights, class_connection(np.repeat(np.arange(10), 2), 10))
    assert weights[0, 0] == 1.0 and weights[0, 1] == -0.5 and weights[3, 1] == 1.0


def test_costs_and_total_loss_match_numpy(rng, samples):
    model = tiny_protopnet()
    model.compile()
    images, labels = samples[0][:8], samples[1][:8]
    logits = model(images, training=False)
    min_distances = model._loss_inputs.min_distances.numpy()
    kernel = rng.normal(size=(20, 10)).astype("float32")
    model.last_layer.kernel.assign(kernel)
    logits = model(images, training=False).numpy()
    costs = {k: float(v) for k, v in model.prototype_costs(min_distances, labels).items()}
    own = np.repeat(np.arange(10), 2)[None, :] == labels[:, None]
    expected_cluster = np.mean([min_distances[b][own[b]].min() for b in range(8)])
    expected_separation = np.mean([min_distances[b][~own[b]].min() for b in range(8)])
    identity = np.eye(10)[np.repeat(np.arange(10), 2)]
    expected_l1 = np.abs(kernel * (1 - identity)).sum()
    np.testing.assert_allclose(costs["cluster"], expected_cluster, rtol=1e-5)
    np.testing.assert_allclose(costs["separation"], expected_separation, rtol=1e-5)
    np.testing.assert_allclose(costs["l1"], expected_l1, rtol=1e-5)
    shifted = logits - logits.max(-1, keepdims=True)
    cross_entropy = np.mean(np.log(np.exp(shifted).sum(-1)) - shifted[np.arange(8), labels])
    total = float(model.compute_loss(images, labels, model(images, training=False)))
    np.testing.assert_allclose(total, cross_entropy + 0.8 * expected_cluster - 0.08 * expected_separation + 1e-4 * expected_l1, rtol=1e-4)


def test_explain_outputs_and_invariants(samples):
    model = tiny_protopnet()
    out = model.explain(samples[0][:4])
    assert out["logits"].shape == (4, 10)
    assert out["prototype_similarity"].shape == (4, 20)
    assert out["similarity_maps"].shape == (4, 14, 14, 20)
    assert out["upsampled_similarity_maps"].shape == (4, 28, 28, 20)
    assert out["prototype_contributions"].shape == (4, 20, 10)
    np.testing.assert_allclose(out["prototype_contributions"].sum(axis=1), out["logits"], atol=1e-4)
    np.testing.assert_allclose(out["logits"], model.predict(samples[0][:4], verbose=0), atol=1e-4)
    np.testing.assert_allclose(out["prototype_similarity"], out["similarity_maps"].max(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(out["logits"], out["prototype_similarity"] @ model.last_layer.kernel.numpy(), atol=1e-4)


def test_staged_adam_leaves_frozen_groups_exactly_unchanged(samples):
    model = tiny_protopnet()
    model.compile(optimizer=StagedAdam(1e-3, {"backbone": 0.0, "add_on": 1e-2, "prototypes": 0.0, "last_layer": 0.0}))
    before = {name: [w.numpy().copy() for w in weights] for name, weights in model.variable_groups().items()}
    model.fit(samples[0], samples[1], epochs=1, batch_size=10, verbose=0)
    after = {name: [w.numpy() for w in weights] for name, weights in model.variable_groups().items()}
    for name in ("backbone", "prototypes", "last_layer"):
        for a, b in zip(before[name], after[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before["add_on"], after["add_on"]))
    assert model.optimizer.group_learning_rates()["add_on"] == pytest.approx(1e-2)


def test_schedule_plan():
    schedule = ProtoPNetSchedule(np.zeros((1, 28, 28, 1)), [0], warm_epochs=2, joint_epochs=3, last_layer_epochs=2, cycles=2)
    assert schedule.total_epochs == 12
    stages = [schedule.plan(e)[0] for e in range(12)]
    assert stages == ["warm"] * 2 + ["joint"] * 3 + ["last_layer"] * 2 + ["joint"] * 3 + ["last_layer"] * 2
    assert [e for e in range(12) if schedule.plan(e)[2]] == [5, 10]
    assert schedule.plan(8)[1] == 4  # joint epochs before epoch 8: its decay counts across cycles


def test_a_time_budget_ends_the_plan_on_the_last_cycle_that_fits(samples):
    """No cycle starts that would end past the budget; training stops after a last-layer stage (pushed prototypes)."""
    images, labels = samples[0], samples[1]  # every class: the push needs an image of each
    model = tiny_protopnet()
    model.compile()
    schedule = ProtoPNetSchedule(images, labels, warm_epochs=1, joint_epochs=1, last_layer_epochs=1, cycles=4)
    schedule.set_time_budget(0.0)  # the first cycle already ends past it: the second must not start
    history = model.fit(images, labels, epochs=schedule.total_epochs, batch_size=10, callbacks=[schedule], verbose=0)
    assert len(history.history["loss"]) == 1 + 2  # warm-up and one whole cycle
    assert history.history["pushed"][-1] == 1.0 and schedule.cycles_run == 1
    assert schedule.describe()["stages"]["cycles_run"] == 1
    unbounded = ProtoPNetSchedule(images, labels, warm_epochs=0, joint_epochs=1, last_layer_epochs=1, cycles=2)
    model.compile()
    history = model.fit(images, labels, epochs=unbounded.total_epochs, batch_size=10, callbacks=[unbounded], verbose=0)
    assert len(history.history["loss"]) == 4 and unbounded.cycles_run == 2  # no budget: the whole plan


def test_stages_freeze_the_right_parts_and_push_is_exact(trained, samples):
    model, schedule, history, snapshots = trained
    images, labels = samples[0], samples[1]
    names = [w.path for w in model.weights]
    groups = {name: [w.path for w in weights] for name, weights in model.variable_groups().items()}
    index = {path: i for i, path in enumerate(names)}
    initial = tiny_protopnet()  # same seed: the weights before training
    start = [w.numpy() for w in initial.weights]
    # warm-up (epoch 0): backbone (including its BatchNorm statistics) and last layer unchanged
    for path in groups["backbone"] + groups["last_layer"]:
        np.testing.assert_array_equal(snapshots[0][index[path]], start[index[path]], err_msg=path)
    for path in [w.path for w in model.backbone.non_trainable_weights]:
        np.testing.assert_array_equal(snapshots[0][index[path]], start[index[path]], err_msg=path)
    # last-layer epoch (3): only the last layer moves
    for path in names:
        if path not in groups["last_layer"]:
            np.testing.assert_array_equal(snapshots[3][index[path]], model.get_weights()[index[path]], err_msg=path)
    assert history.history["stage"] == [0.0, 1.0, 1.0, 2.0]
    assert history.history["pushed"] == [0.0, 0.0, 0.0, 1.0]
    # the push: every prototype is the latent patch its provenance names, of an image of its class
    provenance = model.prototype_provenance
    np.testing.assert_array_equal(provenance["source_image"], images[provenance["source_index"]])
    np.testing.assert_array_equal(labels[provenance["source_index"]], provenance["prototype_class"])
    latent, distances = model.latent_and_distances(provenance["source_image"])
    rows, cols = provenance["patch_position"].T
    patches = latent[np.arange(20), rows, cols]
    np.testing.assert_array_equal(model.prototype_layer.prototypes.numpy()[:, 0, 0, :], patches)
    assert np.all(distances[np.arange(20), rows, cols, np.arange(20)] < 1e-5)
    assert np.all(provenance["push_distance"] >= 0.0)
    for box in np.concatenate([provenance["receptive_field_box"], provenance["high_activation_box"]]):
        top, bottom, left, right = box
        assert 0 <= top < bottom <= 28 and 0 <= left < right <= 28


def test_push_picks_the_nearest_patch_of_the_class(samples):
    from glasszoo.zoo.protopnet.push import nearest_patches

    model = tiny_protopnet(seed=2)
    images, labels = samples[0], samples[1]
    found = nearest_patches(model, images, labels, batch_size=7)
    _, distances = model.latent_and_distances(images)
    for j in range(20):
        own = np.flatnonzero(labels == model.prototype_class[j])
        flat = distances[own, ..., j]
        np.testing.assert_allclose(found["push_distance"][j], flat.min(), rtol=1e-6)
        b, row, col = np.unravel_index(flat.argmin(), flat.shape)
        assert (found["source_index"][j], *found["patch_position"][j]) == (own[b], row, col)


def test_receptive_fields():
    import keras

    model = tiny_protopnet(backbone_stages=[[4, 4], [4, 4], [4]])
    field = model.latent_receptive_field()
    assert (field.size, field.jump, field.length) == (24, 4, 7)
    assert field.start == 2.0  # centre of position 0, by hand: pooling shifts it by half a step each time
    assert field.box(0, 0, (28, 28)) == [0, 14, 0, 14] and field.box(3, 2, (28, 28)) == [2, 26, 0, 22]
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3))
    field = receptive_field(vgg, 224)
    assert (field.size, field.jump, field.length) == (212, 32, 7)  # pool5 of VGG16


def test_applications_backbone_builds_and_explains():
    model = ProtoPNet(num_classes=3, input_shape=(32, 32, 1), backbone="resnet50", prototype_channels=8, prototypes_per_class=1)
    out = model.explain(np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype("float32"))
    assert out["similarity_maps"].shape == (2, 1, 1, 3)
    assert model.latent_receptive_field().jump == 32
    assert model.get_config()["backbone_weights"] is None


def test_serialisation_with_provenance(trained, samples, tmp_path):
    import keras

    model = trained[0]
    path = tmp_path / "protopnet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(samples[0][:5], verbose=0), model.predict(samples[0][:5], verbose=0), atol=1e-5)
    for key, value in model.prototype_provenance.items():
        np.testing.assert_array_equal(loaded.prototype_provenance[key], value, err_msg=key)
    weights = tmp_path / "w.weights.h5"
    model.save_weights(weights)
    provenance = model.save_provenance(tmp_path / "prototypes.npz")
    folder = write_preset(tmp_path / "tiny", "protopnet", model.get_config(), weights, {"name": "tiny"}, extra_files={"prototypes.npz": provenance})
    preset = glasszoo.load(folder)
    np.testing.assert_array_equal(preset.prototype_provenance["source_index"], model.prototype_provenance["source_index"])
    np.testing.assert_allclose(preset.explain(samples[0][:3])["logits"], model.explain(samples[0][:3])["logits"], atol=1e-5)
    fine = glasszoo.load(folder, num_classes=3)
    assert fine.last_layer.kernel.shape == (6, 3) and fine.prototype_provenance is None
    np.testing.assert_array_equal(fine.backbone.get_weights()[0], model.backbone.get_weights()[0])
    with open(folder / "prototypes.npz", "r+b") as handle:
        handle.seek(40)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(CorruptedWeights, match="prototypes.npz"):
        glasszoo.load(folder)


def test_onnx_parity(trained, samples, tmp_path):
    from glasszoo.export import OnnxModel, to_onnx

    model = trained[0]
    served = OnnxModel(to_onnx(model, tmp_path / "protopnet.onnx"))
    for count in (1, 7):
        expected, got = model.explain(samples[0][:count]), served(samples[0][:count])
        assert set(got) == set(expected) - {"prediction"}
        # after a push some distances are ~0, where the similarity's slope is -1 / (d + 1e-4) = -1e4: the float32
        # default cancels exactly (split_squared_distances), or round-off alone would move similarities by ~1e-1
        for name in got:
            np.testing.assert_allclose(got[name], expected[name], atol=2e-4, rtol=1e-4, err_msg=name)
        np.testing.assert_array_equal(got["logits"].argmax(-1), expected["logits"].argmax(-1))
        np.testing.assert_allclose(got["prototype_contributions"].sum(axis=1), got["logits"], atol=1e-4)


def test_plots(trained, samples, tmp_path):
    from glasszoo.zoo.protopnet.views import prototype_grid, this_looks_like_that

    model = trained[0]
    this_looks_like_that(model, samples[0][0], top=3, path=tmp_path / "tllt.png")
    prototype_grid(model, path=tmp_path / "grid.png")
    assert (tmp_path / "tllt.png").stat().st_size > 5000 and (tmp_path / "grid.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="pushed"):
        prototype_grid(tiny_protopnet())


def test_bad_input(samples):
    model = tiny_protopnet()
    with pytest.raises(ValueError, match="channels"):
        model.explain(np.zeros((1, 28, 28, 3), "float32"))
    with pytest.raises(ValueError, match="empty"):
        model.explain(np.zeros((0, 28, 28, 1), "float32"))
    with pytest.raises(ValueError, match="labels"):
        model.push_prototypes(samples[0][:4], samples[1][:3])
    with pytest.raises(ValueError, match="classes"):
        model.push_prototypes(samples[0][:4], samples[1][:4])  # only class 0
    with pytest.raises(ValueError, match="Unknown backbone"):
        ProtoPNet(backbone="alexnet")
    with pytest.raises(ValueError, match="at least 32"):
        ProtoPNet(backbone="vgg16", input_shape=(28, 28, 1))
    model.compile(optimizer="adam")
    schedule = ProtoPNetSchedule(samples[0], samples[1], warm_epochs=0, joint_epochs=0, last_layer_epochs=1)
    with pytest.raises(ValueError, match="StagedAdam"):
        model.fit(samples[0], samples[1], epochs=1, callbacks=[schedule], verbose=0)


def test_class_evidence_maps_and_post_hoc_protocol(trained, samples):
    from glasszoo.explain import posthoc
    from glasszoo.explain.explanation_report import inherent_explanation

    model = trained[0]
    images = samples[0][:3]
    maps = inherent_explanation(model)(model, images, np.array([0, 4, 9]))
    out = model.explain(images)
    weights = model.last_layer.kernel.numpy()
    centred = weights - weights.mean(axis=1, keepdims=True)
    # each prototype's score times its centred weight, at the latent patch where it peaks (softmax of sharpness 10),
    # spread over the pixels that patch sees by a Gaussian of an eighth of the receptive field, normalised over the image
    similarity_maps = out["similarity_maps"][1]  # (h, w, P)
    field = model.latent_receptive_field()
    centres = (np.arange(28) + 0.5)[:, None] - (field.start + field.jump * np.arange(similarity_maps.shape[0]))[None, :]
    spread = np.exp(-0.5 * (centres / (field.size / 8)) ** 2)
    spread /= spread.sum(axis=0)  # (28, h): pixel weights of each latent row (and column)
    expected = np.zeros((28, 28))
    for p in range(similarity_maps.shape[-1]):
        best = similarity_maps[..., p].max()
        share = np.exp(10.0 * (similarity_maps[..., p] - best))
        share /= share.sum()  # the best patch's, shared with near-ties (within about 0.1)
        expected += spread @ (share * best * centred[p, 4]) @ spread.T
    np.testing.assert_allclose(maps[1], expected, rtol=1e-4, atol=1e-5)
    # the map sums to logit_target - mean(logits), the part of the logit the softmax sees
    for b, k in enumerate([0, 4, 9]):
        np.testing.assert_allclose(maps[b].sum(), out["logits"][b, k] - out["logits"][b].mean(), rtol=1e-4, atol=1e-4)
    latent, logits = model.feature_maps_and_logits(images)
    np.testing.assert_allclose(np.asarray(logits), out["logits"], atol=1e-4)
    assert posthoc.grad_cam(model, images, 0).shape == (3, 28, 28)


@pytest.mark.slow
def test_pretrained_protopnet_reaches_its_card_and_its_provenance_holds(fashion_mnist):
    model = glasszoo.load("protopnet_fashion_mnist")
    card = model.preset_metadata
    assert card["data"]["test_images"] == 10000
    accuracy = float((model.predict_classes(fashion_mnist.x_test) == fashion_mnist.y_test).mean())
    assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=2e-3)
    provenance = model.prototype_provenance
    assert provenance is not None and len(provenance["source_index"]) == model.prototype_layer.num_prototypes
    # the provenance names images of the recipe's fit split (validation_split with the card's seed)
    spec = card["training"]
    x_fit, y_fit, _, _ = fashion_mnist.validation_split(card["data"]["validation_images"], seed=spec["seed"])
    np.testing.assert_array_equal(x_fit[provenance["source_index"]], provenance["source_image"])
    np.testing.assert_array_equal(y_fit[provenance["source_index"]], provenance["prototype_class"])
    latent, _ = model.latent_and_distances(provenance["source_image"])
    rows, cols = provenance["patch_position"].T
    count = len(rows)
    # float32 convolutions round differently on another CPU (oneDNN picks its kernels by instruction set)
    np.testing.assert_allclose(model.prototype_layer.prototypes.numpy()[:, 0, 0, :], latent[np.arange(count), rows, cols], atol=1e-5)


def test_distinct_push_gives_each_prototype_of_a_class_its_own_patch(samples):
    from glasszoo.zoo.protopnet.push import distinct_nearest_patches, nearest_patches

    model = tiny_protopnet(seed=4, prototypes_per_class=3)
    images, labels = samples[0], samples[1]
    plain = nearest_patches(model, images, labels, batch_size=7)
    found = distinct_nearest_patches(model, images, labels, batch_size=7)
    keys = [(c, s, r, q) for c, s, (r, q) in zip(model.prototype_class, found["source_index"], found["patch_position"])]
    assert len(set(keys)) == len(keys)
    assert np.all(found["push_distance"] >= plain["push_distance"] - 1e-6)
    _, distances = model.latent_and_distances(images)
    for j in range(len(keys)):
        s, (r, q) = found["source_index"][j], found["patch_position"][j]
        assert labels[s] == model.prototype_class[j]
        np.testing.assert_allclose(distances[s, r, q, j], found["push_distance"][j], rtol=1e-5, atol=1e-6)
    # greedy by distance: the closest (prototype, patch) pair of each class is its plain nearest patch
    for k in range(10):
        members = np.flatnonzero(model.prototype_class == k)
        first = members[np.argmin(plain["push_distance"][members])]
        assert found["source_index"][first] == plain["source_index"][first]
    provenance = model.push_prototypes(images, labels, distinct=True)
    latent, _ = model.latent_and_distances(provenance["source_image"])
    rows, cols = provenance["patch_position"].T
    np.testing.assert_array_equal(model.prototype_layer.prototypes.numpy()[:, 0, 0, :], latent[np.arange(len(rows)), rows, cols])


def test_served_evidence_picture_is_the_keras_class_evidence_map(samples, tmp_path):
    """The picture `glasszoo predict --out` draws reads the exported `class_evidence_map`: on the preset it equals
    the Keras map (it was anti-correlated when the served picture used raw last-layer weights)."""
    from glasszoo.export import OnnxModel, to_onnx
    from glasszoo.zoo.protopnet import views

    if "protopnet_fashion_mnist" not in glasszoo.list_models():
        pytest.skip("protopnet_fashion_mnist not shipped")
    model = glasszoo.load("protopnet_fashion_mnist")
    images = samples[0][:8]
    served = OnnxModel(to_onnx(model, tmp_path / "protopnet.onnx"))(images)
    assert "class_evidence_map" in views.REQUIRED_OUTPUTS
    keras_maps = model.class_evidence_maps(images, model.predict_classes(images))
    for served_map, keras_map in zip(served["class_evidence_map"], keras_maps):
        assert np.corrcoef(served_map.ravel(), keras_map.ravel())[0, 1] > 0.99
        np.testing.assert_allclose(served_map, keras_map, atol=1e-4 * max(1.0, np.abs(keras_map).max()))


def test_an_initial_push_starts_training_from_patches_of_each_prototype_s_class(samples):
    """A fine-tune's new prototypes start on its images' patches, not at random points of the latent space."""
    model = tiny_protopnet(seed=5)
    images, labels = samples[0], samples[1]
    model.compile()
    still = {stage: {"backbone": 0.0, "add_on": 0.0, "prototypes": 0.0, "last_layer": 0.0} for stage in ("warm", "joint", "last_layer")}
    schedule = ProtoPNetSchedule(images, labels, warm_epochs=1, joint_epochs=0, last_layer_epochs=1, rates=still, initial_push=True)
    model.fit(images, labels, epochs=1, batch_size=8, callbacks=[schedule], verbose=0)  # the warm-up epoch only, nothing moving
    provenance = model.prototype_provenance
    assert provenance is not None and np.all(labels[provenance["source_index"]] == model.prototype_class)
    _, distances = model.latent_and_distances(images)
    rows, cols = provenance["patch_position"].T
    on_patch = distances[provenance["source_index"], rows, cols, np.arange(len(rows))]
    np.testing.assert_allclose(on_patch, 0.0, atol=1e-4)
