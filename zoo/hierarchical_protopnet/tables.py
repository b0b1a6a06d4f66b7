"""The constant tables a hierarchical prototype network computes with: places, edges, paths and prototype owners.

A taxonomy's *places* are its root, its inner nodes and its classes, in
that order: `V = N + K` places, the classes last and in label order, so
that `place_probabilities[:, N:]` are the class probabilities. Every place
but the root is the child end of exactly one *edge* `(parent node, place)`;
edge `e` leads to place `e + 1`, so there are `E = V - 1` edges. Each edge
owns `prototypes_per_child` prototypes, which its parent node's prototype
layer compares with the image to choose among that node's children.
"""

import numpy as np


class PlaceTables:
    """NumPy tables of a `Taxonomy` with `prototypes_per_child` prototypes on every edge.

    Args:
        taxonomy: a `glasszoo.zoo.taxonomy.Taxonomy`.
        prototypes_per_child: prototypes of each (node, child) edge.

    Attributes:
        places: the `V` place names (root, inner nodes, classes).
        num_nodes, num_classes, num_places, num_edges: `N`, `K`, `V`, `E`.
        parent: int `(V,)` parent place of each place (-1 for the root).
        depth: int `(V,)` steps from the root.
        edge_node: int `(E,)` the node index each edge leaves.
        edge_membership: float `(E, N)` 1 where edge e leaves node n.
        sibling_edges: float `(E, E)` 1 where edges e and f leave the same node and e != f.
        has_siblings: float `(E,)` 1 where edge e's node has other children.
        leads_to: float `(E, V)` 1 where edge e lies on the path from the root to place v.
        class_edges: float `(K, E)` the edges on each class's path.
        class_nodes: float `(K, N)` the nodes on each class's path (the root included).
        prototype_place, prototype_edge, prototype_node: int `(P,)` each prototype's child place, edge and node.
        prototype_membership: float `(P, N)` 1 where prototype j belongs to node n.
        node_block: float `(P, E)` 1 where prototype j's node is edge e's node (its last-layer block).
        own_edge: float `(P, E)` 1 on prototype j's own edge.
        class_owns: float `(K, P)` 1 where class k's path runs through prototype j's edge.
        class_passes: float `(K, P)` 1 where class k's path runs through prototype j's node.

    Example:
    >>> from glasszoo.zoo.taxonomy import Taxonomy
    >>> tables = PlaceTables(Taxonomy({"animals": ["cat", "dog"], "car": None}, ["cat", "car", "dog"]), 2)
    >>> tables.places
    ['root', 'animals', 'cat', 'car', 'dog']
    >>> tables.parent.tolist(), tables.prototype_place.tolist()
    ([-1, 0, 1, 0, 1], [1, 1, 2, 2, 3, 3, 4, 4])
    """

    def __init__(self, taxonomy, prototypes_per_child):
        self.taxonomy = taxonomy
        self.prototypes_per_child = int(prototypes_per_child)
        if self.prototypes_per_child < 1:
            raise ValueError(f"prototypes_per_child must be at least 1; got {prototypes_per_child!r}.")
        self.places = list(taxonomy.nodes) + list(taxonomy.class_names)
        index = {name: v for v, name in enumerate(self.places)}
        self.num_nodes, self.num_classes = len(taxonomy.nodes), len(taxonomy.class_names)
        self.num_places = len(self.places)
        self.num_edges = self.num_places - 1
        self.parent = np.array([-1] + [index[taxonomy.parent[name]] for name in self.places[1:]], "int64")
        self.depth = np.array([taxonomy.depth(name) if v else 0 for v, name in enumerate(self.places)], "int64")
        self.edge_node = self.parent[1:].copy()
        self.edge_membership = np.eye(self.num_nodes, dtype="float32")[self.edge_node]
        self.sibling_edges = ((self.edge_node[:, None] == self.edge_node[None, :]) & ~np.eye(self.num_edges, dtype=bool)).astype("float32")
        self.has_siblings = (self.sibling_edges.sum(axis=1) > 0).astype("float32")
        self.leads_to = np.zeros((self.num_edges, self.num_places), "float32")
        for v in range(1, self.num_places):
            place = v
            while place > 0:
                self.leads_to[place - 1, v] = 1.0
                place = self.parent[place]
        self.class_edges = self.leads_to[:, self.num_nodes :].T.copy()
        self.class_nodes = np.zeros((self.num_classes, self.num_nodes), "float32")
        for k in range(self.num_classes):
            place = self.parent[self.num_nodes + k]
            while place >= 0:
                self.class_nodes[k, place] = 1.0
                place = self.parent[place]
        self.prototype_place = np.repeat(np.arange(1, self.num_places), self.prototypes_per_child)
        self.prototype_edge = self.prototype_place - 1
        self.prototype_node = self.parent[self.prototype_place]
        self.prototype_membership = np.eye(self.num_nodes, dtype="float32")[self.prototype_node]
        self.node_block = (self.prototype_node[:, None] == self.edge_node[None, :]).astype("float32")
        self.own_edge = np.eye(self.num_edges, dtype="float32")[self.prototype_edge]
        self.class_owns = self.class_edges[:, self.prototype_edge]
        self.class_passes = self.class_nodes[:, self.prototype_node]

    @property
    def class_places(self):
        """float `(K, V)`: 1 where class k lies at or under place v (a place's probability is the sum of its classes')."""
        places = np.zeros((self.num_classes, self.num_places), "float32")
        places[:, 0] = 1.0
        places[:, 1:] = self.leads_to[:, self.num_nodes :].T
        return places

    def placement(self, place_probabilities, edge_evidence, threshold, floors):
        """int `(n,)`: the deepest place whose whole path is vouched for, the rule of the model's `placement` output.

        An edge (its child place) is vouched for when the place's probability
        reaches `threshold` and the edge's evidence (the model's
        `placement_evidence`: its parent's confidence in it, or its
        prototypes' best similarity) reaches its floor. With `threshold` >= 0.5
        at most one child of a node can be, so the vouched places form one path.
        """
        probabilities = np.asarray(place_probabilities, dtype="float64")
        edges = (probabilities[:, 1:] >= threshold) & (np.asarray(edge_evidence) >= np.asarray(floors)[None, :])
        failures = (~edges).astype("float64") @ self.leads_to.astype("float64")  # (n, V) unsupported edges on the path
        score = (failures < 0.5) * (self.depth[None, :] + 1.0 + 0.5 * probabilities)
        return score.argmax(axis=1)

    @property
    def num_prototypes(self):
        return len(self.prototype_place)

    def initial_last_layer(self, off_child=-0.5):
        """The starting kernel `(P, E)`: 1 to a prototype's own edge, `off_child` to its node's other edges, 0 elsewhere."""
        return (self.own_edge + off_child * (self.node_block - self.own_edge)).astype("float32")
