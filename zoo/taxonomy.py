"""A taxonomy of classes: a tree whose leaves are a data set's classes and whose inner nodes group them.

Hierarchical classifiers (the hierarchical prototypes of seed 001: Hase,
Chen, Li and Rudin 2019) predict a class at every level,
`P(leaf | x) = prod over the path of P(child | node, x)`, and place an image
of an unseen class at the deepest node they can vouch for. They need the
tree as data, checked once: every leaf a class, every class in exactly one
leaf, no class with children, no node twice, no cycle. `Taxonomy` holds it
with the arrays a model needs (each class's path of `(node, child)` steps)
and a JSON form for configs and model cards.
"""

import numpy as np


class Taxonomy:
    """A validated tree over `class_names`.

    Args:
        tree: nested dict `{node: subtree}` below the root, where a subtree is
            another dict or a list of class names (leaves); a class may also
            be a key whose value is None. Example for Fashion-MNIST:
            `{"tops": ["T-shirt/top", "Pullover", ...], "bottoms": ["Trouser"], ...}`.
        class_names: the data set's classes, in label order.
        root: the root's name.

    Raises:
        ValueError: naming the problem: a class in no leaf or in two places,
            a leaf that is no class, a class with children, a node name used
            twice, a node without children.

    Example:
    >>> taxonomy = Taxonomy({"animals": ["cat", "dog"], "vehicles": ["car"]}, ["cat", "car", "dog"])
    >>> taxonomy.nodes
    ['root', 'animals', 'vehicles']
    >>> taxonomy.path("dog")
    [('root', 'animals'), ('animals', 'dog')]
    """

    def __init__(self, tree, class_names, root="root"):
        self.class_names = [str(name) for name in class_names]
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"The class names repeat: {self.class_names}.")
        self.root = str(root)
        self.children = {}
        self.parent = {}
        self._add(self.root, tree, trail=(self.root,))
        placed = [name for name in self.parent if name not in self.children]
        missing = [name for name in self.class_names if name not in placed]
        if missing:
            raise ValueError(f"The taxonomy leaves out the classes {missing}: every class must be a leaf of the tree.")
        self.nodes = [self.root] + [name for name in self._breadth_first() if name in self.children and name != self.root]

    def _add(self, node, subtree, trail):
        if node in self.class_names:
            raise ValueError(f"{node!r} is a class but has children in the taxonomy ({' > '.join(trail)}): classes must be leaves.")
        if isinstance(subtree, dict):
            items = list(subtree.items())
        elif isinstance(subtree, (list, tuple)):
            items = [(leaf, None) for leaf in subtree]
        else:
            raise ValueError(f"The taxonomy node {node!r} must hold a dict or a list of classes; got {type(subtree).__name__} {subtree!r}.")
        if not items:
            raise ValueError(f"The taxonomy node {node!r} ({' > '.join(trail)}) has no children.")
        self.children[node] = []
        for child, below in items:
            child = str(child)
            if child in self.parent or child == self.root:
                where = self.parent.get(child, "the root")
                kind = "class" if child in self.class_names else "node"
                raise ValueError(f"The {kind} {child!r} appears twice in the taxonomy: under {where!r} and under {node!r}.")
            self.parent[child] = node
            self.children[node].append(child)
            if below is None:
                if child not in self.class_names:
                    raise ValueError(f"The taxonomy leaf {child!r} (under {node!r}) is not a class; the classes are {self.class_names}.")
            else:
                self._add(child, below, trail + (child,))

    def _breadth_first(self):
        queue, order = [self.root], []
        while queue:
            node = queue.pop(0)
            order.append(node)
            queue.extend(self.children.get(node, []))
        return order

    @classmethod
    def from_parents(cls, parents, class_names):
        """A taxonomy from `{name: parent name}` (the root's parent is None); cycles are refused.

        Example:
        >>> Taxonomy.from_parents({"root": None, "animals": "root", "cat": "animals", "car": "root"}, ["cat", "car"]).nodes
        ['root', 'animals']
        """
        roots = [name for name, parent in parents.items() if parent is None]
        if len(roots) != 1:
            raise ValueError(f"A taxonomy needs exactly one root (a name whose parent is None); got {roots}.")
        for start in parents:
            seen, name = [start], parents[start]
            while name is not None:
                if name not in parents:
                    raise ValueError(f"The parent {name!r} of {seen[-1]!r} is not in the taxonomy.")
                if name in seen:
                    raise ValueError(f"The taxonomy has a cycle: {' -> '.join(seen[seen.index(name):] + [name])}.")
                seen.append(name)
                name = parents[name]

        def subtree(node):
            below = [name for name, parent in parents.items() if parent == node]
            return {child: (subtree(child) if any(p == child for p in parents.values()) else None) for child in below}

        return cls(subtree(roots[0]), class_names, root=roots[0])

    def to_config(self):
        """The tree as JSON-ready nested dicts (leaves map to None) with the root and the classes."""

        def subtree(node):
            return {child: (subtree(child) if child in self.children else None) for child in self.children[node]}

        return {"root": self.root, "tree": subtree(self.root), "class_names": list(self.class_names)}

    @classmethod
    def from_config(cls, config):
        return cls(config["tree"], config["class_names"], root=config.get("root", "root"))

    def path(self, name):
        """The `(node, child)` steps from the root down to `name` (a class or a node)."""
        if name not in self.parent and name != self.root:
            raise ValueError(f"{name!r} is not in the taxonomy.")
        steps = []
        while name != self.root:
            steps.append((self.parent[name], name))
            name = self.parent[name]
        return steps[::-1]

    def child_index(self):
        """`(nodes, K)` int array: at node n, the position of the child on class k's path, or -1 off it."""
        table = -np.ones((len(self.nodes), len(self.class_names)), dtype="int64")
        position = {node: row for row, node in enumerate(self.nodes)}
        for k, name in enumerate(self.class_names):
            for node, child in self.path(name):
                table[position[node], k] = self.children[node].index(child)
        return table

    def depth(self, name):
        """Number of steps from the root to `name`."""
        return len(self.path(name))

    def ancestor_at(self, name, level):
        """The node or class on `name`'s path at depth `level` (0: the root; deeper than `name`: `name`)."""
        path = [self.root] + [child for _, child in self.path(name)]
        return path[min(int(level), len(path) - 1)]

    def labels_at(self, labels, level):
        """`(n,)` names: each label's ancestor at depth `level` (coarse labels, e.g. level 1: tops / footwear / ...)."""
        return np.array([self.ancestor_at(self.class_names[int(k)], level) for k in np.asarray(labels).reshape(-1)])

    def __repr__(self):
        return f"Taxonomy({len(self.nodes)} nodes over {len(self.class_names)} classes)"
