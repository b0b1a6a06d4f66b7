"""Hierarchical ProtoPNet: the taxonomy's tables, the path probabilities, the per-node costs, push, placement, views."""

import json
import warnings

import numpy as np
import pytest
from glasszoo.data.datasets import ImageDataset, without_classes
from glasszoo.zoo.hierarchical_protopnet.model import HierarchicalProtoPNet
from glasszoo.zoo.hierarchical_protopnet.tables import PlaceTables
from glasszoo.zoo.protopnet.model import ProtoPNet
from glasszoo.zoo.protopnet.schedule import ProtoPNetSchedule
from glasszoo.zoo.taxonomy import Taxonomy

NAMES = [str(k) for k in range(10)]
TREE = {"a": ["0", "1", "2", "3"], "7": None, "b": {"c": ["8", "9"], "4": None}, "d": ["5", "6"]}
TINY = dict(num_classes=10, input_shape=(28, 28, 1), backbone_stages=[[8], [12]], prototype_channels=6, prototypes_per_child=2)


def tiny(seed=0, taxonomy=TREE, **overrides):
    import keras

    keras.utils.set_random_seed(seed)
    return HierarchicalProtoPNet(**dict(TINY, taxonomy={"tree": taxonomy, "class_names": NAMES}, **overrides))


@pytest.fixture(scope="module")
def trained(samples):
    """A tiny model trained through warm-up, joint, push and last layer (module-wide)."""
    images, labels = samples[0], samples[1]
    model = tiny()
    model.compile()
    schedule = ProtoPNetSchedule(images, labels, warm_epochs=1, joint_epochs=1, last_layer_epochs=1, cycles=1, distinct_push=True)
    model.fit(images, labels, epochs=schedule.total_epochs, batch_size=10, callbacks=[schedule], verbose=0)
    return model


def numpy_hierarchy(similarity, kernel, tables):
    """Reference: per node, a softmax over its children's scores; a place's probability is the product along its path."""
    similarity, kernel = similarity.astype("float64"), kernel.astype("float64")
    scores = np.zeros((len(similarity), tables.num_places))
    conditional = np.ones((len(similarity), tables.num_places))
    for node in range(tables.num_nodes):
        children = [v for v in range(1, tables.num_places) if tables.parent[v] == node]
        mine = tables.prototype_node == node
        for v in children:
            scores[:, v] = similarity[:, mine] @ kernel[mine, v - 1]
        block = scores[:, children]
        soft = np.exp(block - block.max(axis=1, keepdims=True))
        conditional[:, children] = soft / soft.sum(axis=1, keepdims=True)
    reach = np.ones_like(conditional)
    for v in range(1, tables.num_places):
        place = v
        while place > 0:
            reach[:, v] *= conditional[:, place]
            place = tables.parent[place]
    return scores, conditional, reach


def test_tables_follow_the_taxonomy():
    tables = PlaceTables(Taxonomy(TREE, NAMES), 2)
    assert tables.places[:4] == ["root", "a", "b", "d"] and tables.places[-10:] == NAMES
    assert tables.num_nodes == 5 and tables.num_edges == 14 and tables.num_prototypes == 28
    c = tables.places.index("c")
    assert tables.parent[tables.places.index("8")] == c and tables.parent[c] == tables.places.index("b")
    assert tables.depth[tables.places.index("9")] == 3 and tables.depth[tables.places.index("7")] == 1
    # class 9's path: root -> b -> c -> 9
    path = [tables.places[e + 1] for e in np.flatnonzero(tables.class_edges[9])]
    assert path == ["b", "c", "9"]
    assert [tables.places[n] for n in np.flatnonzero(tables.class_nodes[9])] == ["root", "b", "c"]
    # every prototype's block is its node's children; two prototypes per edge
    assert np.all(np.bincount(tables.prototype_edge) == 2)
    for j in range(tables.num_prototypes):
        assert set(np.flatnonzero(tables.node_block[j])) == {e for e in range(14) if tables.edge_node[e] == tables.prototype_node[j]}
    kernel = tables.initial_last_layer()
    assert set(np.unique(kernel)) == {-0.5, 0.0, 1.0}
    assert np.all(kernel[tables.own_edge > 0] == 1.0) and np.all(kernel[tables.node_block == 0] == 0.0)


def test_forward_is_the_product_of_per_node_softmaxes(samples, rng):
    model = tiny()
    model.last_layer.kernel.assign(rng.normal(size=model.last_layer.kernel.shape).astype("float32"))
    out = model.explain(samples[0][:6])
    scores, conditional, reach = numpy_hierarchy(out["prototype_similarity"], model.last_layer.kernel.numpy() * model.tables.node_block, model.tables)
    np.testing.assert_allclose(out["place_scores"], scores, atol=1e-4)
    np.testing.assert_allclose(out["conditional_probabilities"], conditional, atol=1e-5)
    np.testing.assert_allclose(out["place_probabilities"], reach, atol=1e-5)
    np.testing.assert_allclose(np.exp(out["logits"]), reach[:, model.tables.num_nodes :], atol=1e-5)
    np.testing.assert_allclose(np.exp(out["logits"]).sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["logits"], model.predict(samples[0][:6], verbose=0), atol=1e-5)
    # the class's cross-entropy is the sum of the per-node cross-entropies along its path (the seed's loss)
    labels = samples[1][:6]
    per_node = [-np.sum(np.log([conditional[b, e + 1] for e in np.flatnonzero(model.tables.class_edges[k])])) for b, k in enumerate(labels)]
    np.testing.assert_allclose(-out["logits"][np.arange(6), labels], per_node, rtol=1e-4)
    assert out["place_parent"][0].tolist() == model.tables.parent.tolist()


def test_a_flat_taxonomy_is_protopnet(samples, rng):
    """Every class under the root: log-softmax of ProtoPNet's logits, and the same evidence map and contributions."""
    import keras

    keras.utils.set_random_seed(3)
    flat = HierarchicalProtoPNet(**dict(TINY, taxonomy=None))
    keras.utils.set_random_seed(3)
    reference = ProtoPNet(num_classes=10, input_shape=(28, 28, 1), backbone_stages=[[8], [12]], prototype_channels=6, prototypes_per_class=2)
    reference.set_weights(flat.get_weights())
    kernel = rng.normal(size=(20, 10)).astype("float32")
    flat.last_layer.kernel.assign(kernel)
    reference.last_layer.kernel.assign(kernel)
    images = samples[0][:5]
    mine, theirs = flat.explain(images, target=4), reference.explain(images, target=4)
    shifted = theirs["logits"] - theirs["logits"].max(axis=1, keepdims=True)
    np.testing.assert_allclose(mine["logits"], shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)), atol=1e-5)
    np.testing.assert_allclose(mine["prototype_contributions"], theirs["prototype_contributions"], atol=1e-5)
    np.testing.assert_allclose(mine["class_evidence_map"], theirs["class_evidence_map"], atol=1e-4)


def test_per_node_costs_match_a_loop_over_nodes(samples, rng):
    model = tiny()
    model.compile()
    kernel = rng.normal(size=model.last_layer.kernel.shape).astype("float32")
    model.last_layer.kernel.assign(kernel)
    images, labels = samples[0][:10], samples[1][:10]
    model(images, training=False)
    distances = model._loss_inputs.min_distances.numpy().astype("float64")
    costs = {k: float(v) for k, v in model.prototype_costs(distances.astype("float32"), labels).items()}
    tables = model.tables
    cluster, separation = [], []
    for b, k in enumerate(labels):
        total_cluster = total_separation = 0.0
        for node, child in zip(np.flatnonzero(tables.class_nodes[k]), np.flatnonzero(tables.class_edges[k])):
            at_node = tables.prototype_node == node
            own = at_node & (tables.prototype_edge == child)
            total_cluster += distances[b, own].min()
            if np.any(at_node & ~own):
                total_separation += distances[b, at_node & ~own].min()
        cluster.append(total_cluster)
        separation.append(total_separation)
    np.testing.assert_allclose(costs["cluster"], np.mean(cluster), rtol=1e-5)
    np.testing.assert_allclose(costs["separation"], np.mean(separation), rtol=1e-5)
    np.testing.assert_allclose(costs["l1"], np.abs(kernel * (tables.node_block - tables.own_edge)).sum(), rtol=1e-5)
    np.testing.assert_allclose(costs["l2"], np.square(kernel * tables.own_edge).sum(), rtol=1e-5)
    logits = model(images, training=False).numpy()
    total = float(model.compute_loss(images, labels, model(images, training=False)))
    expected = -np.mean(logits[np.arange(10), labels]) + 0.8 * np.mean(cluster) - 0.08 * np.mean(separation) + 1e-4 * costs["l1"] + 1e-4 * costs["l2"]
    np.testing.assert_allclose(total, expected, rtol=1e-4)


def test_training_pushes_every_prototype_onto_an_image_under_its_child(trained, samples):
    provenance = trained.prototype_provenance
    tables = trained.tables
    labels = samples[1][provenance["source_index"]]
    for j, k in enumerate(labels):
        assert tables.class_owns[k, j] == 1.0, f"prototype {j} of {tables.places[tables.prototype_place[j]]} pushed onto a class-{k} image"
    latent = trained.latent_and_distances(provenance["source_image"])[0]
    rows, cols = provenance["patch_position"].T
    np.testing.assert_allclose(trained.prototype_layer.prototypes.numpy()[:, 0, 0], latent[np.arange(len(rows)), rows, cols], atol=1e-5)
    assert np.all(provenance["prototype_class"] == tables.prototype_place)
    assert trained.self_check_errors(samples[0][:8]) == {}


def edge_best(similarity, tables):
    return np.stack([similarity[:, tables.prototype_edge == e].max(axis=1) for e in range(tables.num_edges)], axis=1)


def test_placement_walks_down_while_the_next_place_is_vouched_for(samples, rng):
    model = tiny(placement_threshold=0.5, placement_evidence="similarity")
    model.last_layer.kernel.assign(3.0 * rng.normal(size=model.last_layer.kernel.shape).astype("float32"))
    images = samples[0][:20]
    tables = model.tables
    best = edge_best(model.explain(images)["prototype_similarity"], tables)
    model.placement_floors = np.median(best, axis=0)  # about half of the edges fail their floor
    out = model.explain(images)
    for b in range(20):
        place = 0  # from the root into the child that reaches the threshold and its floor, while one does
        while True:
            children = [
                v for v in range(1, tables.num_places)
                if tables.parent[v] == place and out["place_probabilities"][b, v] >= 0.5 and best[b, v - 1] >= model.placement_floors[v - 1]
            ]
            if not children:
                break
            place = children[0]
        assert out["placement"][b] == place
        for v in range(1, tables.num_places):
            vouched = out["place_probabilities"][b, v] >= 0.5 and best[b, v - 1] >= model.placement_floors[v - 1]
            assert out["place_support"][b, v] == float(vouched)
    assert len(set(out["placement"].tolist())) > 1
    np.testing.assert_array_equal(model.placements(images), out["placement"])
    places, edges = model.place_evidence(images)
    np.testing.assert_allclose(places, out["place_probabilities"], atol=1e-5)
    np.testing.assert_allclose(edges, best, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[0.5, 1\]"):
        tiny(placement_threshold=0.3)
    with pytest.raises(ValueError, match="one per \\(node, child\\) edge"):
        model.placement_floors = [1.0, 2.0]
    with pytest.raises(ValueError, match="placement_evidence must be one of"):
        tiny(placement_evidence="entropy")


def conditional_log_odds(out, tables):
    """The log-odds of P(child | node) per edge in float64 from the `conditional_probabilities` output (an only child: +inf)."""
    conditional = out["conditional_probabilities"][:, 1:].astype("float64")
    with np.errstate(divide="ignore"):
        return np.log(conditional) - np.log1p(-np.minimum(conditional, 1.0))


def test_by_default_a_place_is_vouched_for_by_its_parents_confidence(samples, rng):
    """The seed's rule: the log-odds of P(place | parent, x) against a floor per edge; an only child always passes."""
    import keras

    keras.utils.set_random_seed(0)
    taxonomy = {"tree": {"a": ["0", "1"], "b": {"c": ["2"]}}, "class_names": ["0", "1", "2"]}  # c is b's only child, 2 is c's
    model = HierarchicalProtoPNet(**dict(TINY, num_classes=3, taxonomy=taxonomy))
    assert model.placement_evidence == "confidence"
    model.last_layer.kernel.assign(0.5 * rng.normal(size=model.last_layer.kernel.shape).astype("float32"))
    images = samples[0][:20]
    tables = model.tables
    out = model.explain(images)
    places, evidence = model.place_evidence(images)
    expected = conditional_log_odds(out, tables)
    siblings = tables.has_siblings > 0
    np.testing.assert_allclose(evidence[:, siblings], expected[:, siblings], rtol=1e-4, atol=1e-4)
    assert np.all(evidence[:, ~siblings] == 1e4) and (~siblings).sum() == 2
    model.placement_floors = np.median(evidence, axis=0)  # about half of the images fail each edge with siblings
    out = model.explain(images)
    vouched = (out["place_probabilities"][:, 1:] >= 0.5) & (evidence >= model.placement_floors)
    np.testing.assert_array_equal(out["place_support"][:, 1:], vouched.astype("float32"))
    np.testing.assert_array_equal(model.placements(images), out["placement"])
    assert len(set(out["placement"].tolist())) > 1
    # a confidence beyond float32's 1 - P (which rounds to 0): the log-odds come from the scores, exact and finite
    scores = np.zeros((1, tables.num_edges), "float32")
    scores[0, tables.places.index("0") - 1], scores[0, tables.places.index("1") - 1] = 40.0, 0.0
    sure = np.asarray(model.confidence_log_odds(scores))[0]
    assert sure[tables.places.index("0") - 1] == pytest.approx(40.0) and sure[tables.places.index("1") - 1] == pytest.approx(-40.0)
    model.placement_evidence = "similarity"  # the floors were log-odds: they go
    assert model.placement_floors.tolist() == [0.0] * tables.num_edges and model.get_config()["placement_evidence"] == "similarity"


def test_a_file_from_before_the_confidence_rule_keeps_its_similarity_floors():
    floors = [0.5] * tiny().tables.num_edges
    model = tiny(similarity_floors=floors)
    assert model.placement_evidence == "similarity" and model.placement_floors.tolist() == floors
    assert "similarity_floors" not in model.get_config() and model.get_config()["placement_floors"] == floors
    with pytest.raises(ValueError, match="give placement_floors instead"):
        tiny(similarity_floors=floors, placement_evidence="confidence")


def test_a_new_threshold_takes_effect_in_the_traced_graph(samples):
    model = tiny()
    images = samples[0][:6]
    before = model.explain(images)["placement"]
    model.placement_threshold = 1.0  # only the root (probability exactly 1) reaches it
    assert np.all(model.explain(images)["placement"] == 0) and model.get_config()["placement_threshold"] == 1.0
    model.placement_threshold = 0.5
    model.placement_floors = np.full(model.tables.num_edges, 2e4)  # above the largest log-odds (1e4): the root again
    assert np.all(model.explain(images)["placement"] == 0)
    assert before.shape == (6,)


def test_calibration_keeps_the_chosen_share_of_correct_images_through_each_edge(trained, samples):
    images, labels = samples[0], samples[1]
    tables = trained.tables
    for evidence in ("similarity", "confidence"):  # the default last, as the fixture had it
        trained.placement_evidence = evidence
        record = trained.calibrate_placement(images, labels, leaf_share=0.7)
        out = trained.explain(images)
        measured = edge_best(out["prototype_similarity"], tables) if evidence == "similarity" else conditional_log_odds(out, tables)
        correct = out["logits"].argmax(axis=1) == labels
        checked = 0
        for e in range(tables.num_edges):
            through = correct & (tables.class_edges[labels, e] > 0)
            if through.any() and tables.has_siblings[e]:
                assert trained.placement_floors[e] == pytest.approx(np.quantile(measured[through, e], 0.3), rel=1e-3, abs=1e-3)
                assert np.mean(measured[through, e] >= trained.placement_floors[e] - 1e-3) >= 0.7 - 1.0 / through.sum()
                checked += 1
        assert checked >= 4  # the edges with siblings that correct images pass through
        assert record["validation_placed_at_their_class"] == pytest.approx(np.mean(out["placement"] == tables.num_nodes + labels), abs=1e-4)
        assert record["placement_evidence"] == evidence and len(record["placement_floors"]) == tables.num_edges
        assert trained.get_config()["placement_floors"] == pytest.approx(trained.placement_floors.tolist())
    trained.placement_floors = None


@pytest.mark.parametrize(
    "taxonomy, message",
    [
        ({"tree": {"a": ["0", "1"], "b": ["2"]}, "class_names": ["0", "1", "2", "3"]}, "leaves out the classes"),
        ({"tree": {"a": ["0", "1"], "b": ["1", "2"]}, "class_names": ["0", "1", "2"]}, "appears twice"),
        ({"tree": {"0": ["1", "2"]}, "class_names": ["0", "1", "2"]}, "is a class but has children"),
        ({"tree": {"a": ["0", "1", "x"]}, "class_names": ["0", "1"]}, "is not a class"),
    ],
)
def test_bad_taxonomies_are_refused_with_the_problem_named(taxonomy, message):
    with pytest.raises(ValueError, match=message):
        HierarchicalProtoPNet(num_classes=len(taxonomy["class_names"]), taxonomy=taxonomy, backbone_stages=[[4]], prototype_channels=4)


def test_a_cycle_and_a_partial_class_list_are_refused():
    with pytest.raises(ValueError, match="cycle"):
        Taxonomy.from_parents({"root": None, "a": "b", "b": "a", "0": "root", "1": "a"}, ["0", "1"])
    with pytest.raises(ValueError, match="not the model's classes"):
        HierarchicalProtoPNet(num_classes=3, class_names=["0", "1", "x"], taxonomy={"tree": {"a": ["0", "1"], "2": None}, "class_names": ["0", "1", "2"]})


def test_new_classes_altogether_get_a_flat_taxonomy_with_a_warning():
    with pytest.warns(UserWarning, match="flat taxonomy"):
        model = tiny(taxonomy=TREE, num_classes=3, class_names=["x", "y", "z"])
    assert model.tables.num_nodes == 1 and model.class_names == ["x", "y", "z"]
    # a preset's config (a fine-tune to new classes) carries floors for the old edges: they go with its taxonomy
    old_floors = [1.0] * tiny().tables.num_edges
    with pytest.warns(UserWarning, match="without the placement floors"):
        model = tiny(taxonomy=TREE, num_classes=3, class_names=["x", "y", "z"], placement_floors=old_floors)
    assert model.placement_floors.tolist() == [-1e4, -1e4, -1e4]  # no floor: every log-odds reaches it
    with pytest.raises(ValueError, match="placement_floors must be 14"):
        tiny(placement_floors=[1.0] * 3)


def test_config_and_keras_file_round_trip_keep_the_taxonomy(trained, samples, tmp_path):
    import keras

    config = trained.get_config()
    assert "prototypes_per_class" not in config and json.loads(json.dumps(config))["taxonomy"]["tree"]["b"]["c"] == {"8": None, "9": None}
    path = tmp_path / "model.keras"
    trained.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.taxonomy.to_config() == trained.taxonomy.to_config()
    np.testing.assert_allclose(loaded.explain(samples[0][:3])["place_probabilities"], trained.explain(samples[0][:3])["place_probabilities"], atol=1e-6)
    assert loaded.prototype_provenance is not None


def test_without_classes_hides_a_class_from_every_split():
    x = np.zeros((12, 2, 2, 1), "float32")
    data = ImageDataset("toy", x, np.arange(12) % 4, x[:8], np.arange(8) % 4, ["a", "b", "c", "d"], "made here")
    reduced = without_classes(data, ["b"])
    assert reduced.class_names == ["a", "c", "d"] and reduced.held_out == ["b"] and reduced.kept == [0, 2, 3]
    assert sorted(set(reduced.y_train.tolist())) == [0, 1, 2] and len(reduced.y_train) == 9 and len(reduced.y_test) == 6
    with pytest.raises(ValueError, match="Cannot hold out"):
        without_classes(data, ["e"])
    with pytest.raises(ValueError, match="fewer than 2"):
        without_classes(data, ["a", "b", "c"])


def test_views_draw_the_path_from_outputs_and_the_model_views(trained, samples, tmp_path):
    from glasszoo.zoo.hierarchical_protopnet import views

    images = samples[0][:2]
    out = trained.explain(images)
    assert views.place_names(trained.tables.parent, NAMES)[1:4] == ["0, 1 +2", "4, 8 +1", "5, 6"]
    order = [trained.tables.places[v] for v in views.depth_first(trained.tables.parent)]
    assert order[:7] == ["root", "a", "0", "1", "2", "3", "b"] and order.index("c") + 1 == order.index("8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figure = views.draw(images[0], out, 0, NAMES)
    assert len(figure.axes) >= 4
    drawn = views.model_views(trained, images, ["first", "second"], out, samples[1][:2], tmp_path)
    assert drawn == {"pushed": True}
    assert (tmp_path / "path_first.png").stat().st_size > 0 and (tmp_path / "prototype_tree.png").stat().st_size > 0


def _shipped(name):
    import glasszoo

    if name not in glasszoo.list_models():
        pytest.skip(f"{name} not shipped")
    return glasszoo.load(name)


@pytest.mark.slow
def test_presets_reach_their_cards_and_route_the_unseen_class_to_its_parent(fashion_mnist):
    """The full-taxonomy preset on the 10,000 test images; the no-sneaker preset on the 9 seen classes and the 1,000 sneakers."""
    model = _shipped("hierarchical_protopnet_fashion_mnist")
    predicted = model.predict_classes(fashion_mnist.x_test)
    assert float((predicted == fashion_mnist.y_test).mean()) == pytest.approx(model.preset_metadata["metrics"]["test_accuracy"], abs=2e-3)
    coarse = model.taxonomy.labels_at(predicted, 1) == model.taxonomy.labels_at(fashion_mnist.y_test, 1)
    assert coarse.mean() >= 0.98
    held = _shipped("hierarchical_protopnet_fashion_mnist_no_sneaker")
    card = held.preset_metadata
    assert card["data"]["held_out_classes"] == ["Sneaker"] and "Sneaker" not in held.class_names
    seen = without_classes(fashion_mnist, ["Sneaker"])
    assert float((held.predict_classes(seen.x_test) == seen.y_test).mean()) == pytest.approx(card["metrics"]["test_accuracy"], abs=2e-3)
    sneakers = fashion_mnist.x_test[fashion_mnist.y_test == fashion_mnist.class_names.index("Sneaker")]
    places, _ = held.place_evidence(sneakers)
    footwear = held.tables.places.index("footwear")
    assert np.mean(places[:, footwear] >= 0.5) >= 0.98  # the coarse decision: a sneaker is footwear
    placed = held.placements(sneakers)
    below_footwear = held.tables.leads_to[footwear - 1, placed] > 0  # at footwear or one of its classes
    # the README's share at footwear: 0.554 +- 0.016 for this preset (confidence rule); the floors must stop half of them there
    assert held.placement_evidence == "confidence"
    assert below_footwear.mean() >= 0.9 and np.mean(placed == footwear) >= 0.5


def test_importing_the_parent_family_first_registers_this_one_without_a_warning():
    """`import glasszoo.zoo.protopnet.model` first: the zoo registers every family while ProtoPNet is half-defined.

    The hierarchical family, which subclasses it, is then deferred (no
    warning) and registered by the next `model_class()` call.
    """
    import subprocess
    import sys

    code = (
        "import warnings; warnings.simplefilter('error', UserWarning)\n"
        "import glasszoo.zoo.protopnet.model\n"
        "from glasszoo.zoo.families import families\n"
        "families()['protopnet'].model_class()\n"
        "import keras\n"
        "print(keras.saving.get_registered_object('glasszoo>HierarchicalProtoPNet').__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("HierarchicalProtoPNet")


def test_under_a_flat_taxonomy_the_loss_and_its_gradients_are_protopnets(rng):
    """Same weights, same batch: the flat-taxonomy model's training loss and every gradient equal the flat ProtoPNet's."""
    import keras
    import tensorflow as tf

    from glasszoo.zoo.protopnet.model import ProtoPNet

    common = dict(input_shape=(28, 28, 3), backbone_stages=[[8], [12]], prototype_channels=6, separation_weight=0.06, l1_weight=1e-4)
    keras.utils.set_random_seed(0)
    flat = ProtoPNet(num_classes=4, prototypes_per_class=3, **common)
    hierarchical = HierarchicalProtoPNet(num_classes=4, prototypes_per_child=3, l2_weight=0.0, **common)
    images = rng.random((8, 28, 28, 3)).astype("float32")
    labels = np.arange(8) % 4
    flat(images), hierarchical(images)
    hierarchical.set_weights(flat.get_weights())
    results = []
    for model in (flat, hierarchical):
        model.compile()
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = model.compute_loss(x=images, y=labels, y_pred=logits)
        results.append((logits.numpy(), float(loss), [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]))
    (flat_logits, flat_loss, flat_gradients), (logits, loss, gradients) = results
    centred = lambda values: values - values.mean(axis=1, keepdims=True)  # log P(class) = logits - logsumexp
    np.testing.assert_allclose(centred(logits), centred(flat_logits), atol=1e-5)
    assert loss == pytest.approx(flat_loss, rel=1e-6)
    assert len(gradients) == len(flat_gradients)
    for ours, theirs in zip(gradients, flat_gradients):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
