"""ProtoPNet: "this looks like that" prototype networks (Chen et al. 2019, seed 001)."""

import threading

import keras
import numpy as np
from glasszoo.layers.best_match_evidence import receptive_field_upsample, similarity_at_best_match
from glasszoo.layers.prototype_layer import PrototypeLayer, log_similarity
from glasszoo.zoo.base import ZooModel, class_selection
from glasszoo.zoo.distributed import per_replica_share
from glasszoo.zoo.inputs import validate_images
from glasszoo.zoo.protopnet import object_focus
from glasszoo.zoo.protopnet import push as protopnet_push
from glasszoo.zoo.protopnet.backbones import (
    DEFAULT_SMALL_CNN_STAGES,
    SMALL_CNN,
    add_on_layers,
    applications_backbone,
    small_cnn,
)
from glasszoo.zoo.protopnet.optimizer import StagedAdam
from glasszoo.zoo.protopnet.schedule import DEFAULT_RATES
from glasszoo.zoo.receptive_field import receptive_field
from keras import ops

EXPLANATION_OUTPUTS = {
    "logits": "(B, K) class scores (softmax); logits = prototype_similarity @ last-layer weights = prototype_contributions summed over prototypes",
    "prototype_similarity": "(B, P) similarity log((d + 1) / (d + 1e-4)) of each prototype to its nearest latent patch (d: squared L2 distance)",
    "similarity_maps": "(B, h, w, P) similarity of each prototype to every latent patch",
    "upsampled_similarity_maps": "(B, H, W, P) similarity maps bilinearly upsampled to the input: where each prototype is found",
    "prototype_contributions": "(B, P, K) similarity times last-layer weight: what each prototype adds to each class logit",
    "class_evidence_map": "(B, H, W) where the evidence for the explained class lies: each prototype's similarity, weighted by the class's centred last-layer weight, at the latent patch where it was found, spread over that patch's receptive field; sums to the logit minus the mean logit",
}
PROVENANCE_FILE = "prototypes.npz"


def class_connection(prototype_class, num_classes, off_class=-0.5):
    """The reference's initial last layer `(P, K)`: 1 from a prototype to its class, `off_class` to the others."""
    identity = np.eye(num_classes, dtype="float32")[prototype_class]
    return identity + off_class * (1.0 - identity)


@keras.saving.register_keras_serializable(package="glasszoo")
class ProtoPNet(ZooModel):
    """Prototypical part network: a class is scored by how much image parts look like its prototypes.

    `images -> backbone -> add-on 1x1 convs (sigmoid) -> latent z (h, w, D)
    -> squared L2 distance of every latent patch to each of the P prototypes
    -> min over positions -> similarity log((d + 1) / (d + 1e-4)) -> last
    layer (P x K, no bias) -> logits`. Each class owns
    `prototypes_per_class` prototypes; the last layer starts at 1 for a
    prototype's own class and -0.5 for the others.

    The model's own training objective, used by `model.fit` after
    `compile()`: cross-entropy `+ cluster_weight * cluster cost
    - separation_weight * separation cost + l1_weight * |off-class
    last-layer weights|_1`. The cluster cost is the mean over the batch of
    the distance to the nearest prototype of the image's class, the
    separation cost the same for the other classes' prototypes. The
    reference's training stages (warm-up, joint, push, last layer) run
    inside one `fit` with `ProtoPNetSchedule`; `push_prototypes` does a push
    by hand and keeps the provenance.

    Args:
        num_classes: int `K`.
        input_shape: `(H, W, C)` of float images in [0, 1].
        backbone: `"small_cnn"` (trained from scratch) or a keras.applications
            name from `glasszoo.zoo.protopnet.backbones.APPLICATIONS`
            (`"vgg19"`, `"resnet50"`, `"densenet121"`, ...).
        backbone_stages: channel lists of the small CNN's stages.
        backbone_weights: `"imagenet"` to start a keras.applications backbone
            from ImageNet weights (downloaded by Keras). The config saved
            afterwards records None: the weights file then holds them.
        prototype_channels: `D`, channels of the add-on layers and prototypes.
        prototypes_per_class: prototypes of each class (`P = K x this`).
        prototype_size: height and width of a prototype in latent positions.
        cluster_weight, separation_weight, l1_weight: loss weights
            (reference: 0.8, 0.08, 1e-4).
        object_threshold: None (the reference: every latent patch is a
            candidate), or a pixel value above which a pixel is on the object
            (images with an empty background). Then the cluster cost pulls
            each prototype only towards patches on the object of its class,
            and the push projects it only onto such patches, so no prototype
            becomes a patch of blank background (`object_focus`).
        object_share: share of a patch's footprint that must be object for
            the patch to count as on the object.
        class_names: optional `K` names.
        distance_dtype: `"float32"` (default, fast, similarities within
            ~3e-4 of float64 next to pushed prototypes) or `"float64"`:
            how `PrototypeLayer` computes 1x1 prototypes' distances (see
            its docstring). Configs saved without it load with the default.

    Example:
    >>> model = ProtoPNet(num_classes=10, input_shape=(28, 28, 1), backbone_stages=[[8], [16]],
    ...                   prototype_channels=16, prototypes_per_class=2)
    >>> out = model.explain(np.zeros((3, 28, 28, 1), "float32"))
    >>> out["prototype_contributions"].shape
    (3, 20, 10)
    """

    family = "protopnet"
    explanation_outputs = EXPLANATION_OUTPUTS
    attribution_output = "class_evidence_map"
    part_outputs = {"maps": "upsampled_similarity_maps", "contributions": "prototype_contributions"}

    def __init__(
        self,
        num_classes=10,
        input_shape=(28, 28, 1),
        backbone=SMALL_CNN,
        backbone_stages=DEFAULT_SMALL_CNN_STAGES,
        backbone_weights=None,
        prototype_channels=128,
        prototypes_per_class=10,
        prototype_size=1,
        cluster_weight=0.8,
        separation_weight=0.08,
        l1_weight=1e-4,
        object_threshold=None,
        object_share=0.5,
        class_names=None,
        distance_dtype="float32",
        **kwargs,
    ):
        kwargs.setdefault("name", "protopnet")
        super().__init__(num_classes=num_classes, input_shape=input_shape, class_names=class_names, **kwargs)
        self.backbone_name = str(backbone)
        self.backbone_stages = [[int(c) for c in stage] for stage in backbone_stages]
        self.prototype_channels = int(prototype_channels)
        self.prototypes_per_class = int(prototypes_per_class)
        self.cluster_weight, self.separation_weight, self.l1_weight = float(cluster_weight), float(separation_weight), float(l1_weight)
        self.object_threshold = None if object_threshold is None else float(object_threshold)
        self.object_share = float(object_share)
        if self.num_classes < 2 or self.prototypes_per_class < 1:
            raise ValueError(f"Need at least 2 classes and 1 prototype per class; got {num_classes} and {prototypes_per_class}.")
        if self.backbone_name == SMALL_CNN:
            self.backbone = small_cnn(self.image_shape, self.backbone_stages)
        else:
            self.backbone = applications_backbone(self.backbone_name, self.image_shape, weights=backbone_weights)
        self.add_on = add_on_layers(self.prototype_channels)
        self.prototype_class = self.prototype_groups()
        self.prototype_layer = PrototypeLayer(len(self.prototype_class), int(prototype_size), distance_dtype=distance_dtype, name="prototype_layer")
        self.last_layer = keras.layers.Dense(self.last_layer_units(), use_bias=False, name="last_layer")
        self.prototype_provenance = None
        # True while the backbone is frozen (warm-up, last-layer stage): BatchNorm statistics stay fixed too,
        # so the latent patches a push recorded stay exactly where the provenance says
        self.frozen_feature_statistics = False
        self._loss_inputs = threading.local()  # per replica thread under tf.distribute
        self.build((None,) + self.image_shape)
        self.last_layer.kernel.assign(self.initial_last_layer())

    # -- which prototype serves which class (a subclass may group prototypes otherwise) --------------
    def prototype_groups(self):
        """int `(P,)`: the group each prototype belongs to, is pushed within and is counted by; here its class."""
        return np.repeat(np.arange(self.num_classes), self.prototypes_per_class)

    def last_layer_units(self):
        """Outputs of the bias-free last layer on the `P` similarities: here the `K` class logits."""
        return self.num_classes

    def initial_last_layer(self):
        """The last layer's starting kernel `(P, last_layer_units())`: the reference's class connection."""
        return class_connection(self.prototype_class, self.num_classes)

    def prototype_owners(self, labels):
        """Bool `(n, P)`: whether an image of each label may be a push source of each prototype (its class here)."""
        return np.asarray(labels).reshape(-1)[:, None] == self.prototype_class[None, :]

    def weighted_costs(self, costs):
        """The extra loss from `prototype_costs`' terms and the model's weights."""
        return self.cluster_weight * costs["cluster"] - self.separation_weight * costs["separation"] + self.l1_weight * costs["l1"]

    def build(self, input_shape):
        self.backbone.build(input_shape)
        shape = self.backbone.compute_output_shape(input_shape)
        self.add_on.build(shape)
        shape = self.add_on.compute_output_shape(shape)
        self.prototype_layer.build(shape)
        self.latent_shape = tuple(shape[1:])
        if self.object_threshold is not None:
            object_focus.check_divisible(self.image_shape, self.latent_shape[:2])
        self.last_layer.build((None, self.prototype_layer.num_prototypes))
        self.built = True

    # -- forward -------------------------------------------------------------------------
    def latent(self, images, training=False):
        """The add-on layers' output `(B, h, w, D)`, the space the prototypes live in."""
        return self.add_on(self.backbone(images, training=training), training=training)

    def call(self, images, training=None):
        features_training = False if self.frozen_feature_statistics else training
        distances = self.prototype_layer(self.latent(images, training=features_training))
        min_distances = ops.min(distances, axis=(1, 2))
        self._loss_inputs.min_distances = min_distances  # read by compute_loss in the same step
        self._loss_inputs.object_min_distances = self.object_min_distances(images, distances) if training else None
        return self.logits_from_similarity(log_similarity(min_distances))

    def logits_from_similarity(self, similarity):
        """`(B, K)` logits from the prototype similarities `(B, P)`: the last layer."""
        return self.last_layer(similarity)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Cross-entropy (the compiled loss) plus the cluster, separation and off-class L1 terms."""
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        min_distances = getattr(self._loss_inputs, "min_distances", None)
        object_min_distances = getattr(self._loss_inputs, "object_min_distances", None)
        # read once: a later call outside this step never sees a stale tensor
        self._loss_inputs.min_distances = self._loss_inputs.object_min_distances = None
        if y is None or min_distances is None or min_distances.shape[-1] != self.prototype_layer.num_prototypes:
            return loss
        costs = self.prototype_costs(min_distances, y, cluster_distances=object_min_distances)
        return loss + per_replica_share(self.weighted_costs(costs))

    def object_min_distances(self, images, distances):
        """`(B, P)` distance of each prototype to its nearest latent patch *on the object*, or None.

        None unless `object_threshold` is set. An image without any object
        patch falls back to all its patches.
        """
        if self.object_threshold is None:
            return None
        shares = object_focus.footprint_shares_tensor(images, self.object_threshold, self.latent_shape[:2], self.prototype_layer.prototype_size)
        on_object = ops.cast(shares >= self.object_share, distances.dtype)
        on_object = ops.maximum(on_object, 1.0 - ops.max(on_object, axis=(1, 2), keepdims=True))  # no object patch: all count
        ceiling = ops.max(distances) + 1.0
        return ops.min(distances + (1.0 - on_object)[..., None] * ceiling, axis=(1, 2))

    def object_patches(self, images):
        """Bool `(B, h', w')`: which latent patches of `images` lie on the object (None without `object_threshold`)."""
        if self.object_threshold is None:
            return None
        shares = object_focus.footprint_shares(images, self.object_threshold, self.latent_shape[:2], self.prototype_layer.prototype_size)
        return shares >= self.object_share

    def prototype_costs(self, min_distances, labels, cluster_distances=None):
        """The cluster and separation costs of a batch and the off-class L1 of the last layer.

        Args:
            min_distances: `(B, P)` distance of each prototype to its nearest latent patch.
            labels: int `(B,)` classes.
            cluster_distances: optional `(B, P)` distances the cluster cost
                uses instead (those to the nearest patch on the object), so
                that no prototype is pulled onto background.

        Returns:
            dict of scalars `cluster`, `separation`, `l1`.
        """
        identity = ops.convert_to_tensor(np.eye(self.num_classes, dtype="float32")[self.prototype_class])  # (P, K)
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        own = ops.matmul(ops.one_hot(labels, self.num_classes, dtype=min_distances.dtype), ops.transpose(identity))  # (B, P)
        ceiling = ops.max(min_distances) + 1.0  # masks the other group out of each minimum
        pulled = min_distances if cluster_distances is None else cluster_distances
        cluster = ops.mean(ops.min(pulled + (1.0 - own) * (ops.max(pulled) + 1.0), axis=-1))
        separation = ops.mean(ops.min(min_distances + own * ceiling, axis=-1))
        l1 = ops.sum(ops.abs(self.last_layer.kernel * (1.0 - identity)))
        return {"cluster": cluster, "separation": separation, "l1": l1}

    def latent_and_distances(self, images):
        """`(latent (B, h, w, D), distance maps (B, h', w', P))` as NumPy arrays, inference mode."""
        latent = self.latent(ops.convert_to_tensor(images), training=False)
        return ops.convert_to_numpy(latent), ops.convert_to_numpy(self.prototype_layer(latent))

    def similarities(self, images):
        """`(B, P)` each prototype's similarity `log((d + 1) / (d + eps))` to its nearest latent patch (inference mode)."""
        return log_similarity(ops.min(self.prototype_layer(self.latent(images, training=False)), axis=(1, 2)))

    def linear_readout(self, images):
        """The bias-free last layer on the prototype similarities (`similarities`)."""
        return {"features": self.similarities(images), "kernel": self.last_layer.kernel, "bias": None, "offset": None}

    def part_sources(self, train_images):
        """The pushed prototypes' source images: `prototypes.npz`'s `source_index`, checked against `train_images`.

        Raises:
            ValueError: the prototypes were not pushed, or `train_images` are
                not the images of the push (their indexed images differ).
        """
        if self.prototype_provenance is None:
            raise ValueError(f"{self.name}'s prototypes were not pushed: they have no source images.")
        indices = np.asarray(self.prototype_provenance["source_index"], dtype="int64")
        if indices.max() >= len(train_images) or not np.allclose(
            np.asarray(train_images)[indices], self.prototype_provenance["source_image"], atol=1e-6
        ):
            raise ValueError(f"The images given are not those {self.name}'s prototypes were pushed onto (prototypes.npz's source images differ).")
        return indices

    def part_relevance(self, images):
        """Each prototype's contribution to the predicted class's logit, `(B, P)`."""
        explained = self.explain(images)
        predicted = np.argmax(explained["logits"], axis=1)
        return explained["prototype_contributions"][np.arange(len(predicted)), :, predicted]

    def feature_maps_and_logits(self, images):
        """`(latent (B, h, w, D), logits)` in one inference pass: the maps Grad-CAM weighs."""
        latent = self.latent(images, training=False)
        min_distances = ops.min(self.prototype_layer(latent), axis=(1, 2))
        return latent, self.logits_from_similarity(log_similarity(min_distances))

    def class_evidence_maps(self, images, targets, batch_size=32):
        """`(B, H, W)`: where the evidence for each image's target class lies (the `class_evidence_map` output).

        Each prototype's score (its largest similarity) times its last-layer
        weight for the target class minus its mean weight over all classes,
        at the latent patch where it was found, spread over the pixels that
        patch sees (`glasszoo.layers.best_match_evidence`): the logits read each
        similarity map only at its maximum, so the map sums exactly to
        `logit_target - mean(logits)`, the part of the logit that the softmax
        sees. (Raw weights would add the same large negative term, -0.5 x the
        other classes' prototypes, to every class's map.) Where else a
        prototype would match is in `upsampled_similarity_maps`.
        """
        return self.attribution_map(images, targets, batch_size=batch_size)

    def explanation_graph(self, images, target=None):
        """Logits, similarities, similarity maps, contributions and the class evidence map, forward ops only (exports).

        Args:
            images: tensor `(B, H, W, C)` in [0, 1].
            target: optional one-hot `(B, K)` of the class whose evidence map
                is drawn; the predicted class when None.
        """
        distances = self.prototype_layer(self.latent(images, training=False))
        similarity_maps = log_similarity(distances)
        similarity = log_similarity(ops.min(distances, axis=(1, 2)))
        weights = self.last_layer.kernel  # (P, K)
        contributions = similarity[:, :, None] * weights[None, :, :]
        logits = ops.matmul(similarity, weights)
        height, width = self.image_shape[:2]
        upsampled = ops.image.resize(similarity_maps, (height, width), interpolation="bilinear")
        centred = weights - ops.mean(weights, axis=1, keepdims=True)  # (P, K)
        class_weights = ops.matmul(class_selection(logits, target), ops.transpose(centred))  # (B, P)
        placed = similarity_at_best_match(similarity_maps) * ops.cast(class_weights, similarity_maps.dtype)[:, None, None, :]
        evidence = self.spread_over_input(ops.sum(placed, axis=-1, keepdims=True))[..., 0]
        return {
            "logits": logits,
            "prototype_similarity": similarity,
            "similarity_maps": similarity_maps,
            "upsampled_similarity_maps": upsampled,
            "prototype_contributions": contributions,
            "class_evidence_map": evidence,
        }

    # -- user API ----------------------------------------------------------------------------
    def self_checks(self, images, explanation):
        """Adds: logits = contributions summed over prototypes = similarity @ last-layer weights."""
        checks = super().self_checks(images, explanation)
        kernel = ops.convert_to_numpy(self.last_layer.kernel).astype("float64")
        logits = explanation["logits"].astype("float64")
        checks["logits = sum of prototype contributions"] = float(np.max(np.abs(explanation["prototype_contributions"].astype("float64").sum(axis=1) - logits)))
        checks["logits = similarity @ W"] = float(np.max(np.abs(explanation["prototype_similarity"].astype("float64") @ kernel - logits)))
        return checks

    def push_prototypes(self, images, labels, batch_size=128, distinct=False):
        """Projects every prototype onto its nearest latent patch of its own class (see `protopnet_push`).

        `distinct=True`: no two prototypes of a class on the same patch. With
        `object_threshold` set, only patches on the object are candidates.
        """
        images = validate_images(images, self.image_shape, allow_single=False)
        return protopnet_push.push_prototypes(self, images, labels, batch_size, distinct=distinct)

    def family_metrics(self, images, batch_size=64):
        """With an object mask and a push: where the prototypes come from and fire (`object_focus.object_focus_report`)."""
        if self.object_threshold is None or self.prototype_provenance is None:
            return {}
        return {"object_focus": object_focus.object_focus_report(self, images, self.object_threshold, batch_size=batch_size)}

    def fit_schedule(self, push_images, push_labels, work_dir=None, **options):
        """A `ProtoPNetSchedule` for this model (used by `glasszoo train`; see its Args for `options`)."""
        from glasszoo.zoo.protopnet.schedule import ProtoPNetSchedule

        return ProtoPNetSchedule(push_images, push_labels, work_dir=work_dir, **options)

    def latent_receptive_field(self):
        """`ReceptiveField` of one latent position in input pixels."""
        return receptive_field(self.backbone, self.image_shape[0])

    def spread_over_input(self, patch_maps):
        """`(B, H, W, C)`: values per prototype-sized latent patch `(B, h, w, C)` spread over the input pixels that
        patch sees (`best_match_evidence.receptive_field_upsample`), keeping their sum."""
        field = self.latent_receptive_field().of_patch(self.prototype_layer.prototype_size)
        return receptive_field_upsample(patch_maps, self.image_shape[:2], start=field.start, jump=field.jump, size=field.size)

    def variable_groups(self):
        """The parts trained at different rates: backbone, add-on, prototypes, last layer."""
        return {
            "backbone": self.backbone.trainable_weights,
            "add_on": self.add_on.trainable_weights,
            "prototypes": self.prototype_layer.trainable_weights,
            "last_layer": self.last_layer.trainable_weights,
        }

    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """Keras `compile` with defaults: `StagedAdam` at the joint stage's rates, softmax cross-entropy, accuracy.

        The cluster, separation and L1 terms are always added (`compute_loss`).
        A `StagedAdam` passed in gets the model's variable groups.
        """
        if optimizer is None:
            optimizer = StagedAdam(1e-3, DEFAULT_RATES["joint"])
        if isinstance(optimizer, StagedAdam):
            optimizer.assign_variable_groups(self.variable_groups())
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True) if loss is None else loss
        super().compile(optimizer=optimizer, loss=loss, metrics=["accuracy"] if metrics is None else metrics, **kwargs)

    def transfer_weights_from(self, source, adapt_input_channels=False, report=None):
        """Copies every layer whose weights fit (`ZooModel.transfer_weights_from`); the provenance with the prototypes."""
        copied = super().transfer_weights_from(source, adapt_input_channels=adapt_input_channels, report=report)
        if any(path[0] == self.prototype_layer.name for path in copied):
            self.prototype_provenance = source.prototype_provenance
        return copied

    def training_schedule(self, images, labels, work_dir=None, **options):
        """The staged training of `glasszoo train` (warm-up, joint, push, last layer): `fit_schedule`."""
        return self.fit_schedule(images, labels, work_dir=work_dir, **options)

    # -- provenance files --------------------------------------------------------------------
    def save_provenance(self, path):
        """Writes the last push's provenance to an `.npz` file."""
        if self.prototype_provenance is None:
            raise ValueError("The prototypes have not been pushed: there is no provenance to save.")
        return protopnet_push.save_provenance(self.prototype_provenance, path)

    def load_provenance(self, path):
        """Reads a provenance `.npz` written by `save_provenance`."""
        self.prototype_provenance = protopnet_push.load_provenance(path, self.prototype_layer.num_prototypes)
        return self.prototype_provenance

    def preset_files(self, directory):
        """The provenance of the last push (`prototypes.npz`), when the prototypes were pushed."""
        if self.prototype_provenance is None:
            return {}
        import os

        return {PROVENANCE_FILE: self.save_provenance(os.path.join(directory, PROVENANCE_FILE))}

    def load_preset_files(self, folder, metadata):
        """Loads the preset's verified provenance file if it has one (called by `glasszoo.load`)."""
        from glasszoo.zoo.presets import verified_file_path

        path = verified_file_path(folder, metadata, PROVENANCE_FILE)
        if path is not None:
            self.load_provenance(path)

    def save_assets(self, directory):
        """`.keras` saving: the provenance travels with the model."""
        import os

        if self.prototype_provenance is not None:
            self.save_provenance(os.path.join(directory, PROVENANCE_FILE))

    def load_assets(self, directory):
        import os

        path = os.path.join(directory, PROVENANCE_FILE)
        if os.path.exists(path):
            self.load_provenance(path)

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=self.backbone_name,
            backbone_stages=[list(stage) for stage in self.backbone_stages],
            backbone_weights=None,
            prototype_channels=self.prototype_channels,
            prototypes_per_class=self.prototypes_per_class,
            prototype_size=self.prototype_layer.prototype_size,
            cluster_weight=self.cluster_weight,
            separation_weight=self.separation_weight,
            l1_weight=self.l1_weight,
            object_threshold=self.object_threshold,
            object_share=self.object_share,
            distance_dtype=self.prototype_layer.distance_dtype,
        )
        return config
