"""Hierarchical prototype networks (Hase, Chen, Li and Rudin 2019; seed 001): prototypes at every node of a taxonomy."""

import warnings

import keras
import numpy as np
from glasszoo.layers.best_match_evidence import receptive_field_upsample, similarity_at_best_match
from glasszoo.layers.prototype_layer import log_similarity
from glasszoo.layers.single_node_ops import first_argmax
from glasszoo.zoo.base import ZooModel, class_selection
from glasszoo.zoo.hierarchical_protopnet.readout import edge_readout
from glasszoo.zoo.hierarchical_protopnet.tables import PlaceTables
from glasszoo.zoo.protopnet.model import ProtoPNet
from glasszoo.zoo.taxonomy import Taxonomy
from keras import ops

EXPLANATION_OUTPUTS = {
    "logits": "(B, K) log P(class | x): the log-probability of the class's path, the sum of log P(child | node, x) along it (softmax of these logits gives the path probabilities)",
    "place_probabilities": "(B, V) probability of reaching each place of the taxonomy (V = root, inner nodes, then the K classes in label order): the product of the conditional probabilities on its path",
    "conditional_probabilities": "(B, V) P(place | its parent node, x): the softmax of the scores of the node's children (1 for the root)",
    "place_scores": "(B, V) the score each place gets at its parent node: the node's prototype similarities @ its last-layer weights (0 for the root)",
    "place_parent": "(B, V) whole numbers: the parent place of each place (-1 for the root): the taxonomy, for readers of the outputs alone",
    "place_support": "(B, V) 1 where the model vouches for a place: its probability reaches placement_threshold and its placement evidence reaches the place's floor (1 for the root); the evidence (placement_evidence) is its parent node's confidence in it, the log-odds log P(place | parent, x) - log(1 - P(place | parent, x)) ('confidence'), or the best similarity of its own prototypes to the image ('similarity')",
    "place_evidence": "(B, V) each place's placement evidence (placement_evidence: the log-odds of P(place | parent, x), clipped to +-1e4 and 1e4 for an only child, or the best similarity of its own prototypes; 0 for the root)",
    "placement_floors": "(B, V) the floor each place's evidence must reach to be vouched for (the model's placement_floors, the same for every image; 0 for the root)",
    "placement": "(B,) a whole number, the index of the deepest place whose whole path is supported (place_support): where an image of a class never seen in training is put",
    "prototype_similarity": "(B, P) similarity log((d + 1) / (d + 1e-4)) of each prototype to its nearest latent patch (d: squared L2 distance)",
    "similarity_maps": "(B, h, w, P) similarity of each prototype to every latent patch",
    "upsampled_similarity_maps": "(B, H, W, P) similarity maps bilinearly upsampled to the input: where each prototype is found",
    "prototype_contributions": "(B, P, K) similarity times the prototype's last-layer weight toward the child on class k's path at the prototype's node (0 when that path misses the node): a class's path score is their sum over prototypes",
    "node_evidence_maps": "(B, H, W, N) at each inner node on the explained class's path, where the evidence for that path's child lies (each of the node's prototypes' similarity, weighted by its centred last-layer weight, at the latent patch where it was found, spread over that patch's receptive field); 0 at nodes off the path",
    "class_evidence_map": "(B, H, W) where the evidence for the explained class lies: the node evidence maps summed along its path",
}
NODE_MASK = 1e4  # subtracted from the scores of a node's non-children before its maximum (finite, so float16 holds it)
PLACEMENT_EVIDENCE = ("confidence", "similarity")
NO_FLOOR = {"confidence": -NODE_MASK, "similarity": 0.0}  # what every image reaches (log-odds are clipped to +-NODE_MASK, similarities are >= 0)


def checked_threshold(value):
    """`value` as a float in [0.5, 1]; a ValueError otherwise.

    From 0.5 up at most one child of a node can reach it (their
    probabilities sum to the node's), so the places that reach it form one
    path down from the root and `placement` is that path's end.
    """
    threshold = float(value)
    if not 0.5 <= threshold <= 1.0:
        raise ValueError(f"placement_threshold must be in [0.5, 1]; got {value!r}.")
    return threshold


def checked_evidence(value):
    """`value` if it names a placement evidence (`PLACEMENT_EVIDENCE`); a ValueError otherwise."""
    if value not in PLACEMENT_EVIDENCE:
        raise ValueError(f"placement_evidence must be one of {PLACEMENT_EVIDENCE}; got {value!r}.")
    return value


def checked_floors(values, count, evidence):
    """`values` as a float32 `(count,)` array of finite placement floors (None: no floor for `evidence`); a ValueError otherwise."""
    if values is None:
        return np.full(count, NO_FLOOR[evidence], "float32")
    floors = np.asarray(values, dtype="float64").reshape(-1)
    if floors.shape != (count,) or not np.all(np.isfinite(floors)):
        raise ValueError(f"placement_floors must be {count} finite numbers, one per (node, child) edge; got {values!r}.")
    return floors.astype("float32")


def resolve_taxonomy(taxonomy, class_names, num_classes):
    """`(Taxonomy, replaced)` from a `Taxonomy`, its `to_config()` dict, a bare tree, or None (flat: every class under the root).

    A taxonomy over none of `class_names` is taken for the pretrained
    task's (a fine-tune to new classes keeps the preset's config): it is
    replaced by a flat one, with a warning, and `replaced` is True.

    Raises:
        ValueError: the taxonomy shares some classes with `class_names` but
            is not over exactly them (in label order), or `num_classes` differs.
    """
    names = None if class_names is None else [str(name) for name in class_names]
    if taxonomy is None and names is None and num_classes is None:
        raise ValueError("A hierarchical prototype network needs a taxonomy, class_names or num_classes.")
    if isinstance(taxonomy, Taxonomy):
        resolved = taxonomy
    elif taxonomy is None:
        names = names or [str(k) for k in range(int(num_classes))]
        resolved = Taxonomy(names, names)
    elif isinstance(taxonomy, dict) and "tree" in taxonomy:
        resolved = Taxonomy(taxonomy["tree"], taxonomy.get("class_names") or names or [str(k) for k in range(int(num_classes))], root=taxonomy.get("root", "root"))
    elif isinstance(taxonomy, dict):
        resolved = Taxonomy(taxonomy, names or [str(k) for k in range(int(num_classes))])
    else:
        raise ValueError(f"taxonomy must be a Taxonomy, a dict or None; got {type(taxonomy).__name__}.")
    if names is not None and not set(names) & set(resolved.class_names):
        # a taxonomy over other classes altogether is the pretrained task's (a fine-tune to new classes)
        warnings.warn(
            f"The taxonomy covers none of the classes {names} (it is over {resolved.class_names}): "
            "using a flat taxonomy (every class under the root), without the placement floors calibrated on those "
            "classes; give taxonomy= to group the new classes.",
            stacklevel=3,
        )
        return Taxonomy(names, names), True
    if names is not None and resolved.class_names != names:
        raise ValueError(
            f"The taxonomy's classes {resolved.class_names} are not the model's classes {names} (in label order): "
            "give a taxonomy over these classes, or taxonomy=None for a flat one."
        )
    if num_classes is not None and len(resolved.class_names) != int(num_classes):
        raise ValueError(f"The taxonomy has {len(resolved.class_names)} classes but num_classes is {num_classes}.")
    return resolved, False


@keras.saving.register_keras_serializable(package="glasszoo")
class HierarchicalProtoPNet(ProtoPNet):
    """A prototype network that decides at every node of a class taxonomy: "a sandal, because footwear, because ...".

    `images -> backbone -> add-on layers -> latent z (h, w, D) -> squared L2
    distance to every prototype -> similarity log((d + 1) / (d + 1e-4))`, as
    in ProtoPNet. The prototypes are split evenly over the taxonomy's
    edges: each inner node's children own `prototypes_per_child` each, and
    the node's block of the bias-free last layer turns its own prototypes'
    similarities into scores for its children. Then
    `P(child | node, x) = softmax over the node's children`, and a class's
    probability is the product along its path from the root, so
    `logits = log P(class | x)` (the seed's eq. 2). The prototypes live in
    one shared latent space and are computed by one prototype layer, whose
    prototypes are grouped by node (the seed's "a prototype layer per parent
    node" with the distances computed once).

    The training objective (`model.fit` after `compile()`): the cross-entropy
    of the class, which is the sum of the per-node cross-entropies along its
    path, `+ cluster_weight x` the per-node cluster costs (an image is pulled
    towards the prototypes of its child at every node on its path, onto
    object patches with `object_threshold`), `- separation_weight x` the
    per-node separation costs (away from that node's other children's
    prototypes), `+ l1_weight x` the last layer's weights from prototypes
    to their node's other children `+ l2_weight x` the squares of the
    weights to their own child (the seed's L1 and L2 terms). The staged
    training of ProtoPNet (`fit_schedule`: warm-up, joint, push, last layer)
    applies unchanged; the push places each prototype on a training patch
    of an image under its own child.

    An image of a class never seen in training cannot get its own leaf: it
    is placed at the deepest place the model vouches for (the `placement`
    output), e.g. "footwear" for a sneaker when the model was trained
    without sneakers. A place is vouched for when its probability reaches
    `placement_threshold` and its parent node is at least as sure of it
    against its siblings (the log-odds of `P(place | parent, x)`) as its
    floor: the seed's "deepest node the model is confident in", with one
    floor per edge. `calibrate_placement` sets the floors on validation
    images of the seen classes. (`placement_evidence="similarity"` asks
    instead that one of the place's own prototypes match some part of the
    image at least as closely as its floor.)

    Args:
        num_classes: int `K` (the taxonomy's classes).
        input_shape: `(H, W, C)` of float images in [0, 1].
        taxonomy: a `Taxonomy`, its `to_config()` dict, a bare nested dict
            over `class_names`, or None for a flat taxonomy (every class
            under the root: ProtoPNet with a softmax over the classes).
        prototypes_per_child: prototypes of each (node, child) edge.
        l2_weight: weight of the squared last-layer weights to a prototype's own child.
        placement_threshold: the probability (at least 0.5) a place must reach to take an image (`placement`).
        placement_evidence: what a place's floor is compared with:
            `"confidence"` (default), the log-odds of `P(place | parent, x)`,
            or `"similarity"`, the best similarity of the place's own prototypes.
        placement_floors: per (node, child) edge, the evidence the child must
            reach for the model to vouch for it (None: no floor);
            `calibrate_placement` sets them.
        similarity_floors: the floors of files saved before
            `placement_evidence` existed: `placement_floors` with
            `placement_evidence="similarity"`.
        class_names: the `K` class names in label order (default: the taxonomy's).
        **kwargs: `ProtoPNet` arguments (backbone, prototype_channels,
            prototype_size, cluster/separation/l1 weights, object_threshold,
            ...) and `keras.Model` arguments.

    Example:
    >>> model = HierarchicalProtoPNet(
    ...     num_classes=3, input_shape=(28, 28, 1), taxonomy={"animals": ["cat", "dog"], "car": None},
    ...     class_names=["cat", "car", "dog"], backbone_stages=[[8], [16]], prototype_channels=16, prototypes_per_child=2)
    >>> out = model.explain(np.zeros((4, 28, 28, 1), "float32"))
    >>> out["place_probabilities"].shape, out["prototype_contributions"].shape
    ((4, 5), (4, 8, 3))
    """

    family = "hierarchical_protopnet"
    explanation_outputs = EXPLANATION_OUTPUTS

    def __init__(
        self,
        num_classes=None,
        input_shape=(28, 28, 1),
        taxonomy=None,
        prototypes_per_child=5,
        l2_weight=1e-4,
        placement_threshold=0.5,
        placement_evidence=None,
        placement_floors=None,
        similarity_floors=None,
        class_names=None,
        **kwargs,
    ):
        if similarity_floors is not None:  # a file from before placement_evidence: its floors are similarities
            if placement_floors is not None or placement_evidence not in (None, "similarity"):
                raise ValueError("similarity_floors are the floors of placement_evidence='similarity'; give placement_floors instead.")
            placement_evidence, placement_floors = "similarity", similarity_floors
        self.taxonomy, replaced = resolve_taxonomy(taxonomy, class_names, num_classes)
        if replaced:
            placement_floors = None  # calibrated on the other task's edges
        self.tables = PlaceTables(self.taxonomy, prototypes_per_child)
        self.l2_weight = float(l2_weight)
        self._placement_threshold = checked_threshold(placement_threshold)
        self._placement_evidence = checked_evidence(placement_evidence or "confidence")
        self._placement_floors = checked_floors(placement_floors, self.tables.num_edges, self._placement_evidence)
        if "prototypes_per_class" in kwargs:
            raise ValueError("HierarchicalProtoPNet takes prototypes_per_child (prototypes of each (node, child) edge), not prototypes_per_class.")
        kwargs.setdefault("name", "hierarchical_protopnet")
        super().__init__(
            num_classes=len(self.taxonomy.class_names),
            input_shape=input_shape,
            class_names=self.taxonomy.class_names,
            prototypes_per_class=prototypes_per_child,
            **kwargs,
        )
        self.prototypes_per_child = self.tables.prototypes_per_child

    @property
    def placement_threshold(self):
        """The probability a place must reach to take an image (`placement`); at least 0.5, so one child per node can."""
        return self._placement_threshold

    @placement_threshold.setter
    def placement_threshold(self, value):
        self._placement_threshold = checked_threshold(value)
        self.__dict__.pop("_compiled_explanation_graph", None)  # a traced graph holds the old value as a constant

    @property
    def placement_evidence(self):
        """What the placement floors are compared with: `"confidence"` (log-odds of `P(place | parent, x)`) or `"similarity"`.

        Setting it removes the floors (they were in the other evidence's
        units): call `calibrate_placement` again.
        """
        return self._placement_evidence

    @placement_evidence.setter
    def placement_evidence(self, value):
        self._placement_evidence = checked_evidence(value)
        self.placement_floors = None

    @property
    def placement_floors(self):
        """float `(E,)`: per (node, child) edge, the placement evidence the child must reach for the model to vouch for it."""
        return self._placement_floors.copy()

    @placement_floors.setter
    def placement_floors(self, values):
        self._placement_floors = checked_floors(values, self.tables.num_edges, self._placement_evidence)
        self.__dict__.pop("_compiled_explanation_graph", None)

    # -- ProtoPNet's hooks: prototypes grouped by edge, a last layer over the edges ------------
    def prototype_groups(self):
        """int `(P,)`: each prototype's child place (its edge's lower end); it is pushed onto images under it."""
        return self.tables.prototype_place.copy()

    def last_layer_units(self):
        return self.tables.num_edges

    def initial_last_layer(self):
        return self.tables.initial_last_layer()

    def prototype_owners(self, labels):
        """Bool `(n, P)`: the image's class lies under the prototype's child place."""
        return self.tables.class_owns[np.asarray(labels).reshape(-1).astype("int64")] > 0

    def weighted_costs(self, costs):
        return super().weighted_costs(costs) + self.l2_weight * costs["l2"]

    # -- forward -------------------------------------------------------------------------------
    def _constant(self, name):
        return ops.convert_to_tensor(getattr(self.tables, name), dtype=self.compute_dtype)

    def node_kernel(self):
        """The last layer `(P, E)` with each prototype's weights kept only toward its own node's children."""
        return self.last_layer.kernel * self._constant("node_block")

    def hierarchy(self, similarity):
        """`(edge scores (B, E), log P(child | node) per edge (B, E), log P(place) (B, V))` from the similarities."""
        member = self._constant("edge_membership")  # (E, N)
        scores = ops.matmul(similarity, self.node_kernel())
        node_max = ops.max(scores[:, :, None] + (member[None] - 1.0) * NODE_MASK, axis=1)  # (B, N)
        shifted = scores - ops.matmul(node_max, ops.transpose(member))
        log_norm = ops.log(ops.matmul(ops.exp(shifted), member))  # (B, N)
        log_conditional = shifted - ops.matmul(log_norm, ops.transpose(member))
        return scores, log_conditional, ops.matmul(log_conditional, self._constant("leads_to"))

    def logits_from_similarity(self, similarity):
        """`(B, K)` log P(class): the class places' log-probabilities from `hierarchy`."""
        return self.hierarchy(similarity)[2][:, self.tables.num_nodes :]

    def prototype_costs(self, min_distances, labels, cluster_distances=None):
        """The seed's per-node costs of a batch, summed over the nodes on each image's path and averaged over images.

        Returns:
            dict of scalars: `cluster` (distance to the nearest prototype of
            the image's child, at each node on its path), `separation` (to
            the nearest prototype of that node's other children; nodes with
            one child add none), `l1` (last-layer weights to a node's other
            children) and `l2` (squared weights to a prototype's own child).
        """
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        selected = ops.one_hot(labels, self.num_classes, dtype=min_distances.dtype)
        own = ops.matmul(selected, self._constant("class_owns"))  # (B, P)
        other = ops.matmul(selected, self._constant("class_passes")) - own
        membership = self._constant("prototype_membership")[None]  # (1, P, N)

        def per_node_nearest(distances, chosen):
            picked = chosen[:, :, None] * membership  # (B, P, N)
            ceiling = ops.max(distances) + 1.0
            nearest = ops.min(distances[:, :, None] + (1.0 - picked) * ceiling, axis=1)  # (B, N)
            return ops.sum(nearest * ops.max(picked, axis=1), axis=1)

        pulled = min_distances if cluster_distances is None else cluster_distances
        kernel = self.last_layer.kernel
        own_edge = self._constant("own_edge")
        return {
            "cluster": ops.mean(per_node_nearest(pulled, own)),
            "separation": ops.mean(per_node_nearest(min_distances, other)),
            "l1": ops.sum(ops.abs(kernel * (self._constant("node_block") - own_edge))),
            "l2": ops.sum(ops.square(kernel * own_edge)),
        }

    linear_readout = ZooModel.linear_readout  # log P(class) is not linear in the last layer; its edge scores are

    def readout_head(self, images, batch_size=256):
        """The last layer with the edge scores as its outputs and the taxonomy's per-node softmax as its loss (`readout.edge_readout`)."""
        return edge_readout(self, np.asarray(images, dtype="float32"), batch_size)

    def class_evidence_maps(self, images, targets, batch_size=32):
        """`(B, H, W)`: the `class_evidence_map` output for each image's target class.

        At every node on the target's path, each of the node's prototypes'
        score (its largest similarity) times its weight toward the path's
        child minus its mean weight over the node's children, at the latent
        patch where it was found, spread over that patch's receptive field
        (`glasszoo.layers.best_match_evidence`): it sums exactly to the path's
        scores minus each node's mean child score.
        """
        return self.attribution_map(images, targets, batch_size=batch_size)

    def part_relevance(self, images):
        """Each prototype's contribution to the predicted class's path score, `(B, P)` (0 for nodes off the path)."""
        return super().part_relevance(images)

    def edge_similarity(self, similarity):
        """`(B, E)`: the best similarity among each edge's prototypes (they are stored edge by edge)."""
        per_edge = ops.reshape(similarity, (-1, self.tables.num_edges, self.tables.prototypes_per_child))
        return ops.max(per_edge, axis=2)

    def confidence_log_odds(self, scores):
        """`(B, E)`: the log-odds of `P(child | node, x)` on each edge, from the edge scores of `hierarchy`.

        `log P - log(1 - P) = s_e - log sum_{f sibling of e} exp(s_f)`,
        computed from the scores, not from `1 - P` (which rounds to 0 in
        float32 once `P > 1 - 6e-8`; a confident node's log-odds reach 15
        and more), and clipped to `+-NODE_MASK`. An only child gets
        `NODE_MASK`: its node has nothing else to choose.
        """
        siblings = self._constant("sibling_edges")[None]  # (1, E, E)
        masked = scores[:, None, :] - (1.0 - siblings) * NODE_MASK  # row e: the scores of e's siblings
        peak = ops.max(masked, axis=2)
        others = ops.sum(ops.exp(masked - peak[:, :, None]) * siblings, axis=2)  # >= 1 where e has siblings
        log_odds = scores - peak - ops.log(ops.maximum(others, 1e-4))
        only_child = ops.ones_like(scores) * NODE_MASK
        return ops.clip(ops.where(self._constant("has_siblings")[None] > 0.5, log_odds, only_child), -NODE_MASK, NODE_MASK)

    def edge_evidence(self, similarity, scores):
        """`(B, E)`: what each edge's placement floor is compared with (`placement_evidence`)."""
        if self._placement_evidence == "confidence":
            return self.confidence_log_odds(scores)
        return self.edge_similarity(similarity)

    def place_support(self, evidence, place_probabilities):
        """`(B, V)` 0/1: the place reaches `placement_threshold` and its edge's `evidence` `(B, E)` its placement floor (root: 1)."""
        dtype = place_probabilities.dtype
        floors = ops.convert_to_tensor(self._placement_floors, dtype=dtype)
        edges = ops.cast(place_probabilities[:, 1:] >= self.placement_threshold, dtype) * ops.cast(ops.cast(evidence, dtype) >= floors, dtype)
        return ops.concatenate([ops.ones_like(place_probabilities[:, :1]), edges], axis=1)

    def supported_paths(self, support):
        """`(B, V)` 0/1: every edge from the root to the place is supported."""
        failures = ops.matmul(1.0 - support[:, 1:], self._constant("leads_to"))  # unsupported edges on each path
        return ops.cast(failures < 0.5, support.dtype)

    def explanation_graph(self, images, target=None):
        """Every output of `explanation_outputs`, forward ops only (exports).

        Args:
            images: tensor `(B, H, W, C)` in [0, 1].
            target: optional one-hot `(B, K)` of the class whose path the
                evidence maps follow; the predicted class when None.
        """
        tables = self.tables
        distances = self.prototype_layer(self.latent(images, training=False))
        similarity_maps = log_similarity(distances)
        similarity = log_similarity(ops.min(distances, axis=(1, 2)))
        scores, log_conditional, log_place = self.hierarchy(similarity)
        logits = log_place[:, tables.num_nodes :]
        first = ops.zeros_like(logits[:, :1])
        place_probabilities = ops.exp(log_place)
        kernel = self.node_kernel()  # (P, E)
        class_edges = ops.transpose(self._constant("class_edges"))  # (E, K)
        contributions = similarity[:, :, None] * ops.matmul(kernel, class_edges)[None]
        height, width = self.image_shape[:2]
        upsampled = ops.image.resize(similarity_maps, (height, width), interpolation="bilinear")
        membership = self._constant("prototype_membership")  # (P, N)
        children = ops.sum(self._constant("edge_membership"), axis=0)  # (N,)
        own_node_mean = ops.sum(ops.matmul(kernel, self._constant("edge_membership")) / children * membership, axis=1)
        centred = (kernel - own_node_mean[:, None]) * self._constant("node_block")
        class_weights = ops.matmul(class_selection(logits, target), ops.transpose(ops.matmul(centred, class_edges)))  # (B, P)
        placed = similarity_at_best_match(similarity_maps) * ops.cast(class_weights, similarity_maps.dtype)[:, None, None, :]
        node_maps = self.spread_over_input(ops.matmul(placed, ops.cast(membership, placed.dtype)))
        evidence = ops.cast(self.edge_evidence(similarity, scores), first.dtype)
        support = self.place_support(evidence, place_probabilities)
        depth = ops.convert_to_tensor(tables.depth.astype("float32"), dtype=place_probabilities.dtype)
        return {
            "logits": logits,
            "place_probabilities": place_probabilities,
            "conditional_probabilities": ops.concatenate([first + 1.0, ops.exp(log_conditional)], axis=1),
            "place_scores": ops.concatenate([first, scores], axis=1),
            "place_parent": first + ops.convert_to_tensor(tables.parent.astype("float32"), dtype=first.dtype),
            "place_support": support,
            "place_evidence": ops.concatenate([first, evidence], axis=1),
            "placement_floors": ops.concatenate([first, first + ops.convert_to_tensor(self._placement_floors[None], dtype=first.dtype)], axis=1),
            "placement": ops.cast(first_argmax(self.supported_paths(support) * (depth + 1.0 + 0.5 * place_probabilities), axis=1), logits.dtype),
            "prototype_similarity": similarity,
            "similarity_maps": similarity_maps,
            "upsampled_similarity_maps": upsampled,
            "prototype_contributions": contributions,
            "node_evidence_maps": node_maps,
            "class_evidence_map": ops.sum(node_maps, axis=-1),
        }

    # -- user API -------------------------------------------------------------------------------
    def self_checks(self, images, explanation):
        """Adds: the path scores are the contributions' sums, and the probabilities are the products along the paths."""
        checks = ZooModel.self_checks(self, images, explanation)
        tables = self.tables
        scores = explanation["place_scores"].astype("float64")
        conditional = explanation["conditional_probabilities"].astype("float64")
        places = explanation["place_probabilities"].astype("float64")
        path_scores = scores[:, 1:] @ tables.class_edges.T.astype("float64")
        checks["path score = sum of prototype contributions"] = float(np.max(np.abs(explanation["prototype_contributions"].astype("float64").sum(axis=1) - path_scores)))
        sibling_max = np.stack([scores[:, 1:][:, tables.edge_node == n].max(axis=1) for n in range(tables.num_nodes)], axis=1)
        exponentials = np.exp(scores[:, 1:] - sibling_max[:, tables.edge_node])
        softmax = exponentials / (exponentials @ tables.edge_membership.astype("float64"))[:, tables.edge_node]
        checks["conditional = softmax over siblings"] = float(np.max(np.abs(conditional[:, 1:] - softmax)))
        products = np.exp(np.log(np.maximum(conditional[:, 1:], 1e-300)) @ tables.leads_to.astype("float64"))
        checks["place probability = product along the path"] = float(np.max(np.abs(places - products)))
        checks["logits = log class probabilities"] = float(np.max(np.abs(np.exp(explanation["logits"].astype("float64")) - places[:, tables.num_nodes :])))
        return checks

    def place_evidence(self, images, batch_size=256):
        """`(place probabilities (n, V), edge evidence (n, E))`: what `placement` reads, without the maps.

        The same values as the `place_probabilities` output and each edge's
        placement evidence (`edge_evidence`: the log-odds of the parent's
        confidence, or the best similarity among the edge's prototypes),
        batch by batch in inference mode (memory of a forward pass, not of
        `explain`).
        """
        places, edges = [], []
        for start in range(0, len(images), int(batch_size)):
            distances = self.prototype_layer(self.latent(ops.convert_to_tensor(images[start : start + int(batch_size)]), training=False))
            similarity = log_similarity(ops.min(distances, axis=(1, 2)))
            scores, _, log_place = self.hierarchy(similarity)
            places.append(ops.convert_to_numpy(ops.exp(log_place)))
            edges.append(ops.convert_to_numpy(self.edge_evidence(similarity, scores)))
        return np.concatenate(places).astype("float64"), np.concatenate(edges).astype("float64")

    def placements(self, images, batch_size=256):
        """`(n,)` int: the `placement` output, from `place_evidence` with the same rule (`PlaceTables.placement`)."""
        places, edges = self.place_evidence(images, batch_size)
        return self.tables.placement(places, edges, self.placement_threshold, self._placement_floors)

    def calibrate_placement(self, images, labels, leaf_share=0.95, batch_size=256):
        """Sets the placement floors so that each edge keeps `leaf_share` of the correctly classified images through it.

        The rule for images of unseen classes, chosen on validation images of
        the seen ones only: a place is vouched for when its probability
        reaches `placement_threshold` and its evidence (`placement_evidence`:
        its parent node's confidence in it against its siblings, or how
        closely its own prototypes match some part of the image) is at least
        as strong as in all but `1 - leaf_share` of the validation images of
        its classes that the model classifies correctly. An image goes down
        the taxonomy while the next place is vouched for; one of an unseen
        class should stop above the leaves. `placement_threshold` is left
        as it is.

        Args:
            images: validation images of the seen classes, `(n, H, W, C)` in [0, 1].
            labels: their classes, `(n,)`.
            leaf_share: the share of correctly classified images each edge keeps.
            batch_size: images per forward pass.

        Returns:
            dict for the model card: the evidence, the floors, the rule, the
            images used and the share of them placed at their own class.

        Example:
        >>> record = model.calibrate_placement(x_val, y_val)  # doctest: +SKIP
        >>> model.placements(x_unseen)  # doctest: +SKIP
        """
        labels = np.asarray(labels).reshape(-1).astype("int64")
        places, edges = self.place_evidence(images, batch_size)
        tables = self.tables
        correct = places[:, tables.num_nodes :].argmax(axis=1) == labels
        if not np.any(correct):
            raise ValueError("calibrate_placement: the model classifies none of the images correctly.")
        floors = np.full(tables.num_edges, NO_FLOOR[self._placement_evidence])
        for edge in range(tables.num_edges):
            through = correct & (tables.class_edges[labels, edge] > 0)
            if np.any(through):
                floors[edge] = np.quantile(edges[through, edge], 1.0 - float(leaf_share))
        self.placement_floors = floors
        placed = tables.placement(places, edges, self.placement_threshold, self._placement_floors)
        evidence = {
            "confidence": "its parent node's confidence in it against its siblings (the log-odds of P(place | parent, x))",
            "similarity": "its best prototype's similarity to the image",
        }[self._placement_evidence]
        return {
            "placement_threshold": round(self.placement_threshold, 6),
            "placement_evidence": self._placement_evidence,
            "placement_floors": {f"{tables.places[tables.edge_node[e]]} -> {tables.places[e + 1]}": round(float(floors[e]), 4) for e in range(tables.num_edges)},
            "rule": (
                f"a place is vouched for when its probability reaches {self.placement_threshold:g} and {evidence} "
                f"reaches the {1.0 - float(leaf_share):.2f} quantile of that evidence on the correctly classified validation images "
                "of its classes; an image is placed at the deepest place whose whole path is vouched for"
            ),
            "validation_images": int(len(labels)),
            "validation_placed_at_their_class": round(float(np.mean(placed == tables.num_nodes + labels)), 4),
        }

    def calibrate(self, images, labels):
        """`glasszoo train`'s hook after training: `calibrate_placement` on the validation split."""
        return {"placement": self.calibrate_placement(images, labels)}

    def get_config(self):
        config = super().get_config()
        config.pop("prototypes_per_class", None)
        config.update(
            taxonomy=self.taxonomy.to_config(),
            prototypes_per_child=self.prototypes_per_child,
            l2_weight=self.l2_weight,
            placement_threshold=self.placement_threshold,
            placement_evidence=self._placement_evidence,
            placement_floors=[float(v) for v in self._placement_floors],
        )
        return config
