"""The web app's API: real digits classified as ``predict`` would, every bad input answered with a reason, and
the same answers under concurrent requests. The network is a small CompactCNN trained here on real MNIST."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from mnist_lit.cli.serve import DEFAULT_HOST, bind_socket, build_parser
from mnist_lit.data.idx import MNIST_FILES
from mnist_lit.data.images import load_predict_inputs
from mnist_lit.errors import UserError
from mnist_lit.inference.runners import load_runner
from mnist_lit.inference.torch_runner import TorchRunner
from mnist_lit.serve.app import MAX_BODY_BYTES, create_app
from tests.helpers import REPO_ROOT, encode, error_message, exit_code, png_pixels

with warnings.catch_warnings():  # Starlette 1.x would rather its test client ran on httpx2; httpx still works
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.real_data

#: MNIST test images (N x 28 x 28 uint8) and their labels.
Digits = tuple[np.ndarray, np.ndarray]
#: Training steps (batch 128) of the test network: enough for about 97% on the test set, in a few seconds.
TRAIN_STEPS = 400


def train_tiny_checkpoint(base: Path, raw_dir: Path) -> Path:
    """A CompactCNN checkpoint trained on the real MNIST files in ``raw_dir`` for :data:`TRAIN_STEPS` steps.

    Made once per test session and kept under ``base`` (pytest's base temporary folder), so that every test module
    of the session finds it. The Trainer is plain (no logger, no callbacks) for speed; LightningCLI would record
    the network's class path in the checkpoint, which ``load_runner`` reads, so it is added here the same way.
    """
    ckpt = base / "serve-network" / "compact.ckpt"
    if ckpt.is_file():
        return ckpt
    import lightning.pytorch as pl

    from mnist_lit.data.datamodule import MNISTDataModule
    from mnist_lit.models import CompactCNN

    work = ckpt.parent
    raw = work / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for spec in MNIST_FILES:
        shutil.copy(raw_dir / f"{spec.filename}.gz", raw)
    pl.seed_everything(0, verbose=False)
    datamodule = MNISTDataModule(data_dir=str(work / "data"), download=False, val_split="test", batch_size=128)
    trainer = pl.Trainer(
        max_steps=TRAIN_STEPS, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=work,
    )  # fmt: skip
    trainer.fit(CompactCNN(), datamodule=datamodule)
    partial = work / "partial.ckpt"
    trainer.save_checkpoint(partial)
    checkpoint = torch.load(partial, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["_class_path"] = "mnist_lit.models.CompactCNN"
    torch.save(checkpoint, partial)
    partial.rename(ckpt)
    return ckpt


def mnist_test_digits(raw_dir: Path, count: int) -> Digits:
    """The first ``count`` MNIST test images (uint8, 28 x 28) and their labels, from the files in ``raw_dir``."""
    with gzip.open(raw_dir / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(raw_dir / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images[:count], labels[:count]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, real_raw_dir: Path) -> Path:
    """The small trained network of this session's serve tests."""
    return train_tiny_checkpoint(tmp_path_factory.getbasetemp(), real_raw_dir)


@pytest.fixture(scope="module")
def digits(real_raw_dir: Path) -> Digits:
    """The first 40 MNIST test digits and their labels."""
    return mnist_test_digits(real_raw_dir, 40)


@pytest.fixture(scope="module")
def runner(checkpoint: Path) -> TorchRunner:
    return load_runner(checkpoint)


@pytest.fixture(scope="module")
def client(runner: TorchRunner) -> Iterator[TestClient]:
    with TestClient(create_app(runner)) as test_client:
        yield test_client


def test_health_names_the_network_and_the_checkpoint(client: TestClient, checkpoint: Path) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok"
    assert health["network"] == "CompactCNN"
    assert health["checkpoint"] == checkpoint.name
    assert len(health["sha256"]) == 64
    assert health["max_body_bytes"] == MAX_BODY_BYTES


def test_real_test_digits_as_png_and_jpeg_are_classified_correctly(client: TestClient, digits: Digits) -> None:
    images, labels = digits[0][:10], digits[1][:10]
    for image, label in zip(images, labels, strict=True):
        as_upload = client.post("/api/predict", files={"file": ("digit.png", encode(image), "image/png")})
        jpeg = encode(image, "JPEG", quality=95)
        as_body = client.post("/api/predict", content=jpeg, headers={"content-type": "image/jpeg"})
        for response in (as_upload, as_body):
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["digit"] == label
            assert len(answer["probabilities"]) == 10 and sum(answer["probabilities"]) == pytest.approx(1, abs=1e-5)
            assert answer["digit"] == int(np.argmax(answer["probabilities"]))


def test_the_answer_is_predicts_answer_for_the_same_file(
    client: TestClient, runner: TorchRunner, digits: Digits, tmp_path: Path
) -> None:
    """A photo-like picture (dark on light, off centre, large) goes through the same preprocessing as ``predict``."""
    image = digits[0][0]
    paper = np.full((300, 400), 240, np.uint8)
    paper[40:152, 200:312] = 240 - np.asarray(Image.fromarray(image).resize((112, 112))) * 0.9
    data = encode(paper)
    (tmp_path / "digit.png").write_bytes(data)
    inputs = load_predict_inputs(tmp_path / "digit.png")
    expected = runner.probabilities(inputs.images[:, None])[0]
    answer = client.post("/api/predict", content=data, headers={"content-type": "image/png"}).json()
    np.testing.assert_array_equal(png_pixels(answer["image"]), inputs.images[0])
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-6)
    assert answer["digit"] == int(np.argmax(expected)) == 7


def bomb() -> bytes:
    """A PNG of 5000 x 5000 black pixels: 25 KB that would decode to 25 MB, over the 16.8-megapixel limit."""
    return encode(Image.new("L", (5000, 5000), 0))


BAD_INPUTS = {
    "text as an image": (dict(content=b"not a picture", headers={"content-type": "image/png"}), 422, "not an image"),
    "text file uploaded": (dict(files={"file": ("notes.txt", b"hello", "text/plain")}), 422, "not an image"),
    "truncated png": (
        dict(content=encode(np.eye(50, dtype=np.uint8) * 255)[:60], headers={"content-type": "image/png"}),
        422,
        "not a readable image",
    ),
    "empty body": (dict(content=b"", headers={"content-type": "image/png"}), 422, "not an image"),
    "blank white": (
        dict(content=encode(np.full((280, 280), 255, np.uint8)), headers={"content-type": "image/png"}),
        422,
        "nothing drawn",
    ),
    "blank black jpeg": (
        dict(files={"file": ("b.jpg", encode(np.zeros((64, 64), np.uint8), "JPEG"), "image/jpeg")}),
        422,
        "nothing drawn",
    ),
    "huge pixel count": (dict(content=bomb(), headers={"content-type": "image/png"}), 422, "too large: 5000 x 5000"),
    "eps (runs Ghostscript)": (
        dict(content=b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n", headers={"content-type": "image/x-eps"}),
        422,
        "not an image of a supported format",
    ),
    "form without file": (dict(files={"picture": ("d.png", b"x", "image/png")}), 422, "no field named `file`"),
    "form field file as text": (dict(data={"file": "7"}, files={"x": ("x", b"")}), 422, "holds text"),
    "json body": (dict(json={"digit": 7}), 415, "send an image"),
    "body over the limit": (
        dict(content=b"\0" * (MAX_BODY_BYTES + 1), headers={"content-type": "image/png"}),
        413,
        f"over the limit of {MAX_BODY_BYTES:,} bytes",
    ),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_gets_a_json_error_with_its_reason(client: TestClient, name: str) -> None:
    kwargs, status, reason = BAD_INPUTS[name]
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert reason in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [
        ("GET", "/api/predict", 405, "GET is not allowed on /api/predict (allowed: POST)"),
        ("DELETE", "/api/health", 405, "DELETE is not allowed"),
        ("POST", "/", 405, "POST is not allowed"),
        ("GET", "/api/nothing", 404, "no such page or endpoint: /api/nothing"),
        ("GET", "/static/missing.js", 404, "no such page or endpoint"),
        ("GET", "/docs", 404, "no such page"),  # FastAPI's docs page would load its scripts from a CDN
    ],
)
def test_wrong_method_or_path_gets_json(client: TestClient, method: str, path: str, status: int, reason: str) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert reason in response.json()["detail"]


def test_the_server_answers_after_every_bad_input(client: TestClient, digits: Digits) -> None:
    for kwargs, _, _ in BAD_INPUTS.values():
        client.post("/api/predict", **kwargs)
    image, label = digits[0][0], digits[1][0]
    assert client.post("/api/predict", files={"file": ("d.png", encode(image))}).json()["digit"] == label


@pytest.mark.slow
def test_an_exported_onnx_model_serves_the_same_answers(
    client: TestClient, checkpoint: Path, digits: Digits, tmp_path: Path
) -> None:
    onnx = pytest.importorskip("mnist_lit.interop.onnx", reason="the ONNX export is not part of this checkout")
    for package in ("onnxruntime", "onnxscript"):
        pytest.importorskip(package, reason=f"{package} is not installed (pip install -e '.[export]')")
    from mnist_lit.training.checkpoints import load_trained_network

    model = tmp_path / "compact.onnx"
    model.write_bytes(onnx.export_onnx(load_trained_network(checkpoint)))
    with TestClient(create_app(load_runner(model))) as onnx_client:
        health = onnx_client.get("/api/health").json()
        assert (health["network"], health["checkpoint"]) == ("CompactCNN", "compact.onnx")
        for image in digits[0][:10]:
            png = {"content": encode(image), "headers": {"content-type": "image/png"}}
            from_onnx = onnx_client.post("/api/predict", **png).json()
            from_torch = client.post("/api/predict", **png).json()
            assert from_onnx["digit"] == from_torch["digit"]
            np.testing.assert_allclose(from_onnx["probabilities"], from_torch["probabilities"], atol=1e-4)


def test_huge_pictures_are_refused_before_decoding_without_changing_pillow(
    client: TestClient, digits: Digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    limit = Image.MAX_IMAGE_PIXELS
    assert client.post("/api/predict", content=bomb(), headers={"content-type": "image/png"}).status_code == 422
    assert decoded == []
    assert Image.MAX_IMAGE_PIXELS == limit  # the process-wide setting is left alone
    small = encode(digits[0][0])
    assert client.post("/api/predict", content=small, headers={"content-type": "image/png"}).status_code == 200
    assert (28, 28) in decoded  # the spy does see decoding


def asgi_post(app: Any, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, dict, int]:
    """POST ``chunks`` to ``/api/predict`` at the ASGI level: (status, JSON body, how many chunks the app read)."""
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/predict", "raw_path": b"/api/predict", "root_path": "", "query_string": b"",
        "headers": [(b"content-type", b"image/png"), *headers], "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), read


def test_a_declared_oversized_body_is_refused_before_a_byte_is_read(runner: TorchRunner) -> None:
    app = create_app(runner, max_body_bytes=1000)
    status, body, read = asgi_post(app, [(b"content-length", b"100000")], [b"\0" * 1000] * 100)
    assert (status, read) == (413, 0)
    assert "over the limit of 1,000 bytes" in body["detail"]


def test_a_streamed_body_is_counted_and_refused_once_past_the_limit(runner: TorchRunner, digits: Digits) -> None:
    app = create_app(runner, max_body_bytes=1000)
    status, body, read = asgi_post(app, [], [b"\0" * 400] * 100)  # chunked: no Content-Length
    assert (status, read) == (413, 3)  # 1,200 bytes read of 40,000
    assert "over the limit" in body["detail"]
    image, label = digits[0][0], digits[1][0]
    data = encode(image)
    status, body, _ = asgi_post(app, [], [data[:100], data[100:]])
    assert (status, body["digit"]) == (200, label)


def test_concurrent_requests_get_the_same_answers_as_sequential_ones(client: TestClient, digits: Digits) -> None:
    images = digits[0]
    bodies = [encode(image) for image in images]

    def ask(data: bytes) -> tuple[int, list[float]]:
        response = client.post("/api/predict", content=data, headers={"content-type": "image/png"})
        assert response.status_code == 200, response.text
        return response.json()["digit"], response.json()["probabilities"]

    sequential = [ask(data) for data in bodies]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(ask, bodies * 3))
    assert concurrent == sequential * 3


class OverlapDetector:
    """A runner that records how many calls ever ran at once, and answers the digit 3."""

    network_name = "OverlapDetector"
    source = Path("detector.ckpt")

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.guard = threading.Lock()

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        with self.guard:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.005)
        with self.guard:
            self.running -= 1
        return np.eye(10, dtype=np.float32)[[3] * len(pixels)]


def test_the_network_is_never_called_by_two_requests_at_once(digits: Digits) -> None:
    detector = OverlapDetector()
    body = encode(digits[0][0])
    with TestClient(create_app(detector)) as test_client, ThreadPoolExecutor(max_workers=8) as pool:
        png = {"content": body, "headers": {"content-type": "image/png"}}
        answers = list(pool.map(lambda _: test_client.post("/api/predict", **png), range(32)))
    assert [a.json()["digit"] for a in answers] == [3] * 32
    assert detector.most == 1


def test_the_page_and_its_files_are_served_from_the_package(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('id="pad"', 'id="clear"', 'id="prediction"', 'id="probabilities"', 'type="file"'):
        assert element in page.text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(sources) == ["/static/app.js", "/static/style.css"]  # nothing from elsewhere
    assert client.get("/static/app.js").status_code == client.get("/static/style.css").status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_serve_options_default_to_the_loopback_address() -> None:
    args = build_parser().parse_args(["--ckpt_path", "x.ckpt"])
    assert (args.host, args.port) == (DEFAULT_HOST, 8000) == ("127.0.0.1", 8000)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--ckpt_path", "x.ckpt", "--po", "1"])  # no abbreviations


@pytest.mark.parametrize(("content", "message"), [(None, "no such file"), (b"garbage", "not a readable checkpoint")])
def test_serve_refuses_a_missing_or_corrupt_checkpoint(tmp_path, capsys, content: bytes | None, message: str) -> None:
    ckpt = tmp_path / "net.ckpt"
    if content is not None:
        ckpt.write_bytes(content)
    assert exit_code(["serve", "--ckpt_path", str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert error_message(err).startswith("error: --ckpt_path") and message in err and "Traceback" not in err


def test_a_port_in_use_is_a_user_error() -> None:
    taken = bind_socket("127.0.0.1", 0)
    taken.listen()
    try:
        with pytest.raises(UserError, match="choose another with --port"):
            bind_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


@pytest.mark.slow
def test_the_command_prints_its_address_and_serves(checkpoint: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "mnist_lit", "serve", "--ckpt_path", str(checkpoint), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = None
        with selectors.DefaultSelector() as selector:
            selector.register(server.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 120
            while url is None and time.monotonic() < deadline and selector.select(deadline - time.monotonic()):
                line = server.stdout.readline()
                if not line:
                    break
                found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
                url = found.group(1) if found else None
        assert url, "the server printed no address"
        import httpx

        health = None
        for _ in range(100):  # the address is printed just before uvicorn starts accepting
            try:
                health = httpx.get(url + "api/health", timeout=5).json()
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health is not None, f"no answer from {url}"
        assert (health["network"], health["checkpoint"]) == ("CompactCNN", checkpoint.name)
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()  # the pipe, which Popen leaves open
