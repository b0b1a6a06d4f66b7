"""Gradients of a function with respect to its input, inside a training step, on every Keras backend.

Some training objectives penalise an input gradient (SENN's robustness loss
compares `d f / d x` with the model's own explanation). Such a term needs the
gradient of a function with respect to the *images*, kept differentiable with
respect to the *weights* so that the optimiser can lower it: a
vector-Jacobian product computed with the backend's own autodiff, with the
graph of the backward pass recorded (TensorFlow: a nested `GradientTape`;
JAX: `jax.vjp`; PyTorch: `torch.autograd.grad(create_graph=True)`).

It is a training-time tool: the exported graphs of the zoo hold forward ops
only and never call it.
"""

import keras
from keras import ops


def input_vector_jacobian_products(function, inputs, cotangents):
    """`[J(inputs)^T v for v in cotangents]`, where `J` is the Jacobian of `function` at `inputs`.

    One forward pass of `function` is shared by all products. The results
    are differentiable with respect to every variable `function` reads (and
    every tensor it closes over), so a loss built from them trains those
    weights: second-order terms are kept.

    Args:
        function: maps a tensor shaped like `inputs` to a tensor `y`; it must
            not add losses or update state (it runs under another
            transformation on JAX).
        inputs: tensor `x`.
        cotangents: list of tensors shaped like `y`.

    Returns:
        list of tensors shaped like `inputs`, one per cotangent.

    Example:
    >>> x = keras.ops.ones((2, 3))
    >>> [g] = input_vector_jacobian_products(lambda t: 3.0 * t ** 2, x, [keras.ops.ones((2, 3))])
    >>> keras.ops.convert_to_numpy(g)[0]
    array([6., 6., 6.], dtype=float32)
    """
    cotangents = list(cotangents)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        inputs = tf.convert_to_tensor(inputs)
        with tf.GradientTape(persistent=len(cotangents) > 1) as tape:
            tape.watch(inputs)
            outputs = function(inputs)
        products = [tape.gradient(outputs, inputs, output_gradients=tf.cast(v, outputs.dtype)) for v in cotangents]
        del tape
        return [ops.zeros_like(inputs) if g is None else g for g in products]
    if backend == "jax":
        import jax

        outputs, pullback = jax.vjp(function, inputs)
        return [pullback(ops.cast(v, outputs.dtype))[0] for v in cotangents]
    if backend == "torch":
        import torch

        with torch.enable_grad():
            watched = inputs.detach().requires_grad_(True)
            outputs = function(watched)
            products = []
            for v in cotangents:  # create_graph keeps the backward pass differentiable (and the graph alive)
                (gradient,) = torch.autograd.grad(outputs, watched, grad_outputs=v.to(outputs.dtype), create_graph=True, allow_unused=True)
                products.append(torch.zeros_like(watched) if gradient is None else gradient)
        return products
    raise NotImplementedError(f"Input gradients are not implemented for the {backend!r} Keras backend.")
