"""Post-hoc attributions for any Keras image classifier that returns logits.

Saliency, input x gradient, integrated gradients, Grad-CAM, CAM and
occlusion explain a trained model from the outside, by gradients or by
repeated forward passes, unlike the zoo's own explanations, which are part
of the forward graph. They run the Keras model eagerly and most need the
TensorFlow backend's autodiff, so they are **Keras-only**: none of them is
part of an ONNX export.

Every function takes `(model, images, targets=None, batch_size=32, ...)`:

- `model`: a Keras model mapping float images `(B, H, W, C)` to logits `(B, K)`.
- `images`: float32 `(B, H, W, C)` with values in [0, 1].
- `targets`: the class explained per image: None (the predicted class),
  one int for all images, or one int per image.
- `batch_size`: images (or perturbed images, or path points) per pass.

and returns a float32 NumPy array `(B, H, W)`: one map per image, methods
that resolve channels summing (or, for saliency, maximising) over them.
`grad_cam` and `cam` with `upsample=False` return the map at the
resolution of the feature map instead, `(B, h, w)`.

Grad-CAM and CAM need a convolutional feature map. They find it in

- a functional or Sequential Keras model: the last layer with a 4-D output
  (or the layer named by `layer=`); a sub-model returns it with the logits;
- any model defining `feature_maps_and_logits(images)`, the protocol for
  subclassed (zoo) models: given a tensor `(B, H, W, C)` it returns the
  tensors `(feature_map (B, h, w, c), logits (B, K))` of one forward pass,
  so that the gradient of the logits flows to the feature map.

Example:
>>> maps = integrated_gradients(model, images, steps=64)  # doctest: +SKIP
>>> maps.shape  # doctest: +SKIP
(40, 28, 28)
>>> attribute("grad_cam", model, images, targets=3).shape  # doctest: +SKIP
(40, 28, 28)
"""

import keras
import numpy as np
from glasszoo.zoo.inputs import validate_images


# -- inputs, targets and logits ----------------------------------------------------------
def _tf():
    """TensorFlow, after checking that Keras runs on it (the gradients are taken with its tape)."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"Post-hoc attributions need the TensorFlow backend for autodiff; Keras runs on {keras.backend.backend()!r}. "
            "Set KERAS_BACKEND=tensorflow before importing keras."
        )
    import tensorflow as tf

    return tf


def _expected_shape(model):
    """`(H, W, C)` the model takes, with None where it is not known."""
    shape = getattr(model, "image_shape", None)
    if shape is None:
        try:
            shape = model.input_shape[1:]
        except (AttributeError, TypeError):
            shape = None
    if shape is None or len(shape) != 3:
        return (None, None, None)
    return tuple(shape)


def _images(model, images):
    """Validated float32 `(B, H, W, C)` images in [0, 1], at least one."""
    images = validate_images(images, _expected_shape(model), allow_single=False)
    if len(images) == 0:
        raise ValueError("No images to explain: got an empty batch.")
    return images


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def _checked(model, images, batch_size):
    """Validated images and batch size, the first step of every method."""
    return _images(model, images), _positive_int(batch_size, "batch_size")


def _batches(count, batch_size):
    """`slice`s of at most `batch_size` covering `range(count)`."""
    return [slice(start, start + batch_size) for start in range(0, count, batch_size)]


def _call_logits(model, batch):
    """Logits `(b, K)` of a batch tensor, or a ValueError if the model returns anything else."""
    logits = model(batch, training=False)
    if not hasattr(logits, "shape") or len(logits.shape) != 2:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise ValueError(f"Post-hoc attributions explain a classifier returning logits (B, K); the model returned {shape}.")
    return logits


def predict_logits(model, images, batch_size=32):
    """Logits `(B, K)` of `images` as NumPy, in batches.

    Args:
        model: a Keras model returning logits.
        images: float32 `(B, H, W, C)` in [0, 1].
        batch_size: images per forward pass.

    Returns:
        float32 array `(B, K)`.
    """
    tf = _tf()
    images, batch_size = _checked(model, images, batch_size)
    parts = [_call_logits(model, tf.constant(images[part])).numpy() for part in _batches(len(images), batch_size)]
    return np.concatenate(parts).astype("float32")


def resolve_targets(model, images, targets=None, batch_size=32):
    """The explained class of each image, as int64 `(B,)`.

    Args:
        model: a Keras model returning logits.
        images: float32 `(B, H, W, C)`.
        targets: None (each image's predicted class), one int, or one int per image.
        batch_size: images per forward pass.

    Returns:
        int64 array `(B,)`; a ValueError names targets that are not class indices.

    Example:
    >>> resolve_targets(model, images[:3], targets=2)  # doctest: +SKIP
    array([2, 2, 2])
    """
    if targets is None:
        return predict_logits(model, images, batch_size).argmax(axis=-1).astype("int64")
    num_classes = predict_logits(model, images[:1], batch_size).shape[-1]
    chosen = np.asarray(targets)
    if chosen.dtype == np.bool_ or not np.issubdtype(chosen.dtype, np.integer):
        raise ValueError(f"targets must be None, an int or one int per image; got dtype {chosen.dtype}.")
    if chosen.ndim > 1 or (chosen.ndim == 1 and len(chosen) != len(images)):
        raise ValueError(f"targets must be one int or one int per image ({len(images)}); got shape {chosen.shape}.")
    chosen = np.broadcast_to(chosen, (len(images),)).astype("int64")
    if chosen.min() < 0 or chosen.max() >= num_classes:
        raise ValueError(f"targets must be class indices in [0, {num_classes}); got {np.unique(chosen).tolist()}.")
    return chosen


def _baseline(baseline, images):
    """`baseline` (a number, `(H, W, C)` or `(B, H, W, C)`) broadcast to the shape of `images`."""
    values = np.asarray(baseline, dtype="float32")
    try:
        return np.broadcast_to(values, images.shape)
    except ValueError:
        raise ValueError(
            f"baseline must be a number or an array broadcastable to the images {images.shape} "
            f"(e.g. (H, W, C)); got shape {values.shape}."
        ) from None


# -- gradient methods --------------------------------------------------------------------
def _input_gradients(model, images, targets, batch_size):
    """`d logit_t / d x` `(B, H, W, C)` of validated images and resolved targets."""
    tf = _tf()
    parts = []
    for part in _batches(len(images), batch_size):
        batch = tf.constant(images[part])
        with tf.GradientTape() as tape:
            tape.watch(batch)
            logits = _call_logits(model, batch)
            score = tf.reduce_sum(logits * tf.one_hot(targets[part], logits.shape[-1], dtype=logits.dtype))
        parts.append(tape.gradient(score, batch).numpy())
    return np.concatenate(parts).astype("float32")


def saliency(model, images, targets=None, batch_size=32):
    """Saliency map (Simonyan et al., 2014): `max_c |d logit_t / d x_c|` per pixel.

    Args:
        model: a Keras model returning logits.
        images: float32 `(B, H, W, C)` in [0, 1].
        targets: None (predicted class), one int, or one int per image.
        batch_size: images per gradient pass.

    Returns:
        float32 `(B, H, W)`, non-negative.

    Example:
    >>> saliency(model, images, targets=0).shape  # doctest: +SKIP
    (40, 28, 28)
    """
    images, batch_size = _checked(model, images, batch_size)
    targets = resolve_targets(model, images, targets, batch_size)
    return np.abs(_input_gradients(model, images, targets, batch_size)).max(axis=-1)


def input_x_gradient(model, images, targets=None, batch_size=32):
    """Input x gradient: `sum_c x_c * d logit_t / d x_c` per pixel.

    For a linear model without bias it is exactly each pixel's additive
    share of the logit.

    Args:
        model: a Keras model returning logits.
        images: float32 `(B, H, W, C)` in [0, 1].
        targets: None (predicted class), one int, or one int per image.
        batch_size: images per gradient pass.

    Returns:
        float32 `(B, H, W)`.

    Example:
    >>> input_x_gradient(model, images).sum(axis=(1, 2))  # doctest: +SKIP
    """
    images, batch_size = _checked(model, images, batch_size)
    targets = resolve_targets(model, images, targets, batch_size)
    return (images * _input_gradients(model, images, targets, batch_size)).sum(axis=-1)


def integrated_gradients(model, images, targets=None, batch_size=32, steps=50, baseline=0.0):
    """Integrated gradients (Sundararajan et al., 2017), trapezoid rule on the straight path.

    `IG(x) = (x - x0) * integral_0^1 d logit_t / d x (x0 + a (x - x0)) da`,
    with the integral taken by the trapezoid rule on `steps` equal intervals
    (`steps + 1` gradient evaluations per image, batched over images and
    path points). Completeness: `sum(IG) ≈ logit_t(x) - logit_t(x0)`, the
    closer the more steps; for a linear model it is exact at any `steps`.

    Args:
        model: a Keras model returning logits.
        images: float32 `(B, H, W, C)` in [0, 1].
        targets: None (predicted class), one int, or one int per image.
        batch_size: path points per gradient pass.
        steps: int, intervals of the path.
        baseline: `x0`: a number, or an array `(H, W, C)` or `(B, H, W, C)`.

    Returns:
        float32 `(B, H, W)`, summed over channels.

    Example:
    >>> maps = integrated_gradients(model, images, steps=64)  # doctest: +SKIP
    >>> maps.sum(axis=(1, 2))  # ≈ logit_t(images) - logit_t(0)  # doctest: +SKIP
    """
    images, batch_size = _checked(model, images, batch_size)
    steps = _positive_int(steps, "steps")
    targets = resolve_targets(model, images, targets, batch_size)
    baselines = _baseline(baseline, images)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype="float32")
    weights = np.full(steps + 1, 1.0 / steps, dtype="float32")
    weights[[0, -1]] *= 0.5
    group = max(1, batch_size // (steps + 1))  # images whose paths share one pass
    averaged = []
    for part in _batches(len(images), group):
        start, delta = baselines[part], images[part] - baselines[part]
        path = start[:, None] + alphas[None, :, None, None, None] * delta[:, None]  # (g, steps + 1, H, W, C)
        path_targets = np.repeat(targets[part], steps + 1)
        gradients = _input_gradients(model, path.reshape((-1,) + images.shape[1:]), path_targets, batch_size)
        gradients = gradients.reshape(path.shape)
        averaged.append(np.tensordot(weights, gradients, axes=([0], [1])))
    return ((images - baselines) * np.concatenate(averaged)).sum(axis=-1).astype("float32")


# -- feature maps for Grad-CAM and CAM ---------------------------------------------------
def _is_graph_model(model):
    """Whether `model` is a functional (or built Sequential) Keras model with symbolic inputs and outputs."""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def _map_layers(model):
    """Layers of a graph model whose output is 4-D, in graph order (the input layer excluded)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # a layer used at several places has no single output
            continue
        if len(shape) == 4:
            found.append(layer)
    return found


def _feature_layer(model, layer, method):
    """The layer whose output Grad-CAM uses: `layer` by name, else the last 4-D one."""
    candidates = _map_layers(model)
    if layer is None:
        if not candidates:
            raise ValueError(
                f"{method} needs a convolutional feature map, but model {model.name!r} has no layer with a 4-D "
                "(B, h, w, c) output."
            )
        return candidates[-1]
    names = [candidate.name for candidate in candidates]
    if layer not in names:
        raise ValueError(f"{method}: model {model.name!r} has no layer {layer!r} with a 4-D output; such layers: {names}.")
    return model.get_layer(layer)


def feature_maps_and_logits_fn(model, layer=None, method="grad_cam"):
    """A function `images -> (feature_map (b, h, w, c), logits (b, K))` of one forward pass.

    Args:
        model: a model defining `feature_maps_and_logits(images)` (used when
            `layer` is None), or a functional / Sequential Keras model.
        layer: name of the layer of a graph model whose output is the
            feature map; None for the last layer with a 4-D output.
        method: name used in error messages.

    Returns:
        callable on a batch tensor, returning two tensors.

    Example:
    >>> fmap, logits = feature_maps_and_logits_fn(model)(images[:2])  # doctest: +SKIP
    """
    if layer is None and callable(getattr(model, "feature_maps_and_logits", None)):
        return model.feature_maps_and_logits
    if not _is_graph_model(model):
        detail = "" if layer is None else f" (layer={layer!r} needs a functional or Sequential model)"
        raise ValueError(
            f"{method} needs a feature map: {type(model).__name__} is neither a functional/Sequential Keras model nor "
            f"defines feature_maps_and_logits(images) -> (feature_map (B, h, w, c), logits){detail}."
        )
    if len(model.outputs) != 1:
        raise ValueError(f"{method} explains a model with one output (the logits); this one has {len(model.outputs)}.")
    feature_layer = _feature_layer(model, layer, method)
    submodel = keras.Model(model.inputs, [feature_layer.output, model.outputs[0]], name=f"{model.name}_features_and_logits")

    def run(images):
        feature_map, logits = submodel(images, training=False)
        return feature_map, logits

    return run


def _upsample(maps, size):
    """Bilinear resize of maps `(B, h, w)` to `size = (H, W)`."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps.astype("float32")
    tf = _tf()
    return tf.image.resize(tf.constant(maps[..., None], "float32"), size, method="bilinear").numpy()[..., 0]


def grad_cam(model, images, targets=None, batch_size=32, layer=None, upsample=True):
    """Grad-CAM (Selvaraju et al., 2017) of a convolutional feature map.

    `alpha_k = mean_ij d logit_t / d A_kij` and `map = ReLU(sum_k alpha_k A_k)`,
    bilinearly upsampled to the input size. For a model whose logits are a
    Dense layer on global average pooling of `A`, `alpha_k = w_kt / (h w)`,
    so Grad-CAM is `ReLU(CAM) / (h w)`.

    Args:
        model: a functional / Sequential Keras model, or one defining
            `feature_maps_and_logits(images)` (see the module docstring).
        images: float32 `(B, H, W, C)` in [0, 1].
        targets: None (predicted class), one int, or one int per image.
        batch_size: images per gradient pass.
        layer: for graph models, the name of the layer whose output is `A`;
            None for the last layer with a 4-D output.
        upsample: resize to `(H, W)`; False returns the maps at the feature
            map's resolution `(B, h, w)`.

    Returns:
        float32 `(B, H, W)` (or `(B, h, w)`), non-negative.

    Example:
    >>> grad_cam(model, images, targets=3).shape  # doctest: +SKIP
    (40, 28, 28)
    """
    tf = _tf()
    images, batch_size = _checked(model, images, batch_size)
    features_and_logits = feature_maps_and_logits_fn(model, layer, "grad_cam")
    targets = resolve_targets(model, images, targets, batch_size)
    parts = []
    for part in _batches(len(images), batch_size):
        batch = tf.constant(images[part])
        with tf.GradientTape() as tape:
            feature_map, logits = features_and_logits(batch)
            if len(feature_map.shape) != 4:
                raise ValueError(f"grad_cam needs a feature map (B, h, w, c); got shape {tuple(feature_map.shape)}.")
            score = tf.reduce_sum(logits * tf.one_hot(targets[part], logits.shape[-1], dtype=logits.dtype))
        gradient = tape.gradient(score, feature_map)
        if gradient is None:
            raise ValueError("grad_cam: the logits do not depend on the feature map (no gradient flows to it).")
        channel_weights = tf.reduce_mean(gradient, axis=(1, 2), keepdims=True)
        parts.append(tf.nn.relu(tf.reduce_sum(channel_weights * feature_map, axis=-1)).numpy())
    maps = np.concatenate(parts)
    return _upsample(maps, images.shape[1:3]) if upsample else maps.astype("float32")


def _producer(model, tensor):
    """The layer of `model` whose output is `tensor`, or None."""
    for layer in model.layers:
        try:
            if layer.output is tensor:
                return layer
        except (AttributeError, ValueError):
            continue
    return None


def _gap_dense_structure(model):
    """`(feature_map_tensor, dense_layer)` of a graph model whose logits are `Dense(GAP(feature_map))`."""
    problem = (
        "cam needs a functional/Sequential Keras model whose logits are Dense(GlobalAveragePooling2D(feature map)) "
        "(Dropout in between is allowed); "
    )
    if not _is_graph_model(model):
        raise ValueError(problem + f"{type(model).__name__} is not a graph model. grad_cam works on any model with a feature map.")
    if len(model.outputs) != 1:
        raise ValueError(problem + f"this model has {len(model.outputs)} outputs.")
    dense = _producer(model, model.outputs[0])
    if not isinstance(dense, keras.layers.Dense):
        raise ValueError(problem + f"its output layer is {type(dense).__name__}, not Dense.")
    if getattr(dense.activation, "__name__", None) != "linear":
        raise ValueError(problem + f"its Dense layer {dense.name!r} applies {dense.activation.__name__}; CAM explains logits.")
    pooling = _producer(model, dense.input)
    while isinstance(pooling, keras.layers.Dropout):
        pooling = _producer(model, pooling.input)
    if not isinstance(pooling, keras.layers.GlobalAveragePooling2D) or pooling.keepdims or pooling.data_format != "channels_last":
        name = type(pooling).__name__ if pooling is not None else "no layer"
        raise ValueError(problem + f"its Dense layer {dense.name!r} is fed by {name}, not by GlobalAveragePooling2D (channels_last).")
    return pooling.input, dense


def cam(model, images, targets=None, batch_size=32, upsample=True):
    """Class activation map (Zhou et al., 2016) of a GAP -> Dense classifier.

    For `logits = Dense(GlobalAveragePooling2D(A))`, `CAM_t = sum_k w_kt A_k`,
    bilinearly upsampled to the input size; its mean over the feature map is
    `logit_t - b_t`. Signed (no ReLU).

    Args:
        model: a functional / Sequential Keras model ending in
            `GlobalAveragePooling2D -> [Dropout ->] Dense` (linear); any other
            model raises a ValueError naming what is missing.
        images: float32 `(B, H, W, C)` in [0, 1].
        targets: None (predicted class), one int, or one int per image.
        batch_size: images per forward pass.
        upsample: resize to `(H, W)`; False returns `(B, h, w)`.

    Returns:
        float32 `(B, H, W)` (or `(B, h, w)`).

    Example:
    >>> cam(model, images, targets=3).shape  # doctest: +SKIP
    (40, 28, 28)
    """
    tf = _tf()
    images, batch_size = _checked(model, images, batch_size)
    feature_tensor, dense = _gap_dense_structure(model)
    targets = resolve_targets(model, images, targets, batch_size)
    features = keras.Model(model.inputs, feature_tensor, name=f"{model.name}_cam_features")
    kernel = keras.ops.convert_to_numpy(dense.kernel)  # (c, K)
    parts = []
    for part in _batches(len(images), batch_size):
        feature_map = features(tf.constant(images[part]), training=False).numpy()
        parts.append(np.einsum("bhwc,cb->bhw", feature_map, kernel[:, targets[part]]))
    maps = np.concatenate(parts)
    return _upsample(maps, images.shape[1:3]) if upsample else maps.astype("float32")


# -- perturbation ------------------------------------------------------------------------
def _patch_corners(size, patch, stride):
    """Start offsets of patches along one axis; the last patch ends at the border, so every pixel is covered."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def occlusion(model, images, targets=None, batch_size=32, patch=4, stride=2, baseline=0.0):
    """Occlusion (Zeiler & Fergus, 2014): the drop of the target logit when a patch is hidden.

    Every `patch x patch` square on a grid of step `stride` (plus a last row
    and column touching the border) is replaced by the baseline, all
    channels at once; each pixel gets the mean drop
    `logit_t(x) - logit_t(x occluded)` over the patches covering it.
    Forward passes only, batched over (image, patch) pairs.

    Args:
        model: a Keras model returning logits.
        images: float32 `(B, H, W, C)` in [0, 1].
        targets: None (predicted class), one int, or one int per image.
        batch_size: occluded images per forward pass.
        patch: int, side of the square.
        stride: int, step between patches.
        baseline: the occluding value: a number, or an array `(H, W, C)` or
            `(B, H, W, C)` whose pixels replace those under the patch.

    Returns:
        float32 `(B, H, W)`; positive where hiding the pixel lowers the logit.

    Example:
    >>> occlusion(model, images, patch=4, stride=2).shape  # doctest: +SKIP
    (40, 28, 28)
    """
    tf = _tf()
    images, batch_size = _checked(model, images, batch_size)
    patch, stride = _positive_int(patch, "patch"), _positive_int(stride, "stride")
    height, width = images.shape[1:3]
    if patch > min(height, width):
        raise ValueError(f"patch ({patch}) must fit in the images ({height} x {width}).")
    targets = resolve_targets(model, images, targets, batch_size)
    baselines = _baseline(baseline, images)
    clean = predict_logits(model, images, batch_size)[np.arange(len(images)), targets]
    corners = [(top, left) for top in _patch_corners(height, patch, stride) for left in _patch_corners(width, patch, stride)]
    # identical (image, baseline) pairs explained for several targets (a localisation grid repeated once per cell)
    # share their occluded passes: each pass gives every class's logit
    members = {}
    for index in range(len(images)):
        members.setdefault(images[index].tobytes() + baselines[index].tobytes(), []).append(index)
    groups = list(members.values())
    jobs = [(group, top, left) for group in range(len(groups)) for top, left in corners]
    totals = np.zeros(images.shape[:3], "float64")
    counts = np.zeros(images.shape[1:3], "float64")
    for top, left in corners:
        counts[top : top + patch, left : left + patch] += 1
    for part in _batches(len(jobs), batch_size):
        chunk = jobs[part]
        owners = np.array([groups[group][0] for group, _, _ in chunk])
        occluded = images[owners]  # fancy indexing copies
        for row, (owner, (_, top, left)) in enumerate(zip(owners, chunk)):
            window = (slice(top, top + patch), slice(left, left + patch))
            occluded[(row,) + window] = baselines[(owner,) + window]
        logits = _call_logits(model, tf.constant(occluded)).numpy()
        for (group, top, left), row_logits in zip(chunk, logits):
            for index in groups[group]:
                totals[index, top : top + patch, left : left + patch] += clean[index] - row_logits[targets[index]]
    return (totals / counts).astype("float32")


# -- registry ----------------------------------------------------------------------------
METHODS = {
    "saliency": saliency,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "grad_cam": grad_cam,
    "cam": cam,
    "occlusion": occlusion,
}


def attribute(method, model, images, targets=None, **options):
    """Runs the post-hoc attribution `METHODS[method]`.

    Args:
        method: a key of `METHODS`.
        model: a Keras model returning logits.
        images: float32 `(B, H, W, C)` in [0, 1].
        targets: None (predicted class), one int, or one int per image.
        **options: keyword arguments of that method (`batch_size`, `steps`,
            `baseline`, `layer`, `patch`, `stride`, `upsample`).

    Returns:
        the method's maps, float32 `(B, H, W)`.

    Example:
    >>> attribute("integrated_gradients", model, images, steps=32).shape  # doctest: +SKIP
    (40, 28, 28)
    """
    if method not in METHODS:
        raise ValueError(f"Unknown attribution method {method!r}; known: {sorted(METHODS)}.")
    return METHODS[method](model, images, targets=targets, **options)
