"""A model folder's ``README.md``: a Hugging Face model card filled from the run's ``metrics.json``.

The YAML header is ``huggingface_hub``'s :class:`~huggingface_hub.ModelCardData` (license, library_name, tags,
datasets, metrics, and ``model-index`` with the test results as :class:`~huggingface_hub.EvalResult`), so the Hub
shows the numbers in its widget; the body says what the network is, how to use it, how it was trained, and where it
fails, in the numbers the run measured. Every figure comes from ``metrics.json``; none is typed in by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from mnist_lit.inference.pretrained_network import PretrainedNetwork

#: The Hub's id of MNIST, for the ``datasets`` field and the results' ``dataset_type``.
DATASET = "ylecun/mnist"

#: The results in model-index: (metric_type, metric_name, how to read it from metrics.json).
RESULTS = (
    ("accuracy", "Test accuracy", ("test_acc",)),
    ("loss", "Test cross-entropy", ("test_loss",)),
    ("mae", "Mean absolute digit error (geometric)", ("geometric", "mae")),
    ("mse", "Mean squared digit error (geometric)", ("geometric", "mse")),
    ("off_diagonal_mass", "Off-diagonal mass of the confusion matrix", ("geometric", "off_diagonal_mass")),
    ("ece", "Expected calibration error (15 bins, L1)", ("calibration", "ece")),
    ("mce", "Maximum calibration error", ("calibration", "mce")),
)


def lookup(metrics: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """``metrics[k1][k2]...``, or None where any level is missing."""
    value: Any = metrics
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def eval_results(metrics: dict[str, Any], model_name: str) -> list[EvalResult]:
    """The test results of ``metrics.json`` that it has, as the Hub's evaluation results."""
    results = []
    for metric_type, metric_name, keys in RESULTS:
        value = lookup(metrics, keys)
        if isinstance(value, (int, float)):
            results.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Handwritten digit classification",
                    dataset_type=DATASET,
                    dataset_name="MNIST",
                    dataset_split="test",
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=float(value),
                )
            )
    return results


def measured_extras(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric figures of any out-of-distribution, "not a digit" or unsure section of metrics.json, flattened
    (``section.key``), so that the card reports what the run measured without knowing each section's layout."""
    found: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            found[prefix] = float(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)

    for key, value in metrics.items():
        if any(word in key.lower() for word in ("ood", "not_a_digit", "unsure", "outlier")):
            walk(key, value)
    return found


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def card_text(
    network: PretrainedNetwork, metrics: dict[str, Any] | None, metrics_source: str, checkpoint: str = ""
) -> str:
    """The model card's Markdown (YAML header included)."""
    name = network.network
    params = sum(p.numel() for p in network.net.parameters())
    model_name = f"mnist_lit {name}"
    data = ModelCardData(
        license="mit",
        library_name="mnist_lit",
        pipeline_tag="image-classification",
        tags=["mnist", "image-classification", "pytorch", "safetensors", "onnx", "model_hub_mixin"],
        datasets=[DATASET],
        metrics=[m for m, _, keys in RESULTS if metrics is not None and lookup(metrics, keys) is not None] or None,
        model_name=model_name if metrics else None,
        eval_results=eval_results(metrics, model_name) if metrics else None,
    )
    scalars = network.preprocessing.get("scalar_buffers", {})
    norm = network.preprocessing["normalization"]
    lines = [
        f"# {model_name}: a {params:,}-parameter CNN for MNIST digits",
        "",
        f"A `{name}` from mnist_lit (PyTorch Lightning reimplementations of two Keras MNIST "
        "notebooks), exported with `python -m mnist_lit export --output DIR/`. It reads one handwritten digit, 28x28 "
        "grey pixels, and answers the probabilities of 0-9. It is a small, fast baseline for MNIST-like digits: "
        "teaching, tests of a pipeline, a starting point for fine-tuning.",
        "",
        "## Use it",
        "",
        "```python",
        "import mnist_lit  # pip install mnist_lit[export]",
        "",
        'model = mnist_lit.load_pretrained("path/to/this/folder")  # no Lightning imported',
        'result = model.predict(["seven.png", "two.jpg"])  # paths, PIL images or uint8 arrays',
        "print(result.digits, result.probabilities.max(axis=1))",
        "network = model.module  # the plain torch.nn.Module: raw pixels (N, 1, 28, 28) in, probabilities out",
        "```",
        "",
        "Without mnist_lit: `onnxruntime.InferenceSession('model.onnx').run(None, {'image': x})` or "
        "`torch.export.load('model.pt2').module()(x)`, with `x` float32 (N, 1, 28, 28), raw pixels 0-255, each "
        "digit already in MNIST's form (below); both give the probabilities and the OOD score (`ood_score`). "
        "`sha256sum -c SHA256SUMS` checks the files.",
        "",
        "## Input contract",
        "",
        f"- Input: {network.preprocessing['input']}; {network.preprocessing['ink']}.",
        f"- Crop and centre: {network.preprocessing['crop_and_centre']}.",
        f"- Normalization (inside every file): {norm['formula']}.",
        f"- Output: {network.preprocessing['output']}.",
    ]
    lines.append(f"- {not_digit_line(network)}")
    if scalars:
        values = ", ".join(f"{k} = {v:.6g}" if v is not None else f"{k} = inf" for k, v in scalars.items())
        lines.append(f"- Buffers carried with the weights: {values}.")
    lines += ["", "## Results", ""]
    if not metrics:
        lines += [f"No metrics.json was found for this checkpoint ({metrics_source}): nothing was measured.", ""]
    else:
        lines += results_section(metrics, metrics_source, checkpoint) + limits_section(metrics, scalars)
        config = metrics.get("config")
        if config:
            lines += [
                "## Training configuration",
                "",
                "The exact configuration of the run (LightningCLI's `config.yaml`):",
                "",
                "```yaml",
                yaml.safe_dump(config, sort_keys=False).rstrip(),
                "```",
                "",
            ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    return str(card)


def not_digit_line(network: PretrainedNetwork) -> str:
    """What the card says of the "not a digit" score: its method and threshold when fitted."""
    method, threshold = network.ood_method, network.ood_threshold
    if threshold is None:
        return (
            f"Not a digit: no threshold was fitted, so every input is taken for a digit; the second output "
            f"(`ood_score`) is {method} (higher: less like a digit). `python -m mnist_lit calibrate --ood energy` "
            "fits one (docs/ood.md)."
        )
    return (
        f"Not a digit: the second output (`ood_score`, of `model.onnx` and `model.pt2`; `predict(...).ood_scores`) is "
        f'the {method} score (higher: less like a digit); an input scoring above {threshold:.6g} is "not a digit" '
        "(`predict(...).not_digit`; see mnist_lit's docs/ood.md)."
    )


def results_section(metrics: dict[str, Any], metrics_source: str, checkpoint: str = "") -> list[str]:
    """The test results as a table, and which weights they are of."""
    n = metrics.get("num_samples")
    weights = metrics.get("weights", "")
    of = f" Weights tested: {weights}; exported from: {checkpoint}." if checkpoint else ""
    lines = [f"Measured on the MNIST test set ({n:,} images) by the run itself ({metrics_source}).{of}", ""]
    lines += ["| Metric | Value |", "|---|---|"]
    for _, label, keys in RESULTS:
        value = lookup(metrics, keys)
        if isinstance(value, (int, float)):
            shown = _pct(value) if keys[-1] in ("test_acc", "off_diagonal_mass", "ece", "mce") else f"{value:.4f}"
            lines.append(f"| {label} | {shown} |")
    temperature = lookup(metrics, ("calibration", "temperature"))
    if isinstance(temperature, (int, float)):
        lines.append(f"| Temperature the probabilities use | {temperature:.4f} |")
    for key, value in measured_extras(metrics).items():
        lines.append(f"| {key} | {value:.4g} |")
    return [*lines, ""]


def limits_section(metrics: dict[str, Any], scalars: dict[str, float]) -> list[str]:
    """Where the network fails, in the run's own numbers."""
    lines = ["## Limits", ""]
    acc, n = metrics.get("test_acc"), metrics.get("num_samples")
    if isinstance(acc, (int, float)) and isinstance(n, int):
        lines.append(f"- It gets {round((1 - acc) * n):,} of the {n:,} MNIST test digits wrong ({_pct(1 - acc)}).")
    confusions = metrics.get("top_confusions") or []
    if confusions:
        worst = ", ".join(f"{c['true']} read as {c['predicted']} ({c['count']}x)" for c in confusions[:3])
        lines.append(f"- Its most frequent mistakes: {worst}.")
    recall = lookup(metrics, ("per_class", "recall"))
    if isinstance(recall, list) and recall:
        digit = min(range(len(recall)), key=lambda i: recall[i])
        lines.append(f"- The digit it finds least often: {digit} (recall {_pct(recall[digit])}).")
    ece = lookup(metrics, ("calibration", "ece"))
    if isinstance(ece, (int, float)):
        lines.append(
            f"- Its probabilities are off from its accuracy by {_pct(ece)} on average (expected calibration error)."
        )
    if scalars.get("unsure_threshold", 0.0) > 0:
        lines.append(f"- An answer whose top probability is under {scalars['unsure_threshold']:.4g} is flagged unsure.")
    if not measured_extras(metrics):
        lines.append(
            "- It was trained on MNIST digits only and answers a digit for any input: letters, drawings or noise get a "
            "digit too (no out-of-distribution figure was measured for this run)."
        )
    lines.append(
        "- Its numbers hold for digits in MNIST's form (centred, light on dark, 20-pixel box): pictures must go "
        "through the preprocessing above; other handwriting (other scanners, pens, cultures) was not measured."
    )
    return [*lines, ""]


def write_card(
    path: Path, network: PretrainedNetwork, metrics: dict[str, Any] | None, metrics_source: str, checkpoint: str = ""
) -> None:
    """Write the card to ``path`` (``README.md`` of a model folder)."""
    path.write_text(card_text(network, metrics, metrics_source, checkpoint), encoding="utf-8")
