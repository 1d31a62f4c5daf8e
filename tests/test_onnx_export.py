"""ONNX export: both networks, checked against their checkpoints on real test images, the contract in the file,
``predict`` and ``load_runner`` running it in ONNX Runtime, and every bad input refused with nothing written."""

from __future__ import annotations

import csv
import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_lit.cli import main
from mnist_lit.data import idx
from mnist_lit.data.images import load_predict_inputs
from mnist_lit.errors import UserError
from mnist_lit.inference.runners import load_runner
from mnist_lit.inference.torch_runner import TorchRunner
from tests.helpers import CONFIGS, REPO_ROOT, TinyMNIST, exit_code, make_tiny_mnist, refused, runs

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from mnist_lit.inference.onnx_runner import OnnxModelError, OnnxRunner  # noqa: E402  (after the skip: it needs onnxruntime)

NETWORKS = {"keras_report": "KerasReportCNN", "compact": "CompactCNN"}
QUIET = ["--trainer.enable_progress_bar", "false"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint of each network from a short ``fit`` on tiny synthetic MNIST, made once for this module."""
    root = tmp_path_factory.mktemp("fit")
    tiny = make_tiny_mnist(root / "data")
    made = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(idx, "MNIST_FILES", tiny.specs)
        patch.chdir(root)
        for name in NETWORKS:
            main(["fit", "--config", str(CONFIGS / f"{name}.yaml"), "--trainer.max_epochs", "2", *QUIET,
                  "--test_after_fit", "false"])  # fmt: skip
            made[name] = sorted(runs(name)[-1].glob("checkpoints/*.ckpt"))[0].resolve()
    return made


@pytest.fixture(scope="module")
def compact_onnx(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compact network's checkpoint exported to ONNX (checked on synthetic images: no MNIST where it runs)."""
    output = tmp_path_factory.mktemp("onnx") / "compact.onnx"
    main(["export", "--ckpt_path", str(checkpoints["compact"]), "--output", str(output), "--data_dir", "nowhere"])
    return output


def real_test_images(raw: Path, n: int) -> np.ndarray:
    data = gzip.decompress((raw / "t10k-images-idx3-ubyte.gz").read_bytes())
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n].copy()


def mnist_data_dir(raw: Path, root: Path) -> Path:
    """A ``data_dir`` (``root/MNIST/raw``) holding links to the real files in ``raw``."""
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for gz in raw.glob("*.gz"):
        (folder / gz.name).symlink_to(gz)
    return root


# --- export and the contract ----------------------------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.parametrize("name", NETWORKS)
def test_onnx_runtime_gives_the_checkpoints_probabilities(
    checkpoints: dict[str, Path], real_raw_dir: Path, name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data_dir = mnist_data_dir(real_raw_dir, tmp_path / "data")
    output = tmp_path / "out" / f"{name}.onnx"
    output.parent.mkdir()
    main(["export", "--ckpt_path", str(checkpoints[name]), "--output", str(output), "--data_dir", str(data_dir)])
    said = capsys.readouterr().out
    assert "1000 MNIST test images" in said and "max |Δp|" in said
    assert [p.name for p in output.parent.iterdir()] == [output.name]  # one self-contained file, no .data beside it
    images = real_test_images(real_raw_dir, 1000)
    runner, reference = OnnxRunner(output), TorchRunner(checkpoints[name])
    probs = runner.probabilities(images)
    assert probs.dtype == np.float32 and probs.shape == (1000, 10)
    assert np.abs(probs - reference.probabilities(images)).max() <= TOLERANCE
    for batch in (images[:1], images[100:137]):  # the batch dimension is dynamic
        assert np.abs(runner.probabilities(batch) - reference.probabilities(batch)).max() <= TOLERANCE
    assert runner.network_name == NETWORKS[name]


def test_the_file_states_its_contract_and_has_no_dropout(compact_onnx: Path, checkpoints: dict[str, Path]) -> None:
    model = onnx.load(str(compact_onnx))
    onnx.checker.check_model(model)
    assert "Dropout" not in {node.op_type for node in model.graph.node}
    (image,) = model.graph.input
    probabilities, ood_score = model.graph.output
    assert (image.name, probabilities.name, ood_score.name) == ("image", "probabilities", "ood_score")
    for value in (image, probabilities, ood_score):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["network"] == "CompactCNN" and metadata["normalization"] == "unit"
    assert metadata["source_checkpoint"] == str(checkpoints["compact"])
    assert "raw pixel values 0-255" in metadata["input"] and "(N, 10)" in metadata["output"]
    assert metadata["ood_method"] == "max_softmax" and metadata["ood_threshold"] == "inf"  # none fitted


def test_load_runner_opens_the_onnx_file_as_the_web_app_does(compact_onnx: Path) -> None:
    runner = load_runner(compact_onnx)
    assert isinstance(runner, OnnxRunner) and runner.network_name == "CompactCNN" and runner.source == compact_onnx
    probs = runner.probabilities(np.zeros((3, 1, 28, 28), dtype=np.uint8))
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("content", [None, b"not a model", b"\x08\x07" + bytes(200)])
def test_a_missing_or_corrupt_onnx_file_is_a_user_error(content: bytes | None, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(OnnxModelError, match="model.onnx") as info:
        OnnxRunner(path)
    assert isinstance(info.value, UserError)


# --- predict with the ONNX file -------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_with_the_onnx_file_gives_the_checkpoints_predictions(
    tiny_mnist: TinyMNIST, checkpoints: dict[str, Path], compact_onnx: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "digits.npy"
    test_images = np.frombuffer(tiny_mnist.contents["t10k-images-idx3-ubyte"], np.uint8, offset=16)
    np.save(inputs, test_images.reshape(-1, 28, 28)[:20])
    rows = {}
    for source in (checkpoints["compact"], compact_onnx):
        main(["predict", "--config", str(CONFIGS / "compact.yaml"), "--ckpt_path", str(source),
              "--data.predict_path", str(inputs), "--predict_figure", "false", *QUIET])  # fmt: skip
        rows[source.suffix] = read_rows(runs("compact")[-1] / "predictions.csv")
    assert yaml.safe_load((runs("compact")[-1] / "config.yaml").read_text())["ckpt_path"] == str(compact_onnx)
    assert len(rows[".onnx"]) == len(rows[".ckpt"]) == 20
    assert [r["digit"] for r in rows[".onnx"]] == [r["digit"] for r in rows[".ckpt"]]
    assert [r["path"] for r in rows[".onnx"]] == [r["path"] for r in rows[".ckpt"]]
    probs = {k: np.array([[float(r[f"p{d}"]) for d in range(10)] for r in v]) for k, v in rows.items()}
    assert np.abs(probs[".onnx"] - probs[".ckpt"]).max() <= TOLERANCE
    assert len({r["digit"] for r in rows[".ckpt"]}) > 1  # a trained network, not one that says the same digit always


def test_an_onnx_file_of_another_network_or_for_another_subcommand_is_refused(
    compact_onnx: Path, tiny_mnist: TinyMNIST, capsys: pytest.CaptureFixture
) -> None:
    predict = ["predict", "--config", str(CONFIGS / "keras_report.yaml"), "--ckpt_path", str(compact_onnx), *QUIET]
    assert exit_code(predict) == 1
    assert "holds a CompactCNN, but the config selects KerasReportCNN" in capsys.readouterr().err
    assert exit_code(["test", "--config", str(CONFIGS / "compact.yaml"), "--ckpt_path", str(compact_onnx)]) == 1
    assert "an ONNX model can `predict` only" in capsys.readouterr().err
    missing = ["predict", "--config", str(CONFIGS / "compact.yaml"), "--ckpt_path", "gone.onnx", *QUIET]
    assert exit_code(missing) == 1
    assert "gone.onnx: no such file" in capsys.readouterr().err


# --- classify: the quick path for a few images ----------------------------------------------------------------------


def test_classify_prints_the_checkpoints_predictions_and_never_imports_torch_for_onnx(
    tiny_mnist: TinyMNIST, checkpoints: dict[str, Path], compact_onnx: Path, tmp_path: Path
) -> None:
    test_images = np.frombuffer(tiny_mnist.contents["t10k-images-idx3-ubyte"], np.uint8, offset=16)
    inputs = tmp_path / "digits.npy"
    np.save(inputs, test_images.reshape(-1, 28, 28)[:20])
    program = (
        "import sys\n"
        "from mnist_lit.cli.classify import main\n"
        "main(sys.argv[1:])\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    outputs = {}
    for source in (compact_onnx, checkpoints["compact"]):
        command = [sys.executable, "-c", program, str(inputs), "--ckpt_path", str(source), "--csv"]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        *table, imported = done.stdout.splitlines()
        assert imported == f"torch imported: {source.suffix == '.ckpt'}"
        outputs[source.suffix] = list(csv.DictReader(table))
    assert [r["path"] for r in outputs[".onnx"]] == [f"{inputs}[{i}]" for i in range(20)]
    assert [r["digit"] for r in outputs[".onnx"]] == [r["digit"] for r in outputs[".ckpt"]]
    probs = {k: np.array([[float(r[f"p{d}"]) for d in range(10)] for r in v]) for k, v in outputs.items()}
    assert np.abs(probs[".onnx"] - probs[".ckpt"]).max() <= TOLERANCE
    prepared = load_predict_inputs(inputs).images[:, None]  # as predict prepares them: centred, scaled
    reference = TorchRunner(checkpoints["compact"]).probabilities(prepared)
    assert np.abs(probs[".ckpt"] - reference).max() <= 1e-6  # the CSV's six decimals


def test_classify_names_what_is_wrong(compact_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blank, one = tmp_path / "blank.npy", tmp_path / "one.npy"
    np.save(blank, np.zeros((28, 28), np.uint8))
    np.save(one, np.pad(np.full((16, 4), 255, np.uint8), ((6, 6), (12, 12))))
    assert exit_code(["classify", str(tmp_path / "gone.png"), "--ckpt_path", str(compact_onnx)]) == 1
    assert "INPUT " + str(tmp_path / "gone.png") + ": no such file or folder" in capsys.readouterr().err
    assert exit_code(["classify", str(blank), "--ckpt_path", str(compact_onnx)]) == 1
    said = capsys.readouterr().err
    assert "none of the 1 inputs could be predicted" in said and "classify: --invert" in said
    assert exit_code(["classify", str(one), "--ckpt_path", str(tmp_path / "gone.ckpt")]) == 1
    assert "gone.ckpt: no such file" in capsys.readouterr().err
    assert exit_code(["classify", str(one), "--ckpt_path", str(tmp_path / "gone.onnx")]) == 1
    assert "gone.onnx: no such file" in capsys.readouterr().err


# --- bad input: one message, exit 1, nothing at --output ------------------------------------------------------------


def refused_export(args: list[str], output: Path, capsys: pytest.CaptureFixture) -> str:
    """``export ARGS`` exits with 1 and one message, and leaves nothing at ``output``, nor a temporary file."""
    return refused(["export", *args], capsys, output)


def test_a_missing_or_corrupt_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "model.onnx"
    err = refused_export(["--ckpt_path", str(tmp_path / "gone.ckpt"), "--output", str(output)], output, capsys)
    assert "gone.ckpt: no such file" in err
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    err = refused_export(["--ckpt_path", str(corrupt), "--output", str(output)], output, capsys)
    assert "corrupt.ckpt: not a readable checkpoint" in err


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("nowhere/model.onnx", [], "does not exist"),
        ("model.pt", [], "unknown format"),
        ("model.h5", [], "legacy .h5 is not written"),
        ("model.keras", ["--format", "onnx"], "is a keras file name, but --format says onnx"),
        ("model.bin", ["--format", "weights"], "ending in .weights.h5"),
    ],
)
def test_bad_outputs_are_refused(
    checkpoints: dict[str, Path], name: str, extra: list[str], message: str, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    output = tmp_path / name
    err = refused_export(["--ckpt_path", str(checkpoints["compact"]), "--output", str(output), *extra], output, capsys)
    assert message in err and str(output) in err


def test_an_existing_output_is_kept_unless_overwrite(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "model.onnx"
    output.write_bytes(b"earlier")
    args = ["export", "--ckpt_path", str(checkpoints["compact"]), "--output", str(output), "--data_dir", "nowhere"]
    assert exit_code(args) == 1
    assert "--overwrite" in capsys.readouterr().err and output.read_bytes() == b"earlier"
    main([*args, "--overwrite"])
    assert OnnxRunner(output).network_name == "CompactCNN"


def test_a_config_of_another_network_is_refused(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "model.onnx"
    args = ["--ckpt_path", str(checkpoints["compact"]), "--output", str(output)]
    err = refused_export([*args, "--config", str(CONFIGS / "keras_report.yaml")], output, capsys)
    assert "holds a CompactCNN" in err and "selects KerasReportCNN" in err


def test_a_file_that_fails_its_check_is_not_written(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = OnnxRunner.predict

    def shifted(self: OnnxRunner, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, scores = original(self, pixels)
        return probabilities + 1e-3, scores

    monkeypatch.setattr(OnnxRunner, "predict", shifted)
    output = tmp_path / "model.onnx"
    err = refused_export(["--ckpt_path", str(checkpoints["compact"]), "--output", str(output), "--data_dir", "nowhere"],
                  output, capsys)  # fmt: skip
    assert "max |Δp| = 0.001" in err and "above the tolerance 1e-05" in err and "synthetic images" in err


def test_export_help_states_the_contract(capsys: pytest.CaptureFixture) -> None:
    assert exit_code(["export", "--help"]) == 0
    out = capsys.readouterr().out
    assert "python -m mnist_lit export" in out and "'image'" in out and "--overwrite" in out
