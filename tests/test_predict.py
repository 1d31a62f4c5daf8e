"""Predicting a user's own images: reading, MNIST-style preprocessing, the prediction writer, and the CLI's answers."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mnist_lit.cli import main
from mnist_lit.data import idx
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.images import (
    BlankImageError,
    PredictInputError,
    centre_of_mass,
    find_input_files,
    load_predict_inputs,
    mnist_preprocess,
    read_input_file,
)
from mnist_lit.models import CompactCNN
from mnist_lit.reporting.prediction_table import PredictionTable
from tests.helpers import CONFIGS, TinyMNIST, error_message, exit_code, runs, tiny_compact_checkpoint

COMPACT = str(CONFIGS / "compact.yaml")
QUIET = ["--trainer.enable_progress_bar", "false"]
NO_FIGURE = ["--predict_figure", "false"]

# Strokes of three digit-like shapes, in a unit box: (x, y) from the top left.
SHAPES = {
    "seven": [(0.0, 0.0), (1.0, 0.0), (0.35, 1.0)],
    "one": [(0.5, 0.0), (0.5, 1.0)],
    "four": [(0.7, 1.0), (0.7, 0.0), (0.0, 0.65), (1.0, 0.65)],
}


def draw_digit(
    shape: str, canvas: tuple[int, int], box: tuple[int, int, int, int], dark_on_light: bool = True
) -> np.ndarray:
    """A digit-like stroke drawing (H x W uint8) in ``box`` = (left, top, right, bottom) of a ``canvas`` (W, H)."""
    paper, ink = (235, 25) if dark_on_light else (10, 240)
    img = Image.new("L", canvas, paper)
    left, top, right, bottom = box
    points = [(left + x * (right - left), top + y * (bottom - top)) for x, y in SHAPES[shape]]
    width = max(2, (bottom - top) // 8)
    ImageDraw.Draw(img).line(points, fill=ink, width=width, joint="curve")
    return np.asarray(img)


def ink_extent(image: np.ndarray) -> tuple[int, int]:
    """Height and width of the box around every non-zero pixel."""
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def probabilities(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(row[f"p{d}"]) for d in range(10)] for row in rows])


def model_from(checkpoint: Path) -> CompactCNN:
    """The checkpoint's network, in memory, to compare the CLI's predictions with."""
    model = CompactCNN()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    return model.eval()


def predict_in_memory(model: CompactCNN, images: np.ndarray) -> np.ndarray:
    """Probabilities for N x 28 x 28 uint8 images, normalized as ``data.normalization: unit`` does."""
    with torch.no_grad():
        return model(torch.from_numpy(images.copy()).unsqueeze(1).float() / 255).softmax(dim=1).numpy()


def last_run(name: str = "compact") -> Path:
    return runs(name)[-1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CompactCNN checkpoint from one epoch on the tiny synthetic MNIST, made once for this module."""
    return tiny_compact_checkpoint(tmp_path_factory.mktemp("fit"))


# --- preprocessing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "canvas", "box"),
    [
        ("seven", (28, 28), (4, 4, 20, 24)),  # MNIST-sized, off-centre
        ("seven", (300, 200), (10, 20, 90, 180)),  # large, near the left edge
        ("four", (120, 400), (60, 250, 110, 380)),  # tall canvas, digit in the bottom right corner
        ("four", (64, 64), (30, 5, 45, 25)),  # small digit, top right
        ("one", (100, 100), (20, 10, 30, 90)),  # a thin stroke: its width must not be blown up to 20
        ("seven", (500, 90), (350, 30, 480, 60)),  # wide and short
    ],
)
def test_drawn_digits_come_out_like_mnist(shape: str, canvas: tuple, box: tuple) -> None:
    drawing = draw_digit(shape, canvas, box)
    out = mnist_preprocess(drawing)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255 and np.median(out) == 0  # light on dark
    row, col = centre_of_mass(out.astype(np.float64))
    assert abs(row - 14) <= 0.6 and abs(col - 14) <= 0.6  # a whole-pixel shift, as MNIST's: off by up to half a pixel
    height, width = ink_extent(out)
    assert max(height, width) in (19, 20) and min(height, width) <= 20
    drawn_h, drawn_w = ink_extent(drawing < 128)
    assert width / height == pytest.approx(drawn_w / drawn_h, rel=0.25, abs=0.1)  # aspect ratio kept


def test_light_on_dark_is_kept_and_dark_on_light_inverted() -> None:
    light = draw_digit("seven", (200, 150), (40, 20, 140, 130), dark_on_light=False)
    dark = draw_digit("seven", (200, 150), (40, 20, 140, 130), dark_on_light=True)
    assert np.array_equal(mnist_preprocess(light), mnist_preprocess(light, invert="never"))
    assert np.array_equal(mnist_preprocess(dark), mnist_preprocess(dark, invert="always"))
    assert np.abs(mnist_preprocess(dark).astype(int) - mnist_preprocess(light).astype(int)).max() <= 2
    with pytest.raises(BlankImageError, match="predict_invert"):  # forced the wrong way, the ink is background
        mnist_preprocess(light, invert="always")


@pytest.mark.parametrize("value", [0, 128, 255])
def test_a_blank_image_is_refused_not_centred(value: int) -> None:
    noisy = np.random.default_rng(0).integers(0, 12, (50, 40)) + value * 0.9
    with pytest.raises(BlankImageError, match="blank"):
        mnist_preprocess(np.clip(noisy, 0, 255))


# --- reading files ------------------------------------------------------------------------------------------------


def test_every_format_reads_as_the_same_picture(tmp_path: Path) -> None:
    drawing = draw_digit("four", (90, 120), (15, 20, 70, 105))
    img = Image.fromarray(drawing)
    img.save(tmp_path / "a.png")
    img.save(tmp_path / "b.bmp")
    img.save(tmp_path / "c.gif")
    img.save(tmp_path / "d.tiff")
    img.convert("RGB").save(tmp_path / "e.png")
    Image.fromarray(drawing.astype(np.uint16) * 257).save(tmp_path / "f16.png")  # 16 bits per pixel
    rgba = Image.new("RGBA", img.size, (0, 0, 0, 0))  # dark ink on a transparent canvas
    rgba.putalpha(Image.fromarray(255 - drawing))
    rgba.save(tmp_path / "g.png")
    img.convert("RGB").save(tmp_path / "h.jpg", quality=95)
    np.save(tmp_path / "i.npy", drawing)
    np.save(tmp_path / "j.npy", drawing.astype(np.float32) / 255)  # floats in [0, 1]
    np.save(tmp_path / "k.npy", drawing.astype(np.float64))  # floats in 0-255
    expected = mnist_preprocess(drawing)
    for path in sorted(tmp_path.iterdir()):
        ((name, picture),) = read_input_file(path)
        assert name == str(path)
        assert picture.shape == drawing.shape, path.name
        diff = np.abs(mnist_preprocess(picture).astype(int) - expected)
        assert diff.max() <= (40 if path.suffix == ".jpg" else 2), path.name
        assert diff.mean() <= (2 if path.suffix in (".jpg", ".png") else 0.5), path.name


def test_a_npy_stack_is_one_input_per_item(tmp_path: Path) -> None:
    stack = np.stack([draw_digit(s, (28, 28), (6, 4, 22, 24), dark_on_light=False) for s in SHAPES])
    np.save(tmp_path / "digits.npy", stack)
    np.save(tmp_path / "scaled.npy", (stack / 255.0 - 0.1307) / 0.3081)  # standardized for a network: refused
    inputs = load_predict_inputs(tmp_path)
    assert inputs.names == [f"{tmp_path / 'digits.npy'}[{i}]" for i in range(3)]
    assert np.array_equal(inputs.images, np.stack([mnist_preprocess(x) for x in stack]))
    ((name, reason),) = inputs.skipped
    assert name == str(tmp_path / "scaled.npy") and "0-255" in reason


def test_a_colour_npy_is_refused_not_read_as_a_stack(tmp_path: Path) -> None:
    rgb = np.repeat(draw_digit("seven", (28, 28), (6, 4, 22, 24))[:, :, None], 3, axis=2)
    np.save(tmp_path / "rgb.npy", rgb)
    np.save(tmp_path / "ok.npy", draw_digit("one", (28, 28), (6, 4, 22, 24)))
    inputs = load_predict_inputs(tmp_path)
    assert inputs.names == [str(tmp_path / "ok.npy")]
    ((name, reason),) = inputs.skipped
    assert name == str(tmp_path / "rgb.npy") and "colour image" in reason


def test_a_folder_a_file_and_a_pattern_name_their_inputs(tmp_path: Path) -> None:
    for name in ("b.png", "a.jpg", ".hidden.png", "sub/c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert find_input_files(tmp_path) == [tmp_path / "a.jpg", tmp_path / "b.png"]  # sorted, not recursive
    assert find_input_files(tmp_path / "b.png") == [tmp_path / "b.png"]
    assert find_input_files(f"{tmp_path}/**/*.png") == [tmp_path / "b.png", tmp_path / "sub" / "c.png"]
    (tmp_path / "empty").mkdir()
    for spec, message in [
        (tmp_path / "nope.png", "no such file or folder"),
        (tmp_path / "empty", "the folder has no files"),
        (f"{tmp_path}/*.bmp", "the pattern matches no files"),
    ]:
        with pytest.raises(PredictInputError, match=message):
            find_input_files(spec)


def test_bad_files_are_skipped_with_their_reason_and_the_rest_kept(tmp_path: Path) -> None:
    good = Image.fromarray(draw_digit("seven", (60, 60), (10, 10, 50, 50)))
    good.save(tmp_path / "good.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "good.png").read_bytes()[:80])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "fake.npy").write_text("not an array")
    Image.new("L", (40, 40), 255).save(tmp_path / "white.png")
    inputs = load_predict_inputs(tmp_path)
    assert inputs.names == [str(tmp_path / "good.png")] and inputs.images.shape == (1, 28, 28)
    reasons = dict(inputs.skipped)
    assert "not a readable .npy file" in reasons[str(tmp_path / "fake.npy")]
    assert "not an image Pillow can read" in reasons[str(tmp_path / "notes.txt")]
    assert "not a readable image" in reasons[str(tmp_path / "truncated.png")]
    assert "blank" in reasons[str(tmp_path / "white.png")]
    (tmp_path / "good.png").unlink()
    with pytest.raises(PredictInputError, match="none of the 4 inputs could be predicted"):
        load_predict_inputs(tmp_path)


def test_the_data_module_serves_user_images_without_mnist_files(tmp_path: Path) -> None:
    Image.fromarray(draw_digit("one", (40, 40), (5, 5, 35, 35))).save(tmp_path / "one.png")
    dm = MNISTDataModule(data_dir=tmp_path / "no_mnist_here", predict_path=str(tmp_path), download=False)
    dm.setup("predict")
    images, index = next(iter(dm.predict_dataloader()))
    assert images.shape == (1, 1, 28, 28) and images.dtype == torch.uint8 and index.tolist() == [0]
    assert dm.predict_names == [str(tmp_path / "one.png")]
    normalized, _ = dm.on_after_batch_transfer((images, index), 0)
    assert normalized.dtype == torch.float32 and float(normalized.max()) == 1.0
    assert torch.equal(dm.predict_pixels(index), images)  # the raw pixels, for a network that normalizes itself


# --- the writer ---------------------------------------------------------------------------------------------------


def test_the_table_lists_the_most_likely_digits_first() -> None:
    probs = np.full((3, 10), 0.02)
    probs[0, [7, 1, 9]] = [0.7, 0.1, 0.04]
    probs[1, [3, 8]] = [0.5, 0.34]
    probs[2, 0] = 0.82
    table = PredictionTable(["a.png", "b.npy[0]", "b.npy[1]"], probs, labels=[7, 8, 0])
    rows = list(csv.DictReader(table.to_csv().splitlines()))
    assert [r["digit"] for r in rows] == ["7", "3", "0"] and [r["label"] for r in rows] == ["7", "8", "0"]
    assert rows[0]["top3"] == "7:0.7000 1:0.1000 9:0.0400" and float(rows[1]["p8"]) == 0.34
    text = table.render(max_rows=2)
    assert "a.png" in text and "7 (0.70), 1 (0.10), 9 (0.04)" in text and "b.npy[1]" not in text
    assert "... and 1 more" in text


# --- the command line ---------------------------------------------------------------------------------------------


def test_predict_reads_a_folder_and_writes_csv_table_and_figure(
    tiny_mnist: TinyMNIST, checkpoint: Path, tmp_path: Path, capsys, caplog
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    drawings = {
        "seven.png": draw_digit("seven", (200, 120), (50, 20, 110, 100)),
        "four.jpg": draw_digit("four", (90, 90), (40, 10, 80, 60)),
        "one.bmp": draw_digit("one", (64, 64), (10, 10, 20, 60), dark_on_light=False),
    }
    for name, drawing in drawings.items():
        Image.fromarray(drawing).save(folder / name)
    stack = np.stack([draw_digit("four", (28, 28), (6, 4, 22, 24)), np.full((28, 28), 255, np.uint8)])
    np.save(folder / "stack.npy", stack)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes((folder / "seven.png").read_bytes()[:100])

    main(["predict", "--config", COMPACT, "--ckpt_path", str(checkpoint), "--data.predict_path", str(folder), *QUIET])
    rows = read_csv(last_run() / "predictions.csv")
    names = [f"{folder}/{n}" for n in ("four.jpg", "one.bmp", "seven.png")] + [f"{folder}/stack.npy[0]"]
    assert [row["path"] for row in rows] == names
    assert list(rows[0])[:4] == ["path", "digit", "probability", "top3"] and "label" not in rows[0]
    out = capsys.readouterr().out
    assert out.index("four.jpg") < out.index("seven.png") < out.index("stack.npy[0]")
    for name, reason in [("notes.txt", "not an image"), ("broken.png", "truncated"), ("stack.npy[1]", "blank")]:
        assert f"Skipped {folder}/{name}: " in caplog.text and reason in caplog.text
    assert (last_run() / "figures" / "predictions.png").is_file()

    # The files give the same predictions as the same pictures preprocessed and predicted in memory.
    pictures = np.stack(
        [mnist_preprocess(read_input_file(Path(n))[0][1]) for n in names[:3]] + [mnist_preprocess(stack[0])]
    )
    expected = predict_in_memory(model_from(checkpoint), pictures)
    np.testing.assert_allclose(probabilities(rows), expected, atol=2e-6)
    assert [int(row["digit"]) for row in rows] == expected.argmax(axis=1).tolist()


def test_predict_without_a_path_predicts_the_test_set(tiny_mnist: TinyMNIST, checkpoint: Path) -> None:
    main(["predict", "--config", COMPACT, "--ckpt_path", str(checkpoint), *QUIET, *NO_FIGURE])
    rows = read_csv(last_run() / "predictions.csv")
    assert [row["path"] for row in rows] == [f"mnist_test[{i}]" for i in range(tiny_mnist.n_test)]
    test_labels = tiny_mnist.contents["t10k-labels-idx1-ubyte"][8:]
    assert [int(row["label"]) for row in rows] == list(test_labels)
    test_images = np.frombuffer(tiny_mnist.contents["t10k-images-idx3-ubyte"][16:], np.uint8).reshape(-1, 28, 28)
    np.testing.assert_allclose(probabilities(rows), predict_in_memory(model_from(checkpoint), test_images), atol=2e-6)


def test_predict_exits_non_zero_only_when_nothing_can_be_predicted(
    tiny_mnist: TinyMNIST, checkpoint: Path, tmp_path: Path, capsys
) -> None:
    predict = ["predict", "--config", COMPACT, "--ckpt_path", str(checkpoint), *QUIET, "--data.predict_path"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not an image")
    Image.new("L", (30, 30), 255).save(bad / "blank.png")
    (tmp_path / "empty").mkdir()
    for spec, message in [
        (bad, f"data.predict_path {bad}: none of the 2 inputs could be predicted. {bad}/blank.png: is blank"),
        (tmp_path / "empty", "the folder has no files to predict"),
        (f"{tmp_path}/*.png", "the pattern matches no files"),
        (tmp_path / "missing.png", "missing.png: no such file or folder"),
    ]:
        assert exit_code([*predict, str(spec)]) == 1
        err = capsys.readouterr().err
        assert message in error_message(err) and "Traceback" not in err
    assert exit_code([*predict, str(bad), "--data.predict_invert", "sideways"]) == 2  # the parser's own message


@pytest.mark.real_data
def test_real_mnist_as_png_files_is_predicted_as_the_test_set_is(real_raw_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for spec in idx.MNIST_FILES:
        shutil.copy(real_raw_dir / f"{spec.filename}.gz", raw)
    data = ["--data.download", "false", *QUIET]
    main(["fit", "--config", COMPACT, *data, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "60",
          "--trainer.limit_val_batches", "1", "--test_after_fit", "false"])  # fmt: skip
    checkpoint = last_run() / "checkpoints" / "last.ckpt"

    images = np.frombuffer(gzip.decompress((raw / "t10k-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    images = images.reshape(-1, 28, 28)
    labels = np.frombuffer(gzip.decompress((raw / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    n = 300
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i in range(n):
        Image.fromarray(images[i]).save(pngs / f"{i:04d}.png")
    predict = ["predict", "--config", COMPACT, "--ckpt_path", str(checkpoint), *data]
    main([*predict, "--data.predict_path", str(pngs), *NO_FIGURE])
    from_png = read_csv(last_run() / "predictions.csv")
    main([*predict, *NO_FIGURE])
    from_tensors = read_csv(last_run() / "predictions.csv")[:n]

    # Reading the PNG files loses nothing: the same pixels, preprocessed in memory, give the same probabilities.
    model = model_from(checkpoint)
    np.testing.assert_allclose(
        probabilities(from_png),
        predict_in_memory(model, np.stack([mnist_preprocess(x) for x in images[:n]])),
        atol=2e-6,
    )
    # Preprocessing leaves MNIST's own digits almost as they are, so the predictions hardly change...
    png_digits = np.array([int(row["digit"]) for row in from_png])
    tensor_digits = np.array([int(row["digit"]) for row in from_tensors])
    assert (png_digits == tensor_digits).mean() >= 0.97
    # ...and they are right, as far as 60 training batches can make them.
    assert (png_digits == labels[:n]).mean() >= 0.8
    preprocessed = np.stack([mnist_preprocess(x) for x in images[:2000]])
    unchanged = (preprocessed == images[:2000]).all(axis=(1, 2)).mean()
    assert unchanged >= 0.7 and np.abs(preprocessed.astype(int) - images[:2000]).mean() < 0.5


def test_predict_under_ddp_needs_an_input_per_process(tmp_path: Path) -> None:
    Image.fromarray(draw_digit("one", (40, 40), (12, 6, 28, 34))).save(tmp_path / "one.png")
    dm = MNISTDataModule(data_dir=tmp_path / "no_mnist", predict_path=str(tmp_path / "one.png"))
    dm.trainer = SimpleNamespace(world_size=3, is_global_zero=True)  # three processes, one input
    with pytest.raises(PredictInputError, match="1 inputs for 3 processes"):
        dm.setup("predict")
