"""The drawing page end to end, in a real browser: Playwright drives the system's Chromium, which draws digits
with mouse strokes on ``#pad`` and reads the network's answer from ``#prediction``."""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mnist_lit.inference.runners import load_runner
from tests.helpers import encode
from tests.test_serve import mnist_test_digits, train_tiny_checkpoint

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

#: Debian's ``chromium`` package; Playwright's own browser download is not reachable from the project's machines.
CHROMIUM = Path(os.environ.get("MNIST_LIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

Stroke = list[tuple[float, float]]


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, points: int = 24) -> Stroke:
    """Points along an ellipse from angle ``start`` to ``end`` (degrees; 0 is right, 90 down, as on a screen)."""
    angles = (math.radians(start + (end - start) * i / (points - 1)) for i in range(points))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def figure_eight(points: int = 48) -> Stroke:
    """An 8 in one stroke, from the top, as a hand draws it: right over the top loop, across, round the bottom."""
    ts = (2 * math.pi * i / (points - 1) for i in range(points))
    return [(0.5 - 0.17 * math.sin(2 * t), 0.5 - 0.33 * math.cos(t)) for t in ts]


#: Each digit as a person draws it: strokes of (x, y) points in the pad's unit square, from the top left, in order.
DIGIT_STROKES: dict[str, list[Stroke]] = {
    "0": [arc(0.5, 0.5, 0.19, 0.32, 270, -90, 40)],
    "1": [[(0.47, 0.22), (0.53, 0.15), (0.52, 0.5), (0.5, 0.85)]],
    "2": [[*arc(0.5, 0.33, 0.18, 0.16, 200, 380), (0.3, 0.82), (0.72, 0.82)]],
    "3": [arc(0.48, 0.32, 0.17, 0.15, 210, 450) + arc(0.48, 0.65, 0.19, 0.18, 270, 510)[1:]],
    "4": [[(0.58, 0.15), (0.28, 0.6), (0.76, 0.6)], [(0.62, 0.35), (0.62, 0.87)]],
    "5": [[(0.36, 0.17), (0.34, 0.47), *arc(0.48, 0.64, 0.2, 0.19, 235, 510)], [(0.36, 0.17), (0.7, 0.17)]],
    "6": [[(0.64, 0.15), (0.5, 0.25), (0.4, 0.38), (0.33, 0.55), *arc(0.5, 0.66, 0.17, 0.18, 180, 540, 32)]],
    "7": [[(0.3, 0.18), (0.72, 0.18), (0.45, 0.85)]],
    "8": [figure_eight()],
    "9": [[*arc(0.5, 0.35, 0.17, 0.17, 0, -360, 32), (0.67, 0.35), (0.64, 0.85)]],
}


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on 127.0.0.1 and a free port; yield its address; stop it after."""
    import uvicorn

    from mnist_lit.cli.serve import bind_socket, url_of

    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        assert server.started, "uvicorn did not start"
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def chromium_page(phone: bool = False) -> Iterator[Any]:
    """A page in the system's Chromium, headless: 1000 x 800, or a phone's 390 x 844 touch screen."""
    from playwright.sync_api import sync_playwright

    screen = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True} if phone else {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_context(**(screen or {"viewport": {"width": 1000, "height": 800}})).new_page()
        finally:
            browser.close()


def settled(page: Any) -> None:
    """Wait until the page shows the answer to its latest request (by selector: the page's CSP forbids eval)."""
    page.locator('#result[aria-busy="false"]').wait_for()


def draw(page: Any, strokes: list[Stroke]) -> str:
    """Draw ``strokes`` on ``#pad`` with the mouse, and return the digit the page shows for the whole drawing.

    Each stroke waits for its own answer before the next begins, as a hand is slower than the server; so the last
    answer shown is the one for the finished drawing.
    """
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=3)
        with page.expect_response("**/api/predict") as answer:
            page.mouse.up()
        assert answer.value.status == 200, answer.value.text()
    settled(page)
    return page.locator("#prediction").text_content()


def along(points: Stroke, steps: int = 8) -> Stroke:
    """A polyline's points with ``steps`` more between each two, as a moving finger reports them."""
    out = points[:1]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        out += [(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps) for i in range(1, steps + 1)]
    return out


def finger_draw(page: Any, strokes: list[Stroke]) -> str:
    """Draw ``strokes`` on ``#pad`` with touch events (a finger), and return the digit the page shows."""
    cdp = page.context.new_cdp_session(page)
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        first, *rest = along(points)
        for kind, (x, y) in [("touchStart", first)] + [("touchMove", point) for point in rest]:
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
        with page.expect_response("**/api/predict") as answer:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        assert answer.value.status == 200, answer.value.text()
    settled(page)
    return page.locator("#prediction").text_content()


def pad_is_blank(page: Any) -> bool:
    """Whether every pixel of ``#pad`` is white paper."""
    return page.evaluate(
        """() => {
            const pad = document.getElementById("pad");
            const pixels = pad.getContext("2d").getImageData(0, 0, pad.width, pad.height).data;
            return pixels.every((value) => value === 255);
        }"""
    )


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory, real_raw_dir: Path) -> Iterator[str]:
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[dev]')")
    from mnist_lit.serve.app import create_app

    checkpoint = train_tiny_checkpoint(tmp_path_factory.getbasetemp(), real_raw_dir)
    with serve_in_thread(create_app(load_runner(checkpoint))) as url:
        yield url


def test_drawn_digits_are_read_and_clear_wipes_the_pad(page_url: str, real_raw_dir: Path, tmp_path: Path) -> None:
    with chromium_page() as page:
        page.goto(page_url)
        page.locator("#network", has_text="CompactCNN").wait_for()
        assert pad_is_blank(page) and page.locator("#prediction").text_content() == ""

        assert draw(page, DIGIT_STROKES["1"]) == "1"
        assert page.locator("#probabilities li.top").get_attribute("data-digit") == "1"
        assert page.locator("#probabilities li").count() == 10
        assert float(page.locator('#probabilities li[data-digit="1"]').get_attribute("data-p")) > 0.5
        assert page.locator("#seen").is_visible()
        assert not pad_is_blank(page)

        page.locator("#clear").click()
        assert pad_is_blank(page)
        assert page.locator("#prediction").text_content() == ""
        assert page.locator("#probabilities li.top").count() == 0 and not page.locator("#seen").is_visible()

        assert draw(page, DIGIT_STROKES["0"]) == "0"

        page.locator("#clear").focus()  # the button works from the keyboard too
        page.keyboard.press("Enter")
        assert pad_is_blank(page) and page.locator("#prediction").text_content() == ""

        (image,), (label,) = mnist_test_digits(real_raw_dir, 1)
        picture = tmp_path / "digit.png"
        picture.write_bytes(encode(image))
        with page.expect_response("**/api/predict"):
            page.locator("#upload").set_input_files(picture)
        settled(page)
        assert page.locator("#prediction").text_content() == str(label)


def test_a_finger_draws_on_a_phone_sized_page(page_url: str) -> None:
    with chromium_page(phone=True) as page:
        page.goto(page_url)
        page.locator("#network", has_text="CompactCNN").wait_for()
        assert finger_draw(page, DIGIT_STROKES["7"]) == "7"
        assert page.evaluate("window.scrollY") == 0  # the stroke drew instead of scrolling the page


def served_again(tmp_path_factory: pytest.TempPathFactory, **thresholds: float) -> Iterator[str]:
    """The network of :func:`page_url` served at another address with other ``thresholds`` set on its runner
    (``unsure_threshold``, ``ood_threshold``); yields the address, stops the server after."""
    from mnist_lit.serve.app import create_app

    runner = load_runner(tmp_path_factory.getbasetemp() / "serve-network" / "compact.ckpt")
    for name, value in thresholds.items():
        setattr(runner, name, value)
    with serve_in_thread(create_app(runner)) as url:
        yield url


@pytest.fixture(scope="module")
def unsure_page_url(page_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same network served with a threshold no answer reaches, so that every answer is "not sure"."""
    pytest.importorskip("captum")
    yield from served_again(tmp_path_factory, unsure_threshold=1.01)


def test_unsure_answers_and_the_explanation_switch(unsure_page_url: str) -> None:
    with chromium_page() as page:
        page.goto(unsure_page_url)
        page.locator("#network", has_text="Not sure under").wait_for()
        answer = draw(page, DIGIT_STROKES["1"])
        assert answer.startswith("not sure: 1 or ") and answer.endswith("?")
        assert not page.locator("#looked").is_visible()
        with page.expect_response("**/api/predict?explain=ig") as response:
            page.locator("#explain").check()
        assert response.value.status == 200
        settled(page)
        assert page.locator("#looked").is_visible()
        assert page.locator("#looked").get_attribute("src").startswith("data:image/png;base64,")


@pytest.fixture(scope="module")
def not_digit_page_url(page_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same network served with an OOD threshold every score is above, so that every answer is "not a digit"."""
    yield from served_again(tmp_path_factory, ood_threshold=-1e9)  # the max-softmax score is never under -1


def test_the_page_says_when_a_drawing_does_not_look_like_a_digit(not_digit_page_url: str) -> None:
    with chromium_page() as page:
        page.goto(not_digit_page_url)
        page.locator("#network", has_text="Not a digit above max_softmax score").wait_for()
        assert not page.locator("#verdict").is_visible()
        assert draw(page, DIGIT_STROKES["1"]) == "not a digit"
        verdict = page.locator("#verdict")
        assert verdict.is_visible() and "does not look like a digit" in verdict.text_content()
        assert "Its best guess would be 1" in verdict.text_content()
        page.locator("#clear").click()
        assert page.locator("#prediction").text_content() == "" and not verdict.is_visible()
