"""Load test of `glasszoo serve` on loopback: throughput and latency against `OnnxModel` in-process, with and without micro-batching.

A preset (default: the first of `bench_common.default_presets()`, i.e. an
interpretable family's demo preset) is exported to ONNX; then three modes
serve the same requests (`--requests` in all, each of `--images` shipped
test images, sent by `--clients` concurrent client threads):

- in-process: each client thread calls one shared `OnnxModel` directly
  (onnxruntime releases the GIL, so the threads overlap);
- HTTP micro-batched: `glasszoo serve` (a subprocess on 127.0.0.1) with
  `--max-batch 32 --batch-window-ms 5`; each client keeps one HTTP/1.1
  connection and posts JSON;
- HTTP unbatched: the same with `--max-batch 1 --batch-window-ms 0`.

Every answer is compared with the in-process outputs of its images (every
output, 1e-5): the table counts requests lost (an error or no answer) and
answered wrongly, which must both be 0. Only 127.0.0.1 is contacted; every
mode stops after `--requests` requests or `--budget` seconds. Prints
requests/s and p50/p99 latency, and the throughput ratio to in-process.

    python3 bench/http_load.py [--models PRESET] [--clients 8] [--requests 400] [--images 1] [--budget 60] [--json out.json]
"""

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import add_selection_arguments, markdown_table, ratio, select_presets, write_json  # noqa: E402

MODES = {
    "in-process OnnxModel": None,
    "HTTP micro-batched (max 32, 5 ms)": ("--max-batch", "32", "--batch-window-ms", "5"),
    "HTTP unbatched (max 1, 0 ms)": ("--max-batch", "1", "--batch-window-ms", "0"),
}


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`glasszoo serve` on a free loopback port; stopped with SIGTERM."""

    def __init__(self, model_path, arguments):
        self.port = _free_port()
        command = [sys.executable, "-m", "glasszoo", "serve", str(model_path), "--port", str(self.port), "--provider", "cpu",
                   "--log-level", "warning", *arguments]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"glasszoo serve exited: {self.process.stderr.read()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    connection.close()
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("glasszoo serve did not start within 120 s")

    def stats(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request("GET", "/healthz")
        return json.loads(connection.getresponse().read())["batching"]

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _plan(requests, clients, images, pool):
    """Per client, the list of image-index arrays it sends (request k uses images k*n ... k*n + n - 1 of the pool)."""
    plan = [[] for _ in range(clients)]
    for k in range(requests):
        plan[k % clients].append(np.arange(k * images, (k + 1) * images) % len(pool))
    return plan


def _run_clients(plan, send, budget):
    """Runs one thread per client; returns (latencies in s, lost, wrong, seconds)."""
    latencies, lost, wrong = [], [0], [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + budget

    def client(requests):
        state = {}
        for chosen in requests:
            if time.perf_counter() > stop_at:
                return
            start = time.perf_counter()
            try:
                correct = send(state, chosen)
            except Exception:
                correct = None
            elapsed = time.perf_counter() - start
            with lock:
                if correct is None:
                    lost[0] += 1
                else:
                    latencies.append(elapsed)
                    wrong[0] += 0 if correct else 1

    threads = [threading.Thread(target=client, args=(requests,)) for requests in plan]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, lost[0], wrong[0], time.perf_counter() - started


def _matches(outputs, expected, chosen):
    return sorted(outputs) == sorted(expected) and all(
        np.allclose(np.asarray(outputs[name], "float32"), expected[name][chosen], atol=1e-5, rtol=1e-5) for name in expected
    )


def bench_preset(preset, clients, requests, images, budget, folder):
    import glasszoo
    from glasszoo.data.samples import load_samples
    from glasszoo.export import OnnxModel, to_onnx

    model = glasszoo.load(preset)
    path = to_onnx(model, os.path.join(folder, f"{preset}.onnx"))
    dataset = (glasszoo.model_info(preset)[1].get("data") or {}).get("dataset")
    pool = load_samples(dataset)[0] if dataset else load_samples()[0]
    local = OnnxModel(path, providers=["CPUExecutionProvider"])
    expected = local(pool)
    bodies = {}
    plan = _plan(requests, clients, images, pool)
    rows = []
    for mode, arguments in MODES.items():
        if arguments is None:
            def send(state, chosen):
                return _matches(local(pool[chosen]), expected, chosen)
            server = None
        else:
            server = Server(path, arguments)

            def send(state, chosen, port=server.port):
                if "connection" not in state:
                    state["connection"] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                key = tuple(chosen)
                if key not in bodies:
                    bodies[key] = json.dumps({"images": pool[chosen].tolist()}).encode()
                try:
                    state["connection"].request("POST", "/v1/predict", bodies[key], {"Content-Type": "application/json"})
                    answer = state["connection"].getresponse()
                    payload = answer.read()
                except (OSError, http.client.HTTPException):
                    state.pop("connection").close()
                    raise
                if answer.status != 200:
                    raise RuntimeError(payload[:200])
                return _matches(json.loads(payload)["outputs"], expected, chosen)

            _run_clients([plan[0][:2]], send, budget)  # warm-up: connection and first session run
        latencies, lost, wrong, seconds = _run_clients(plan, send, budget)
        stats = server.stats() if server else None
        if server:
            server.stop()
        answered = len(latencies)
        row = {
            "preset": preset, "mode": mode, "clients": clients, "images_per_request": images,
            "requests": answered + lost, "answered": answered, "lost": lost, "wrong": wrong, "seconds": round(seconds, 3),
            "requests_per_s": answered / seconds if seconds else 0.0,
            "p50_ms": float(np.percentile(latencies, 50) * 1000) if latencies else None,
            "p99_ms": float(np.percentile(latencies, 99) * 1000) if latencies else None,
        }
        if stats:
            row["mean_batch"] = stats["images"] / max(stats["batches"], 1) / images
        rows.append(row)
        print(f"  {preset} {mode}: {row['requests_per_s']:.0f} requests/s, p50 {row['p50_ms']:.1f} ms, lost {lost}, wrong {wrong}", flush=True)
    base = rows[0]["requests_per_s"]
    for row in rows:
        row["throughput_vs_in_process"] = row["requests_per_s"] / base if base else None
    return rows


def table(rows):
    header = ["preset", "mode", "clients", "requests", "requests/s", "p50 ms", "p99 ms", "vs in-process", "mean batch (requests)", "lost", "wrong"]
    cells = [
        [r["preset"], r["mode"], r["clients"], r["requests"], f"{r['requests_per_s']:.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
         ratio(r["throughput_vs_in_process"]), f"{r['mean_batch']:.1f}" if "mean_batch" in r else "-", r["lost"], r["wrong"]]
        for r in rows
    ]
    return markdown_table(header, cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_selection_arguments(parser)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--requests", type=int, default=400, help="requests per mode, over all clients")
    parser.add_argument("--images", type=int, default=1, help="images per request")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds after which a mode's clients stop sending")
    parser.add_argument("--repeats", type=int, default=1, help="unused (the shared benchmark interface)")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    presets = select_presets(args.families, args.models)
    if not (args.families or args.models):  # by default one preset: the first interpretable one
        presets = dict(list(presets.items())[:1])
    print(f"{args.clients} clients, {args.requests} requests of {args.images} image(s) per mode, loopback only", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for preset in presets:
            rows += bench_preset(preset, args.clients, args.requests, args.images, args.budget, folder)
    print()
    print(table(rows))
    settings = {"presets": list(presets), "clients": args.clients, "requests": args.requests, "images_per_request": args.images,
                "budget_s": args.budget, "repeats": args.repeats}
    write_json(args.json, "http_load", settings, rows)
    return rows


if __name__ == "__main__":
    main()
