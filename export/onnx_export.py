"""Export of a zoo model to ONNX with logits and every explanation output (TensorFlow backend)."""

import contextlib
import json
import logging
import os
import pathlib

DEFAULT_OPSET = 17
INPUT_NAME = "image"
BATCH_DIMENSION = "batch"  # the name of the dynamic first dimension of the input and of every output


def explanation_function(model):
    """A `tf.function` from images `(None, H, W, C)` to the model's explanation dict.

    The input is named `image` with a dynamic batch; the dict keys become the
    ONNX output names.
    """
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "ONNX export runs on the TensorFlow backend; set KERAS_BACKEND=tensorflow before importing keras "
            f"(current backend: {keras.backend.backend()}). Weights trained on any backend load there."
        )
    spec = tf.TensorSpec((None,) + tuple(model.image_shape), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def explain(image):
        return model.explanation_graph(image)

    return explain


@contextlib.contextmanager
def quiet_optimizer_failures():
    """Within the block, tf2onnx's "Failed to apply <optimizer>" warnings (with a traceback) are gathered, not printed.

    tf2onnx tries each graph optimizer and, when one raises (its transpose
    optimizer does on some graphs), logs a warning with a full
    traceback and goes on without that rewrite. The exported graph is still
    exact (the export tests compare every output with Keras), so the
    traceback only alarms the user; the optimizers' names are yielded.

    Example:
    >>> with quiet_optimizer_failures() as skipped:  # doctest: +SKIP
    ...     proto, _ = tf2onnx.convert.from_function(function, input_signature=signature)
    >>> skipped  # doctest: +SKIP
    ['optimize_transpose']
    """
    skipped = []

    class _Gather(logging.Filter):
        def filter(self, record):
            message = record.getMessage()
            if message.startswith("Failed to apply ") and record.exc_info:
                skipped.append(message[len("Failed to apply "):])
                return False
            return True

    gather = _Gather()
    logger = logging.getLogger("tf2onnx.optimizer")
    logger.addFilter(gather)
    try:
        yield skipped
    finally:
        logger.removeFilter(gather)


def name_batch_dimension(graph, name=BATCH_DIMENSION):
    """Names the first, dynamic dimension of the graph's inputs and outputs `name` (tf2onnx leaves `unk__N`).

    One name says that every output has as many rows as the input has
    images, and runtimes that show shapes (Netron, onnxruntime's
    `get_inputs()`) show `batch` instead of a generated name.

    Args:
        graph: an `onnx.GraphProto`, changed in place.
        name: the dimension's name.

    Example:
    >>> name_batch_dimension(proto.graph)  # doctest: +SKIP
    >>> proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # doctest: +SKIP
    'batch'
    """
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_param = name


def to_onnx(model, path, opset=None, model_name=None, sidecar=True, precision="fp32", calibration=None, check_drift=True):
    """Writes `model` as an ONNX graph whose outputs are `logits` and its explanations.

    The graph takes `image`: float32 `(batch, H, W, C)` in [0, 1], dynamic
    batch, and returns the same named tensors as `model.explain`. Metadata:
    model name, family, class names, input shape and range, output
    descriptions, glasszoo version.

    Args:
        model: a glasszoo model (has `explanation_graph` and `image_shape`).
        path: output `.onnx` file.
        opset: ONNX opset (17 if None).
        model_name: name recorded in the metadata (the preset name if known).
        sidecar: also write the metadata beside the file as JSON (`write_sidecar`).
        precision: `"fp32"`, `"fp16"` (float16 arithmetic) or `"int8"` (int8
            weights, dynamic quantization); the input and the outputs stay
            float32 (see `glasszoo.export.precision`). Recorded in the
            metadata as `precision`.
        calibration: optional float32 images `(N, H, W, C)` in [0, 1] for an
            fp16 export: nodes whose values exceed 4096 on them (or on black,
            white, checkerboard and noise images) stay float32; for an int8
            export, the images its answers are checked on. Default: the
            shipped samples of the preset's dataset, when they fit.
        check_drift: for an int8 export, refuse it (`PrecisionLossError`,
            no file written) when its logits on the calibration images, run
            as one batch, move too far from the float32 export's
            (`glasszoo.export.precision.check_int8_answers`).

    Returns:
        `pathlib.Path` of the written file. Its metadata is also written
        beside it as JSON (`sidecar_path`), for JavaScript runtimes.

    Example:
    >>> model = glasszoo.load(preset_name)  # doctest: +SKIP
    >>> to_onnx(model, "model.onnx")  # doctest: +SKIP
    >>> sorted(OnnxModel("model.onnx")(images)) == sorted(model.explanation_outputs)  # doctest: +SKIP
    """
    from glasszoo.export.precision import (
        calibration_images,
        check_int8_answers,
        check_precision,
        full_precision_layer_names,
        full_precision_nodes,
        overflowing_nodes,
        reduce_precision,
    )

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnx
    import tf2onnx

    from glasszoo import __version__
    from glasszoo.export.portable_graph import make_portable

    check_precision(precision)
    function = explanation_function(model)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_optimizer_failures() as skipped:
        proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=opset or DEFAULT_OPSET)
    if skipped:
        logging.getLogger(__name__).info("tf2onnx skipped its optimizers %s on this graph (the graph is still exact)", skipped)
    name_batch_dimension(proto.graph)
    make_portable(proto)  # the same values in OpenVINO and the ONNX reference evaluator as in onnxruntime
    metadata = getattr(model, "preset_metadata", {}) or {}
    answers_checked = None
    if precision != "fp32":
        keep = full_precision_nodes(proto.graph, full_precision_layer_names(model))
        images = calibration_images(tuple(model.image_shape), _shipped_samples(model) if calibration is None else calibration)
        if precision == "fp16":
            keep = sorted(set(keep) | set(overflowing_nodes(proto, images)))
        reduced = reduce_precision(proto, precision, keep_nodes=keep)
        if precision == "int8" and check_drift:
            answers_checked = check_int8_answers(proto, reduced, images, model_name=model_name or metadata.get("name") or model.name)
        proto = reduced
    outputs = getattr(model, "explanation_outputs", {})
    properties = {
        "model_name": model_name or metadata.get("name") or model.name,
        "family": getattr(model, "family", type(model).__name__),
        "class_names": json.dumps(list(getattr(model, "class_names", []))),
        "input_name": INPUT_NAME,
        "input_shape": json.dumps([BATCH_DIMENSION] + list(model.image_shape)),
        "input_range": "[0, 1]",
        "input_layout": "NHWC float32",
        "outputs": json.dumps(outputs),
        "output_activation": getattr(model, "output_activation", "softmax"),
        "glasszoo_version": __version__,
        "precision": precision,
    }
    if answers_checked:
        properties["precision_check"] = json.dumps(answers_checked)
    if "metrics" in metadata:
        properties["metrics"] = json.dumps(metadata["metrics"])
    if "fine_tuned_from" in metadata:
        properties["fine_tuned_from"] = metadata["fine_tuned_from"]
    for key, value in properties.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    proto.producer_name = "glasszoo"
    proto.producer_version = __version__
    produced = [o.name for o in proto.graph.output]
    if outputs and sorted(produced) != sorted(outputs):
        raise RuntimeError(f"ONNX outputs {produced} differ from the model's explanation outputs {sorted(outputs)}.")
    from glasszoo.zoo.atomic import atomic_path

    with atomic_path(path) as temporary:  # a kill or a full disk leaves the previous export in place
        onnx.save(proto, str(temporary))
    if sidecar:
        write_sidecar(path, properties)
    return path


def sidecar_path(path):
    """The metadata file written beside an export: `model.onnx` -> `model.onnx.json`."""
    path = pathlib.Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path, properties):
    """Writes the export's metadata beside it as JSON, for runtimes that cannot read ONNX metadata (JavaScript).

    onnxruntime-node and onnxruntime-web expose no `metadata_props`, so a
    page or a Node service reads the class names, the input range and the
    output descriptions from this file instead. Values that the ONNX
    metadata holds as JSON strings are decoded; `onnx_sha256` is the digest
    of the export, so a reader can tell a sidecar from another export.

    Args:
        path: the written `.onnx` file.
        properties: `{key: string}` as stored in the ONNX metadata.

    Example:
    >>> write_sidecar("model.onnx", {"family": family, "class_names": '["a", "b"]'})  # doctest: +SKIP
    PosixPath('model.onnx.json')
    """
    import hashlib

    from glasszoo.zoo.atomic import atomic_write_text

    decoded = {}
    for key, value in properties.items():
        try:
            decoded[key] = json.loads(value) if str(value)[:1] in "[{" else value
        except ValueError:
            decoded[key] = value
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    decoded["onnx_file"] = pathlib.Path(path).name
    decoded["onnx_sha256"] = digest.hexdigest()
    return atomic_write_text(sidecar_path(path), json.dumps(decoded, indent=2))


def _shipped_samples(model):
    """The shipped sample images of the model's dataset when they have its input shape, else None."""
    from glasszoo.data.samples import load_samples

    dataset = ((getattr(model, "preset_metadata", {}) or {}).get("data") or {}).get("dataset") or "fashion_mnist"
    try:
        images = load_samples(dataset if isinstance(dataset, str) else "fashion_mnist")[0]
    except (FileNotFoundError, OSError, KeyError, ValueError):
        return None
    return images if tuple(images.shape[1:]) == tuple(model.image_shape) else None
