"""The networks' layers as plain ``torch.nn`` builders, one per network class, with no Lightning inside.

Each LightningModule in this package builds its layers here and hands them to
:class:`~mnist_lit.models.base.MNISTClassifier`. A model folder (``export --output DIR/``) names the class and these
builders' arguments in its ``config.json``, so :mod:`mnist_lit.inference.pretrained_network` rebuilds the same
``nn.Sequential`` from them and loads its weights without importing Lightning.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

#: Keras' BatchNormalization defaults (momentum 0.99 keeps 99% of the running statistics per step, which is
#: PyTorch's momentum 0.01; epsilon 1e-3), so that the accurate network trains as Deotte's did.
KERAS_BN_EPS, KERAS_BN_MOMENTUM = 1e-3, 0.01


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same module, state and inference), whose training mask on the CPU is drawn as the notebooks'
    Keras drew its own (TensorFlow's ``tf.nn.dropout``): a value is kept where a uniform draw is at least ``p``, and
    scaled by ``1 / (1 - p)``. The notebooks' two networks use it.

    Why by hand: on the CPU, PyTorch draws dropout's mask with ``bernoulli_``, several times slower per value than
    the uniform draws of ``torch.rand`` on the CPU measured here (the benchmark page, "Where the time goes"), and the
    compact network has three dropout layers. The function is the same (each value kept with probability ``1 - p``,
    from the global generator, so seeds and resumed runs are reproducible); the masks drawn differ. On other
    devices it is ``nn.Dropout``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or x.device.type != "cpu" or not 0 < self.p < 1 or self.inplace:
            return super().forward(x)
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


def keras_report_layers(
    filters: tuple[int, int, int] = (32, 64, 64), dense_units: int = 128, dropout: float = 0.5
) -> nn.Sequential:
    """Notebook A's network (see :class:`~mnist_lit.models.KerasReportCNN`)."""
    c1, c2, c3 = filters
    return nn.Sequential(
        nn.Conv2d(1, c1, 3), nn.MaxPool2d(2), nn.ReLU(),   # 28 -> 26 -> 13
        nn.Conv2d(c1, c2, 3), nn.MaxPool2d(2), nn.ReLU(),  # 13 -> 11 -> 5
        nn.Conv2d(c2, c3, 3), nn.ReLU(),                   # 5 -> 3
        nn.Flatten(),
        nn.Linear(c3 * 3 * 3, dense_units), nn.ReLU(),
        Dropout(dropout),
        nn.Linear(dense_units, 10),
    )  # fmt: skip


def compact_layers(
    filters: tuple[int, int] = (8, 16), dense_units: int = 100, conv_dropout: float = 0.2, dense_dropout: float = 0.5
) -> nn.Sequential:
    """Notebook B's network (see :class:`~mnist_lit.models.CompactCNN`)."""
    c1, c2 = filters
    return nn.Sequential(
        nn.Conv2d(1, c1, 3), nn.MaxPool2d(2), nn.ReLU(), Dropout(conv_dropout),   # 28 -> 26 -> 13
        nn.Conv2d(c1, c2, 3), nn.MaxPool2d(2), nn.ReLU(), Dropout(conv_dropout),  # 13 -> 11 -> 5
        nn.Flatten(),
        nn.Linear(c2 * 5 * 5, dense_units), nn.ReLU(),
        Dropout(dense_dropout),
        nn.Linear(dense_units, 10),
    )  # fmt: skip


def fast_layers(filters: tuple[int, int] = (24, 32), dense_units: int = 256) -> nn.Sequential:
    """The speed-run network (see :class:`~mnist_lit.models.FastCNN`)."""
    c1, c2 = filters
    return nn.Sequential(
        nn.Conv2d(1, c1, 5, stride=2), nn.ReLU(),          # 28 -> 12
        nn.Conv2d(c1, c2, 3), nn.MaxPool2d(2), nn.ReLU(),  # 12 -> 10 -> 5
        nn.Flatten(),
        nn.Linear(c2 * 5 * 5, dense_units), nn.ReLU(),
        nn.Linear(dense_units, 10),
    )  # fmt: skip


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride, padding),
        nn.ReLU(),
        nn.BatchNorm2d(c_out, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM),
    ]


def accurate_layers(filters: tuple[int, int, int] = (32, 64, 128), dropout: float = 0.4) -> nn.Sequential:
    """Deotte's batch-normalized network (see :class:`~mnist_lit.models.AccurateCNN`)."""
    c1, c2, c3 = filters
    return nn.Sequential(
        *_conv_bn(1, c1, 3), *_conv_bn(c1, c1, 3),                         # 28 -> 26 -> 24
        *_conv_bn(c1, c1, 5, stride=2, padding=2), nn.Dropout(dropout),    # 24 -> 12
        *_conv_bn(c1, c2, 3), *_conv_bn(c2, c2, 3),                        # 12 -> 10 -> 8
        *_conv_bn(c2, c2, 5, stride=2, padding=2), nn.Dropout(dropout),    # 8 -> 4
        *_conv_bn(c2, c3, 4),                                              # 4 -> 1
        nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(c3, 10),
    )  # fmt: skip


#: Each network class's name, and the builder of its layers (whose arguments are the class's network options).
LAYERS: dict[str, Callable[..., nn.Sequential]] = {
    "KerasReportCNN": keras_report_layers,
    "CompactCNN": compact_layers,
    "FastCNN": fast_layers,
    "AccurateCNN": accurate_layers,
}
