"""`glasszoo serve`: the HTTP service of an ONNX export, run as a real server in a process without TensorFlow.

Each test starts `glasszoo serve` on a free loopback port in a subprocess
whose import system refuses TensorFlow, Keras, tf2onnx, onnx, JAX and
PyTorch (the bootstrap of `test_serving.py`), talks to it with urllib,
and compares every answer with onnxruntime run in this process on the same
images. `MicroBatcher` is also tested alone, with a model that records
the batches it is given.
"""

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from test_serving import BOOTSTRAP, FAMILIES, ROOT
from tiny_models import build


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Service:
    """`glasszoo serve MODEL --port P ARGS` in a subprocess without TensorFlow; stopped with SIGTERM."""

    def __init__(self, model, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
        command = [sys.executable, "-c", BOOTSTRAP, "serve", str(model), "--port", str(self.port), "--provider", "cpu", *map(str, args)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        deadline = time.time() + 90
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"glasszoo serve exited with {self.process.returncode}: {self.process.stderr.read()}")
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if time.time() > deadline:
                self.stop()
                raise AssertionError("glasszoo serve did not answer /healthz within 90 s")
            time.sleep(0.2)

    def request(self, path, body=None, content_type=None, method=None):
        """`(status, content type, body bytes)`; 4xx/5xx answers are returned, not raised."""
        headers = {"Content-Type": content_type} if content_type else {}
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.headers.get("content-type", ""), answer.read()
        except urllib.error.HTTPError as answer:
            return answer.code, answer.headers.get("content-type", ""), answer.read()

    def get(self, path):
        return self.request(path)

    def post_json(self, images, query=""):
        return self.request("/v1/predict" + query, json.dumps({"images": np.asarray(images).tolist()}).encode(), "application/json")

    def stop(self, timeout=30):
        """SIGTERM, then the exit code and stderr (SIGKILL after `timeout` s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        return self.process.returncode, stderr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def clean_exit(code, stderr):
    """uvicorn finished its shutdown; it re-raises the SIGTERM it caught, so the exit is 0 or -SIGTERM."""
    assert code in (0, -signal.SIGTERM), (code, stderr)
    assert "Application shutdown complete" in stderr and "Traceback" not in stderr, stderr
    return True


def multipart(files):
    """A multipart/form-data body of `[(filename, bytes)]` as field "images": `(body, content type)`."""
    boundary = "glasszoo-test-boundary-7f3a"
    parts = []
    for name, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
        )
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nnot a file\r\n--{boundary}--\r\n'.encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def png_bytes(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(np.asarray(image)[..., 0] * 255).astype("uint8")).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (onnx path, onnxruntime in this process)."""
    from glasszoo.export import OnnxModel, to_onnx

    folder = tmp_path_factory.mktemp("service")
    result = {}
    for family in FAMILIES:
        path = to_onnx(build(family, seed=3), folder / f"{family}.onnx")
        result[family] = (path, OnnxModel(path, providers=["CPUExecutionProvider"]))
    return result


@pytest.fixture(scope="module")
def images(samples):
    return samples[0][:12]


@pytest.mark.parametrize("family", FAMILIES)
def test_service_answers_as_onnxruntime_does_in_process(family, exported, images):
    path, local = exported[family]
    expected = local(images[:4])
    with Service(path) as service:
        status, kind, body = service.get("/v1/metadata")
        assert status == 200 and kind.startswith("application/json")
        metadata = json.loads(body)
        assert metadata["family"] == family and metadata["outputs"] == local.output_names
        assert metadata["input"]["shape"] == [None, 28, 28, 1] and metadata["class_names"] == local.class_names

        status, _, body = service.post_json(images[:4])
        assert status == 200, body
        answer = json.loads(body)
        assert sorted(answer["outputs"]) == sorted(local.output_names)
        for name in local.output_names:
            np.testing.assert_allclose(np.asarray(answer["outputs"][name], "float32"), expected[name], atol=1e-5, rtol=1e-5, err_msg=name)
        # tiny untrained models nearly tie: the classes are read from the served logits themselves
        assert [p["class_index"] for p in answer["predictions"]] == np.asarray(answer["outputs"]["logits"]).argmax(-1).tolist()
        assert [p["image"] for p in answer["predictions"]] == [f"image[{i}]" for i in range(4)]

        status, kind, body = service.post_json(images[:4], "?format=npz")
        assert status == 200 and kind == "application/x-npz"
        with np.load(io.BytesIO(body)) as served:
            assert set(served.files) == set(local.output_names) | {"probabilities"}
            for name in local.output_names:
                np.testing.assert_allclose(served[name], expected[name], atol=1e-5, rtol=1e-5, err_msg=name)

        status, kind, body = service.post_json(images[:1], "?format=png")
        assert status == 200 and kind == "image/png", body[:200]
        assert body[:8] == b"\x89PNG\r\n\x1a\n" and len(body) > 5000
        code, stderr = service.stop()
    assert clean_exit(code, stderr)  # any TensorFlow/Keras import would have failed a request above


def test_uploads_and_raw_images_are_read_as_predict_reads_files(exported, images, tmp_path):
    from glasszoo.data.image_files import read_image_files

    path, local = exported[FAMILIES[0]]
    files = []
    for i in range(3):
        (tmp_path / f"upload{i}.png").write_bytes(png_bytes(images[i]))
        files.append(tmp_path / f"upload{i}.png")
    expected = local(read_image_files(files, (28, 28, 1)))
    with Service(path) as service:
        body, kind = multipart([(f.name, f.read_bytes()) for f in files])
        status, _, answer = service.request("/v1/predict", body, kind)
        assert status == 200, answer
        answer = json.loads(answer)
        assert [p["image"] for p in answer["predictions"]] == [f.name for f in files]
        np.testing.assert_allclose(np.asarray(answer["outputs"]["logits"], "float32"), expected["logits"], atol=1e-5, rtol=1e-5)

        status, _, answer = service.request("/v1/predict", files[1].read_bytes(), "image/png")
        assert status == 200, answer
        np.testing.assert_allclose(np.asarray(json.loads(answer)["outputs"]["logits"], "float32"), expected["logits"][1:2], atol=1e-5, rtol=1e-5)


def test_concurrent_requests_are_micro_batched_and_each_answered_right(exported, images):
    path, local = exported[FAMILIES[0]]
    expected = local(images)["logits"]
    requests = [list(range(i % 12, i % 12 + 1 + i % 3)) for i in range(36)]  # 1-3 images each, overlapping
    requests = [[j % 12 for j in chosen] for chosen in requests]
    answers = [None] * len(requests)
    with Service(path, "--batch-window-ms", 30, "--max-batch", 16) as service:

        def client(k):
            status, _, body = service.post_json(images[requests[k]])
            answers[k] = (status, json.loads(body))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        stats = json.loads(service.get("/healthz")[2])["batching"]
    for chosen, (status, answer) in zip(requests, answers):
        assert status == 200, answer
        np.testing.assert_allclose(np.asarray(answer["outputs"]["logits"], "float32"), expected[chosen], atol=1e-5, rtol=1e-5)
    assert stats["images"] == sum(map(len, requests))  # none lost, none run twice
    assert 1 < stats["largest_batch"] <= 16 and stats["batches"] < len(requests)  # requests shared runs


def test_bad_requests_get_a_4xx_naming_the_problem_and_lose_nothing(exported, images):
    path, local = exported[FAMILIES[0]]
    big = np.zeros((100, 100, 1))
    with Service(path, "--max-body-mb", 0.25, "--max-pixels", 4 * 28 * 28) as service:
        cases = [
            (service.post_json(images[:2, :20]), 400, "Expected"),
            (service.post_json(np.full((1, 28, 28, 1), 2.0)), 400, "range"),
            (service.request("/v1/predict", b'{"images": [[1, 2], [3]]}', "application/json"), 400, "rectangular"),
            (service.request("/v1/predict", b'{"pictures": []}', "application/json"), 400, "'images'"),
            (service.request("/v1/predict", b"{not json", "application/json"), 400, "cannot be parsed"),
            (service.request("/v1/predict", b"", "application/json"), 400, "no body"),
            (service.request("/v1/predict", b"hello", "text/plain"), 415, "text/plain"),
            (service.post_json(images[:1], "?format=gif"), 400, "format must be one of"),
            (service.post_json(images[:2], "?format=png"), 400, "one image"),
            (service.post_json(images[:5]), 413, "--max-pixels"),
            (service.request("/v1/predict", b"x" * (300 * 1024), "application/json"), 413, "--max-body-mb"),
            (service.request("/v1/predict", *multipart([("notes.png", b"these are not pixels")])), 400, "'notes.png'"),
            (service.request("/v1/predict", png_bytes(big), "image/png"), 413, "100x100"),
        ]
        for (status, kind, body), want_status, phrase in cases:
            assert status == want_status, (want_status, phrase, body)
            assert kind.startswith("application/json")
            assert phrase in json.loads(body)["error"], (phrase, body)
        nan = json.dumps({"images": [[[[float("nan")]] * 28] * 28]}).encode()  # Python's json writes NaN
        status, _, body = service.request("/v1/predict", nan, "application/json")
        assert status == 400 and "NaN" in json.loads(body)["error"]
        status, _, body = service.post_json(images[:4])  # the service still serves, and right
        assert status == 200
        np.testing.assert_allclose(np.asarray(json.loads(body)["outputs"]["logits"], "float32"), local(images[:4])["logits"], atol=1e-5)


def test_shutdown_finishes_the_requests_in_flight(exported, images):
    path, local = exported[FAMILIES[0]]
    service = Service(path, "--batch-window-ms", 1500)
    answer = {}

    def client():
        answer["reply"] = service.post_json(images[:2])

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(0.5)  # the request waits in its 1.5 s batch window
    service.process.send_signal(signal.SIGTERM)
    thread.join(timeout=60)
    code, stderr = service.stop()
    status, _, body = answer["reply"]
    assert status == 200, body
    np.testing.assert_allclose(np.asarray(json.loads(body)["outputs"]["logits"], "float32"), local(images[:2])["logits"], atol=1e-5)
    assert clean_exit(code, stderr)


# -- the batcher alone ------------------------------------------------------------
class RecordingModel:
    """Doubles its input; records each batch size (and fails on request)."""

    def __init__(self, fail=False):
        self.sizes, self.fail = [], fail

    def __call__(self, images):
        self.sizes.append(len(images))
        if self.fail:
            raise RuntimeError("model broke")
        return {"double": images * 2, "sum": images.reshape(len(images), -1).sum(-1)}


def test_batcher_groups_requests_up_to_max_batch_and_splits_outputs_back():
    from glasszoo.serving import MicroBatcher, ServiceClosed

    model = RecordingModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch=8, window=0.05)
        await batcher.start()
        batches = [np.full((1 + k % 3, 2, 2, 1), float(k), "float32") for k in range(10)] + [np.ones((20, 2, 2, 1), "float32")]
        results = await asyncio.gather(*(batcher.submit(b) for b in batches))
        await batcher.close()
        with pytest.raises(ServiceClosed):
            await batcher.submit(batches[0])
        return batches, results, batcher.stats()

    batches, results, stats = asyncio.run(scenario())
    for images, outputs in zip(batches, results):
        np.testing.assert_array_equal(outputs["double"], images * 2)
        np.testing.assert_array_equal(outputs["sum"], images.reshape(len(images), -1).sum(-1))
    assert max(model.sizes) == 8 and sum(model.sizes) == sum(map(len, batches))  # the 20-image request ran in chunks of 8
    assert stats["images"] == sum(map(len, batches)) and stats["batches"] < len(batches)


def test_batcher_gives_every_request_of_a_failed_batch_the_error():
    from glasszoo.serving import MicroBatcher

    async def scenario():
        batcher = MicroBatcher(RecordingModel(fail=True), max_batch=8, window=0.05)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(np.zeros((1, 2, 2, 1), "float32")) for _ in range(3)), return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "model broke" in str(r) for r in results)
