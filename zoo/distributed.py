"""Data-parallel training on the backends' own engines: tf.distribute on TensorFlow, keras.distribution on JAX.

`distribution_scope(kind)` is the context in which to build, compile and fit
a model:

==============  =========================================================  =========
kind            engine                                                     backend
==============  =========================================================  =========
none            the default device                                         any
mirrored        `tf.distribute.MirroredStrategy`: one replica per local    tensorflow
                GPU (or the CPU), gradients all-reduced every step
multi_worker    `tf.distribute.MultiWorkerMirroredStrategy`: replicas on   tensorflow
                several machines, configured by the `TF_CONFIG` variable
data_parallel   `keras.distribution.DataParallel`: the batch sharded over  jax
                every JAX device (of every process after
                `jax.distributed.initialize`)
==============  =========================================================  =========

The global batch size is the caller's: each of R replicas gets batch / R
images a step, and the gradient is that of the whole batch (TensorFlow sums
the replicas' gradients of losses scaled by 1 / R; JAX computes one sharded
step). Learning rates therefore need no change.

Known differences to one device, inherent to data parallelism on
TensorFlow: BatchNorm normalises with each replica's batch statistics, and
PrototypeDL's R1 term (each prototype's minimum over the batch) is a
minimum over each replica's part of the batch. JAX's DataParallel computes
the global batch's statistics (one program over sharded arrays).

Example:
>>> with distribution_scope("mirrored") as info:  # doctest: +SKIP
...     model = build_model()
...     model.compile()
...     model.fit(x, y, batch_size=64)
>>> info["replicas"]  # doctest: +SKIP
2
"""

import contextlib
import json
import os

KINDS = ("none", "mirrored", "multi_worker", "data_parallel")
BACKEND_OF_KIND = {"mirrored": "tensorflow", "multi_worker": "tensorflow", "data_parallel": "jax"}
JAX_CLUSTER_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")


class DistributionUnavailable(ValueError):
    """The requested kind of distribution cannot run on the current Keras backend."""


def _check_kind(kind):
    kind = "none" if kind in (None, "") else str(kind)
    if kind not in KINDS:
        raise ValueError(f"Unknown distribution {kind!r}; choose one of {list(KINDS)}.")
    import keras

    backend = keras.backend.backend()
    needed = BACKEND_OF_KIND.get(kind)
    if needed is not None and backend != needed:
        suggestion = {"tensorflow": "'mirrored' or 'multi_worker'", "jax": "'data_parallel'"}.get(backend)
        hint = f" On {backend}, use {suggestion}." if suggestion else f" The {backend} backend has no data-parallel engine here; use 'none'."
        raise DistributionUnavailable(
            f"Distribution {kind!r} needs the {needed} backend (KERAS_BACKEND={needed}); Keras runs on {backend}.{hint}"
        )
    return kind, backend


def strategy_for(kind):
    """The engine object of `kind`: a `tf.distribute.Strategy`, a `keras.distribution.DataParallel`, or None for "none".

    Raises:
        ValueError: unknown kind.
        DistributionUnavailable: the kind needs another backend.

    `multi_worker` must be created before TensorFlow runs any op (at program
    start), as TensorFlow requires; without `TF_CONFIG` it is a single worker.
    `data_parallel` joins the JAX processes named by the
    `KERAS_DISTRIBUTION_*` variables first (`keras.distribution.initialize`),
    if they are set. The engine is made once per process and reused.
    """
    kind, backend = _check_kind(kind)
    if kind == "none":
        return None
    if (kind, backend) not in _STRATEGIES:
        _STRATEGIES[kind, backend] = _new_strategy(kind)
    return _STRATEGIES[kind, backend]


_STRATEGIES = {}  # one engine per kind and process: TensorFlow's collectives clash between two strategies of one process


def _new_strategy(kind):
    if kind == "mirrored":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        return _multi_worker_strategy()
    import keras

    if all(os.environ.get(name) for name in JAX_CLUSTER_VARIABLES[1:]) and int(os.environ[JAX_CLUSTER_VARIABLES[1]]) > 1:
        _initialize_jax_processes()
    return keras.distribution.DataParallel(devices=keras.distribution.list_devices())


def _multi_worker_strategy():
    """`MultiWorkerMirroredStrategy` whose `reduce` also takes nested values.

    Keras 3's TensorFlow `fit` first builds the model on one batch reduced
    with `strategy.reduce("MEAN", (images, labels))`; MirroredStrategy takes
    that tuple, MultiWorkerMirroredStrategy fails on it ("Attempt to convert
    a value (PerReplica...)", keras-team/keras#20585). Reducing each element
    is what MirroredStrategy does. Then each step's logs (scalars) are
    reduced with `axis=0`, which a scalar does not have: across replicas
    (axis None) is the mean Keras means (what it computes under
    MirroredStrategy).
    """
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis=None):
            parent = super()
            if isinstance(value, (tuple, list, dict)):
                return tf.nest.map_structure(lambda item: self.reduce(reduce_op, item, axis), value)
            if axis is not None and getattr(self.experimental_local_results(value)[0].shape, "rank", None) == 0:
                axis = None
            return parent.reduce(reduce_op, value, axis)

    return MultiWorkerMirroredStrategy()


def _initialize_jax_processes():
    import jax
    import keras

    try:
        already = jax.process_count() > 1
    except Exception:  # pragma: no cover - backends not yet initialised
        already = False
    if not already:
        keras.distribution.initialize()


def describe(kind, strategy):
    """What the model card records: kind, engine, replica count, worker count and this worker's role."""
    if strategy is None:
        return {"kind": "none", "strategy": None, "replicas": 1, "workers": 1, "chief": True}
    if kind == "data_parallel":
        import jax

        devices = strategy.device_mesh.devices.reshape(-1)
        return {
            "kind": kind,
            "strategy": "keras.distribution.DataParallel",
            "replicas": int(devices.size),
            "workers": int(jax.process_count()),
            "chief": jax.process_index() == 0,
            "devices": [str(d) for d in devices],
        }
    workers, chief = 1, True
    if kind == "multi_worker":
        workers, chief = _tf_config_role()
    return {
        "kind": kind,
        "strategy": f"tf.distribute.{type(strategy).__name__}",
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": workers,
        "chief": chief,
        "devices": list(getattr(strategy.extended, "worker_devices", ())),
    }


def _tf_config_role():
    """`(workers, is_chief)` from `TF_CONFIG` (the chief is task "chief", or worker 0 when there is none)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster, task = config.get("cluster", {}), config.get("task", {})
    workers = sum(len(cluster.get(role, [])) for role in ("chief", "worker")) or 1
    role, index = task.get("type", "worker"), int(task.get("index", 0))
    chief = role == "chief" or (role == "worker" and index == 0 and "chief" not in cluster)
    return workers, chief


@contextlib.contextmanager
def distribution_scope(kind="none"):
    """The context to build, compile and fit a model in; yields `describe(kind, strategy)` with `strategy` added.

    Args:
        kind: one of `KINDS`.

    Raises:
        ValueError: unknown kind.
        DistributionUnavailable: the kind needs another Keras backend than the current one.
    """
    strategy = strategy_for(kind)
    kind, _ = _check_kind(kind)
    info = dict(describe(kind, strategy), engine=strategy)
    if strategy is None:
        yield info
    else:
        with strategy.scope():
            yield info


def per_replica_share(value):
    """A replica's share `value / R` of a batch-mean loss term under tf.distribute, as Keras scales its own losses.

    The replicas' gradients are summed, so a term a model adds to its loss in
    `compute_loss` must be scaled like the compiled loss. The identity on one
    device and on JAX (one global step over sharded arrays).

    Example:
    >>> float(per_replica_share(1.0))  # one device
    1.0
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            return value / replicas
    return value
