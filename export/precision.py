"""Reduced-precision exports: float16 arithmetic, or int8 weights with dynamic quantization.

Both keep the graph's interface: a float32 `image` in, float32 outputs
with the same names and shapes out, so a service or a page runs a reduced
export exactly as the float32 one.

- `fp16`: weights and arithmetic in float16 (onnxruntime's converter,
  `onnxruntime.transformers.float16`). A few operations stay in float32:
  those the converter always keeps, every node that reads or writes a
  value beyond 4096 on calibration images (`overflowing_nodes`: sums of
  squares can pass float16's 65504), and every node of a layer that
  declares `export_in_full_precision = True` (a computation that cancels,
  such as squared distances next to a stored point) or that is
  computed from its outputs (`full_precision_nodes`).
- `int8`: weights of matrix products and convolutions (`QUANTIZED_OPERATORS`) stored as int8,
  activations quantized per batch at run time
  (`onnxruntime.quantization.quantize_dynamic`); the same layers are kept
  in float32. The export is refused (`check_int8_answers`) when its logits
  move too far from the float32 export's on calibration images served as
  one batch.

A reduced export changes the numbers: `output_drift` measures how far
each output moves from the float32 export (`bench/precision_drift.py`
reports it for every preset).
"""

import logging
import pathlib

import numpy as np
import re
import tempfile

PRECISIONS = ("fp32", "fp16", "int8")

# operators whose weights an int8 export quantizes: their integer forms (ConvInteger, MatMulInteger) are standard
# ONNX; other operators would get weight-only DequantizeLinear nodes, which the ONNX reference evaluator lacks at opset 17
QUANTIZED_OPERATORS = ["Conv", "MatMul", "Gemm"]


def check_precision(precision):
    """Returns `precision` if it is one of `PRECISIONS`, else raises a `ValueError` that lists them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    return precision


def full_precision_layer_names(model):
    """Names of the layers of `model` (at any depth) whose class sets `export_in_full_precision = True`.

    Args:
        model: a Keras model.

    Example:
    >>> full_precision_layer_names(glasszoo.load(preset_name))  # doctest: +SKIP
    ['prototype_layer']
    """
    return sorted({layer.name for layer in model._flatten_layers() if getattr(layer, "export_in_full_precision", False)})


def full_precision_nodes(graph, layer_names):
    """Names of the nodes of an exported graph that a reduced export keeps in float32.

    The nodes of the given Keras layers, and every node computed from
    their outputs: a precise result is of no use if the next operation
    rounds it to float16 (a similarity `log((d + 1) / (d + 1e-4))` of a
    distance `d` near 0, computed after the distance layer). tf2onnx
    names a node after the TensorFlow name scope it came from; a layer's
    scope is its name, with `_<n>` appended when the layer was traced more
    than once (`prototype_layer_1/MatMul`).

    Args:
        graph: an `onnx.GraphProto`.
        layer_names: iterable of layer names.

    Example:
    >>> full_precision_nodes(proto.graph, ["prototype_layer"])[:1]  # doctest: +SKIP
    ['Log']
    """
    patterns = [re.compile(re.escape(name) + r"(_\d+)?/") for name in layer_names]
    named = {node.name for node in graph.node if any(pattern.match(node.name) for pattern in patterns)}
    producer = {output: node.name for node in graph.node for output in node.output}
    readers = {}
    for node in graph.node:
        for name in node.input:
            if name in producer:
                readers.setdefault(producer[name], set()).add(node.name)
    kept, stack = set(named), list(named)
    while stack:
        for reader in readers.get(stack.pop(), ()):
            if reader not in kept:
                kept.add(reader)
                stack.append(reader)
    return sorted(kept)


# a float16 export keeps in float32 every node that reads or writes a value beyond this on the calibration images:
# 16 times below float16's largest finite value (65504), a margin for images unlike them
FLOAT16_SAFE_MAGNITUDE = 2.0**12


def calibration_images(image_shape, samples=None, seed=0):
    """Images that probe a float16 export's value ranges: `samples`, black, white, a checkerboard and noise.

    Inputs lie in [0, 1]; a white image maximises every sum of squares
    (patch norms), a checkerboard every high-frequency response.

    Args:
        image_shape: `(H, W, C)`.
        samples: optional float32 `(N, H, W, C)` real images in [0, 1].
        seed: of the noise.

    Returns:
        float32 `(N + 6, H, W, C)`.

    Example:
    >>> calibration_images((4, 4, 1)).shape
    (6, 4, 4, 1)
    """
    height, width, channels = image_shape
    rows, cols = np.indices((height, width))
    checker = ((rows + cols) % 2).astype("float32")[..., None] * np.ones(channels, "float32")
    noise = np.random.default_rng(seed).uniform(size=(3, height, width, channels)).astype("float32")
    synthetic = np.concatenate([np.zeros((1,) + tuple(image_shape), "float32"), np.ones((1,) + tuple(image_shape), "float32"), checker[None], noise])
    if samples is None or not len(samples):
        return synthetic
    return np.concatenate([np.asarray(samples, "float32"), synthetic])


def overflowing_nodes(proto, images, limit=FLOAT16_SAFE_MAGNITUDE):
    """Names of the nodes of a float32 graph that read or write a float value beyond `limit` on `images`.

    Every float32 tensor of the graph is made an output and the graph run in
    onnxruntime once on `images`.

    Args:
        proto: the float32 `onnx.ModelProto` (not changed).
        images: float32 `(N, H, W, C)` for the graph's input.
        limit: largest magnitude a float16 node may see.

    Example:
    >>> overflowing_nodes(onnx.load("model.onnx"), calibration_images((28, 28, 1)))[:1]  # doctest: +SKIP
    ['Square_7']
    """
    import onnx
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    inferred = onnx.shape_inference.infer_shapes(probe).graph
    float_values = [value.name for value in inferred.value_info if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    known = {value.name for value in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in float_values if name not in known)
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_outputs()]
    magnitude = {name: float(np.max(np.abs(value))) if np.size(value) else 0.0 for name, value in zip(names, session.run(None, {probe.graph.input[0].name: images}))}
    magnitude[probe.graph.input[0].name] = float(np.max(np.abs(images)))
    return sorted(node.name for node in proto.graph.node if any(magnitude.get(name, 0.0) > limit for name in list(node.input) + list(node.output)))


# an int8 export is refused when, on its calibration images run as one batch, its logits lie further than this
# (relative L2) from the float32 export's, or its top-1 answers agree on fewer than this share of the images
INT8_LOGIT_DRIFT_LIMIT = 0.25
INT8_AGREEMENT_LIMIT = 0.9


class PrecisionLossError(ValueError):
    """A reduced-precision export whose answers differ too much from the float32 export's to be served."""


def check_int8_answers(reference, quantized, images, model_name="the model", max_drift=None, min_agreement=None):
    """Runs a float32 graph and its int8 export on `images` as one batch; raises if the int8 answers moved.

    Dynamic quantization sets each activation's int8 range from the whole
    tensor at run time, batch included, so an image's int8 outputs depend on
    the images served beside it: one image with large activations coarsens
    every other image's. A model whose logits are small differences of large
    sums (a dynamic linear network at a high temperature) can be exact one
    image at a time and wrong in a batch. The calibration batch
    (`calibration_images`: real samples with a white, a black, a
    checkerboard and noise images) is such a batch.

    Args:
        reference: the float32 `onnx.ModelProto`.
        quantized: its int8 `onnx.ModelProto`.
        images: float32 `(N, H, W, C)` in [0, 1], run as one batch.
        model_name: named in the error.
        max_drift: largest relative L2 distance of the int8 logits from the
            float32 ones (`INT8_LOGIT_DRIFT_LIMIT` if None).
        min_agreement: smallest share of images whose top-1 class is
            unchanged (`INT8_AGREEMENT_LIMIT` if None).

    Returns:
        `{"images", "logit_drift", "top1_agreement"}` when within the limits.

    Raises:
        PrecisionLossError: naming the model, the figures and the precisions to use instead.

    Example:
    >>> check_int8_answers(proto, reduce_precision(proto, "int8"), calibration_images((28, 28, 1), samples))  # doctest: +SKIP
    {'images': 46, 'logit_drift': 0.05, 'top1_agreement': 1.0}
    """
    import onnxruntime

    max_drift = INT8_LOGIT_DRIFT_LIMIT if max_drift is None else max_drift
    min_agreement = INT8_AGREEMENT_LIMIT if min_agreement is None else min_agreement
    images = np.asarray(images, "float32")
    logits = []
    for proto in (reference, quantized):
        session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        logits.append(np.asarray(session.run(["logits"], {session.get_inputs()[0].name: images})[0], "float64"))
    expected, actual = logits
    measured = output_drift({"logits": expected}, {"logits": actual})["logits"]
    drift = measured["relative_l2"] if measured["non_finite"] == 0 else float("inf")
    agreement = float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1)))
    if not (drift <= max_drift and agreement >= min_agreement):
        raise PrecisionLossError(
            f"The int8 export of {model_name} changes its answers: on {len(images)} calibration images served as one batch "
            f"its logits lie {drift:.3g} (relative L2) from the float32 export's (limit {max_drift}) and its top-1 class "
            f"agrees on {agreement:.1%} of them (limit {min_agreement:.0%}). Dynamic quantization sets activation ranges "
            f"over the whole batch, and this model's logits do not survive it. Export fp16 or fp32 instead (or skip this "
            f"check, at your risk, with --no-drift-check / check_drift=False); nothing was written."
        )
    return {"images": int(len(images)), "logit_drift": drift, "top1_agreement": agreement}


def reduce_precision(proto, precision, keep_nodes=()):
    """A copy of an exported graph at `precision`; float32 input and outputs are kept.

    Args:
        proto: the float32 `onnx.ModelProto` (not changed).
        precision: one of `PRECISIONS`.
        keep_nodes: names of nodes that stay in float32.

    Returns:
        `onnx.ModelProto`.

    Example:
    >>> half = reduce_precision(onnx.load("model.onnx"), "fp16")  # doctest: +SKIP
    """
    import onnx

    check_precision(precision)
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    if precision == "fp32":
        return copy
    if precision == "fp16":
        return _to_float16(copy, list(keep_nodes))
    return _to_int8(copy, list(keep_nodes))


def _to_float16(proto, keep_nodes):
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(proto, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST), node_block_list=keep_nodes)
    drop_repeated_nodes(converted.graph)  # one cast per reader of a float32 region's input, all under one name
    bypass_cast_round_trips(converted)  # the converter rounds values passed between two float32 nodes
    sort_topologically(converted.graph)  # the converter appends the casts of the graph's input last
    return converted


def drop_repeated_nodes(graph):
    """Removes every node that repeats an earlier one exactly (operator, inputs, outputs, attributes), in place.

    Two nodes writing the same output make an invalid graph; the float16
    converter inserts one identical cast per reader of a tensor that enters
    a float32 region.

    Args:
        graph: an `onnx.GraphProto`.

    Returns:
        int, the number of nodes removed.
    """
    seen, kept = set(), []
    for node in graph.node:
        key = node.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            kept.append(node)
    removed = len(graph.node) - len(kept)
    if removed:
        _replace_nodes(graph, kept)
    return removed


def _replace_nodes(graph, nodes):
    """Sets `graph.node` to copies of `nodes`, in that order."""
    copies = [type(node)() for node in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _to_int8(proto, keep_nodes):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # quantize_dynamic advises pre-processing through the root logger on every call
    try:
        with tempfile.TemporaryDirectory(prefix="glasszoo-int8-") as folder:
            source, target = pathlib.Path(folder) / "float32.onnx", pathlib.Path(folder) / "int8.onnx"
            onnx.save(proto, str(source))
            others = [node.name for node in proto.graph.node if node.op_type not in QUANTIZED_OPERATORS]  # e.g. ConvTranspose
            quantize_dynamic(
                str(source),
                str(target),
                weight_type=QuantType.QInt8,
                # 7-bit weights: uint8 activations times int8 weights saturate their 16-bit pair sums on CPUs
                # without VNNI (AVX2, AVX-512F), so a full-range export drifts on some serving machines only
                reduce_range=True,
                op_types_to_quantize=QUANTIZED_OPERATORS,
                nodes_to_exclude=list(keep_nodes) + others,
            )
            quantized = onnx.load(str(target))
            fold_constant_dequantization(quantized.graph)
            return quantized
    finally:
        quiet.setLevel(level)


def output_drift(reference, reduced):
    """How far each output of a reduced-precision export lies from the float32 export's.

    Args:
        reference: `{name: array}` from the float32 export.
        reduced: `{name: array}` from the reduced export, on the same images.

    Returns:
        `{name: {"relative_l2", "max_abs", "scale", "non_finite"}}`:
        `|reduced - reference|_2 / |reference|_2`, the largest absolute
        difference, the largest absolute reference value (to read
        `max_abs` against) and the count of non-finite reduced values.

    Example:
    >>> output_drift({"logits": np.ones((2, 3))}, {"logits": np.ones((2, 3)) * 1.01})["logits"]["relative_l2"]  # doctest: +ELLIPSIS
    0.01...
    """
    drift = {}
    for name, expected in reference.items():
        expected = np.asarray(expected, "float64")
        actual = np.asarray(reduced[name], "float64")
        finite = np.isfinite(actual)
        difference = np.where(finite, actual - expected, 0.0)
        norm = float(np.linalg.norm(expected))
        drift[name] = {
            "relative_l2": float(np.linalg.norm(difference)) / norm if norm > 0 else float(np.linalg.norm(difference)),
            "max_abs": float(np.abs(difference).max()) if difference.size else 0.0,
            "scale": float(np.abs(expected).max()) if expected.size else 0.0,
            "non_finite": int(finite.size - finite.sum()),
        }
    return drift


def location_output_names(explanation_outputs):
    """Outputs that hold pixel positions (their name or description says "location").

    A reduced precision may move a maximum to a near-tied position, so such
    outputs are compared by equality and checked to lie inside the image,
    not measured by distance.

    Args:
        explanation_outputs: `{name: description}` (a model's `explanation_outputs`).

    Example:
    >>> location_output_names({"logits": "(B, K)", "max_locations": "(B, N, 2) row, column"})
    ['max_locations']
    """
    return [name for name, text in explanation_outputs.items() if "location" in (name + " " + str(text)).lower()]


def sort_topologically(graph):
    """Orders `graph.node` so that every node comes after the nodes whose outputs it reads (in place).

    The ONNX standard asks for this order; onnxruntime sorts by itself, but
    the reference evaluator and other runtimes run the nodes as listed.
    Nodes keep their relative order where the dependencies allow.

    Args:
        graph: an `onnx.GraphProto` (a graph without subgraphs).

    Raises:
        ValueError: the graph has a cycle or reads a value nothing produces.

    Example:
    >>> sort_topologically(proto.graph)  # doctest: +SKIP
    """
    available = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        remaining = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            missing = sorted({name for node in remaining for name in node.input if name not in available})[:5]
            raise ValueError(f"The graph cannot be ordered: {len(remaining)} nodes read values nothing produces first ({missing}).")
        pending = remaining
    _replace_nodes(graph, ordered)


def bypass_cast_round_trips(model):
    """Lets a node read a float32 value directly where it was cast to float16 and back (in place).

    onnxruntime's float16 converter passes a value from one node kept in
    float32 to another through a float16 copy (Cast to float16, then Cast
    to float32), which rounds it: exactly what keeping the nodes in float32
    was to avoid. Readers of the float32 copy read the original instead;
    casts nobody reads any more are removed.

    Args:
        model: an `onnx.ModelProto`, changed in place.

    Returns:
        int, the number of round trips bypassed.
    """
    import onnx
    from onnx import TensorProto

    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    element_type = {value.name: value.type.tensor_type.elem_type for value in list(inferred.value_info) + list(inferred.input) + list(inferred.output)}
    element_type.update({tensor.name: tensor.data_type for tensor in graph.initializer})

    def cast_to(node):
        return next((attribute.i for attribute in node.attribute if attribute.name == "to"), None)

    producer = {output: node for node in graph.node for output in node.output}
    replacement = {}
    for node in graph.node:
        if node.op_type != "Cast" or cast_to(node) != TensorProto.FLOAT:
            continue
        source = producer.get(node.input[0])
        if source is not None and source.op_type == "Cast" and cast_to(source) == TensorProto.FLOAT16:
            original = source.input[0]
            if element_type.get(original) == TensorProto.FLOAT:
                replacement[node.output[0]] = original
    if not replacement:
        return 0
    outputs = {value.name for value in graph.output}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in replacement:
                node.input[index] = replacement[name]
    for value in graph.output:
        if value.name in replacement:  # a graph output keeps its name: leave that cast in place
            outputs.add(value.name)
    # remove the casts no node and no graph output reads any more (repeatedly: a float16 copy may become unread)
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        unread = [node for node in graph.node if node.op_type == "Cast" and not any(output in read for output in node.output)]
        if not unread:
            break
        for node in unread:
            graph.node.remove(node)
    return len(replacement)


def fold_constant_dequantization(graph):
    """Replaces each `DequantizeLinear` of a constant by the float32 constant it computes (in place).

    When a weight feeds both a quantized node and one left in float (a
    convolution and the transposed convolution of an explanation share
    their kernel), the quantizer stores it once as int8 and dequantizes it
    for the float reader at run time. The ONNX reference evaluator has no
    `DequantizeLinear` before opset 19; computing it once here gives the
    same values, `(q - zero_point) * scale`.

    Args:
        graph: an `onnx.GraphProto`.

    Returns:
        int, the number of nodes folded.
    """
    from onnx import numpy_helper

    constants = {tensor.name: tensor for tensor in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not all(name in constants for name in node.input if name):
            continue
        values = numpy_helper.to_array(constants[node.input[0]]).astype("float64")
        scale = numpy_helper.to_array(constants[node.input[1]]).astype("float64")
        zero = numpy_helper.to_array(constants[node.input[2]]).astype("float64") if len(node.input) > 2 and node.input[2] else np.zeros_like(scale)
        axis = next((attribute.i for attribute in node.attribute if attribute.name == "axis"), 1)
        if scale.ndim == 1 and values.ndim > 1:  # per-axis parameters
            shape = [1] * values.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        graph.initializer.append(numpy_helper.from_array(((values - zero) * scale).astype("float32"), node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
    for tensor in [tensor for tensor in graph.initializer if tensor.name not in read]:
        graph.initializer.remove(tensor)
    return len(folded)
