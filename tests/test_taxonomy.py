"""Taxonomies of classes (glasszoo.zoo.taxonomy): the tree as data, checked once, with clear errors."""

import json

import numpy as np
import pytest
from glasszoo.zoo.taxonomy import Taxonomy

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TREE = {
    "tops": ["T-shirt/top", "Pullover", "Coat", "Shirt", "Dress"],
    "bottoms": ["Trouser"],
    "footwear": {"open": ["Sandal"], "closed": ["Sneaker", "Ankle boot"]},
    "bags": ["Bag"],
}


def test_paths_child_table_and_coarse_labels():
    taxonomy = Taxonomy(TREE, CLASSES)
    assert taxonomy.nodes == ["root", "tops", "bottoms", "footwear", "bags", "open", "closed"]
    assert taxonomy.path("Sneaker") == [("root", "footwear"), ("footwear", "closed"), ("closed", "Sneaker")]
    assert taxonomy.depth("Bag") == 2 and taxonomy.depth("Ankle boot") == 3
    table = taxonomy.child_index()
    assert table.shape == (7, 10)
    assert table[0].tolist() == [0, 1, 0, 0, 0, 2, 0, 2, 3, 2]  # the root's child on each class's path
    assert table[taxonomy.nodes.index("closed")].tolist() == [-1, -1, -1, -1, -1, -1, -1, 0, -1, 1]
    assert taxonomy.labels_at([7, 1, 9], 1).tolist() == ["footwear", "bottoms", "footwear"]
    assert taxonomy.labels_at([7, 8], 3).tolist() == ["Sneaker", "Bag"]  # shallower leaves stay themselves


def test_config_and_parent_list_round_trips():
    taxonomy = Taxonomy(TREE, CLASSES)
    config = json.loads(json.dumps(taxonomy.to_config()))
    again = Taxonomy.from_config(config)
    assert again.nodes == taxonomy.nodes and np.array_equal(again.child_index(), taxonomy.child_index())
    parents = {"root": None}
    for name in taxonomy.nodes[1:] + CLASSES:
        parents[name] = taxonomy.parent[name]
    rebuilt = Taxonomy.from_parents(parents, CLASSES)
    assert sorted(rebuilt.nodes) == sorted(taxonomy.nodes)
    assert all(rebuilt.path(name) == taxonomy.path(name) for name in CLASSES)


@pytest.mark.parametrize(
    "tree, message",
    [
        ({"tops": ["T-shirt/top"], "rest": CLASSES[1:-1]}, r"leaves out the classes \['Ankle boot'\]"),
        ({"a": CLASSES, "b": ["Bag"]}, "class 'Bag' appears twice in the taxonomy: under 'a' and under 'b'"),
        ({"a": CLASSES + ["Sandals"]}, "leaf 'Sandals' \\(under 'a'\\) is not a class"),
        ({"a": CLASSES[:-1], "Ankle boot": ["Sneaker"]}, "'Ankle boot' is a class but has children"),
        ({"a": CLASSES, "b": {"a": ["x"]}}, "node 'a' appears twice"),
        ({"a": CLASSES, "empty": []}, "node 'empty' \\(root > empty\\) has no children"),
        ({"a": CLASSES, "b": 3}, "must hold a dict or a list"),
    ],
)
def test_bad_taxonomies_are_refused_with_the_problem_named(tree, message):
    with pytest.raises(ValueError, match=message):
        Taxonomy(tree, CLASSES)


def test_a_cycle_or_two_roots_in_a_parent_list_is_refused():
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        Taxonomy.from_parents({"root": None, "a": "b", "b": "a", "cat": "root"}, ["cat"])
    with pytest.raises(ValueError, match="exactly one root"):
        Taxonomy.from_parents({"root": None, "other": None, "cat": "root"}, ["cat"])
    with pytest.raises(ValueError, match="parent 'nowhere' of 'cat'"):
        Taxonomy.from_parents({"root": None, "cat": "nowhere"}, ["cat"])
