"""Fast tests of the INAM views (local and kernel views) on tiny untrained INAMs (gray and RGB)."""

import numpy as np
import pytest
from glasszoo.zoo.inam.kernel_views import (
    compute_feature_values,
    kernel_global_view,
    kernel_influence,
    strongest_kernels,
)
from glasszoo.zoo.inam.views import explanation_grid, local_view
from glasszoo.zoo.inam.model import INAM
from matplotlib.figure import Figure

NUM_KERNELS, NUM_CLASSES = 6, 3


@pytest.fixture(scope="module", params=[1, 3], ids=["gray", "rgb"])
def setup(request):
    channels = request.param
    model = INAM(
        num_classes=NUM_CLASSES,
        input_shape=(16, 16, channels),
        num_kernels=NUM_KERNELS,
        kernel_size=5,
        hidden_units=(8, 8),
        class_names=["a", "b", "c"],
    )
    model.compile()
    images = np.random.default_rng(0).random((10, 16, 16, channels)).astype("float32")
    model.center_head(images)
    return model, images, compute_feature_values(model, images, batch_size=4), model.explain(images)


def _assert_png(path):
    assert path.exists() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compute_feature_values_matches_explain(setup):
    model, images, values, explanation = setup
    assert values.shape == (len(images), NUM_KERNELS)
    np.testing.assert_allclose(values, explanation["max_responses"], rtol=1e-5, atol=1e-5)


def test_kernel_influence_shape_and_sign(setup):
    model, _, values, explanation = setup
    influence = kernel_influence(model, values)
    assert influence.shape == (NUM_KERNELS, NUM_CLASSES)
    assert np.all(influence >= 0)
    expected = np.abs(explanation["contributions"]).mean(axis=0)
    np.testing.assert_allclose(influence, expected, rtol=1e-4, atol=1e-5)


def test_kernel_global_view(setup, tmp_path):
    model, _, values, _ = setup
    path = tmp_path / "kernel.png"
    fig = kernel_global_view(model, 2, values, path=path)
    assert isinstance(fig, Figure)
    # kernel, shape functions, density twin (+ a colorbar for a gray kernel).
    assert len(fig.axes) >= 3
    curve_axis = next(ax for ax in fig.axes if ax.get_ylabel() == "contribution to class logit")
    assert curve_axis.get_xlabel() == "feature strength X_2"
    assert len(curve_axis.get_lines()) >= NUM_CLASSES
    assert [t.get_text() for t in curve_axis.get_legend().get_texts()] == ["a", "b", "c"]
    _assert_png(path)


def test_kernel_global_view_rejects_bad_index(setup):
    model, _, values, _ = setup
    with pytest.raises(ValueError):
        kernel_global_view(model, NUM_KERNELS, values)


@pytest.mark.parametrize("top", [4, 100])
def test_strongest_kernels_picks_largest_influence(setup, tmp_path, top):
    model, _, values, _ = setup
    path = tmp_path / "strongest.png"
    fig = strongest_kernels(model, 1, values, top=top, path=path)
    shown = min(top, NUM_KERNELS)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == shown
    influence = kernel_influence(model, values)[:, 1]
    np.testing.assert_array_equal(np.sort(fig.kernel_indices), np.sort(np.argsort(-influence)[:shown]))
    assert np.all(np.diff(fig.influence) <= 0)
    _assert_png(path)


def test_local_view(setup, tmp_path):
    model, images, _, explanation = setup
    path = tmp_path / "local.png"
    fig = local_view(images, explanation, index=3, class_names=model.class_names, path=path)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 7  # image, two decision images, the pixel evidence, three colorbars
    predicted = model.class_names[int(np.argmax(explanation["logits"][3]))]
    assert fig.axes[1].get_title().startswith(predicted)
    assert fig.axes[3].get_title().startswith(f"{predicted}: pixel evidence")
    _assert_png(path)


def test_local_view_of_an_export_without_pixel_evidence(setup):
    model, images, _, explanation = setup
    older = {key: value for key, value in explanation.items() if key != "pixel_evidence"}
    fig = local_view(images, older, index=1, class_names=model.class_names)
    assert len(fig.axes) == 5  # image, two decision images, two colorbars


def test_local_view_given_classes(setup):
    model, images, _, explanation = setup
    fig = local_view(images[0], explanation, classes=(2, 0), class_names=model.class_names)
    assert fig.axes[1].get_title().startswith("c")
    assert fig.axes[2].get_title().startswith("a")


def test_explanation_grid(setup, tmp_path):
    model, images, _, explanation = setup
    path = tmp_path / "grid.png"
    fig = explanation_grid(images, explanation, class_names=model.class_names, max_images=4, path=path)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4 * 4
    _assert_png(path)
