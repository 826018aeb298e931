r"""ResNet-26 and its C8-equivariant versions with steerable PDOs / Neural ePDOs (paper 000, He et al., ICLR 2023,
Sec. 7.2, Tables 3-4).

The paper names "ResNet-26" without defining it. We take the ResNet-26 of Ramachandran et al. (2019, "Stand-alone
self-attention"), whose 13.7M parameters for 1000 classes match Table 4's baseline: He et al.'s bottleneck ResNet
(torchvision's layout, stride on the 3x3 convolution) with ``blocks = (1, 2, 4, 1)`` bottlenecks of widths
``(64, 128, 256, 512)`` and expansion 4 (1 stem + 8 x 3 + 1 fc = 26 layers), 7x7 stem of stride 2, 3x3 max
pooling of stride 2, global average pooling and a linear classifier.

The equivariant versions (``layer="pdo"`` / ``"neural-epdo"``) follow the paper's description: every field is a
C8 regular field, every 1x1 convolution an equivariant linear map (:class:`~epdo.nn.PointwiseLinear`), every other
convolution (stem, 3x3) a steerable PDO (:class:`~epdo.nn.PDOConv`, order 4, 5x5 stencils) or, in the 3x3 places,
a Neural ePDO (:class:`~epdo.nn.NeuralEPDO`, diag mode, order 4, reduction ``r``, partition ``p``; the stem stays
a PDO since its input fields are trivial, as in Table 2's models). Orientation pooling (max over the 8
orientations of each field, :class:`~epdo.nn.GroupPool`) comes before global average pooling. The number of
fields of each layer is ``round(width_factor * plain_width / 8)`` with one ``width_factor`` for both models,
chosen so that the steerable model has the paper's 14.4M parameters (ImageNet-100; docs/results.md).

Parameter counts (``width_factor = 2.75``; tested against independent formulas in tests/models/test_resnet.py):

============================  ===========  ===========  =====================
model                         100 classes  1000 classes  paper (100 / 1000)
============================  ===========  ===========  =====================
res26                         11,852,452   13,696,552   13.12M / 13.7M
res26-spdo-{fd,gauss}         14,237,862   14,872,362   14.4M / 15.02M
res26-nepdo-{fd,gauss}        7,887,969    8,522,469    8.24M / 8.82M
============================  ===========  ===========  =====================

* res26: 1000 classes within 0.03 %. The paper's 100-class figure cannot come from the same network: its
  2048-wide classifier makes the 1000- and 100-class counts differ by 900 x 2049 = 1.84M, the paper's by 0.58M
  (their difference for the equivariant models, 0.62M / 0.58M, fits a ~650-field pooled output, as ours: 704).
* Steerable PDOs: -1.1 % / -1.0 %. Width factors give ``round``-ed field counts; 2.75 is the closest.
* Neural ePDOs: -4.3 % / -3.4 %. The paper does not give r and p for ImageNet; at this width r = 1, p = 8 is the
  closest admissible choice (p is lowered to a divisor of each layer's field count: 2, 4, 8, 8 per stage);
  r = 1, p = 4 gives 8,818,239 (+7 %), r = 2, p = 8 gives 7,085,178 (-14 %).

FLOPs per 224 x 224 image (``epdo models --flops 'res26*' --size 224``, :mod:`epdo.flops`, 2 per multiply-add):
res26 4.69G; steerable PDOs 58.8G (paper 56.6G, +3.9 %); Neural ePDOs 32.8G (FD) / 33.1G (Gauss) (paper 24.1G):
ratio 0.56 against the paper's 0.43. Part of the difference is ours by construction: the strided Neural ePDOs
are computed at full resolution (see below), and the paper counts the Neural ePDO product with its Table 1
formula (kernels folded per pixel) where :mod:`epdo.flops` counts the separable kernel that runs.

Strides: a strided PDO is ``conv2d`` with stride 2; a strided Neural ePDO (the first block of stages 2-4) is
computed at full resolution and every second pixel kept (the same function as a stride on its output; its FLOPs
are counted as run). The shortcut's 1x1 map subsamples its input the same way.

Exact invariance of the logits to 90-degree rotations (``torch.rot90``): C8 contains them, the stencils are
exactly rotated by them, and every stride-2 layer / pooling window keeps a grid that ``rot90`` maps to itself
when the map it reads has odd size (zero padding k // 2). So the logits are invariant (float round-off) for
inputs of size 2^k + 1 (33, 65, 129, 225 -> 113 -> 57 -> 29 -> 15 -> 8) and not exactly on 224 x 224 inputs,
where every stride-2 step keeps an asymmetric grid (as in any strided CNN). Tested on 33 x 33 in float64.

Inputs are RGB images ``(B, 3, H, W)`` in [0, 1], normalised inside the model with the ImageNet channel
statistics (a per-channel affine map of trivial fields: equivariant).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .. import groups
from .. import nn as enn
from ..fields import FieldType
from ._inputs import check_images
from .registry import TrainDefaults, register_model

__all__ = ["ResNet26", "EquivariantResNet26", "PAPER_PARAMS", "IMAGENET_MEAN", "IMAGENET_STD", "RESNET26_BLOCKS",
           "RESNET26_WIDTHS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET26_BLOCKS = (1, 2, 4, 1)
RESNET26_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4

#: Tables 3-4 of paper 000: (ImageNet-100 params, ImageNet-1k params) per model family
PAPER_PARAMS = {"res26": (13_120_000, 13_700_000), "spdo": (14_400_000, 15_020_000), "nepdo": (8_240_000, 8_820_000)}
#: paper 000, Sec. 7.2: FLOPs per 224 x 224 image
PAPER_FLOPS = {"spdo": 56.6e9, "nepdo": 24.1e9}

_ACTS = ("relu",)


class _Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must be 3 numbers (std > 0), got {list(mean)}, {list(std)}")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


# ----------------------------------------------------------------------------------------------
# the plain ResNet-26


class _Bottleneck(nn.Module):
    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        c_out = width * EXPANSION
        self.conv1, self.bn1 = nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet26(nn.Module):
    """Bottleneck ResNet (He et al. 2016) with ``blocks`` bottlenecks per stage: ResNet-26 by default.

    >>> m = ResNet26(num_classes=10, widths=(8, 8, 8, 8))
    >>> m(torch.rand(2, 3, 33, 33)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 1000, widths: Sequence[int] = RESNET26_WIDTHS,
                 blocks: Sequence[int] = RESNET26_BLOCKS, stem_width: int = 64,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        _check_arch(widths, blocks, num_classes)
        self.config = dict(num_classes=num_classes, widths=tuple(widths), blocks=tuple(blocks), stem_width=stem_width)
        self.normalize = _Normalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, c = [], stem_width
        for stage, (w, n) in enumerate(zip(widths, blocks)):
            for b in range(n):
                layers.append(_Bottleneck(c, w, 2 if b == 0 and stage > 0 else 1))
                c = w * EXPANSION
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check(self, x)
        x = self.layers(self.stem(self.normalize(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _check(model: nn.Module, x) -> None:
    """The image contract (epdo.models._inputs), skipped while torch.fx traces the model (epdo.export)."""
    if not isinstance(x, torch.fx.Proxy):
        check_images(model, x, 3)


def _check_arch(widths: Sequence[Any], blocks: Sequence[Any], num_classes: Any) -> None:
    if len(widths) != len(blocks) or not widths or any(int(w) != w or w < 1 for w in (*widths, *blocks)):
        raise ValueError(f"widths and blocks must be equally long lists of positive integers, got {list(widths)}, "
                         f"{list(blocks)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")


# ----------------------------------------------------------------------------------------------
# the equivariant ResNet-26


class _Subsample(nn.Module):
    """Keep every ``stride``-th pixel (positions 0, s, 2s, ...; a pointwise map of fields: equivariant)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :: self.stride, :: self.stride]


class _EqBottleneck(nn.Module):
    def __init__(self, t_in: FieldType, t_mid: FieldType, t_out: FieldType, stride: int, layer: str,
                 pdo: dict[str, Any], epdo: dict[str, Any]):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = (enn.PointwiseLinear(t_in, t_mid, bias=False), enn.FieldBatchNorm(t_mid),
                                            enn.ReLU(t_mid))
        if layer == "pdo":
            self.conv2 = enn.PDOConv(t_mid, t_mid, stride=stride, bias=False, **pdo)
        else:
            epdo_layer = enn.NeuralEPDO(t_mid, **epdo)
            self.conv2 = epdo_layer if stride == 1 else nn.Sequential(epdo_layer, _Subsample(stride))
        self.bn2, self.relu2 = enn.FieldBatchNorm(t_mid), enn.ReLU(t_mid)
        self.conv3, self.bn3 = enn.PointwiseLinear(t_mid, t_out, bias=False), enn.FieldBatchNorm(t_out)
        self.shortcut = None
        if stride != 1 or t_in != t_out:
            mods = ([_Subsample(stride)] if stride != 1 else []) + [enn.PointwiseLinear(t_in, t_out, bias=False),
                                                                    enn.FieldBatchNorm(t_out)]
            self.shortcut = nn.Sequential(*mods)
        self.relu3 = enn.ReLU(t_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu3(y + (x if self.shortcut is None else self.shortcut(x)))


_LAYERS = ("pdo", "neural-epdo")


class EquivariantResNet26(nn.Module):
    r"""ResNet-26 with C_N regular fields: steerable PDOs (``layer="pdo"``) or Neural ePDOs (``"neural-epdo"``).

    Layer ``i`` of plain width ``w_i`` gets ``max(1, round(width_factor * w_i / N))`` regular fields of C_N
    (``N * fields`` channels). See the module docstring for the architecture and its invariance.

    Args:
        layer: ``"pdo"`` or ``"neural-epdo"``.
        group: ``"C<N>"`` (default ``"C8"``).
        width_factor: channel multiplier relative to ResNet-26 (before rounding to whole fields).
        order, kernel_size, discretization, sigma: of every PDO / Neural ePDO (order 4, 5x5 as in paper 000).
        reduction, partition: the Neural ePDOs' r and p (adjusted down to a divisor of each layer's field
            count if it does not divide it; the values used are in ``self.epdo_rp``).
        backend: the Neural ePDOs' backend.

    >>> m = EquivariantResNet26("pdo", num_classes=5, width_factor=0.25, blocks=(1, 1, 1, 1))
    >>> x = torch.rand(1, 3, 33, 33, dtype=torch.float64)
    >>> m = m.double().eval()
    >>> bool(torch.allclose(m(x), m(torch.rot90(x, 1, (2, 3))), atol=1e-9))
    True
    """

    def __init__(self, layer: str = "pdo", num_classes: int = 1000, group: str = "C8", width_factor: float = 2.75,
                 widths: Sequence[int] = RESNET26_WIDTHS, blocks: Sequence[int] = RESNET26_BLOCKS,
                 stem_width: int = 64, order: int = 4, kernel_size: int = 5, discretization: str = "fd",
                 sigma: float | None = None, reduction: int = 1, partition: int = 8, backend: str = "auto",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if layer not in _LAYERS:
            raise ValueError(f"layer must be one of {_LAYERS}, got {layer!r}")
        _check_arch(widths, blocks, num_classes)
        if not (isinstance(width_factor, (int, float)) and width_factor > 0):
            raise ValueError(f"width_factor must be a positive number, got {width_factor!r}")
        if not (isinstance(group, str) and group.startswith("C") and group[1:].isdigit() and int(group[1:]) >= 1):
            raise ValueError(f"group must be 'C<N>' (a cyclic group), got {group!r}")
        self.config = dict(layer=layer, num_classes=num_classes, group=group, width_factor=width_factor,
                           widths=tuple(widths), blocks=tuple(blocks), stem_width=stem_width, order=order,
                           kernel_size=kernel_size, discretization=discretization, sigma=sigma, reduction=reduction,
                           partition=partition, backend=backend)
        G = groups.cyclic(int(group[1:]))
        n = G.regular.size

        def fields(w: int) -> FieldType:
            return FieldType(G, [G.regular] * max(1, int(round(width_factor * w / n))))

        disc = dict(order=order, kernel_size=kernel_size, discretization=discretization, sigma=sigma)
        self.normalize = _Normalize(mean, std)
        t = fields(stem_width)
        self.stem = enn.Sequential(enn.PDOConv(FieldType(G, [G.trivial] * 3), t, stride=2, bias=False, **disc),
                                   enn.FieldBatchNorm(t), enn.ReLU(t), enn.MaxPool2d(t, 3, 2, 1))
        layers: list[nn.Module] = []
        self.epdo_rp: list[tuple[int, int]] = []
        for stage, (w, nb) in enumerate(zip(widths, blocks)):
            t_mid, t_out = fields(w), fields(w * EXPANSION)
            r, p = _divisor_at_most(len(t_mid), reduction), _divisor_at_most(len(t_mid), partition)
            epdo = dict(disc, reduction=r, partition=p, backend=backend)
            for b in range(nb):
                layers.append(_EqBottleneck(t, t_mid, t_out, 2 if b == 0 and stage > 0 else 1, layer, disc, epdo))
                if layer == "neural-epdo":
                    self.epdo_rp.append((r, p))
                t = t_out
        self.layers = nn.Sequential(*layers)
        self.pool = enn.GroupPool(t, "max")  # orientation pooling (Cohen & Welling 2016)
        self.fc = nn.Linear(len(t), num_classes)
        self.out_fields = len(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check(self, x)
        x = self.pool(self.layers(self.stem(self.normalize(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _divisor_at_most(c: int, v: int) -> int:
    """The largest divisor of ``c`` that is <= ``v``."""
    v = max(1, min(int(v), c))
    while c % v:
        v -= 1
    return v


# ----------------------------------------------------------------------------------------------
# registry

#: The paper gives no recipe in the main text ("supplementary material"); a standard ImageNet ResNet recipe
#: (SGD, Nesterov momentum 0.9, lr 0.1 per 256 images, cosine, weight decay 1e-4 on weights): a guess.
IMAGENET_RECIPE = TrainDefaults(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
                                decay_scope="weights", schedule="cosine", epochs=90, batch_size=256)

#: the width factor of both equivariant models (see the module docstring and docs/results.md)
WIDTH_FACTOR = 2.75
_GAUSS_SIGMA = 1.3  # J&W's value for 5x5 Gaussian derivative stencils; paper 000 gives none
_SPDO = dict(layer="pdo", width_factor=WIDTH_FACTOR)
_NEPDO = dict(layer="neural-epdo", width_factor=WIDTH_FACTOR, reduction=1, partition=8)
_IMAGE = dict(input_shape=(3, 33, 33), num_classes=1000, train=IMAGENET_RECIPE)
#: the reduced build of the generic model tests (one block per stage, a quarter of the fields)
_SMALL = dict(width_factor=0.25, blocks=(1, 1, 1, 1), stem_width=8)


def _paper(family: str, row: str) -> str:
    p100, p1k = PAPER_PARAMS[family]
    return (f"He et al. (ICLR 2023), Tables 3-4, {row}: {p100 / 1e6:.2f}M (ImageNet-100) / {p1k / 1e6:.2f}M "
            "(ImageNet-1k); paper_params is the ImageNet-1k figure")


def _eq(defaults: dict[str, Any], kwargs: dict[str, Any]) -> EquivariantResNet26:
    cfg = dict(defaults)
    cfg.update(kwargs)
    return EquivariantResNet26(**cfg)


@register_model(paper_params=PAPER_PARAMS["res26"][1], paper=_paper("res26", "'ResNet26'"), **_IMAGE,
                test_kwargs=dict(widths=(8, 8, 8, 8), blocks=(1, 1, 1, 1), stem_width=8))
def res26(**kwargs) -> ResNet26:
    """ResNet-26 (bottlenecks 1-2-4-1, widths 64-512), RGB in [0, 1], ImageNet normalisation inside."""
    return ResNet26(**kwargs)


@register_model(name="res26-spdo-fd", paper_params=PAPER_PARAMS["spdo"][1],
                paper=_paper("spdo", "'Res26 Steerable PDOs' FD"), **_IMAGE, test_kwargs=_SMALL)
def res26_spdo_fd(**kwargs) -> EquivariantResNet26:
    """C8 regular fields, steerable PDOs (order 4, 5x5 finite differences), equivariant 1x1 maps."""
    return _eq(dict(_SPDO, discretization="fd"), kwargs)


@register_model(name="res26-spdo-gauss", paper_params=PAPER_PARAMS["spdo"][1],
                paper=_paper("spdo", "'Res26 Steerable PDOs' Gauss") + "; sigma 1.3 (a guess)", **_IMAGE, test_kwargs=_SMALL)
def res26_spdo_gauss(**kwargs) -> EquivariantResNet26:
    """C8 regular fields, steerable PDOs (order 4, 5x5 Gaussian derivatives, sigma 1.3), equivariant 1x1 maps."""
    return _eq(dict(_SPDO, discretization="gauss", sigma=_GAUSS_SIGMA), kwargs)


@register_model(name="res26-nepdo-fd", paper_params=PAPER_PARAMS["nepdo"][1],
                paper=_paper("nepdo", "'Res26 Neural ePDOs' FD") + "; r = 1, p = 8 (a guess)", **_IMAGE, test_kwargs=_SMALL)
def res26_nepdo_fd(**kwargs) -> EquivariantResNet26:
    """C8 regular fields, PDO stem, Neural ePDOs (order 4, diag, r=1, p=8, 5x5 finite differences) for the 3x3s."""
    return _eq(dict(_NEPDO, discretization="fd"), kwargs)


@register_model(name="res26-nepdo-gauss", paper_params=PAPER_PARAMS["nepdo"][1],
                paper=_paper("nepdo", "'Res26 Neural ePDOs' Gauss") + "; r = 1, p = 8, sigma 1.3 (guesses)", **_IMAGE, test_kwargs=_SMALL)
def res26_nepdo_gauss(**kwargs) -> EquivariantResNet26:
    """C8 regular fields, PDO stem, Gaussian Neural ePDOs (order 4, diag, r=1, p=8, sigma 1.3) for the 3x3s."""
    return _eq(dict(_NEPDO, discretization="gauss", sigma=_GAUSS_SIGMA), kwargs)
