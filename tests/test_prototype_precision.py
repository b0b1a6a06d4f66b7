"""PrototypeLayer's distance precision: the float32 default stays accurate next to a prototype, float64 is a choice.

Next to a pushed prototype the squared distance is ~0 and the similarity
`log((d + 1) / (d + 1e-4))` has slope -1e4, so round-off in `d` shows ten
thousand times larger in the similarity. The plain float32 expansion
`|z|^2 - 2 z.p + |p|^2` of 128-d sigmoid latents is off by up to ~1e-5
there (similarity error ~0.1); `split_squared_distances` (the float32
default) is within ~3e-8. The bound these tests hold the default to:
`SIMILARITY_BOUND` of float64 in the similarity, 2e-5 of `log(1 / 1e-4)`
relative, on latents with pushed and nearly pushed prototypes, eagerly,
in a TensorFlow graph (whose optimiser may reorder additions), on the
PyTorch and JAX backends, and in the exported ONNX graph in onnxruntime,
the ONNX reference evaluator and OpenVINO (when installed).
"""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from glasszoo.layers.prototype_layer import PrototypeLayer, high_part_bits, log_similarity

SIMILARITY_BOUND = 2e-3  # |float32 - float64| of the log-similarity; log(1 / 1e-4) = 9.21
PLAIN_FLOAT32_ERROR_FLOOR = 1e-2  # the plain float32 expansion misses by more on the same latents
TESTS = pathlib.Path(__file__).resolve().parent
BENCH = TESTS.parent / "bench"


def near_prototype_case(seed=0, batch=4, size=7, channels=128, prototypes=24):
    """`(latent (B, h, w, D), prototypes (P, D))`: sigmoid latents; prototypes at, and within 1e-6..1e-2 of, latent patches.

    The first third of the prototypes are latent patches (a push: d = 0),
    the next third those patches moved by small steps (d from ~1e-6 to
    ~1e-2, where the similarity still changes fast), the rest uniform.
    """
    rng = np.random.default_rng(seed)
    latent = 1.0 / (1.0 + np.exp(-2.0 * rng.normal(size=(batch, size, size, channels))))
    flat = latent.reshape(-1, channels)
    third = prototypes // 3
    chosen = flat[rng.choice(len(flat), size=2 * third, replace=False)]
    steps = rng.normal(size=(third, channels)) * np.logspace(-4, -1, third)[:, None] / math.sqrt(channels)
    moved = np.clip(chosen[third:] + steps, 0.0, 1.0)
    table = np.concatenate([chosen[:third], moved, rng.uniform(size=(prototypes - 2 * third, channels))])
    return latent.astype("float32"), table.astype("float32")


def exact_distances(latent, prototypes):
    z = latent.astype("float64")[..., None, :]
    return ((z - prototypes.astype("float64")) ** 2).sum(-1)


def layer_with(prototypes, distance_dtype="float32", prototype_size=1):
    layer = PrototypeLayer(len(prototypes), prototype_size=prototype_size, distance_dtype=distance_dtype)
    layer.build((None, 7, 7, prototypes.shape[-1]))
    layer.prototypes.assign(prototypes.reshape(len(prototypes), 1, 1, -1))
    return layer


def similarity_error(distances, exact):
    return float(np.max(np.abs(np.asarray(log_similarity(np.asarray(distances, "float64"))) - np.asarray(log_similarity(exact)))))


# -- precision ---------------------------------------------------------------------------------------
def test_float32_and_float64_agree_on_random_latents(rng):
    latent = rng.uniform(size=(2, 5, 6, 16)).astype("float32")
    prototypes = rng.uniform(size=(9, 16)).astype("float32")
    exact = exact_distances(latent, prototypes)
    float32 = np.asarray(layer_with(prototypes, "float32")(latent))
    float64 = np.asarray(layer_with(prototypes, "float64")(latent))
    assert float32.dtype == float64.dtype == np.float32
    np.testing.assert_allclose(float32, exact, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(float32, float64, rtol=1e-6, atol=1e-6)
    assert similarity_error(float32, exact) < 1e-5


def test_similarity_next_to_prototypes_stays_within_the_bound():
    latent, prototypes = near_prototype_case()
    exact = exact_distances(latent, prototypes)
    assert exact.min() == 0.0 and np.sum(exact < 1e-2) >= 12  # the case has pushed and nearly pushed prototypes
    distances = np.asarray(layer_with(prototypes)(latent))
    assert similarity_error(distances, exact) < SIMILARITY_BOUND
    pushed = np.asarray(log_similarity(distances.min(axis=(0, 1, 2))))[: len(prototypes) // 3]
    np.testing.assert_allclose(pushed, math.log(1.0 / 1e-4), atol=SIMILARITY_BOUND)
    assert similarity_error(np.asarray(layer_with(prototypes, "float64")(latent)), exact) < 1e-5
    # the case is one the plain float32 expansion gets wrong
    z, p = latent.reshape(-1, latent.shape[-1]), prototypes
    plain = np.maximum((z * z).sum(-1, keepdims=True) - 2.0 * (z @ p.T) + (p * p).sum(-1), 0.0).reshape(exact.shape)
    assert similarity_error(plain, exact) > PLAIN_FLOAT32_ERROR_FLOOR


def test_precision_survives_graph_optimisation():
    """Grappler's arithmetic optimiser turns chains of additions into one sum in any order; the layer guards against it."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("a TensorFlow graph")
    import tensorflow as tf

    latent, prototypes = near_prototype_case(seed=1, batch=8)
    layer = layer_with(prototypes)
    distances = tf.function(lambda z: layer(z))(tf.constant(latent)).numpy()
    assert similarity_error(distances, exact_distances(latent, prototypes)) < SIMILARITY_BOUND


def test_latents_outside_the_prototypes_range_keep_relative_precision(rng):
    """The split's scale is the prototypes' largest component; larger latents lose exactness only far from them."""
    prototypes = rng.uniform(size=(5, 32)).astype("float32")
    latent = np.concatenate([rng.uniform(size=(1, 3, 3, 32)) * 50.0, rng.normal(size=(1, 3, 3, 32)) * 3.0]).astype("float32")
    exact = exact_distances(latent, prototypes)
    np.testing.assert_allclose(np.asarray(layer_with(prototypes)(latent)), exact, rtol=1e-5)


def test_high_part_bits_keep_dot_products_below_float32_precision():
    for depth in (1, 6, 128, 512, 2048, 100_000):
        bits = high_part_bits(depth)
        assert depth * 4**bits <= 2**23 or bits == 0
        assert depth * 4 ** (bits + 1) > 2**23  # no finer grid would do


def test_gradient_is_the_exact_one(rng):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("GradientTape")
    import tensorflow as tf

    latent, prototypes = near_prototype_case(seed=2, batch=2, channels=16, prototypes=9)
    cotangent = rng.normal(size=latent.shape[:-1] + (9,))
    layer = layer_with(prototypes)
    z = tf.constant(latent)
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = tf.reduce_sum(layer(z) * cotangent)
    d_latent, d_prototypes = tape.gradient(loss, [z, layer.prototypes.value])
    difference = latent.astype("float64")[..., None, :] - prototypes.astype("float64")  # (B, h, w, P, D)
    np.testing.assert_allclose(d_latent.numpy(), (2.0 * difference * cotangent[..., None]).sum(-2), rtol=1e-5, atol=1e-5)
    expected = (-2.0 * difference * cotangent[..., None]).sum((0, 1, 2))
    np.testing.assert_allclose(d_prototypes.numpy().reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)


OTHER_BACKEND_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_prototype_precision import exact_distances, layer_with, near_prototype_case, similarity_error
from keras import ops
latent, prototypes = near_prototype_case(seed=3)
print("RESULT " + json.dumps({{"error": similarity_error(ops.convert_to_numpy(layer_with(prototypes)(latent)), exact_distances(latent, prototypes))}}))
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_precision_on_other_backends(backend):
    import importlib.util

    from tiny_models import subprocess_env

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    done = subprocess.run(
        [sys.executable, "-c", OTHER_BACKEND_SCRIPT.format(tests=str(TESTS))],
        capture_output=True, text=True, env=subprocess_env(KERAS_BACKEND=backend), timeout=300, check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-3000:]
    assert json.loads(lines[-1][len("RESULT ") :])["error"] < SIMILARITY_BOUND


# -- the argument and configs ----------------------------------------------------------------------
def test_config_round_trip_and_old_configs():
    layer = PrototypeLayer(4, distance_dtype="float64", name="prototypes")
    config = layer.get_config()
    assert config["distance_dtype"] == "float64" and config["name"] == "prototypes" and "dtype" in config
    assert PrototypeLayer.from_config(config).get_config() == config
    old = {key: value for key, value in config.items() if key != "distance_dtype"}  # saved before the argument existed
    assert PrototypeLayer.from_config(old).distance_dtype == "float32"
    assert PrototypeLayer(4).distance_dtype == "float32"
    with pytest.raises(ValueError, match="distance_dtype must be one of"):
        PrototypeLayer(4, distance_dtype="float16")
    with pytest.raises(ValueError, match="1x1 prototypes"):
        PrototypeLayer(4, prototype_size=2, distance_dtype="float64")


def test_protopnet_passes_the_argument_and_loads_old_configs():
    from tiny_models import build

    model = build("protopnet", distance_dtype="float64")
    config = model.get_config()
    assert config["distance_dtype"] == "float64" and model.prototype_layer.distance_dtype == "float64"
    assert type(model).from_config(config).prototype_layer.distance_dtype == "float64"
    old = {key: value for key, value in config.items() if key != "distance_dtype"}
    assert type(model).from_config(old).prototype_layer.distance_dtype == "float32"
    assert build("protopnet").get_config()["distance_dtype"] == "float32"


# -- ONNX: a pushed tiny ProtoPNet at the default precision ------------------------------------------
@pytest.fixture(scope="module")
def pushed_protopnet(samples):
    from tiny_models import build

    model = build("protopnet", seed=3)
    model.push_prototypes(samples[0], samples[1])
    return model


@pytest.fixture(scope="module")
def exported(pushed_protopnet, tmp_path_factory):
    from glasszoo.export import OnnxModel, to_onnx

    return OnnxModel(to_onnx(pushed_protopnet, tmp_path_factory.mktemp("onnx") / "protopnet.onnx"))


def _parity(served, expected):
    """Largest |difference| per output; the similarities are the ones a push makes sensitive."""
    return {name: float(np.max(np.abs(np.asarray(served[name], "float64") - expected[name]))) for name in served}


def _assert_parity(differences, runtime):
    for name, difference in differences.items():
        assert difference < SIMILARITY_BOUND * (3.0 if name == "upsampled_similarity_maps" else 1.0), (runtime, name, differences)


def _images(pushed_protopnet, samples):
    """The push's source images (each has a patch at distance ~0 from a prototype) and a few others."""
    sources = pushed_protopnet.prototype_provenance["source_image"]
    return np.concatenate([sources[:6], samples[0][:2]])


def test_onnxruntime_parity_after_a_push(pushed_protopnet, exported, samples):
    images = _images(pushed_protopnet, samples)
    expected = pushed_protopnet.explain(images)
    assert float(np.max(expected["prototype_similarity"])) > 9.0  # pushed: similarities near log(1 / 1e-4)
    served = exported(images)
    _assert_parity(_parity(served, expected), "onnxruntime")
    np.testing.assert_array_equal(served["logits"].argmax(-1), expected["logits"].argmax(-1))


def test_onnx_reference_evaluator_parity_after_a_push(pushed_protopnet, exported, samples):
    import onnx
    from onnx.reference import ReferenceEvaluator

    images = _images(pushed_protopnet, samples)[:3]
    proto = onnx.load(exported.path)
    names = [output.name for output in proto.graph.output]
    evaluated = dict(zip(names, ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: images})))
    _assert_parity(_parity(evaluated, pushed_protopnet.explain(images)), "onnx reference evaluator")


def test_openvino_parity_after_a_push_when_installed(pushed_protopnet, exported, samples):
    openvino = pytest.importorskip("openvino")
    images = _images(pushed_protopnet, samples)[:3]
    compiled = openvino.Core().compile_model(exported.path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    served = {key.get_any_name(): value for key, value in compiled({compiled.inputs[0].get_any_name(): images}).items()}
    _assert_parity(_parity(served, pushed_protopnet.explain(images)), "openvino")


# -- the benchmark runs --------------------------------------------------------------------------------
def test_benchmark_smoke(tmp_path, capsys):
    """bench/prototype_layer.py at tiny shapes, TensorFlow only: tables and JSON (no timing is asserted)."""
    import importlib.util

    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the benchmarks run from the TensorFlow test process")
    spec = importlib.util.spec_from_file_location("glasszoo_bench_prototype_layer", BENCH / "prototype_layer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "bench.json"
    argv = ["--backends", "tensorflow", "--batch", "2", "--channels", "8", "--prototypes", "6", "--pushed", "3"]
    module.main(argv + ["--repeats", "1", "--budget", "1", "--memory", "none", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "ours_float32" in printed and "speed vs reference" in printed
    results = json.loads(out.read_text())["results"]["tensorflow"]
    assert set(results["timing"]) == set(module.FORMULATIONS)
    assert results["accuracy"]["ours_float32"]["pushed_similarity_max_abs_diff"] < SIMILARITY_BOUND
