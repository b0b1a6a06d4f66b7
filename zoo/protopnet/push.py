"""ProtoPNet's push: each prototype becomes its nearest latent patch of its own class, with provenance."""

import numpy as np

PROVENANCE_KEYS = (
    "prototype_class",
    "source_index",
    "source_image",
    "patch_position",
    "receptive_field_box",
    "high_activation_box",
    "push_distance",
    "similarity_map",
)
HIGH_ACTIVATION_PERCENTILE = 95.0


def candidates(model, images, own):
    """Bool `(b, h, w, P)`: the latent patches a prototype may be pushed onto (its class; on the object if the model says).

    Args:
        model: a `ProtoPNet` (its `object_patches(images)` is None or bool `(b, h, w)`).
        images: the batch.
        own: bool `(b, P)`, the image is of the prototype's class.
    """
    allowed = own[:, None, None, :]
    on_object = model.object_patches(images)
    return allowed if on_object is None else allowed & on_object[..., None]


def check_every_group_has_images(model, labels):
    """Raises a ValueError naming the prototype groups (classes) that no push image may serve."""
    served = model.prototype_owners(np.unique(labels)).any(axis=0)  # (P,)
    missing = sorted(set(model.prototype_class[~served].tolist()))
    if missing:
        raise ValueError(f"The push images have no image of classes {missing}; every class with prototypes needs some.")


def nearest_patches(model, images, labels, batch_size=128):
    """For each prototype, its nearest latent patch among images of its class.

    Returns:
        dict: `source_index` (P,), `patch_position` (P, 2) latent (row, col),
        `push_distance` (P,) squared distance before the push and
        `patches` (P, k, k, D) the latent patches.
    """
    prototype_class = model.prototype_class
    check_every_group_has_images(model, labels)
    size = model.prototype_layer.prototype_size
    count = len(prototype_class)
    best = np.full(count, np.inf)
    source = np.zeros(count, "int64")
    position = np.zeros((count, 2), "int64")
    patches = None
    for start in range(0, len(images), batch_size):
        latent, distances = model.latent_and_distances(images[start : start + batch_size])
        batch_labels = labels[start : start + batch_size]
        own = model.prototype_owners(batch_labels)  # (b, P)
        masked = np.where(candidates(model, images[start : start + batch_size], own), distances, np.inf)
        b, h, w, _ = masked.shape
        flat = masked.reshape(b * h * w, count)
        winner = flat.argmin(axis=0)
        value = flat[winner, np.arange(count)]
        better = value < best  # an all-inf column (no candidate in this batch) never wins
        if patches is None:
            patches = np.zeros((count, size, size, latent.shape[-1]), "float32")
        for j in np.flatnonzero(better):
            image, rest = divmod(int(winner[j]), h * w)
            row, col = divmod(rest, w)
            best[j], source[j], position[j] = value[j], start + image, (row, col)
            patches[j] = latent[image, row : row + size, col : col + size, :]
    empty = sorted(set(prototype_class[~np.isfinite(best)].tolist()))
    if empty:
        raise ValueError(f"The push images of classes {empty} have no latent patch on the object; lower object_threshold or object_share.")
    return {"source_index": source, "patch_position": position, "push_distance": best.astype("float32"), "patches": patches}


def distinct_nearest_patches(model, images, labels, batch_size=128):
    """Like `nearest_patches`, but no two prototypes of a class get the same patch.

    Each prototype keeps its `m` nearest same-class patches (`m` = the most
    prototypes any class has); then, per class, the (prototype, patch) pairs
    are taken greedily by distance, each prototype and each patch once. A
    prototype whose nearest patch is free gets exactly what `nearest_patches`
    gives it; the others get the nearest patch not taken by a closer match.
    (Of a prototype's `m` candidates at most `m - 1` can be taken, so one is
    always left.)
    """
    prototype_class = model.prototype_class
    count = len(prototype_class)
    m = int(np.bincount(prototype_class).max())
    check_every_group_has_images(model, labels)
    size = model.prototype_layer.prototype_size
    distance = np.full((count, m), np.inf)
    source = np.zeros((count, m), "int64")
    position = np.zeros((count, m, 2), "int64")
    patches = None
    for start in range(0, len(images), batch_size):
        latent, distances = model.latent_and_distances(images[start : start + batch_size])
        own = model.prototype_owners(labels[start : start + batch_size])
        b, h, w, _ = distances.shape
        flat = np.where(candidates(model, images[start : start + batch_size], own), distances, np.inf).reshape(b * h * w, count)
        if patches is None:
            patches = np.zeros((count, m, size, size, latent.shape[-1]), "float32")
        take = min(m, len(flat))
        for j in range(count):
            new = np.argpartition(flat[:, j], take - 1)[:take]
            images_new, rest = np.divmod(new, h * w)
            rows, cols = np.divmod(rest, w)
            new_patches = np.stack([latent[i, r : r + size, c : c + size, :] for i, r, c in zip(images_new, rows, cols)])
            # the running candidates and this batch's, in one list; keep the m nearest
            merged = np.concatenate([distance[j], flat[new, j]])
            keep = np.argsort(merged, kind="stable")[:m]
            distance[j] = merged[keep]
            source[j] = np.concatenate([source[j], start + images_new])[keep]
            position[j] = np.concatenate([position[j], np.stack([rows, cols], axis=-1)])[keep]
            patches[j] = np.concatenate([patches[j], new_patches])[keep]
    chosen = np.full(count, -1)
    taken = set()  # (group, image, row, column): groups may share images (a taxonomy's nested groups)
    for k in np.unique(prototype_class):
        members = np.flatnonzero(prototype_class == k)
        pairs = sorted((distance[j, c], j, c) for j in members for c in range(m) if np.isfinite(distance[j, c]))
        for _, j, c in pairs:
            patch_key = (int(k), int(source[j, c]), int(position[j, c, 0]), int(position[j, c, 1]))  # distinct within a group
            if chosen[j] < 0 and patch_key not in taken:
                chosen[j] = c
                taken.add(patch_key)
        if np.any(chosen[members] < 0):
            raise ValueError(f"Class {int(k)} has fewer distinct latent patches in the push images than prototypes.")
    rows = np.arange(count)
    return {
        "source_index": source[rows, chosen],
        "patch_position": position[rows, chosen],
        "push_distance": distance[rows, chosen].astype("float32"),
        "patches": patches[rows, chosen],
    }


def high_activation_box(similarity, percentile=HIGH_ACTIVATION_PERCENTILE):
    """`[top, bottom, left, right)` of the pixels at or above the similarity map's `percentile`."""
    rows, cols = np.nonzero(similarity >= np.percentile(similarity, percentile))
    return [int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1]


def push_prototypes(model, images, labels, batch_size=128, distinct=False):
    """Replaces every prototype of `model` by its nearest latent patch of its own class.

    Args:
        model: a `ProtoPNet`.
        images: the push set, float `(N, H, W, C)` in [0, 1] (training images
            without augmentation).
        labels: int `(N,)`.
        batch_size: images per forward pass.
        distinct: no two prototypes of a class on the same patch
            (`distinct_nearest_patches`) against the reference's known collapse;
            False is the reference's push.

    Returns:
        the provenance dict (NumPy arrays, one row per prototype):
        `prototype_class`, `source_index` (index into `images`),
        `source_image` (P, H, W, C), `patch_position` (P, 2) in latent
        positions, `receptive_field_box` and `high_activation_box` (P, 4)
        `[top, bottom, left, right)` in input pixels, `push_distance` (the
        squared distance that the push closed) and `similarity_map` (P, h, w)
        of each prototype on its source image after the push.
    """
    labels = np.asarray(labels).reshape(-1).astype("int64")
    if len(images) != len(labels):
        raise ValueError(f"push: {len(images)} images but {len(labels)} labels.")
    found = (distinct_nearest_patches if distinct else nearest_patches)(model, images, labels, batch_size)
    model.prototype_layer.prototypes.assign(found["patches"])
    sources = images[found["source_index"]]
    count = len(sources)
    similarity_maps = np.zeros((count,) + model.latent_shape[:2], "float32")
    upsampled = np.zeros((count,) + tuple(model.image_shape[:2]), "float32")
    for start in range(0, count, batch_size):
        out = model.explain(sources[start : start + batch_size], batch_size=batch_size)
        for offset in range(len(out["logits"])):
            j = start + offset
            similarity_maps[j] = out["similarity_maps"][offset, :, :, j]
            upsampled[j] = out["upsampled_similarity_maps"][offset, :, :, j]
    field = model.latent_receptive_field()
    size = model.prototype_layer.prototype_size
    provenance = {
        "prototype_class": model.prototype_class.copy(),
        "source_index": found["source_index"],
        "source_image": sources.astype("float32"),
        "patch_position": found["patch_position"],
        "receptive_field_box": np.array([field.box(r, c, model.image_shape, size) for r, c in found["patch_position"]], "int64"),
        "high_activation_box": np.array([high_activation_box(m) for m in upsampled], "int64"),
        "push_distance": found["push_distance"],
        "similarity_map": similarity_maps,
    }
    model.prototype_provenance = provenance
    return provenance


def save_provenance(provenance, path):
    """Writes the provenance arrays to an `.npz` file (atomically: a temporary file, then a rename)."""
    import os
    import pathlib

    path = pathlib.Path(path)
    temporary = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(temporary, **{k: provenance[k] for k in PROVENANCE_KEYS})
    os.replace(temporary, path)
    return path


def load_provenance(path, num_prototypes=None):
    """Reads a provenance `.npz`; checks its keys and (optionally) its prototype count."""
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in PROVENANCE_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"{path} is not a prototype provenance file: it lacks {missing}.")
        provenance = {k: data[k] for k in PROVENANCE_KEYS}
    if num_prototypes is not None and len(provenance["prototype_class"]) != num_prototypes:
        raise ValueError(f"{path} describes {len(provenance['prototype_class'])} prototypes; the model has {num_prototypes}.")
    return provenance
