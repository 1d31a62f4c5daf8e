"""A model folder's network: plain PyTorch, saved and loaded through ``huggingface_hub``'s ``PyTorchModelHubMixin``.

A model folder (written by ``python -m mnist_lit export --output DIR/``) holds:

- ``model.safetensors``: every tensor of the network's state (the layers' weights and the batch norms' statistics,
  and each buffer the checkpoint has beside them: the temperature, the unsure threshold, and any other, such as
  scores' statistics);
- ``config.json``: the constructor arguments of :class:`PretrainedNetwork` (the network class, its layer options, the
  buffers' shapes, the training hyperparameters) and the preprocessing contract (input, ink polarity, the crop and
  centre rule, the normalization, the "not a digit" score's method and threshold, and the value of every scalar
  buffer), standard JSON (an unfitted threshold is ``null``; folders that wrote ``Infinity`` still load);
- ``model.onnx``, ``model.pt2`` (``torch.export``; both output the probabilities and the OOD score), ``README.md``
  (the model card) and ``SHA256SUMS``.

Loading checks every file against ``SHA256SUMS`` first (``sha256sum -c SHA256SUMS`` does the same), so that a
changed or damaged file is refused by name before anything is read from it. Nothing here imports Lightning: the
layers come from :mod:`mnist_lit.models.layers`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from mnist_lit.data.normalization import IMAGE_SIDE, MNIST_MEAN, MNIST_STD
from mnist_lit.errors import UserError
from mnist_lit.models.layers import LAYERS
from mnist_lit.models.ood import OODScorer, ood_score, uses_features

if TYPE_CHECKING:
    from mnist_lit.training.checkpoints import TrainedNetwork

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ONNX = "model.onnx"
PROGRAM = "model.pt2"
CARD = "README.md"
CHECKSUMS = "SHA256SUMS"
#: What every model folder holds; SHA256SUMS lists the others.
FOLDER_FILES = (CONFIG, WEIGHTS, ONNX, PROGRAM, CARD, CHECKSUMS)
#: The layout of config.json; a folder of another version is refused rather than misread.
FORMAT_VERSION = 1


class ModelFolderError(UserError):
    """A model folder that is incomplete, changed since its export, or not written by mnist_lit."""


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder: Path) -> None:
    """``SHA256SUMS`` for every other file of ``folder``, in ``sha256sum``'s format (``sha256sum -c`` checks it)."""
    lines = [f"{sha256_of(p)}  {p.name}\n" for p in sorted(folder.iterdir()) if p.is_file() and p.name != CHECKSUMS]
    (folder / CHECKSUMS).write_text("".join(lines))


def verify_folder(folder: str | Path) -> Path:
    """Refuse a folder that is not a whole, unchanged model folder, naming the file at fault; return it as a Path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: no such folder. Write one with `python -m mnist_lit export --output DIR/`.")
    sums = folder / CHECKSUMS
    if not sums.is_file():
        raise ModelFolderError(
            f"{folder}: not an mnist_lit model folder (it has no {CHECKSUMS}); write one with "
            "`python -m mnist_lit export --output DIR/`."
        )
    listed: dict[str, str] = {}
    for number, line in enumerate(sums.read_text(errors="replace").splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or "/" in name or name.startswith("."):
            raise ModelFolderError(f"{sums}: line {number} is not '<sha256>  <file name>'; the file was changed.")
        listed[name] = digest.lower()
    for name in FOLDER_FILES:
        if name != CHECKSUMS and name not in listed:
            raise ModelFolderError(f"{sums}: it lists no {name}; the folder is not a whole mnist_lit model folder.")
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            raise ModelFolderError(f"{path}: missing from the model folder ({CHECKSUMS} lists it); export it again.")
        if sha256_of(path) != digest:
            raise ModelFolderError(
                f"{path}: its SHA-256 is not the one {CHECKSUMS} records: the file was changed or damaged after the "
                "export. Refusing to load it; export the folder again from its checkpoint, or download it again."
            )
    return folder


def _buffer_holder(module: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    """The submodule that holds the buffer named ``dotted`` (``a.b.name``), made as empty modules where missing."""
    *parents, name = dotted.split(".")
    for part in parents:
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    return module, name


class PretrainedNetwork(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="mnist_lit",
    license="mit",
    pipeline_tag="image-classification",
    tags=["mnist", "image-classification", "pytorch"],
):
    """A trained network with its preprocessing: raw pixels in, the digits' probabilities out, in plain PyTorch.

    ``forward`` takes what the ONNX and ``torch.export`` files take: float (N, 1, 28, 28), raw pixel values 0-255,
    a light digit on a dark background, each already in MNIST's form (cropped, scaled to 20 pixels, centred by mass:
    :func:`mnist_lit.data.images.mnist_preprocess`); it returns softmax(logits / temperature), (N, 10). :attr:`net` is
    the bare ``nn.Sequential`` (normalized images to logits), for fine-tuning or attributions. :meth:`scored` also
    gives the checkpoint's "not a digit" score (its ``ood.*`` buffers: method, threshold, statistics), which is
    ``model.pt2``'s and ``model.onnx``'s second output, and :meth:`not_digit` the verdict.

    The constructor's arguments are what ``save_pretrained`` writes as ``config.json`` and ``from_pretrained`` reads
    back. ``from_pretrained`` on a local folder checks it against ``SHA256SUMS`` first, and loads the weights strictly.

    Args:
        network: the network class's name (``CompactCNN``...): it picks the builder in :mod:`mnist_lit.models.layers`.
        network_args: the builder's arguments (the layer options the checkpoint was trained with).
        preprocessing: the input contract; ``normalization`` (``name``, ``mean``, ``std``) is applied in ``forward``.
        buffers: every tensor of the state beside the layers: name -> ``{"shape": [...], "dtype": "float32"}``.
        hparams: the checkpoint's hyperparameters, as trained (for the record, and to rebuild the LightningModule).
        format_version: the layout of this config.
    """

    temperature: Tensor
    #: The checkpoint's OOD scorer (absent in a folder exported before the score existed).
    ood: OODScorer

    def __init__(
        self,
        network: str,
        network_args: dict[str, Any],
        preprocessing: dict[str, Any],
        buffers: dict[str, dict[str, Any]],
        hparams: dict[str, Any] | None = None,
        format_version: int = FORMAT_VERSION,
    ) -> None:
        super().__init__()
        if format_version != FORMAT_VERSION:
            raise ModelFolderError(
                f"{CONFIG} has format_version {format_version}; this mnist_lit reads {FORMAT_VERSION}: upgrade it."
            )
        if network not in LAYERS:
            raise ModelFolderError(f"{CONFIG} names the network {network!r}; known: {', '.join(sorted(LAYERS))}.")
        #: What ``save_pretrained`` writes as config.json.
        self.init_config: dict[str, Any] = {
            "network": network, "network_args": network_args, "preprocessing": preprocessing, "buffers": buffers,
            "hparams": hparams, "format_version": format_version,
        }  # fmt: skip
        self.network = network
        self.preprocessing = preprocessing
        self.hparams = dict(hparams or {})
        self.net = LAYERS[network](**network_args)
        if "ood.class_means" in buffers:  # the checkpoint's OOD scorer, whose buffers the loop below shapes
            classes, width = buffers["ood.class_means"]["shape"]
            self.ood = OODScorer(feature_dim=width, num_classes=classes)
        for dotted, spec in buffers.items():
            holder, name = _buffer_holder(self, dotted)
            holder.register_buffer(name, torch.zeros(spec["shape"], dtype=getattr(torch, spec.get("dtype", "float32"))))
        if "temperature" not in buffers:
            self.register_buffer("temperature", torch.ones(()))
        norm = preprocessing["normalization"]
        self.standardize = norm["name"] != "unit"
        self.mean, self.std = float(norm["mean"]), float(norm["std"])
        self.eval()

    def logits(self, pixels: Tensor) -> Tensor:
        """The temperature-scaled logits for raw pixels (what attributions explain)."""
        x = pixels / 255.0
        if self.standardize:
            x = (x - self.mean) / self.std
        return self.net(x) / self.temperature

    def forward(self, pixels: Tensor) -> Tensor:
        """The digits' probabilities (N, 10) for raw-pixel images (N, 1, 28, 28)."""
        return self.logits(pixels).softmax(dim=1)

    @property
    def ood_method(self) -> str:
        """The OOD score the checkpoint was fitted with (``max_softmax`` for a folder older than the score)."""
        ood = getattr(self, "ood", None)
        return ood.method_name if isinstance(ood, OODScorer) else "max_softmax"

    @property
    def ood_threshold(self) -> float | None:
        """The score above which an input is "not a digit" (None: none fitted, every input is a digit)."""
        ood = getattr(self, "ood", None)
        return float(ood.threshold) if isinstance(ood, OODScorer) and ood.fitted else None

    def scored(self, pixels: Tensor, method: str | None = None) -> tuple[Tensor, Tensor]:
        """The probabilities (N, 10) and the OOD score (N,; higher: less like a digit) in one pass, computed as the
        checkpoint computes them (:class:`mnist_lit.inference.torch_runner.PixelClassifier`): the score of the raw
        logits at the temperature, or of the penultimate features. ``method`` (default :attr:`ood_method`) fixes the
        score as a plain string, so that ``torch.export`` traces one graph for it."""
        method = method or self.ood_method
        x = pixels / 255.0
        if self.standardize:
            x = (x - self.mean) / self.std
        if uses_features(method):
            features = self.net[:-1](x)
            raw = self.net[-1](features)
            score = ood_score(method, raw, features, self.temperature, self.ood.class_means, self.ood.whitening)
        else:
            raw = self.net(x)
            score = ood_score(method, raw, None, self.temperature)
        return (raw / self.temperature).softmax(dim=1), score

    def not_digit(self, scores: Tensor) -> Tensor:
        """Which scores are above the threshold: "not a digit" (none when no threshold was fitted)."""
        threshold = self.ood_threshold
        return scores > threshold if threshold is not None else torch.zeros_like(scores, dtype=torch.bool)

    def scalar(self, name: str) -> float:
        """The value of a scalar buffer (such as ``unsure_threshold``), or NaN if the network has none of that name."""
        holder, leaf = _buffer_holder_or_none(self, name)
        value = getattr(holder, leaf, None) if holder is not None else None
        return float(value) if isinstance(value, Tensor) and value.numel() == 1 else math.nan

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> PretrainedNetwork:
        """The mixin's ``from_pretrained``, a local folder checked against SHA256SUMS before any of it is read."""
        if Path(pretrained_model_name_or_path).is_dir():
            verify_folder(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str = "cpu",
        strict: bool = True,
        **kwargs: Any,
    ) -> PretrainedNetwork:
        """The mixin's loader: a Hub id is downloaded whole first; the folder is checked against SHA256SUMS, the
        weights loaded strictly, and the config's buffer values checked against them."""
        if not Path(model_id).is_dir():
            from huggingface_hub import snapshot_download

            model_id = snapshot_download(
                repo_id=model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                local_files_only=local_files_only, token=token,
            )  # fmt: skip
        from safetensors.torch import load_model

        folder = verify_folder(model_id)
        known = {name: kwargs.pop(name) for name in list(kwargs) if name in _INIT_ARGS}
        try:
            model = cls(**known)
            load_model(model, str(folder / WEIGHTS), strict=strict, device=map_location)
        except (TypeError, KeyError, RuntimeError) as err:
            raise ModelFolderError(f"{folder / WEIGHTS}: does not fit {folder / CONFIG} ({err}).") from err
        model.check_contract(folder / CONFIG)
        return model.eval()

    def check_contract(self, where: Path | str = CONFIG) -> None:
        """Refuse a config whose recorded buffer values differ from the weights' (they are written together)."""
        for name, value in self.preprocessing.get("scalar_buffers", {}).items():
            ours = self.scalar(name)
            if value is None:  # JSON's null: a value that is not finite (an unfitted threshold, inf)
                if math.isinf(ours):
                    continue
                raise ModelFolderError(f"{where}: says {name} = null (infinite), but {WEIGHTS} holds {ours}.")
            if not (isinstance(value, (int, float)) and math.isclose(ours, float(value), rel_tol=1e-6, abs_tol=1e-9)):
                raise ModelFolderError(f"{where}: says {name} = {value}, but {WEIGHTS} holds {ours}.")


def _buffer_holder_or_none(module: nn.Module, dotted: str) -> tuple[nn.Module | None, str]:
    *parents, name = dotted.split(".")
    for part in parents:
        module = getattr(module, part, None)  # type: ignore[assignment]
        if not isinstance(module, nn.Module):
            return None, name
    return module, name


_INIT_ARGS = ("network", "network_args", "preprocessing", "buffers", "hparams", "format_version")


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a verified folder."""
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise ModelFolderError(f"{folder / CONFIG}: not readable JSON ({err}).") from err
    if not isinstance(config, dict) or "network" not in config:
        raise ModelFolderError(f"{folder / CONFIG}: not an mnist_lit model config (it names no network).")
    return config


def finite_or_none(value: Any) -> Any:
    """``value`` with every infinite float (an unfitted threshold) as None, so that config.json is standard JSON
    (``null``, not Python's ``Infinity``); NaN stays, and is refused by :func:`_jsonable`."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def _jsonable(value: Any, what: str) -> Any:
    """``value`` as standard JSON has it (tuples become lists, infinities null); refuse what JSON cannot hold
    (NaN, objects) rather than drop it."""
    try:
        return json.loads(json.dumps(finite_or_none(value), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ModelFolderError(f"{what} cannot be written to {CONFIG} ({err}).") from err


def preprocessing_contract(
    normalization: str, scalars: dict[str, float], ood: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a caller must do to an image before :meth:`PretrainedNetwork.forward`, and how to read its answers
    (``ood``: the "not a digit" score's ``method`` and ``threshold``, None when unfitted)."""
    from mnist_lit.data.images import BOX_SIDE, CENTRE, INK_FRACTION

    if normalization == "unit":
        norm = {"name": "unit", "formula": "pixels / 255", "mean": 0.0, "std": 1.0}
    else:
        norm = {"name": normalization, "formula": f"(pixels / 255 - {MNIST_MEAN}) / {MNIST_STD}", "mean": MNIST_MEAN,
                "std": MNIST_STD}  # fmt: skip
    return {
        "input": f"float32 (N, 1, {IMAGE_SIDE}, {IMAGE_SIDE}), raw pixel values 0-255",
        "image_side": IMAGE_SIDE,
        "ink": "light digit on a dark background (MNIST's polarity); a dark-on-light picture is inverted first",
        "crop_and_centre": (
            f"subtract the background (the border's median), stretch the ink to 255, crop to the pixels above "
            f"{INK_FRACTION:g} of the peak, scale the crop (aspect kept, Lanczos) so its longer side is {BOX_SIDE} px, "
            f"paste it into {IMAGE_SIDE}x{IMAGE_SIDE} with its centre of mass at pixel ({CENTRE}, {CENTRE}) "
            "(mnist_lit.data.images.mnist_preprocess)"
        ),
        "box_side": BOX_SIDE,
        "centre_of_mass": [CENTRE, CENTRE],
        "normalization": norm,
        "output": "float32 (N, 10): softmax(logits / temperature), the probabilities of the digits 0-9",
        "ood_score": {
            "output": "float32 (N,): model.onnx's output 'ood_score' and model.pt2's second output, how unlike a "
            "digit each image is (higher: less; mnist_lit.models.ood); 'not a digit' strictly above the threshold "
            "(null: none fitted, every image is a digit)",
            **(ood or {"method": "max_softmax", "threshold": None}),
        },
        "scalar_buffers": finite_or_none(scalars),
    }


def network_from_trained(trained: TrainedNetwork) -> PretrainedNetwork:
    """The plain network of a loaded checkpoint, with every tensor of its state beside the layers (the temperature,
    the unsure threshold, and any other buffer it has), ready for ``save_pretrained``."""
    model = trained.model
    state = {k: v.detach() for k, v in model.state_dict().items()}
    extra = {k: v for k, v in state.items() if not k.startswith("net.")}
    buffers = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in extra.items()}
    scalars = {k: float(v) for k, v in extra.items() if v.numel() == 1 and v.is_floating_point()}
    names = inspect.signature(LAYERS[trained.name]).parameters
    hparams = {k: v for k, v in model.hparams.items() if not k.startswith("_")}
    network = PretrainedNetwork(
        network=trained.name,
        network_args=_jsonable({k: hparams[k] for k in names if k in hparams}, "the network's options"),
        preprocessing=_jsonable(
            preprocessing_contract(trained.normalization, scalars, model.ood.describe()), "the preprocessing"
        ),
        buffers=buffers,
        hparams=_jsonable(hparams, "the checkpoint's hyperparameters"),
    )
    network.load_state_dict(state, strict=True)
    return network.eval()
