"""Rewrites of two constructs tf2onnx emits that runtimes other than onnxruntime read differently.

Both rewrites are exact (the same values in every runtime); onnxruntime's
outputs do not change.

- An `Unsqueeze` whose `axes` is an empty constant (tf2onnx's lowering of
  `einsum` makes them) inserts no axis: it becomes an `Identity`. OpenVINO
  reads an empty `axes` as "insert one axis" and cannot convert the graph.
- A `GlobalMaxPool` of a rank-3 tensor (tf2onnx's lowering of
  `max(..., axis=-1, keepdims=True)`) becomes a `ReduceMax` over the last
  axis. The ONNX reference evaluator pools such a tensor to the wrong shape.
"""

import numpy as np


def make_portable(model):
    """Applies both rewrites to `model` (an `onnx.ModelProto`), in place; returns `{rewrite: count}`.

    Args:
        model: the exported `onnx.ModelProto`.

    Returns:
        dict: `empty_unsqueeze_to_identity` and `global_max_pool_to_reduce_max`, the
        number of nodes each rewrote.

    Example:
    >>> proto = onnx.load("model.onnx")  # doctest: +SKIP
    >>> make_portable(proto)  # doctest: +SKIP
    {'empty_unsqueeze_to_identity': 8, 'global_max_pool_to_reduce_max': 0}
    """
    return {
        "empty_unsqueeze_to_identity": _empty_unsqueeze_to_identity(model.graph),
        "global_max_pool_to_reduce_max": _global_max_pool_to_reduce_max(model),
    }


def _constants(graph):
    from onnx import numpy_helper

    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _empty_unsqueeze_to_identity(graph):
    constants = _constants(graph)
    count = 0
    for node in graph.node:
        if node.op_type != "Unsqueeze" or len(node.input) < 2:
            continue
        axes = constants.get(node.input[1])
        if axes is not None and np.asarray(axes).size == 0:
            node.op_type = "Identity"
            del node.input[1:]
            count += 1
    _drop_unused_initializers(graph)
    return count


def _global_max_pool_to_reduce_max(model):
    import onnx

    pools = [node for node in model.graph.node if node.op_type == "GlobalMaxPool"]
    if not pools:
        return 0
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 17)
    count = 0
    for node in pools:
        rank = ranks.get(node.input[0])
        if rank is None or rank < 3:
            continue  # unknown rank: left as it is
        axes = list(range(2, rank))
        node.op_type = "ReduceMax"
        del node.attribute[:]
        if opset >= 18:  # axes became an input in opset 18
            name = f"{node.output[0]}__reduce_max_axes"
            model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(axes, dtype="int64"), name))
            node.input.append(name)
        else:
            node.attribute.append(onnx.helper.make_attribute("axes", axes))
        node.attribute.append(onnx.helper.make_attribute("keepdims", 1))
        count += 1
    return count


def _drop_unused_initializers(graph):
    used = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
