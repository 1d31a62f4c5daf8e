"""Load run of the draw-a-digit server: concurrent clients send real MNIST test digits as PNG, every answer checked.

    python benchmarks/serve_load.py --ckpt_path PATH.ckpt [PATH2.ckpt ...] [--data-dir data] [--clients 8]
                                    [--requests 400] [--repeats 3] [--time-limit 300] [--out FILE]

Run from a checkout, with the project installed (``pip install -e ".[dev]"``). For each network it starts
``python -m mnist_lit serve`` as its own process on 127.0.0.1 and a free port, as a user would run it; each client
is a thread with one keep-alive connection, taking the next of the first N test digits until all N are sent. An
answer is correct when it is the digit that the network itself gives the same PNG file through ``predict``'s path
(:func:`load_predict_inputs`, then the same network in this process); accuracy against the labels is reported
beside it. One warm-up request per client comes first and is not counted. The load run is repeated against the
same server (timings on a shared machine swing by tens of percent; the table gives medians and the range), then the
server is stopped. Traffic goes to the loopback address only. Prints a markdown table (and writes JSON with
``--out``); exits with 1 if any answer in any run is wrong or missing, or the time limit passes. Nothing here
asserts a time."""

from __future__ import annotations

import argparse
import gzip
import io
import ipaddress
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from mnist_lit.data.images import load_predict_inputs
from mnist_lit.inference.runners import load_runner

#: The only address this benchmark sends to.
HOST = "127.0.0.1"


@dataclass
class LoadResult:
    """One network's load run: what was sent, what came back, and how fast."""

    network: str
    checkpoint: str
    clients: int
    requests: int
    answered: int = 0
    correct: int = 0
    right_label: int = 0
    errors: list[str] = field(default_factory=list)
    max_probability_diff: float = 0.0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every request answered, each the network's own prediction, no error."""
        return self.answered == self.correct == self.requests and not self.errors

    def summary(self) -> dict[str, Any]:
        """The numbers of the table (latency percentiles by the nearest-rank method)."""
        ordered = sorted(self.latencies_ms)

        def percentile(q: float) -> float:
            return ordered[max(0, int(np.ceil(q * len(ordered))) - 1)] if ordered else float("nan")

        return {
            **{k: v for k, v in asdict(self).items() if k != "latencies_ms"},
            "errors": self.errors[:10],
            "error_count": len(self.errors),
            "requests_per_s": self.answered / self.wall_s if self.wall_s else 0.0,
            "p50_ms": percentile(0.50),
            "p95_ms": percentile(0.95),
            "max_ms": ordered[-1] if ordered else float("nan"),
            "mean_ms": statistics.fmean(ordered) if ordered else float("nan"),
        }


def read_idx(raw_dir: Path, name: str, offset: int) -> np.ndarray:
    """The payload of an IDX file in ``raw_dir``, gzipped or not."""
    plain, gz = raw_dir / name, raw_dir / f"{name}.gz"
    data = plain.read_bytes() if plain.is_file() else gzip.decompress(gz.read_bytes())
    return np.frombuffer(data, np.uint8, offset=offset)


def mnist_test_pngs(data_dir: Path, count: int) -> tuple[list[bytes], np.ndarray]:
    """The first ``count`` MNIST test images as PNG files' bytes, and their labels."""
    raw_dir = data_dir / "MNIST" / "raw"
    images = read_idx(raw_dir, "t10k-images-idx3-ubyte", 16).reshape(-1, 28, 28)[:count]
    labels = read_idx(raw_dir, "t10k-labels-idx1-ubyte", 8)[:count]
    pngs = []
    for image in images:
        out = io.BytesIO()
        Image.fromarray(image).save(out, format="PNG")
        pngs.append(out.getvalue())
    return pngs, labels


def expected_probabilities(ckpt: Path, pngs: list[bytes]) -> np.ndarray:
    """What ``predict`` makes of the PNG files: its reading and preprocessing, then the network, in this process."""
    with tempfile.TemporaryDirectory() as folder:
        for i, png in enumerate(pngs):
            (Path(folder) / f"{i:05d}.png").write_bytes(png)
        inputs = load_predict_inputs(folder)
    if inputs.skipped:
        raise SystemExit(f"predict's path could not read {inputs.skipped[:3]}")
    return load_runner(ckpt).probabilities(inputs.images[:, None])


class Server:
    """``python -m mnist_lit serve`` in a subprocess on 127.0.0.1 and a free port, its output in a log file."""

    def __init__(self, ckpt: Path, log: Path, start_timeout: float = 180.0) -> None:
        self.log = log
        command = [sys.executable, "-m", "mnist_lit", "serve", "--ckpt_path", str(ckpt), "--host", HOST, "--port", "0"]
        with log.open("wb") as out:  # a file, not a pipe: the access log of 400 requests would fill a pipe's buffer
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        self.url = self._wait_for_address(start_timeout)

    def _wait_for_address(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"at (http://127\.0\.0\.1:\d+/)", self.log.read_text(errors="replace"))
            if found:
                url = found.group(1)
                while time.monotonic() < deadline:  # the address is printed just before uvicorn accepts
                    try:
                        httpx.get(url + "api/health", timeout=5).raise_for_status()
                        return url
                    except httpx.TransportError:
                        time.sleep(0.1)
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"the server did not start; its output:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        """Stop the server (Ctrl+C's signal, then a kill if it lingers)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_load(
    url: str, pngs: list[bytes], labels: np.ndarray, expected: np.ndarray, clients: int, time_limit: float
) -> LoadResult:
    """Send every PNG once, from ``clients`` threads at a time, and check each answer."""
    host = httpx.URL(url).host
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to send load to {host}: the load run stays on the loopback address")
    health = httpx.get(url + "api/health", timeout=10).json()
    result = LoadResult(health["network"], health["checkpoint"], clients, len(pngs))
    lock = threading.Lock()
    next_index = iter(range(len(pngs)))
    expected_digits = expected.argmax(axis=1)

    def client(http: httpx.Client) -> None:
        while time.monotonic() < deadline:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            start = time.perf_counter()
            try:
                response = http.post("api/predict", content=pngs[i], headers={"content-type": "image/png"})
                elapsed = (time.perf_counter() - start) * 1000
                answer = response.json()
            except (httpx.HTTPError, ValueError) as err:
                with lock:
                    result.errors.append(f"request {i}: {type(err).__name__}: {err}")
                continue
            with lock:
                result.latencies_ms.append(elapsed)
                if response.status_code != 200:
                    result.errors.append(f"request {i}: {response.status_code} {answer.get('detail')}")
                    continue
                result.answered += 1
                result.correct += int(answer["digit"] == expected_digits[i])
                result.right_label += int(answer["digit"] == labels[i])
                diff = float(np.abs(np.asarray(answer["probabilities"]) - expected[i]).max())
                result.max_probability_diff = max(result.max_probability_diff, diff)

    connections = [httpx.Client(base_url=url, timeout=30) for _ in range(clients)]
    try:
        for http in connections:  # opens each client's keep-alive connection; not counted
            http.post("api/predict", content=pngs[0], headers={"content-type": "image/png"}).raise_for_status()
        start = time.perf_counter()
        deadline = time.monotonic() + time_limit
        with ThreadPoolExecutor(max_workers=clients) as pool:
            for future in [pool.submit(client, http) for http in connections]:
                future.result()
        result.wall_s = time.perf_counter() - start
    finally:
        for http in connections:
            http.close()
    if result.answered + len(result.errors) < result.requests:
        result.errors.append(f"time limit of {time_limit:g} s passed with {result.answered} answers")
    return result


def machine() -> str:
    """The CPU model and core count, and the Python version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def table(results: dict[str, list[LoadResult]]) -> str:
    """The markdown table: one row per network, over its repeated runs (medians, and the range of throughput)."""
    lines = [
        "| network | clients | requests per run | runs | correct (= the network's own prediction) | right (labels) | "
        "errors | requests/s, median (range) | p50 ms | p95 ms | max ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for runs in results.values():
        s = [run.summary() for run in runs]
        first = s[0]
        correct = ", ".join(f"{r['correct']}/{r['requests']}" for r in s)
        right = ", ".join(sorted({f"{r['right_label'] / r['requests']:.2%}" for r in s}))
        rates = [r["requests_per_s"] for r in s]
        errors = sum(r["error_count"] for r in s)
        lines.append(
            f"| {first['network']} | {first['clients']} | {first['requests']} | {len(s)} | {correct} | {right} | "
            f"{errors} | {statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f}) | "
            f"{statistics.median(r['p50_ms'] for r in s):.1f} | {statistics.median(r['p95_ms'] for r in s):.1f} | "
            f"{max(r['max_ms'] for r in s):.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the load against each network in turn; print the table; 0 when every answer was right."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/serve_load.py", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--ckpt_path", nargs="+", required=True, type=Path, help="checkpoints or .onnx files")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="holds MNIST/raw/t10k-* (default: data)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--requests", type=int, default=400, help="requests in all, one per test digit (default: 400)")
    parser.add_argument("--repeats", type=int, default=3, help="load runs per network (default: 3)")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds one run may take (default: 300)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    pngs, labels = mnist_test_pngs(args.data_dir, args.requests)
    results: dict[str, list[LoadResult]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for ckpt in args.ckpt_path:
            expected = expected_probabilities(ckpt, pngs)
            server = Server(ckpt, Path(scratch) / "server.log")
            try:
                results[str(ckpt)] = [
                    run_load(server.url, pngs, labels, expected, args.clients, args.time_limit)
                    for _ in range(args.repeats)
                ]
            finally:
                server.stop()
    runs = [run for network_runs in results.values() for run in network_runs]
    print(table(results))
    print(f"\nMachine: {machine()}; load average before the runs {load_before:.1f}. Client and server on")
    print("the same machine, over 127.0.0.1.")
    for run in runs:
        for error in run.errors[:5]:
            print(f"{run.network}: {error}", file=sys.stderr)
    if args.out:
        summary = {"machine": machine(), "load_average_before": load_before, "runs": [run.summary() for run in runs]}
        args.out.write_text(json.dumps(summary, indent=1))
    return 0 if all(run.ok for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
