"""Micro-batching: the images of requests that arrive within a short window run as one batch on one model.

One worker task owns the model: it takes the first waiting request, waits
up to `window` seconds for more (until `max_batch` images are gathered),
runs them together in a worker thread and hands each request its slice of
the outputs. Requests are never merged across image sizes (a fully
convolutional export accepts any size), and a request larger than
`max_batch` runs alone, in chunks of `max_batch`.
"""

import asyncio
import concurrent.futures
import dataclasses

import numpy as np

_STOP = object()


@dataclasses.dataclass
class _Pending:
    images: np.ndarray
    future: asyncio.Future


class ServiceClosed(RuntimeError):
    """Raised by `submit` once the batcher is closing (the service is shutting down)."""


class MicroBatcher:
    """Runs the image batches of concurrent requests together on one model.

    Args:
        run: callable `(B, H, W, C)` float32 -> dict name -> `(B, ...)` arrays
            (e.g. a `glasszoo.export.OnnxModel`); called in one worker thread,
            one batch at a time.
        max_batch: most images in one run.
        window: seconds to wait for more requests after the first one of a
            batch (0: run whatever is waiting at once).

    Example:
    >>> batcher = MicroBatcher(OnnxModel("model.onnx"), max_batch=32, window=0.005)  # doctest: +SKIP
    >>> await batcher.start()  # doctest: +SKIP
    >>> outputs = await batcher.submit(images)  # dict name -> arrays for these images  # doctest: +SKIP
    >>> await batcher.close()  # runs what is queued, then stops  # doctest: +SKIP
    """

    def __init__(self, run, max_batch=32, window=0.005):
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be at least 1; got {max_batch}.")
        if not float(window) >= 0:
            raise ValueError(f"window must be a number of seconds >= 0; got {window}.")
        self.run, self.max_batch, self.window = run, int(max_batch), float(window)
        self.batches = self.images = self.largest_batch = 0
        self._queue = None
        self._worker = None
        self._closing = False
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="glasszoo-model")

    async def start(self):
        """Starts the worker task on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def submit(self, images):
        """The model's outputs for `images` (a validated float32 batch), once its batch has run.

        Raises:
            ServiceClosed: the batcher is closing.
            Exception: whatever the model raised for the batch.
        """
        if self._closing or self._worker is None:
            raise ServiceClosed("The service is shutting down; it takes no new requests.")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(images, future))
        return await future

    async def close(self):
        """Runs every request queued so far, then stops the worker and its thread."""
        if self._worker is None:
            return
        self._closing = True
        await self._queue.put(_STOP)
        await self._worker
        self._worker = None
        self._executor.shutdown(wait=True)

    def stats(self):
        """Batches run, images served and the largest batch so far."""
        return {"batches": self.batches, "images": self.images, "largest_batch": self.largest_batch,
                "max_batch": self.max_batch, "window_ms": self.window * 1000}

    async def _work(self):
        loop = asyncio.get_running_loop()
        carried = None
        while True:
            first = carried if carried is not None else await self._queue.get()
            carried = None
            if first is _STOP:
                return
            batch, count, stop = [first], len(first.images), False
            deadline = loop.time() + self.window
            while count < self.max_batch:
                try:
                    waiting = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        waiting = await asyncio.wait_for(self._queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if waiting is _STOP:
                    stop = True
                    break
                fits = waiting.images.shape[1:] == first.images.shape[1:] and count + len(waiting.images) <= self.max_batch
                if not fits:
                    carried = waiting  # starts the next batch
                    break
                batch.append(waiting)
                count += len(waiting.images)
            await self._run(loop, batch)
            if stop:
                carried = _STOP

    async def _run(self, loop, batch):
        live = [item for item in batch if not item.future.done()]  # a client that went away was cancelled
        if not live:
            return
        images = np.concatenate([item.images for item in live])
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_chunks, images)
        except Exception as error:  # every request of the batch gets the model's error
            for item in live:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        self.batches += 1
        self.images += len(images)
        self.largest_batch = max(self.largest_batch, min(len(images), self.max_batch))
        start = 0
        for item in live:
            stop = start + len(item.images)
            if not item.future.done():
                item.future.set_result({name: value[start:stop] for name, value in outputs.items()})
            start = stop

    def _run_chunks(self, images):
        if len(images) <= self.max_batch:
            return self.run(images)
        parts = [self.run(images[i : i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
