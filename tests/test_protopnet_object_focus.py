"""ProtoPNet with an object mask: prototypes pulled towards and pushed onto object patches only, and the measurements."""

import numpy as np
import pytest
from glasszoo.zoo.protopnet.model import ProtoPNet
from glasszoo.zoo.protopnet.object_focus import footprint_shares, footprint_shares_tensor, object_focus_report
from glasszoo.zoo.protopnet.push import distinct_nearest_patches, nearest_patches
from keras import ops

TINY = dict(num_classes=10, input_shape=(28, 28, 1), backbone_stages=[[8], [12]], prototype_channels=6, prototypes_per_class=2)
THRESHOLD = 0.05


def tiny(seed=0, **overrides):
    import keras

    keras.utils.set_random_seed(seed)
    return ProtoPNet(**dict(TINY, **overrides))


def test_footprint_shares_by_hand_and_in_the_graph(rng):
    images = np.zeros((2, 28, 28, 1), "float32")
    images[0, 0:7, 0:7] = 1.0  # one whole 7x7 cell of a 4x4 grid
    images[1, 0:7, 0:14] = rng.uniform(0.5, 1.0, size=(7, 14, 1))  # two cells
    images[1, 7, 0] = 1.0  # one pixel of another cell
    shares = footprint_shares(images, THRESHOLD, (4, 4))
    assert shares.shape == (2, 4, 4)
    assert shares[0, 0, 0] == 1.0 and shares[0].sum() == 1.0
    assert shares[1, 0, 0] == shares[1, 0, 1] == 1.0 and shares[1, 1, 0] == pytest.approx(1 / 49)
    np.testing.assert_allclose(ops.convert_to_numpy(footprint_shares_tensor(images, THRESHOLD, (4, 4))), shares, atol=1e-6)
    windows = footprint_shares(images, THRESHOLD, (4, 4), prototype_size=2)  # 2x2 patches: the mean of four cells
    assert windows.shape == (2, 3, 3) and windows[1, 0, 0] == pytest.approx((2 + 1 / 49) / 4)
    np.testing.assert_allclose(ops.convert_to_numpy(footprint_shares_tensor(images, THRESHOLD, (4, 4), 2)), windows, atol=1e-6)


@pytest.mark.parametrize("push", [nearest_patches, distinct_nearest_patches])
def test_push_takes_only_patches_on_the_object(samples, push):
    images, labels = samples[0], samples[1]
    reference = tiny(seed=3)
    masked = tiny(seed=3, object_threshold=THRESHOLD, object_share=0.75)
    on_object = masked.object_patches(images)
    plain = push(reference, images, labels, batch_size=7)
    found = push(masked, images, labels, batch_size=7)
    rows, cols = found["patch_position"].T
    assert np.all(on_object[found["source_index"], rows, cols])
    assert np.all(found["push_distance"] >= plain["push_distance"] - 1e-6)  # fewer candidates: never nearer
    _, distances = masked.latent_and_distances(images)
    for j in range(len(rows)):  # and the nearest among the allowed ones
        own = np.flatnonzero(labels == masked.prototype_class[j])
        allowed = np.where(on_object[own], distances[own, ..., j], np.inf)
        assert found["push_distance"][j] == pytest.approx(allowed.min(), rel=1e-5) or push is distinct_nearest_patches


def test_cluster_cost_pulls_only_towards_object_patches(samples):
    images, labels = samples[0][:8], samples[1][:8]
    model = tiny(seed=5, object_threshold=THRESHOLD)
    distances = model.prototype_layer(model.latent(ops.convert_to_tensor(images)))
    pulled = ops.convert_to_numpy(model.object_min_distances(ops.convert_to_tensor(images), distances))
    d = ops.convert_to_numpy(distances)
    on_object = model.object_patches(images)
    expected = np.where(on_object[..., None], d, np.inf).min(axis=(1, 2))
    np.testing.assert_allclose(pulled, expected, rtol=1e-5)
    costs = model.prototype_costs(ops.min(distances, axis=(1, 2)), labels, cluster_distances=pulled)
    reference = model.prototype_costs(ops.min(distances, axis=(1, 2)), labels)
    assert float(costs["cluster"]) >= float(reference["cluster"]) - 1e-6
    assert float(costs["separation"]) == pytest.approx(float(reference["separation"]))
    blank = np.zeros((1, 28, 28, 1), "float32")  # no object at all: every patch counts
    blank_distances = model.prototype_layer(model.latent(ops.convert_to_tensor(blank)))
    np.testing.assert_allclose(ops.convert_to_numpy(model.object_min_distances(ops.convert_to_tensor(blank), blank_distances)),
                               ops.convert_to_numpy(ops.min(blank_distances, axis=(1, 2))), rtol=1e-6)


def test_training_with_the_object_mask_and_the_report(samples):
    images, labels = samples[0], samples[1]
    model = tiny(seed=6, object_threshold=THRESHOLD)
    model.compile()
    model.fit(images, labels, epochs=1, batch_size=10, verbose=0)
    model.push_prototypes(images, labels, distinct=True)
    report = object_focus_report(model, images, THRESHOLD)
    assert report["blank_prototypes"] == 0
    assert 0.0 <= report["top_peak_on_background"] <= 1.0 and 0.0 < report["background_pixel_share"] < 1.0
    assert report["images"] == len(images)
    assert model.family_metrics(images)["object_focus"] == report  # what `glasszoo evaluate` prints
    assert tiny(seed=7).family_metrics(images) == {}  # the reference model: no mask, nothing to report
    again = ProtoPNet.from_config(model.get_config())
    assert (again.object_threshold, again.object_share) == (THRESHOLD, 0.5)
    with pytest.raises(ValueError, match="pushed model"):
        object_focus_report(tiny(seed=7), images, THRESHOLD)


def test_an_input_size_that_does_not_tile_the_latent_grid_is_refused():
    with pytest.raises(ValueError, match="multiple of the latent grid"):
        ProtoPNet(**dict(TINY, input_shape=(29, 29, 1), object_threshold=THRESHOLD))
