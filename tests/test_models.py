"""The networks: Keras' parameter counts layer by layer, shapes, initializers, optimizer, and learning."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.models import CompactCNN, FastCNN, KerasReportCNN
from tests.helpers import TinyMNIST, quick_trainer


def _layer_params(model: pl.LightningModule) -> list[int]:
    return [sum(p.numel() for p in m.parameters()) for m in model.net if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize(
    ("cls", "per_layer", "total"),
    [
        (KerasReportCNN, [320, 18_496, 36_928, 73_856, 1_290], 130_890),
        (CompactCNN, [80, 1_168, 40_100, 1_010], 42_358),
        (FastCNN, [624, 6_944, 205_056, 2_570], 215_194),
    ],
)
def test_parameter_counts_match_keras(cls, per_layer: list[int], total: int) -> None:
    model = cls()
    assert _layer_params(model) == per_layer
    assert sum(p.numel() for p in model.parameters()) == total


@pytest.mark.parametrize("cls", [KerasReportCNN, CompactCNN, FastCNN])
def test_output_shapes_and_probabilities(cls) -> None:
    model = cls().eval()
    x = torch.rand(7, 1, 28, 28)
    assert model(x).shape == (7, 10)
    probs = model.predict_step((x,), 0)["probabilities"]
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(7))
    assert (probs >= 0).all()


def test_layer_sizes_are_constructor_arguments() -> None:
    model = KerasReportCNN(filters=(8, 16, 16), dense_units=32, dropout=0.25)
    convs = [m for m in model.net if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 16]
    assert [m.p for m in model.net if isinstance(m, nn.Dropout)] == [0.25]
    compact = CompactCNN(filters=(4, 8), dense_units=20, conv_dropout=0.1, dense_dropout=0.3)
    assert [m.p for m in compact.net if isinstance(m, nn.Dropout)] == [0.1, 0.1, 0.3]
    assert compact(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("cls", [KerasReportCNN, CompactCNN])
def test_keras_initializers(cls) -> None:
    torch.manual_seed(0)
    model = cls()
    for layer in model.net:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
            limit = math.sqrt(6.0 / (fan_in + fan_out))  # glorot-uniform
            assert torch.count_nonzero(layer.bias) == 0
            assert layer.weight.abs().max() <= limit
            assert layer.weight.abs().max() > 0.9 * limit  # uses the whole range, not PyTorch's narrower default
            assert layer.weight.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.25)


def test_torch_init_keeps_pytorch_defaults() -> None:
    torch.manual_seed(0)
    model = CompactCNN(init="torch")
    assert any(torch.count_nonzero(m.bias) > 0 for m in model.net if isinstance(m, nn.Linear))


def test_optimizer_is_keras_adam() -> None:
    optimizer = KerasReportCNN().configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-7, 0.0)


def test_training_loss_is_softmax_then_categorical_crossentropy_on_one_hot_labels() -> None:
    torch.manual_seed(0)
    model = CompactCNN().eval()  # eval: no dropout, so that the logits below are the step's own
    x, labels = torch.rand(6, 1, 28, 28), torch.tensor([0, 3, 9, 1, 1, 7])
    loss = model.training_step((x, labels), 0)["loss"]
    one_hot = nn.functional.one_hot(labels, 10).float()
    keras = -(one_hot * model(x).softmax(dim=1).log()).sum(dim=1).mean()
    torch.testing.assert_close(loss, keras)


@pytest.mark.parametrize("cls", [KerasReportCNN, CompactCNN])
def test_pooling_before_relu_is_the_notebooks_network(cls) -> None:
    """The networks pool before their ReLU; the notebooks' order gives the same outputs and the same gradients."""
    torch.manual_seed(0)
    ours = cls().eval()
    layers = list(ours.net)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    notebook = nn.Sequential(*layers)
    assert [type(m) for m in notebook] != [type(m) for m in ours.net]
    x = torch.randn(8, 1, 28, 28)
    out_ours, out_notebook = ours(x), notebook(x)
    torch.testing.assert_close(out_ours, out_notebook, rtol=0, atol=0)
    grads = []
    for out in (out_ours, out_notebook):
        ours.zero_grad()
        out.square().sum().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in ours.parameters()])
    for mine, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_channels_last_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    plain = CompactCNN().eval()
    fast = CompactCNN(channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [KerasReportCNN, CompactCNN, FastCNN])
def test_a_network_can_overfit_a_few_hundred_samples(tiny_mnist: TinyMNIST, cls) -> None:
    pl.seed_everything(0, verbose=False)
    dm = MNISTDataModule(data_dir=tiny_mnist.data_dir, batch_size=32, val_split="test", download=False)
    trainer = quick_trainer(max_epochs=12)
    model = cls()
    trainer.fit(model, datamodule=dm)
    model.eval()
    with torch.no_grad():
        seen = model(dm.normalize(dm.data_train.images.unsqueeze(1))).argmax(dim=1)
    assert (seen == dm.data_train.labels).float().mean() >= 0.99  # the training samples are memorized
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert result["test/acc"] > 0.9


def test_the_notebooks_dropout_keeps_each_value_with_probability_one_minus_p_and_scales_it() -> None:
    from mnist_lit.models.layers import Dropout

    layer = Dropout(0.2)
    x = torch.full((200, 8, 13, 13), 2.0, requires_grad=True)
    torch.manual_seed(0)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005  # 270,400 draws: the standard error is under 0.001
    assert torch.equal(y[kept], torch.full_like(y[kept], 2.0 / 0.8))
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.8)  # the gradient flows through the kept values only
    torch.manual_seed(0)
    assert torch.equal(layer(x), y)  # the global generator's seed decides the mask
    layer.eval()
    assert torch.equal(layer(x), x)
    assert isinstance(layer, nn.Dropout) and layer.p == 0.2
