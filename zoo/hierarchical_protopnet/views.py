"""Matplotlib views of hierarchical prototype networks: the decision path through the taxonomy and its prototypes.

`draw` reads the explanation outputs alone (NumPy and matplotlib): the
taxonomy comes from the `place_parent` output, each prototype's node from
the prototypes' order (`prototypes_per_child` per edge, edge by edge), so
the same function draws `glasszoo explain` (Keras) and `glasszoo predict
--out` (ONNX) pictures. Inner nodes are then named by the classes below
them; the model views (`path_view`, `prototype_tree`) have the model and
use the taxonomy's own names and the push provenance.
"""

import numpy as np
from glasszoo.explain.figures import bare, new_figure, overlay_signed, predicted_class, save, show_image
from glasszoo.zoo.protopnet.views import HIGH_ACTIVATION_COLOUR, RECEPTIVE_FIELD_COLOUR, draw_box, pushed_views

__all__ = ["REQUIRED_OUTPUTS", "decision_path", "depth_first", "draw", "model_views", "path_view", "place_names", "prototype_tree"]

REQUIRED_OUTPUTS = {
    "logits": 2,
    "place_probabilities": 2,
    "conditional_probabilities": 2,
    "place_parent": 2,
    "place_support": 2,
    "placement": 1,
    "prototype_similarity": 2,
    "upsampled_similarity_maps": 4,
    "prototype_contributions": 3,
    "node_evidence_maps": 4,
    "class_evidence_map": 3,
}
TOP_PROTOTYPES = 3


def place_names(parent, class_names):
    """Names of the `V` places from the parent list: the root, inner nodes by the classes below them, then the classes.

    An inner node over more than two classes is named by its first two and
    the count of the others (`"T-shirt/top, Pullover +3"`).

    Example:
    >>> place_names([-1, 0, 1, 0, 1], ["cat", "car", "dog"])
    ['root', 'cat, dog', 'cat', 'car', 'dog']
    """
    parent = [int(p) for p in parent]
    count = len(class_names)
    first_class = len(parent) - count
    below = {v: [] for v in range(first_class)}
    for k in range(count):
        place = parent[first_class + k]
        while place >= 0:
            below[place].append(class_names[k])
            place = parent[place]
    def group(members):
        return ", ".join(members) if len(members) <= 2 else f"{members[0]}, {members[1]} +{len(members) - 2}"

    return ["root"] + [group(below[v]) for v in range(1, first_class)] + list(class_names)


def decision_path(parent, place):
    """The places from the root down to `place` (inclusive)."""
    steps = [int(place)]
    while parent[steps[-1]] >= 0:
        steps.append(int(parent[steps[-1]]))
    return steps[::-1]


def prototype_places(num_prototypes, num_places):
    """The child place of every prototype (`P / (V - 1)` prototypes per edge, edge by edge)."""
    per_edge = num_prototypes // (num_places - 1)
    return 1 + np.arange(num_prototypes) // per_edge


def _top_at_node(contributions, places, parent, node, count):
    """The `count` prototypes of `node` with the largest contribution (to the explained class's path)."""
    members = np.flatnonzero(parent[places] == node)
    return members[np.argsort(-contributions[members], kind="stable")[:count]]


def draw(image, outputs, index, class_names=None):
    """One explained image: the path of its predicted class through the taxonomy, with each node's evidence.

    Row 0: the image, the class evidence map (the `class_evidence_map`
    output), the path with its conditional probabilities (a step the model
    does not vouch for is marked) and the placement,
    and the class probabilities. One row per node on the path: where that
    node's evidence for the path's child lies (`node_evidence_maps`) and
    where its most contributing prototypes are found.
    """
    image = np.asarray(image, dtype="float32")
    logits, k, names = predicted_class(outputs, index, class_names)
    parent = np.asarray(outputs["place_parent"][index]).round().astype("int64")
    places = place_names(parent, names)
    first_class = len(parent) - len(names)
    path = decision_path(parent, first_class + k)
    conditional = np.asarray(outputs["conditional_probabilities"][index], dtype="float64")
    reached = np.asarray(outputs["place_probabilities"][index], dtype="float64")
    placement = int(round(float(outputs["placement"][index])))
    contributions = np.asarray(outputs["prototype_contributions"][index, :, k], dtype="float64")
    maps = np.asarray(outputs["upsampled_similarity_maps"][index], dtype="float64")
    node_maps = np.asarray(outputs["node_evidence_maps"][index], dtype="float64")
    prototype_place = prototype_places(len(contributions), len(parent))
    figure, axes = new_figure(len(path), 1 + TOP_PROTOTYPES)
    show_image(axes[0, 0], image)
    axes[0, 0].set_title("image")
    shown = overlay_signed(axes[0, 1], image, np.asarray(outputs["class_evidence_map"][index], dtype="float64"))
    axes[0, 1].set_title(f"evidence for {names[k]}")
    figure.colorbar(shown, ax=axes[0, 1], shrink=0.8)
    bare(axes[0, 2])
    support = np.asarray(outputs["place_support"][index]) > 0.5
    lines = [f"{places[path[0]]}"] + [
        f"{'  ' * depth}-> {places[v]}  ({conditional[v]:.2f}){'' if support[v] else ' not vouched' + _shortfall(outputs, index, v)}"
        for depth, v in enumerate(path[1:])
    ]
    lines += ["", f"P({names[k]}) = {reached[first_class + k]:.3f}", f"placed at: {places[placement]}", f"  (P = {reached[placement]:.3f})"]
    axes[0, 2].text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=8, family="monospace", transform=axes[0, 2].transAxes)
    order = np.argsort(-reached[first_class:], kind="stable")[:6]
    axes[0, 3].barh(np.arange(len(order))[::-1], reached[first_class + order], color="tab:blue")
    axes[0, 3].set_yticks(np.arange(len(order))[::-1], [names[c] for c in order], fontsize=7)
    axes[0, 3].set_xlim(0, 1)
    axes[0, 3].set_title("class probabilities", fontsize=9)
    for row, (node, child) in enumerate(zip(path[:-1], path[1:]), start=1):
        shown = overlay_signed(axes[row, 0], image, node_maps[..., node])
        axes[row, 0].set_title(f"at {places[node][:18]}:\n{places[child][:18]} ({conditional[child]:.2f})", fontsize=8)
        for axis, j in zip(axes[row, 1:], _top_at_node(contributions, prototype_place, parent, node, TOP_PROTOTYPES)):
            show_image(axis, image.mean(axis=-1, keepdims=True))
            axis.imshow(maps[..., j], cmap="jet", alpha=0.5)
            axis.set_title(f"prototype {j} ({places[prototype_place[j]][:12]})\ncontrib {contributions[j]:.3g}", fontsize=8)
    figure.suptitle(f"predicted: {names[k]} (p = {reached[first_class + k]:.3f})")
    return figure


def _shortfall(outputs, index, place):
    """`" (8.5 < 8.7)"`: the place's evidence against its floor, where the outputs have them (exports from before them do not)."""
    if "place_evidence" not in outputs or "placement_floors" not in outputs:
        return ""
    evidence, floor = float(outputs["place_evidence"][index][place]), float(outputs["placement_floors"][index][place])
    return f" ({evidence:.3g} < {floor:.3g})" if evidence < floor else ""


def _source_panel(axis, model, j):
    """Prototype `j`'s source image with its receptive-field and high-activation boxes."""
    provenance = model.prototype_provenance
    show_image(axis, provenance["source_image"][j])
    draw_box(axis, provenance["receptive_field_box"][j], RECEPTIVE_FIELD_COLOUR, width=1.0)
    draw_box(axis, provenance["high_activation_box"][j], HIGH_ACTIVATION_COLOUR)


def path_view(model, image, explained=None, top=TOP_PROTOTYPES, path=None):
    """Each node on the predicted path, its top prototypes where they match the image and the training patch they are.

    Args:
        model: a pushed `HierarchicalProtoPNet`.
        image: `(H, W, C)` in [0, 1].
        explained: `model.explain(image[None])` if already computed.
        top: prototypes shown per node.
        path: png to write.
    """
    if model.prototype_provenance is None:
        raise ValueError("The model's prototypes have not been pushed (no provenance): push them or load a pushed preset.")
    explained = explained if explained is not None else model.explain(np.asarray(image)[None])
    tables = model.tables
    k = int(np.argmax(explained["logits"][0]))
    steps = decision_path(tables.parent, tables.num_nodes + k)
    contributions = explained["prototype_contributions"][0, :, k]
    conditional = explained["conditional_probabilities"][0]
    figure, axes = new_figure(len(steps) - 1, 2 * top)
    for row, (node, child) in enumerate(zip(steps[:-1], steps[1:])):
        chosen = _top_at_node(contributions, tables.prototype_place, tables.parent, node, top)
        for col, j in enumerate(chosen):
            here, there = axes[row, 2 * col], axes[row, 2 * col + 1]
            show_image(here, np.asarray(image).mean(axis=-1, keepdims=True))
            here.imshow(explained["upsampled_similarity_maps"][0, :, :, j], cmap="jet", alpha=0.5)
            here.set_title(f"this ({contributions[j]:+.2f})", fontsize=8)
            _source_panel(there, model, j)
            there.set_title(f"looks like p{j}\n({tables.places[tables.prototype_place[j]]})", fontsize=8)
        for col in range(2 * len(chosen), 2 * top):
            bare(axes[row, col])
        axes[row, 0].set_ylabel(f"{tables.places[node]} -> {tables.places[child]}\n({conditional[child]:.2f})", fontsize=8)
    figure.suptitle(f"why {model.class_names[k]}: the prototypes at each node of its path")
    return save(figure, path)


def depth_first(parent):
    """The places in depth-first order from the root (children in index order), so that a node's subtree follows it."""
    order, stack = [], [0]
    while stack:
        place = stack.pop()
        order.append(place)
        stack.extend(sorted((v for v in range(len(parent)) if parent[v] == place), reverse=True))
    return order


def prototype_tree(model, per_child=3, path=None):
    """The taxonomy as rows, one per (node, child) edge in depth-first order, each with its first pushed prototypes."""
    if model.prototype_provenance is None:
        raise ValueError("The model's prototypes have not been pushed (no provenance): push them or load a pushed preset.")
    tables = model.tables
    per_child = min(int(per_child), tables.prototypes_per_child)
    figure, axes = new_figure(tables.num_edges, per_child, width=1.6, height=1.6)
    for edge, place in enumerate(depth_first(tables.parent)[1:]):
        members = np.flatnonzero(tables.prototype_place == place)[:per_child]
        for col, j in enumerate(members):
            _source_panel(axes[edge, col], model, j)
            axes[edge, col].set_title(f"p{j}", fontsize=7)
        indent = "  " * (int(tables.depth[place]) - 1)
        axes[edge, 0].set_ylabel(f"{indent}{tables.places[tables.parent[place]]} ->\n{indent}{tables.places[place]}", fontsize=7)
    figure.suptitle("prototypes of every node, by child")
    return save(figure, path)


def model_views(model, images, stems, explanation, labels, out):
    """A path view per image (`path_<stem>.png`) and the tree of pushed prototypes (`prototype_tree.png`).

    Needs pushed prototypes (provenance); without them nothing is drawn.
    Returns `{"pushed": bool}`.
    """
    return pushed_views(
        model, images, stems, explanation, out,
        per_image=lambda image, one, path: path_view(model, image, explained=one, path=path),
        prefix="path", overview=lambda path: prototype_tree(model, path=path), overview_name="prototype_tree.png",
    )
