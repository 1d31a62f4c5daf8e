"""The web app: the drawing page, ``POST /api/predict`` and ``GET /api/health``, over one trained network.

An uploaded picture goes through the same code as ``predict``'s files (:func:`read_picture_bytes`, then
:func:`mnist_preprocess`), so a drawing and the same drawing saved to a file get the same answer. Whatever a client
sends, the answer is JSON: a prediction, or ``{"detail": reason}`` with a 4xx status, and the server stays up.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnist_lit.data.idx import IMAGE_SIDE
from mnist_lit.data.images import BlankImageError, InputReadError, mnist_preprocess, read_picture_bytes
from mnist_lit.errors import UserError
from mnist_lit.inference.runners import Runner, predict_with_scores
from mnist_lit.reporting.calibration import is_unsure
from mnist_lit.reporting.explanations import METHODS
from mnist_lit.reporting.ood import is_not_digit

STATIC_DIR = Path(__file__).parent / "static"
#: The largest request body accepted, in bytes: room for a phone photo; a drawing from the page is a few KB.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: The most pixels a picture may have (4096 x 4096), checked from its header before anything is decoded, so that a
#: small file that would decode to gigabytes (a decompression bomb) is refused at no cost.
MAX_PIXELS = 4096 * 4096
#: The only decoders an upload may reach: the formats a browser or a phone makes. Pillow can read many more, some
#: through external programs (EPS runs Ghostscript), which a server should not run on strangers' bytes.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
#: How many pictures are decoded and preprocessed at once. A picture at MAX_PIXELS takes about 0.9 GB while it is
#: read and preprocessed (measured: a 4096 x 4096 JPEG), so large uploads queue rather than exhaust the memory; a
#: drawing from the page (280 x 280) takes a few milliseconds and hardly waits.
DECODE_SLOTS = 2
#: The page may load only its own files and talk only to its own server: no CDN, no inline script.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'none'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


#: The attribution methods ``POST /api/predict?explain=...`` accepts (see :mod:`mnist_lit.reporting.explanations`).
EXPLAIN_METHODS = METHODS


def png_data_url(pixels: np.ndarray) -> str:
    """An image array (H x W grey, or H x W x 4 RGBA, uint8) as a PNG ``data:`` URL."""
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode("ascii")


def heatmap_rgba(attribution: np.ndarray) -> np.ndarray:
    """An attribution map as a 28 x 28 RGBA overlay: red where it speaks for the answer, blue against, opacity
    from its magnitude (the largest: 0.85)."""
    limit = float(np.abs(attribution).max()) or 1.0
    strength = np.clip(np.abs(attribution) / limit, 0.0, 1.0)
    rgba = np.zeros((*attribution.shape, 4), dtype=np.uint8)
    positive = attribution >= 0
    rgba[..., 0] = np.where(positive, 255, 30)
    rgba[..., 1] = np.where(positive, 60, 120)
    rgba[..., 2] = np.where(positive, 30, 255)
    rgba[..., 3] = (strength * 0.85 * 255).astype(np.uint8)
    return rgba


@dataclass
class Prediction:
    """The network's answer for one picture, and the 28 x 28 image (uint8, light on dark) it was given."""

    digit: int
    probabilities: list[float]
    image: np.ndarray
    unsure_threshold: float | None = None
    explanation: np.ndarray | None = None
    explain_method: str | None = None
    ood_score: float = float("nan")
    ood_threshold: float | None = None
    ood_method: str | None = None

    @property
    def unsure(self) -> bool:
        """Whether the top probability is under the threshold: the page then says "not sure: 7 or 1?"."""
        return bool(is_unsure(np.array([max(self.probabilities)]), self.unsure_threshold)[0])

    @property
    def not_digit(self) -> bool:
        """Whether the OOD score is above its threshold: the page then says it does not look like a digit."""
        return bool(is_not_digit(np.array([self.ood_score]), self.ood_threshold)[0])

    def to_json(self, network: str) -> dict[str, Any]:
        """The API's answer: the digit, the ten probabilities, whether it is unsure (and the runner-up), whether it
        is not a digit (and the OOD score, its method and threshold), the image as a PNG ``data:`` URL for the page,
        and, when asked for, the attribution map as an RGBA PNG overlay."""
        ranked = sorted(range(len(self.probabilities)), key=lambda d: -self.probabilities[d])
        answer: dict[str, Any] = {
            "digit": self.digit,
            "probabilities": self.probabilities,
            "unsure": self.unsure,
            "unsure_threshold": self.unsure_threshold,
            "runner_up": ranked[1],
            "not_digit": self.not_digit,
            "ood_score": self.ood_score if np.isfinite(self.ood_score) else None,
            "ood_method": self.ood_method,
            "ood_threshold": self.ood_threshold,
            "image": png_data_url(self.image),
            "network": network,
        }
        if self.explanation is not None:
            answer["explanation"] = png_data_url(heatmap_rgba(self.explanation))
            answer["explain_method"] = self.explain_method
        return answer


class DigitReader:
    """Picture bytes in, the network's answer out; safe to call from many threads at once.

    Decoding and preprocessing run in parallel (at most ``decode_slots`` at a time); the network runs under a lock,
    so no runner (PyTorch, ONNX Runtime) ever sees two calls at once, and PyTorch's own threads are not multiplied
    by the request threads on a small machine.
    """

    def __init__(self, runner: Runner, max_pixels: int = MAX_PIXELS, decode_slots: int = DECODE_SLOTS) -> None:
        self.runner = runner
        self.max_pixels = max_pixels
        self._decoding = threading.BoundedSemaphore(decode_slots)
        self._inference = threading.Lock()

    def read(self, data: bytes, explain: str | None = None) -> Prediction:
        """The prediction for one picture, with the attribution map by ``explain`` if given; :class:`HTTPException`
        422 with the reason when it cannot be read."""
        with self._decoding:
            try:
                pixels = read_picture_bytes(data, self.max_pixels, FORMATS)
            except InputReadError as err:
                raise HTTPException(422, str(err)) from err
            try:
                image = mnist_preprocess(pixels)
            except BlankImageError as err:
                raise HTTPException(422, "nothing drawn: no ink stands out from the background") from err
            except InputReadError as err:
                raise HTTPException(422, f"the image {err}") from err
        explanation = None
        with self._inference:
            probabilities, scores = predict_with_scores(self.runner, image[None, None])
            probabilities = probabilities[0]
            if explain is not None:
                try:
                    explanation = self.runner.explain(image[None, None], explain)[0]  # type: ignore[attr-defined]
                except UserError as err:  # Captum missing, gradcam on a network without a convolution
                    raise HTTPException(422, str(err)) from err
        return Prediction(
            int(np.argmax(probabilities)),
            [float(p) for p in probabilities],
            image,
            getattr(self.runner, "unsure_threshold", None),
            explanation,
            explain,
            float(scores[0]),
            getattr(self.runner, "ood_threshold", None),
            getattr(self.runner, "ood_method", "max_softmax"),
        )


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, without reading them.

    A declared ``Content-Length`` over the limit is refused before a byte of the body is read; a body without one
    (chunked), or longer than it declared, is counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def too_large(self) -> HTTPException:
        """The 413 error, with the limit in its reason."""
        return HTTPException(413, f"the request body is over the limit of {self.max_bytes:,} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = self.too_large()
            response = JSONResponse({"detail": error.detail}, error.status_code, headers={"connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self.too_large()  # raised inside the endpoint, so the app answers it as JSON
            return message

        await self.app(scope, counting_receive, send)


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def read_image_bytes(request: Request) -> bytes:
    """The picture a request carries: the multipart form field ``file``, or the whole body if it is ``image/*``."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if upload is None:
                raise HTTPException(422, "no image: the multipart form has no field named `file`")
            if isinstance(upload, str):
                raise HTTPException(422, "no image: the form field `file` holds text, not a file")
            return await upload.read()
    if media_type.startswith("image/"):
        return await request.body()
    raise HTTPException(
        415,
        f"send an image, as a multipart form field `file` or as the body with an image/* Content-Type "
        f"(this request's Content-Type: {content_type or 'none'})",
    )


def file_digest(path: Path) -> str | None:
    """The SHA-256 of a file, so that a client can tell exactly which weights answer; None if it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def create_app(runner: Runner, max_body_bytes: int = MAX_BODY_BYTES, max_pixels: int = MAX_PIXELS) -> FastAPI:
    """The web app serving ``runner``'s predictions, with its page at ``/``.

    No interactive API docs: FastAPI's fetch their scripts from a CDN, and the README documents the two endpoints.
    """
    reader = DigitReader(runner, max_pixels)
    predict_with_scores(runner, np.zeros((1, 1, IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32))  # warm up, fail early
    can_explain = hasattr(runner, "explain") and importlib.util.find_spec("captum") is not None
    health = {
        "status": "ok",
        "network": runner.network_name,
        "checkpoint": Path(runner.source).name,
        "sha256": file_digest(Path(runner.source)),
        "max_body_bytes": max_body_bytes,
        "max_pixels": max_pixels,
        "formats": list(FORMATS),
        "unsure_threshold": getattr(runner, "unsure_threshold", None),
        "ood_method": getattr(runner, "ood_method", "max_softmax"),
        "ood_threshold": getattr(runner, "ood_threshold", None),
        "explain": list(EXPLAIN_METHODS) if can_explain else [],
    }
    app = FastAPI(title="mnist_lit: draw a digit", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        """Every HTTP error as JSON with a reason, including the router's own 404 and 405."""
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such page or endpoint: {request.url.path} (the API: POST /api/predict, GET /api/health)"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            allowed = (exc.headers or {}).get("Allow", "")
            detail = f"{request.method} is not allowed on {request.url.path} (allowed: {allowed or 'none'})"
        return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        """A bug answers 500 as JSON too (its traceback goes to the server's log, not to the client)."""
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, 500)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The drawing page."""
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    @app.post("/api/predict")
    async def predict(request: Request, explain: str | None = None) -> JSONResponse:
        """The digit in the picture sent, its ten probabilities, whether it is unsure or not a digit, and the 28 x 28
        image the network saw; with ``?explain=ig|saliency|gradcam``, also what it looked at."""
        if explain is not None and explain not in EXPLAIN_METHODS:
            raise HTTPException(422, f"explain={explain}: unknown method; choose one of {', '.join(EXPLAIN_METHODS)}")
        if explain is not None and not hasattr(runner, "explain"):
            raise HTTPException(
                422, "explanations need a checkpoint (.ckpt): this server runs an ONNX export, which has no gradients"
            )
        if explain is not None and not can_explain:
            raise HTTPException(422, "explanations need Captum on the server: pip install captum")
        data = await read_image_bytes(request)
        prediction = await run_in_threadpool(reader.read, data, explain)
        return JSONResponse(prediction.to_json(runner.network_name))

    @app.get("/api/health")
    async def health_check() -> dict[str, Any]:
        """The network served, the file it came from, and the limits on what a request may send."""
        return health

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
