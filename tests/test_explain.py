"""Explanations: Captum attributions of a network's answers, through predict, classify and serve."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lit.inference.torch_runner import PixelClassifier, TorchRunner
from mnist_lit.models import CompactCNN
from mnist_lit.reporting.explanations import METHODS, attribute
from tests.helpers import CONFIGS, exit_code, runs, tiny_compact_checkpoint

pytest.importorskip("captum")

COMPACT = str(CONFIGS / "compact.yaml")
QUIET = ["--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compact network after one epoch on tiny MNIST."""
    return tiny_compact_checkpoint(tmp_path_factory.mktemp("explain"))


def digits(n: int = 3) -> np.ndarray:
    """N x 28 x 28 uint8 digit-like images (a bar and a box)."""
    images = np.zeros((n, 28, 28), np.uint8)
    for i, image in enumerate(images):
        image[4:24, 12 + i : 15 + i] = 255
        image[6:9, 8:20] = 200
    return images


@pytest.mark.parametrize("method", METHODS)
def test_an_attribution_has_the_inputs_shape_and_is_finite(method: str) -> None:
    torch.manual_seed(0)
    module = PixelClassifier(CompactCNN().net, "unit", temperature=1.5).eval()
    pixels = torch.from_numpy(digits()[:, None]).float()
    maps, targets = attribute(module, pixels, method)
    assert maps.shape == (3, 28, 28) and np.isfinite(maps).all() and np.abs(maps).sum() > 0
    assert targets.tolist() == module(pixels).argmax(dim=1).tolist()
    if method == "gradcam":
        assert (maps >= 0).all()  # relu_attributions: only what speaks for the digit


def test_classify_explain_writes_a_figure_per_input(checkpoint: Path, tmp_path: Path) -> None:
    from mnist_lit.cli import main

    np.save(tmp_path / "three.npy", digits())
    main(["classify", str(tmp_path / "three.npy"), "--ckpt_path", str(checkpoint), "--explain", "gradcam",
          "--explain_dir", str(tmp_path / "out")])  # fmt: skip
    written = sorted((tmp_path / "out").glob("*.png"))
    assert len(written) == 3 and all(Image.open(p).size[0] > 300 for p in written)
    main(["classify", str(tmp_path / "three.npy"), "--ckpt_path", str(checkpoint), "--explain", "gradcam",
          "--explain_dir", str(tmp_path / "out")])  # fmt: skip
    assert len(list((tmp_path / "out").glob("*.png"))) == 6  # the first three are kept


def test_predict_explain_writes_a_figure_per_input(checkpoint: Path, tmp_path: Path) -> None:
    from mnist_lit.cli import main

    np.save(tmp_path / "three.npy", digits())
    main(["predict", "--config", COMPACT, "--ckpt_path", str(checkpoint), "--data.predict_path",
          str(tmp_path / "three.npy"), "--explain", "ig", *QUIET])  # fmt: skip
    figures = sorted((runs("compact")[-1] / "figures" / "explanations").glob("*.png"))
    assert [p.name[:5] for p in figures] == ["00000", "00001", "00002"]


def test_explain_with_an_onnx_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    for args in (
        ["classify", "x.png", "--ckpt_path", str(tmp_path / "m.onnx"), "--explain", "ig"],
        ["predict", "--config", COMPACT, "--ckpt_path", str(tmp_path / "m.onnx"), "--explain", "ig"],
    ):
        assert exit_code(args) == 1
        assert "--explain needs a checkpoint" in capsys.readouterr().err


def test_serve_returns_the_map_as_a_png_data_url_only_for_a_checkpoint(checkpoint: Path) -> None:
    from fastapi.testclient import TestClient

    from mnist_lit.serve.app import create_app

    png = io.BytesIO()
    Image.fromarray(digits(1)[0]).save(png, format="PNG")
    headers = {"content-type": "image/png"}
    client = TestClient(create_app(TorchRunner(checkpoint)))
    answer = client.post("/api/predict?explain=ig", content=png.getvalue(), headers=headers).json()
    overlay = Image.open(io.BytesIO(base64.b64decode(answer["explanation"].partition(",")[2])))
    assert overlay.size == (28, 28) and overlay.mode == "RGBA" and answer["explain_method"] == "ig"
    assert "explanation" not in client.post("/api/predict", content=png.getvalue(), headers=headers).json()
    assert client.post("/api/predict?explain=nope", content=png.getvalue(), headers=headers).status_code == 422

    onnx_like = SimpleNamespace(
        network_name="X", source=checkpoint, unsure_threshold=None,
        probabilities=lambda pixels: np.full((len(pixels), 10), 0.1, np.float32),
    )  # fmt: skip
    onnx_client = TestClient(create_app(onnx_like))
    refused = onnx_client.post("/api/predict?explain=ig", content=png.getvalue(), headers=headers)
    assert refused.status_code == 422 and "checkpoint" in refused.json()["detail"]
    assert onnx_client.get("/api/health").json()["explain"] == []
