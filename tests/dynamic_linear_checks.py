"""Checks shared by the dynamic linear families' tests (CoDA, B-cos): exact maps under any pooling head."""

import numpy as np
from glasszoo.layers.temperature_head import PRIOR_BIAS
from keras import ops


def assert_map_sums_to_the_logit(model, images, map_scale=1.0, targets=(None, 7)):
    """`contributions.sum() / map_scale + b0` equals the explained logit, for the predicted class and each target.

    Args:
        model: a CoDA or B-cos model (its `explain` has `logits` and `contributions`).
        images: `(B, H, W, C)` test images.
        map_scale: what the family's map is scaled by (CoDA's maps carry `T`, B-cos's do not).
        targets: the classes explained (None: the predicted one).
    """
    rows = np.arange(len(images))
    for target in targets:
        out = model.explain(images, target=target)
        classes = out["logits"].argmax(-1) if target is None else np.full(len(images), target)
        total = out["contributions"].sum(axis=(1, 2)) / map_scale + PRIOR_BIAS
        np.testing.assert_allclose(total, out["logits"][rows, classes], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(model(images)), out["logits"], rtol=1e-5, atol=1e-5)
    return out


def assert_export_matches_keras(model, images, path):
    """The ONNX export of `model`, run in onnxruntime, gives every explanation output as Keras does (relative to its scale).

    Args:
        model: a zoo model.
        images: `(B, H, W, C)` test images.
        path: where the `.onnx` file is written.
    """
    from glasszoo.export import OnnxModel, to_onnx

    served = OnnxModel(to_onnx(model, path, model_name="tiny"))(images)
    expected = model.explain(images)
    for name in model.explanation_outputs:
        scale = max(float(np.abs(expected[name]).max()), 1e-6)
        np.testing.assert_allclose(served[name] / scale, expected[name] / scale, atol=1e-4, err_msg=name)
