"""`ZooModel`: the contract every glasszoo family keeps, with its shared implementation.

A family subclasses `ZooModel` and supplies its layers, `call` and
`explanation_graph(images, target=None)` (forward ops only, so it exports to
ONNX), plus the class attributes `family` and `explanation_outputs`. The base
class gives every family the same user API:

- `explain(images, target=None, batch_size=32)`: validated input, batches,
  exactly the keys of `explanation_outputs` (the ONNX output names);
- `attribution_map(images, targets)`: the model's own pixel map `(B, H, W)`
  of the given classes, where the family has one (`attribution_output`);
- `self_checks(images, explanation)`: the largest error of each identity the
  explanation must satisfy (completeness, additivity, ...);
- `predict_classes`, `transfer_weights_from` (fine-tuning and resizing),
  `resized`, `save_preset`, `get_config` on top of `super().get_config()`
  (name, trainable and dtype policy kept), `class_names` handling;
- training hooks with no-op defaults, which `glasszoo train` calls:
  `fit_arguments`, `training_schedule`, `finish_training`, `preset_files`,
  `load_preset_files`, `family_metrics`.
"""

import pathlib
import shutil
import tempfile

import keras
import numpy as np
from glasszoo.layers.selection import first_max_one_hot
from glasszoo.zoo.inputs import validate_images
from keras import ops

BACKEND_MODULE_PREFIX = "keras.src.backend."


def class_selection(logits, target):
    """The `(B, K)` weighting of the classes to explain: `target` when given, else each row's predicted class."""
    return first_max_one_hot(logits) if target is None else ops.cast(target, logits.dtype)


def validate_targets(target, count, num_classes):
    """`target` as int64 class indices `(count,)`, or None; a ValueError naming the problem otherwise.

    Args:
        target: None (each image's predicted class), one class index for
            every image, or one index per image.
        count: number of images.
        num_classes: `K`.

    Example:
    >>> validate_targets(3, 2, 10)
    array([3, 3])
    """
    if target is None:
        return None
    values = np.asarray(target)
    if values.dtype == np.bool_ or not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise ValueError(f"target must be class indices (integers); got {values.dtype} {target!r}.")
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise ValueError(f"target must be whole class indices; got {values.tolist()!r}.")
    if values.ndim > 1:
        raise ValueError(f"target must be one class index or one per image; got shape {values.shape}.")
    if values.ndim == 1 and len(values) != count:
        raise ValueError(f"target has {len(values)} class indices for {count} image(s); give one index, or one per image.")
    values = np.broadcast_to(values.astype("int64"), (count,)).copy()
    if count and (values.min() < 0 or values.max() >= num_classes):
        bad = sorted(set(values[(values < 0) | (values >= num_classes)].tolist()))
        raise ValueError(f"target must be class indices in [0, {num_classes}); got {bad}.")
    return values


def portable_compile_config(config):
    """A compile config whose Keras objects are named by their public module, not a backend's private one.

    On the PyTorch backend, `keras.optimizers.Adam` serialises with the module
    `keras.src.backend.torch.optimizers.torch_adam`; loading that file on
    another backend would import PyTorch. Public names load on every backend.
    """
    if isinstance(config, dict):
        config = {key: portable_compile_config(value) for key, value in config.items()}
        module = config.get("module")
        if isinstance(module, str) and module.startswith(BACKEND_MODULE_PREFIX) and ".optimizers" in module:
            config["module"] = "keras.optimizers"
        return config
    if isinstance(config, list):
        return [portable_compile_config(value) for value in config]
    return config


def _own_variables(layer):
    return list(getattr(layer, "_trainable_variables", [])) + list(getattr(layer, "_non_trainable_variables", []))


def _child_layers(layer):
    return [child for child in layer._flatten_layers(include_self=False, recursive=False)]


def weight_units(model):
    """`{path: variables}`: the layers whose weights are copied together, keyed by their path of names.

    A unit is a layer without sub-layers (all its weights), or the own
    weights of a layer that also has sub-layers.
    """
    units = {}

    def walk(layer, path):
        children = _child_layers(layer)
        if not children:
            if layer.weights:
                units[path] = list(layer.weights)
            return
        own = _own_variables(layer)
        if own:
            units[path + ("<own>",)] = own
        for child in children:
            walk(child, path + (child.name,))

    for child in _child_layers(model):
        walk(child, (child.name,))
    own = _own_variables(model)
    if own:
        units[("<own>",)] = own
    return units


def adapt_channel_axis(value, shape, source_channels, target_channels):
    """A conv kernel `value` over `m x source_channels` input channels (axis -2) made one over `m x target_channels`.

    Returns None when `value` is not such a kernel (only axis -2 differs, by
    the ratio of the channel counts) or neither count is 1.

    Example:
    >>> adapt_channel_axis(np.ones((3, 3, 1, 8)), (3, 3, 3, 8), 1, 3)[0, 0, :, 0]
    array([0.33333333, 0.33333333, 0.33333333])
    """
    value = np.asarray(value)
    if value.ndim < 3 or tuple(shape[:-2]) != value.shape[:-2] or shape[-1] != value.shape[-1]:
        return None
    if value.shape[-2] % source_channels or shape[-2] % target_channels:
        return None
    blocks = value.shape[-2] // source_channels
    if shape[-2] // target_channels != blocks:
        return None
    split = value.reshape(value.shape[:-2] + (blocks, source_channels, value.shape[-1]))
    if source_channels == 1:
        split = np.repeat(split, target_channels, axis=-2) / target_channels
    elif target_channels == 1:
        split = split.sum(axis=-2, keepdims=True)
    else:
        return None
    return split.reshape(tuple(shape)).astype(value.dtype)


def refuse_mixed_precision(policy, what):
    """Raises a `ValueError` for a mixed-precision dtype policy: the zoo's explanations are exact identities in float32.

    The model's own policy and the global one (`keras.config.dtype_policy()`,
    which its layers are built with) are both checked.
    `mixed_float16` / `mixed_bfloat16` would compute the layers in 16 bits:
    completeness (the contributions summing to the logits) would hold only to
    about 1e-2, and the ONNX export and its parity checks assume float32.
    """
    name = getattr(policy, "name", str(policy))
    global_name = keras.config.dtype_policy().name  # the policy the model's layers are built with
    if not str(name).startswith("mixed") and global_name.startswith("mixed"):
        name = global_name
    if str(name).startswith("mixed"):
        raise ValueError(
            f"{what} runs in float32 only; the dtype policy is {name!r}. Mixed precision is not supported by glasszoo's "
            "models: their explanations are exact identities (completeness, additivity) that 16-bit arithmetic breaks, "
            "and the ONNX export is float32. Call keras.config.set_dtype_policy('float32') (or build the model with "
            "dtype='float32') and train in float32."
        )


class ZooModel(keras.Model):
    """Base class of the zoo's models: the family protocol and its shared implementation.

    Subclasses call `super().__init__(num_classes=..., input_shape=...,
    class_names=..., **kwargs)` first, create their layers, and define
    `call(images)` (logits) and `explanation_graph(images, target=None)`
    (a dict with the keys of `explanation_outputs`, forward ops only; `target`
    is None for each image's predicted class, or a `(B, K)` one-hot).

    Class attributes:
        family: the family name of the `Family` record.
        explanation_outputs: `{name: meaning}` of the outputs of `explain`
            (and of the ONNX export), `"logits"` first.
        output_activation: `"softmax"` or `"sigmoid"` (one per class).
        attribution_output: the output that is a `(B, H, W)` pixel map of the
            explained class (the model's own map for evaluation), or None.
        part_outputs: for a family that explains with parts (prototypes),
            `{"maps": (B, H, W, P) output of where each part is found,
            "contributions": (B, P, K) output of what each part adds to each
            class}`, or None; pages drawn from the ONNX outputs alone (the web
            export) show the strongest parts with it.
        self_check_tolerance: the largest error `self_checks` may report,
            relative to the size of the logits (at least 1).

    Args:
        num_classes: int `K`.
        input_shape: `(H, W, C)` of float images in [0, 1].
        class_names: optional `K` names (default "0", "1", ...).
        **kwargs: `keras.Model` arguments (`name`, `dtype`, `trainable`).

    Example:
    >>> model = glasszoo.load("coda_fashion_mnist")  # doctest: +SKIP
    >>> out = model.explain(images, target=3)  # doctest: +SKIP
    >>> sorted(out) == sorted(model.explanation_outputs)  # doctest: +SKIP
    True
    """

    family = None
    explanation_outputs = {"logits": "(B, K) class scores"}
    output_activation = "softmax"
    attribution_output = None
    part_outputs = None
    self_check_tolerance = 1e-4

    def __init__(self, num_classes=10, input_shape=(28, 28, 1), class_names=None, **kwargs):
        super().__init__(**kwargs)
        refuse_mixed_precision(self.dtype_policy, type(self).__name__)
        self.num_classes = int(num_classes)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1; got {num_classes!r}.")
        self.image_shape = tuple(int(s) for s in input_shape)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"input_shape must be (H, W, C) with positive sizes; got {input_shape!r}.")
        self.class_names = [str(n) for n in class_names] if class_names is not None else [str(k) for k in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for {self.num_classes} classes.")
        self.preset_metadata, self.preset_dir = {}, None

    # -- serialisation -------------------------------------------------------------------
    def get_config(self):
        """`super().get_config()` (name, trainable, dtype policy) with the task: classes, input shape, class names.

        Subclasses add their own constructor arguments to this dict.
        """
        config = super().get_config()
        config.update(num_classes=self.num_classes, input_shape=list(self.image_shape), class_names=list(self.class_names))
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def get_compile_config(self):
        """The compile config with public Keras names (a file saved on one backend compiles on the others)."""
        return portable_compile_config(super().get_compile_config())

    def compile_from_config(self, config):
        """Restores the compile arguments saved in a `.keras` file through the family's own `compile`."""
        config = keras.saving.deserialize_keras_object(portable_compile_config(config))
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Keras `compile` with the family's defaults: Adam, softmax cross-entropy on logits, accuracy."""
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True) if loss is None else loss
        super().compile(optimizer=optimizer, loss=loss, metrics=["accuracy"] if metrics is None else metrics, **kwargs)

    # -- explanations --------------------------------------------------------------------
    def explanation_graph(self, images, target=None):  # pragma: no cover - every family defines it
        raise NotImplementedError(f"{type(self).__name__} must define explanation_graph(images, target=None).")

    def explain(self, images, target=None, batch_size=32):
        """Logits and explanations of `images` as NumPy arrays: exactly the keys of `explanation_outputs`.

        Args:
            images: float array `(B, H, W, C)` (or one `(H, W, C)` image) in [0, 1].
            target: None (each image's predicted class), one class index for
                all images, or one index per image: the class that the
                class-specific outputs explain.
            batch_size: images per forward pass.

        Returns:
            dict of arrays with the batch axis first (see `explanation_outputs`).

        Raises:
            ValueError: bad images (see `validate_images`), an empty batch or bad targets.
        """
        images = validate_images(images, self.image_shape)
        if not len(images):
            raise ValueError("No images to explain: got an empty batch.")
        targets = validate_targets(target, len(images), self.num_classes)
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
        identity = np.eye(self.num_classes, dtype="float32")
        parts = []
        for start in range(0, len(images), batch_size):
            batch = ops.convert_to_tensor(images[start : start + batch_size])
            selection = None if targets is None else ops.convert_to_tensor(identity[targets[start : start + batch_size]])
            outputs = self.compiled_explanation_graph(batch, target=selection)
            parts.append({key: ops.convert_to_numpy(value) for key, value in outputs.items()})
        result = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        if sorted(result) != sorted(self.explanation_outputs):
            raise RuntimeError(
                f"{type(self).__name__}.explanation_graph returned {sorted(result)}, not the declared explanation outputs {sorted(self.explanation_outputs)}."
            )
        return {key: result[key] for key in self.explanation_outputs}

    @property
    def compiled_explanation_graph(self):
        """`explanation_graph`, compiled once per model where the backend compiles a Python function.

        On TensorFlow, a `tf.function` (as `predict` runs a compiled graph,
        and as the ONNX export traces the same function), so `explain` pays
        no eager per-op overhead; it is traced again only for a new batch
        shape or target mode, with relaxed shapes after the first. Other
        backends run `explanation_graph` as it is.

        Example:
        >>> outputs = model.compiled_explanation_graph(keras.ops.zeros((2,) + model.image_shape))  # doctest: +SKIP
        """
        if keras.backend.backend() != "tensorflow":
            return self.explanation_graph
        compiled = self.__dict__.get("_compiled_explanation_graph")
        if compiled is None:
            import tensorflow as tf

            compiled = tf.function(self.explanation_graph, reduce_retracing=True)
            object.__setattr__(self, "_compiled_explanation_graph", compiled)  # a function, not a tracked layer attribute
        return compiled

    @property
    def has_attribution_map(self):
        """Whether the family has its own pixel map (`attribution_map`)."""
        return self.attribution_output is not None

    def attribution_map(self, images, targets=None, batch_size=32):
        """The model's own pixel map `(B, H, W)` of the `targets` classes (None: the predicted ones).

        Raises:
            NotImplementedError: the family explains without a pixel map.
        """
        if not self.has_attribution_map:
            raise NotImplementedError(f"The {self.family} family has no pixel attribution map.")
        maps = self.explain(images, target=targets, batch_size=batch_size)[self.attribution_output]
        return maps.sum(axis=-1) if maps.ndim == 4 else maps

    def linear_readout(self, images):
        """The model's last layer as a linear map: `logits = offset + features @ kernel + bias` (forward ops).

        Influence functions (`glasszoo.explain.influence`) model the training
        of these `kernel` and `bias` weights with everything before them held
        fixed. A family whose logits are linear in its last layer's weights
        returns them here.

        Returns:
            dict with `"features"` `(B, F)`, `"kernel"` `(F, K)` (a weight of the
            model), `"bias"` `(K,)` or None, and `"offset"` `(B, K)` (the part
            of the logits the readout's weights do not touch) or None.

        Raises:
            NotImplementedError: the family's logits are not linear in a last layer.
        """
        raise NotImplementedError(
            f"The {self.family} family has no linear readout (its logits are not a linear layer's output), "
            "so influence functions on its last layer are not available."
        )

    def readout_head(self, images, batch_size=256):
        """The last layer on `images` as a function of its weights, for a family `linear_readout` cannot describe.

        Influence functions use it instead of `linear_readout`: an object
        with `features`, `offsets`, `parameters`, `loss`, `linear`,
        `expand(parameters)` and `logits(parameters)` (see
        `glasszoo.explain.readouts`). A non-linear last layer gives one
        (`linear = False`), and so does a linear one whose outputs are not the
        class logits (the loss, a `readout_losses.GroupedSoftmax`, then maps
        them to the logits with `class_logits`). The default, None, means: use
        `linear_readout`.
        """
        return None

    def part_sources(self, train_images):
        """`(P,)` index into `train_images` of the training image each part (prototype) comes from, or None.

        Influence analyses ask whether the training images a prediction's
        parts come from are also the ones that made it
        (`glasszoo.explain.influence.part_source_ranks`). Families without
        parts return None.
        """
        return None

    def part_relevance(self, images):
        """`(B, P)` how much each part is the model's reason for its prediction (higher: more), or None."""
        return None

    def self_checks(self, images, explanation):
        """`{identity: largest absolute error}` of the identities the explanation satisfies.

        The base check: `explain`'s logits equal the model's forward pass.
        Families add their completeness or additivity identities.

        Args:
            images: the images `explanation` was computed from.
            explanation: `self.explain(images)` (for the predicted classes).
        """
        images = validate_images(images, self.image_shape)
        logits = np.asarray(self.predict(images, batch_size=256, verbose=0), dtype="float64")
        return {"logits = forward pass": float(np.max(np.abs(logits - explanation["logits"])))}

    def self_check_errors(self, images, explanation=None):
        """The `self_checks` whose error exceeds `self_check_tolerance` x max(1, |logits|); empty when all hold."""
        explanation = self.explain(images) if explanation is None else explanation
        scale = max(1.0, float(np.max(np.abs(explanation["logits"]))))
        return {name: error for name, error in self.self_checks(images, explanation).items() if not error <= self.self_check_tolerance * scale}

    # -- Keras entry points, with the inputs checked as `explain` checks them --------------
    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras `fit`, with array inputs checked first (shape, dtype, range, labels) so errors name the problem.

        A `keras.utils.PyDataset` has its first batch checked; other data
        sources (tf.data, generators) are passed on unchecked.
        """
        self._check_inputs(x, y, "fit")
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            self._check_inputs(validation[0], validation[1], "fit's validation_data")
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """Keras `evaluate`, with array inputs checked first (see `fit`)."""
        self._check_inputs(x, y, "evaluate")
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """Keras `predict`, with array inputs checked first (shape, dtype, values in [0, 1])."""
        self._check_inputs(x, None, "predict")
        return super().predict(x, *args, **kwargs)

    def _check_inputs(self, x, y, what):
        images, labels = x, y
        if isinstance(x, keras.utils.PyDataset) and len(x):
            # a dataset that can show its first batch without drawing from its random state does so
            first = x.peek_batch() if hasattr(x, "peek_batch") else x[0]
            images, labels = (first[0], first[1] if len(first) > 1 else None) if isinstance(first, tuple) else (first, None)
            what = f"{what} (first batch of the {type(x).__name__})"
        if not isinstance(images, (np.ndarray, list)):
            return
        try:
            validate_images(images, self.image_shape, allow_single=False)
        except ValueError as error:
            raise ValueError(f"{type(self).__name__}.{what}: {error}") from None
        if labels is None or not isinstance(labels, (np.ndarray, list)):
            return
        labels = np.asarray(labels)
        if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
            raise ValueError(f"{type(self).__name__}.{what}: labels must be class indices (integers); got dtype {labels.dtype}.")
        count = len(np.asarray(images)) if not hasattr(images, "shape") else images.shape[0]
        if labels.shape[:1] != (count,):
            raise ValueError(f"{type(self).__name__}.{what}: {count} images but labels of shape {labels.shape}.")
        if labels.ndim == 2 and labels.shape[1] == self.num_classes:  # one-hot or soft targets
            return
        if labels.ndim > 2 or (labels.ndim == 2 and labels.shape[1] != 1):
            raise ValueError(
                f"{type(self).__name__}.{what}: labels must be class indices (B,) or one-hot (B, {self.num_classes}); got shape {labels.shape}."
            )
        if labels.size and (not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= self.num_classes):
            bad = sorted({float(v) for v in labels.ravel() if not (np.isfinite(v) and v == round(v) and 0 <= v < self.num_classes)})[:5]
            raise ValueError(f"{type(self).__name__}.{what}: labels must be class indices in [0, {self.num_classes}); got {bad}.")

    def predict_classes(self, images, batch_size=256):
        """Predicted class index per image (validated input)."""
        images = validate_images(images, self.image_shape)
        return np.argmax(self.predict(images, batch_size=batch_size, verbose=0), axis=-1)

    # -- weights -------------------------------------------------------------------------
    def transfer_weights_from(self, source, adapt_input_channels=False, report=None):
        """Copies every weight unit (a layer's weights) of `source` whose shapes fit; returns the paths copied.

        Layers are matched by their path of names; a layer whose weights
        differ in shape (a new class count, another channel count) keeps its
        fresh initialisation. Used for fine-tuning and `resized`.

        Args:
            source: a model of the same family.
            adapt_input_channels: also copy the layers that read the image,
                when only its channel count changed (grey to colour or back),
                as timm does for `in_chans`: a grey kernel is repeated over
                the colour channels and divided by their count (a grey image
                given as RGB then gives the same pre-activations); colour
                kernels are summed into one grey kernel. A kernel over an
                encoding of the image (e.g. `[x, 1 - x]`: 2C channels) is
                adapted per block of C.
            report: optional dict; filled with `"copied"`, `"adapted"` and
                `"fresh"` (paths of units left at their initialisation).

        Example:
        >>> colour = CoDA(**dict(grey.get_config(), input_shape=(64, 64, 3)))  # doctest: +SKIP
        >>> info = {}
        >>> colour.transfer_weights_from(grey, adapt_input_channels=True, report=info)  # doctest: +SKIP
        >>> info["adapted"]  # doctest: +SKIP
        [('dau_0',)]
        """
        theirs = weight_units(source)
        copied, adapted, fresh = [], [], []
        source_channels = source.image_shape[-1] if hasattr(source, "image_shape") else None
        for path, variables in weight_units(self).items():
            others = theirs.get(path)
            if others is None or len(others) != len(variables):
                fresh.append(path)
                continue
            if [tuple(v.shape) for v in variables] == [tuple(v.shape) for v in others]:
                for variable, other in zip(variables, others):
                    variable.assign(other)
                copied.append(path)
                continue
            values = None
            if adapt_input_channels and source_channels is not None:
                values = [
                    other if tuple(variable.shape) == tuple(other.shape)  # e.g. the bias of an adapted kernel
                    else adapt_channel_axis(ops.convert_to_numpy(other), tuple(variable.shape), source_channels, self.image_shape[-1])
                    for variable, other in zip(variables, others)
                ]
            if values is None or any(value is None for value in values):
                fresh.append(path)
                continue
            for variable, value in zip(variables, values):
                variable.assign(value)
            copied.append(path)
            adapted.append(path)
        if report is not None:
            report.update(copied=copied, adapted=adapted, fresh=fresh)
        return copied

    def resized(self, input_shape):
        """The same network (weights copied) for images of another size (localisation grids)."""
        config = dict(self.get_config(), input_shape=[int(s) for s in input_shape])
        config["name"] = f"{self.name}_{input_shape[0]}x{input_shape[1]}"
        clone = type(self).from_config(config)
        clone.transfer_weights_from(self)
        return clone

    # -- presets -------------------------------------------------------------------------
    def save_preset(self, folder, metadata=None):
        """Writes a preset folder (config.json, model.weights.h5, metadata.json with sha256, family files).

        Every command that takes a preset name also takes this folder.

        Args:
            folder: destination folder (created).
            metadata: optional model card fields (name, data, metrics, ...).

        Example:
        >>> model.save_preset("my_preset")  # doctest: +SKIP
        >>> glasszoo.load("my_preset").explain(images)  # doctest: +SKIP
        """
        from glasszoo.zoo.presets import save_inference_weights, write_preset

        folder = pathlib.Path(folder)
        card = {"name": folder.name, "family": self.family}
        card.update(self.preset_metadata or {})
        card.update(metadata or {})
        card.update(
            class_names=list(self.class_names),
            input={"shape": list(self.image_shape), "dtype": "float32", "range": [0.0, 1.0], "layout": "NHWC"},
            parameters=int(self.count_params()),
            explanation_outputs=dict(self.explanation_outputs),
        )
        for key in ("weights_file", "weights_sha256", "files"):
            card.pop(key, None)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=".preset-"))
        try:
            weights = save_inference_weights(self, staging / "model.weights.h5")
            extra = self.preset_files(staging)
            write_preset(folder, self.family, self.get_config(), weights, card, extra_files=extra)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    # -- training hooks (no-op defaults) -------------------------------------------------
    @classmethod
    def config_for_new_input(cls, config, old_shape, new_shape):
        """The architecture settings of a fine-tune on images of `new_shape` from a preset trained on `old_shape`.

        `glasszoo finetune` calls it when the image shape changes; a family
        whose loss terms scale with the image (PrototypeDL's reconstruction
        error, a sum over pixels) rebalances them here. The default keeps
        `config` as it is.

        Args:
            config: the preset's architecture settings (without the task's keys).
            old_shape: `(H, W, C)` the preset was trained on.
            new_shape: `(H, W, C)` of the new images.

        Example:
        >>> ZooModel.config_for_new_input({"filters": 8}, (28, 28, 1), (32, 32, 3))
        {'filters': 8}
        """
        return dict(config)

    def fit_arguments(self):
        """Extra keyword arguments `glasszoo train` passes to `fit`."""
        return {}

    def training_schedule(self, images, labels, work_dir=None, **options):
        """A callback that trains the family in stages (it sets `total_epochs`, rates and checkpoints), or None."""
        return None

    def calibrate(self, images, labels):
        """Settings chosen after training on the validation split (`glasszoo train` records the dict in the card), or None.

        Args:
            images, labels: the validation split (never the test split).
        """
        return None

    def finish_training(self, images):
        """Called by `glasszoo train` on the fit split once the best weights are loaded (INAM centres its head)."""

    def preset_files(self, directory):
        """`{file name: path}` of the files the model carries besides its weights, written into `directory`."""
        return {}

    def load_preset_files(self, folder, metadata):
        """Reads the files `preset_files` wrote from a preset folder (their sha256 checked by the caller's card)."""

    def family_metrics(self, images, batch_size=64):
        """`{name: value}` of the family's own explanation metrics on test images (evaluate)."""
        return {}


from glasszoo.zoo.families import register_keras_classes  # noqa: E402  (every family's classes, now that ZooModel exists)

register_keras_classes()
