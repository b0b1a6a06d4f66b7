"""The hierarchical prototype network's last layer as a readout, for influence functions (NumPy, float64).

The last layer turns each node's own prototypes' similarities into scores
for that node's children (its edges): `score_e = sum_{p of node(e)} s_p W_pe`.
Those scores are linear in the layer's weights; the class log-probability
is then the sum, along the class's path, of each node's log-softmax over
its children. So the readout's outputs are the `E` edge scores, its loss
the taxonomy's `GroupedSoftmax` (a softmax per node, the cross-entropies
of the nodes on the label's path summed, which is `-log P(label)`), and
influence functions get the exact Hessian of a convex objective, as for
the flat ProtoPNet.

Only the weights the model uses are parameters: those from a node's
prototypes to that node's children (`PlaceTables.node_block`). They are laid
out per edge: slot `f` of edge `e` is the `f`-th prototype of the edge's
node, so the features are `(n, F, E)` with `F` the most prototypes any
node has; a node with fewer has its last slots empty (zero features and
weights, which the damping holds at zero).
"""

import numpy as np
from glasszoo.explain.readout_losses import GroupedSoftmax
from glasszoo.explain.readouts import LinearHead, to_numpy


def edge_slots(tables):
    """int `(F, E)`: the prototype in slot `f` of edge `e` (the `f`-th of the edge's node), -1 where the node has fewer."""
    members = [np.flatnonzero(tables.prototype_node == node) for node in range(tables.num_nodes)]
    width = max(len(found) for found in members)
    slots = np.full((width, tables.num_edges), -1, dtype="int64")
    for edge, node in enumerate(tables.edge_node):
        slots[: len(members[node]), edge] = members[node]
    return slots


def taxonomy_loss(tables):
    """The `GroupedSoftmax` of the taxonomy: one group per node, each class choosing the edges on its path."""
    return GroupedSoftmax(tables.edge_node, tables.class_edges)


def edge_readout(model, images, batch_size=256):
    """`LinearHead` of `model`'s (a `HierarchicalProtoPNet`) last layer on `images`, with the edge scores as outputs.

    Args:
        model: the hierarchical prototype network.
        images: `(n, H, W, C)` images in [0, 1].
        batch_size: images per forward pass.

    Example:
    >>> head = edge_readout(model, images)  # doctest: +SKIP
    >>> np.allclose(head.loss.class_logits(head.logits(head.parameters)), model.predict(images))  # doctest: +SKIP
    True
    """
    from keras import ops

    slots = edge_slots(model.tables)
    present = slots >= 0
    similarities = np.concatenate([
        to_numpy(model.similarities(ops.convert_to_tensor(images[start : start + batch_size])))
        for start in range(0, len(images), batch_size)
    ])  # fmt: skip
    features = similarities[:, np.maximum(slots, 0)] * present  # (n, F, E)
    kernel = to_numpy(model.last_layer.kernel)
    parameters = kernel[np.maximum(slots, 0), np.arange(slots.shape[1])[None, :]] * present
    return LinearHead(features, np.zeros((len(images), slots.shape[1])), parameters, taxonomy_loss(model.tables))
