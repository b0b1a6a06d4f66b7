"""The HTTP service of an ONNX export (Starlette on uvicorn; onnxruntime + NumPy, no TensorFlow or Keras).

Routes:
- `GET /healthz`: `{"status": "ok", "batching": {...}}` (batches run, images served).
- `GET /v1/metadata`: the export's metadata (model, family, classes, input
  shape, outputs, output activation) and the service's limits.
- `POST /v1/predict`: images as JSON (`{"images": [...]}` or a bare array,
  floats in [0, 1]), one raw `image/png` / `image/jpeg` body, or
  multipart/form-data file uploads. Answers, per `?format=`:
  `json` (default: predictions and every output as nested lists), `npz`
  (every output, plus `probabilities`) or `png` (the family's explanation
  picture of a single image).

Bad input gets a 4xx with a JSON `{"error": message}` (the messages of
`OnnxModel`'s checks, naming the upload); bodies and pixels are bounded
before they are decoded. Requests are micro-batched (`MicroBatcher`) onto
one onnxruntime session. On shutdown (SIGINT/SIGTERM) uvicorn stops
accepting connections and waits for the requests in flight, whose batches
still run, then the batcher stops.

Why Starlette + uvicorn: a small, well-kept ASGI stack (Starlette's
dependencies are anyio alone; uvicorn is its reference server) with
streaming request bodies, which the limits need; FastAPI would add pydantic
and schema machinery this service does not use.
"""

import contextlib
import io
import json

import numpy as np

from glasszoo.export.predictions import class_names_for, class_scores, top_classes
from glasszoo.serving.batcher import MicroBatcher, ServiceClosed
from glasszoo.serving.request_images import RequestError, images_from_request, read_limited

FORMATS = ("json", "npz", "png")
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
DEFAULT_MAX_PIXELS = 16 * 2**20


def create_app(model, max_batch=32, batch_window_ms=5.0, max_body_bytes=DEFAULT_MAX_BODY_BYTES, max_pixels=DEFAULT_MAX_PIXELS):
    """The Starlette application serving `model`.

    Args:
        model: a `glasszoo.export.OnnxModel` (or the path of an `.onnx` file).
        max_batch: most images run together.
        batch_window_ms: how long the first request of a batch waits for others.
        max_body_bytes: largest request body accepted (413 beyond).
        max_pixels: most values (images x height x width x channels, or one
            upload's width x height) a request may hold (413 beyond).

    Example:
    >>> import uvicorn  # doctest: +SKIP
    >>> uvicorn.run(create_app("inam_fashion_mnist.onnx"), port=8000)  # doctest: +SKIP
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from glasszoo.export.runtime import OnnxModel

        model = OnnxModel(model)
    batcher = MicroBatcher(model, max_batch=max_batch, window=batch_window_ms / 1000.0)
    limits = {"max_batch": int(max_batch), "batch_window_ms": float(batch_window_ms), "max_body_bytes": int(max_body_bytes), "max_pixels": int(max_pixels)}
    activation = "sigmoid" if model.metadata.get("output_activation") == "sigmoid" else "softmax"
    family = model.metadata.get("family")
    metadata = {
        "model": model.metadata.get("model_name"),
        "family": family,
        "class_names": model.class_names,
        "input": {"name": model.input_name, "shape": [None, *model.input_shape], "type": model.input_type},
        "outputs": model.output_names,
        "output_activation": activation,
        "metadata": model.metadata,
        "limits": limits,
    }

    def error(status, message):
        return JSONResponse({"error": message}, status_code=status)

    async def healthz(request):
        return JSONResponse({"status": "ok", "batching": batcher.stats()})

    async def describe(request):
        return JSONResponse(metadata)

    async def predict(request):
        answer = request.query_params.get("format", "json")
        if answer not in FORMATS:
            return error(400, f"format must be one of {', '.join(FORMATS)}; got {answer!r}.")
        try:
            body = await read_limited(request.stream(), request.headers.get("content-length"), max_body_bytes)
            images, names = images_from_request(body, request.headers.get("content-type"), model.input_shape, max_pixels)
            if answer == "png" and len(images) != 1:
                raise RequestError(400, f"format=png draws one image's picture; the request holds {len(images)} images.")
        except RequestError as problem:
            return error(problem.status, str(problem))
        try:
            outputs = await batcher.submit(images)
        except ServiceClosed as problem:
            return error(503, str(problem))
        except Exception as problem:
            return error(500, f"The model failed on this request: {' '.join(str(problem).split())}")
        scores_name, scores = class_scores(outputs, "the served model")
        names_used = class_names_for(model.class_names, scores.shape[-1])
        probabilities, ranked = top_classes(scores, activation, names_used)
        if answer == "npz":
            buffer = io.BytesIO()
            np.savez(buffer, probabilities=probabilities.astype("float32"), **outputs)
            return Response(buffer.getvalue(), media_type="application/x-npz")
        if answer == "png":
            return await _picture_response(family, images, outputs, names_used, probabilities, error)
        return JSONResponse({
            "model": metadata["model"],
            "family": family,
            "predictions": [{"image": name, **result} for name, result in zip(names, ranked)],
            "outputs": {name: value.tolist() for name, value in outputs.items()},
        })

    async def _picture_response(family, images, outputs, names_used, probabilities, error):
        import anyio

        if family is None:
            return error(400, "This export has no glasszoo metadata 'family': there is no explanation picture to draw.")
        try:
            from glasszoo.explain import pictures
        except ImportError as problem:  # matplotlib missing in a minimal serving install
            return error(501, f"Pictures need matplotlib: {problem}")
        problem = pictures.missing_outputs(family, outputs)
        if problem:
            return error(400, problem)

        def draw():
            figure = pictures.explanation_picture(family, images, outputs, 0, names_used, probabilities)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png")
            return buffer.getvalue()

        return Response(await anyio.to_thread.run_sync(draw), media_type="image/png")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.close()  # after uvicorn has finished the requests in flight

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/v1/metadata", describe, methods=["GET"]),
            Route("/v1/predict", predict, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.model = model
    return app


def serve(model_path, host="127.0.0.1", port=8000, max_batch=32, batch_window_ms=5.0, max_body_bytes=DEFAULT_MAX_BODY_BYTES,
          max_pixels=DEFAULT_MAX_PIXELS, providers=None, graceful_timeout=30.0, log_level="info"):
    """Serves `model_path` over HTTP until SIGINT/SIGTERM (`glasszoo serve`); the requests in flight finish first.

    Args:
        model_path: the `.onnx` file.
        host: interface to bind (127.0.0.1: this machine only).
        port: TCP port.
        max_batch, batch_window_ms, max_body_bytes, max_pixels: see `create_app`.
        providers: onnxruntime providers (None: CUDA when it works, else CPU).
        graceful_timeout: seconds the requests in flight get at shutdown.
        log_level: uvicorn's.

    Example:
    >>> serve("inam_fashion_mnist.onnx", port=8000)  # doctest: +SKIP
    """
    import uvicorn

    from glasszoo.export.runtime import OnnxModel

    model = OnnxModel(model_path, providers=providers)
    app = create_app(model, max_batch, batch_window_ms, max_body_bytes, max_pixels)
    print(json.dumps({"serving": str(model_path), "url": f"http://{host}:{port}", "providers": model.providers}), flush=True)
    uvicorn.run(app, host=host, port=int(port), timeout_graceful_shutdown=graceful_timeout, log_level=log_level)
