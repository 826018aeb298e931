"""Plain (non-equivariant) CNN baselines: ``vanilla-cnn`` (He et al. 2023, Table 2) and ``tiny-cnn`` (tests).

``vanilla-cnn`` is the 'Vanilla CNN' row of Table 2 of He et al. (ICLR 2023), "Neural ePDOs",
which takes it from Jenner & Weiler (2021, steerable PDOs): the six-layer MNIST-rot architecture of
the equivariant models with ordinary 5x5 convolutions, widths ``2.5 x (16, 24, 32, 32, 48, 64)``
(their ``fix_param`` rule), batch norm, max pooling, global max pooling and a two-layer head.
That gives 1,073,098 parameters (no conv biases before batch norm), the paper's '1.1M'.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._inputs import check_images
from .registry import TrainDefaults, register_model

__all__ = ["PlainCNN", "vanilla_cnn", "tiny_cnn", "MNIST_MEAN", "MNIST_STD"]

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU}
_GLOBAL_POOLS = {"max": nn.AdaptiveMaxPool2d, "avg": nn.AdaptiveAvgPool2d}


class PlainCNN(nn.Module):
    """Conv-BN-activation blocks, max pooling after chosen layers, global pooling, MLP head.

    Args:
        channels: output widths of the conv layers.
        kernel_size: odd kernel size of every conv ('same' zero padding).
        pool_after: 1-based indices of the conv layers followed by a 2x2 max pool.
        fc_hidden: widths of the hidden linear layers (each followed by batch norm + activation).
        dropout: dropout probability before each linear layer.
        batch_norm: use batch norm after convs and hidden linear layers.
        activation: ``"relu"`` or ``"elu"``. global_pool: ``"max"`` or ``"avg"``.
        in_channels, num_classes: input channels and number of logits.
        mean, std: input normalisation applied inside the model (inputs are images in [0, 1]).

    Shape:
        input ``(B, in_channels, H, W)``, float images in [0, 1] (the registered models: ``(B, 1, 28, 28)``);
        output ``(B, num_classes)``. Integer, boolean or complex dtypes raise ``TypeError``, other shapes and
        NaN/inf pixels ``ValueError``; values far outside [0, 1] (e.g. 0..255) warn once
        (:class:`~epdo.models._inputs.InputRangeWarning`).

    >>> PlainCNN(channels=(4, 8), fc_hidden=(), pool_after=(1,))(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        channels: Sequence[int] = (40, 60, 80, 80, 120, 160),
        kernel_size: int = 5,
        pool_after: Sequence[int] = (2, 4),
        fc_hidden: Sequence[int] = (64,),
        dropout: float = 0.5,
        batch_norm: bool = True,
        activation: str = "relu",
        global_pool: str = "max",
        in_channels: int = 1,
        num_classes: int = 10,
        mean: float = MNIST_MEAN,
        std: float = MNIST_STD,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(_ACTIVATIONS)}, got {activation!r}")
        if global_pool not in _GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {tuple(_GLOBAL_POOLS)}, got {global_pool!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
        if not channels:
            raise ValueError("channels must not be empty")
        bad = [p for p in pool_after if not 1 <= p <= len(channels)]
        if bad:
            raise ValueError(f"pool_after must index conv layers 1..{len(channels)}, got {list(pool_after)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.in_channels = in_channels
        act = _ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c in enumerate(channels, start=1):
            layers.append(nn.Conv2d(c_in, c, kernel_size, padding=kernel_size // 2, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(act())
            if i in pool_after:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        layers += [_GLOBAL_POOLS[global_pool](1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = []
        for h in fc_hidden:
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            head.append(nn.Linear(c_in, h, bias=not batch_norm))
            if batch_norm:
                head.append(nn.BatchNorm1d(h))
            head.append(act())
            c_in = h
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(c_in, num_classes))
        self.head = nn.Sequential(*head)
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(self, x, self.in_channels)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.head(self.features(x))


@register_model(
    paper_params=1_100_000,
    paper="He et al. (ICLR 2023, Neural ePDOs), Table 2, 'Vanilla CNN' (from Jenner & Weiler 2021)",
    paper_error="1.96 +- 0.06",
    # Recipe of Jenner & Weiler's vanilla 5x5 CNN (steerable_pdo_experiments, experiment vanilla_5x5):
    # Adam with the SFCNN weight-decay groups, lr 0.05, weight decay 1e-5, 30 epochs, batch 64,
    # lr x 0.7 per epoch after a burn-in of 5 epochs. He et al. defer details to their supplement.
    train=TrainDefaults(
        optimizer="adam", lr=0.05, weight_decay=1e-5, decay_scope="weights",
        schedule="exponential", lr_decay=0.7, burn_in=5, epochs=30, batch_size=64,
    ),
)
def vanilla_cnn(**kwargs) -> PlainCNN:
    """Six 5x5 conv layers (widths 40-160), BN, ReLU, max pool after layers 2 and 4, FC head; 1.07M params."""
    return PlainCNN(**kwargs)


@register_model(
    paper_params=None,
    paper="(none: a small model for tests)",
    train=TrainDefaults(
        optimizer="adam", lr=1e-2, weight_decay=1e-4, decay_scope="weights",
        schedule="exponential", lr_decay=0.5, burn_in=1, epochs=2, batch_size=32,
    ),
)
def tiny_cnn(**kwargs) -> PlainCNN:
    """Three 3x3 conv layers (8, 16, 16), dropout 0.1, linear head; 3.8k params, for fast tests."""
    defaults = dict(channels=(8, 16, 16), kernel_size=3, pool_after=(1, 2), fc_hidden=(), dropout=0.1, global_pool="avg")
    defaults.update(kwargs)
    return PlainCNN(**defaults)
