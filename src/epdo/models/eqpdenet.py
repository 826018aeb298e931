r"""EqPdeNet (Lagrave & Riou 2021, "Toward Geometrical Robustness with Hybrid Deep Learning and
Differential Invariants Theory") and its FCNN baseline, registered as ``eqpdenet-h{16..256}``
and ``fcnn-h{16..256}``.

* ``FCNN``: ``784 -> h -> h -> 10`` with ReLU, :math:`h^2 + 796h + 10` parameters (13,002 for h = 16, ...,
  269,322 for h = 256, Lagrave & Riou, Table 2).
* ``EqPdeNet``: the PDE layer (two linear PDEs on the SE(2) invariants, two on the scale invariants,
  combined pixelwise by a 4 -> 1 linear map with bias: 31 parameters, :class:`epdo.pde.PDELayer`)
  followed by the same FCNN on the combined 28 x 28 solution: FCNN + 31 parameters (13,033 ... 269,353,
  Table 1). Equation (7): :math:`\tilde y = \mathcal N_\omega(\phi_\delta(u_T^{\theta_1},\dots,u_T^{\theta_4}))`.

Lagrave & Riou give neither T, dt, the boundary handling, the activation nor the optimiser; the choices here
(T = 1, dt = 0.2 i.e. 5 Euler steps, replicate padding, ReLU, Adam) are ours and documented as such in the
registry entries. Inputs are images in [0, 1] of shape ``(B, 1, 28, 28)``, fed to the PDE unnormalised
(the invariants' guard ``eps`` is in those intensity units).

Beyond the paper, ``backbone="pdo"`` (or ``"neural-epdo"``) puts the PDE layer in front of a small
steerable PDO (Neural ePDO) network instead of the FCNN (:func:`_make_backbone`), e.g.
``epdo.models.create("eqpdenet-h16", backbone="pdo")``. With ``invariant_sets=("se2",)`` the whole model
is then invariant to rotations of the input by 90 degrees; the scale PDEs are only invariant to the half turn.

>>> m = EqPdeNet(hidden=16)
>>> sum(p.numel() for p in m.parameters())
13033
>>> m(torch.rand(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from epdo.pde import PDELayer, get_invariant_set, scale_invariants

from ._inputs import check_images
from .registry import TrainDefaults, register_model

__all__ = ["EqPdeNet", "FCNN", "HIDDEN_SIZES", "PAPER_TABLES", "PDO_BACKBONE_DEFAULTS"]

HIDDEN_SIZES = (16, 32, 64, 128, 256)

#: Lagrave & Riou (2021), Tables 1 (EqPdeNet) and 2 (FCNN): #params -> mean (std) accuracy in % over 10 draws.
PAPER_TABLES: dict[str, dict[int, dict[str, Any]]] = {
    "eqpdenet": {
        16: {"params": 13033, "test": (70.7, 2.7), "iso": (37.3, 1.6), "sca": (23.1, 1.3)},
        32: {"params": 26537, "test": (77.9, 0.6), "iso": (39.6, 1.3), "sca": (24.2, 1.1)},
        64: {"params": 55081, "test": (82.7, 0.7), "iso": (43.8, 0.9), "sca": (25.8, 1.4)},
        128: {"params": 118313, "test": (86.8, 0.6), "iso": (48.8, 1.1), "sca": (28.2, 1.0)},
        256: {"params": 269353, "test": (89.9, 0.8), "iso": (53.0, 0.9), "sca": (30.2, 1.1)},
    },
    "fcnn": {
        16: {"params": 13002, "test": (65.5, 1.5), "iso": (36.7, 1.4), "sca": (23.5, 0.6)},
        32: {"params": 26506, "test": (73.4, 0.9), "iso": (37.9, 1.2), "sca": (23.4, 0.7)},
        64: {"params": 55050, "test": (80.8, 0.5), "iso": (42.4, 1.0), "sca": (25.0, 1.2)},
        128: {"params": 118282, "test": (85.7, 0.4), "iso": (47.0, 0.8), "sca": (26.9, 0.9)},
        256: {"params": 269322, "test": (87.7, 0.5), "iso": (49.5, 0.6), "sca": (28.3, 0.8)},
    },
}

BACKBONES = ("fcnn", "pdo", "neural-epdo")


def _check_images(module: nn.Module, x: torch.Tensor, shape: tuple[int, int, int]) -> None:
    check_images(module, x, shape[0], shape[1:])


class FCNN(nn.Module):
    """Fully connected baseline ``in_features -> h -> ... -> h -> num_classes`` with ReLU.

    Args:
        hidden: width h of the hidden layers.
        depth: number of hidden layers (paper: 2).
        image_size, in_channels: input images ``(B, in_channels, image_size, image_size)``.
        num_classes: logits.

    Shape:
        ``(B, in_channels, image_size, image_size) -> (B, num_classes)``: float images in [0, 1]; other dtypes
        raise ``TypeError``, other shapes and NaN/inf ``ValueError``, values far outside [0, 1] warn once.

    >>> sum(p.numel() for p in FCNN(hidden=16).parameters())
    13002
    """

    def __init__(self, hidden: int = 64, depth: int = 2, image_size: int = 28, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        for name, v in (("hidden", hidden), ("depth", depth), ("image_size", image_size), ("in_channels", in_channels), ("num_classes", num_classes)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"FCNN: {name} must be a positive integer, got {v!r}")
        self.input_shape = (in_channels, image_size, image_size)
        widths = [in_channels * image_size * image_size] + [hidden] * depth
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)
        self.hidden, self.depth = hidden, depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(self, x, self.input_shape)
        return self.net(x)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, depth={self.depth}, input_shape={self.input_shape}"


#: Defaults of the (beyond-the-paper) equivariant backbones: a small steerable PDO network of the MNIST-rot
#: architecture (:class:`epdo.models.mnist_rot.MnistRotNet`): C8 regular fields, widths 4-16, order 2, 3x3 stencils
#: ("same" first layer: padding 1, so that every pooled size is even and 90-degree invariance is exact).
PDO_BACKBONE_DEFAULTS: dict[str, Any] = dict(group="C8", width=0.25, order=2, kernel_size=3, first_padding=1, fc_hidden=32)

#: Extra defaults of the Neural ePDO backbone: reduction and partition must divide every width (4, 6, 8, 8, 12).
NEURAL_EPDO_BACKBONE_DEFAULTS: dict[str, Any] = dict(reduction=2, partition=2)


def _make_backbone(kind: str, hidden: int, image_size: int, num_classes: int, kwargs: dict | None) -> nn.Module:
    """The network after the PDE layer: the paper's FCNN, or (beyond the paper) an equivariant PDO network.

    ``"pdo"`` / ``"neural-epdo"``: :class:`~epdo.models.mnist_rot.MnistRotNet` with ``layer="pdo"`` /
    ``"neural-epdo"`` and :data:`PDO_BACKBONE_DEFAULTS` (and :data:`NEURAL_EPDO_BACKBONE_DEFAULTS`) updated by
    ``kwargs`` (``hidden`` is then unused).
    """
    if kind == "fcnn":
        if kwargs:
            raise ValueError(f"backbone 'fcnn' takes no backbone_kwargs (its width is hidden), got {kwargs}")
        return FCNN(hidden=hidden, image_size=image_size, num_classes=num_classes)
    from .mnist_rot import MnistRotNet

    defaults = dict(PDO_BACKBONE_DEFAULTS)
    if kind == "neural-epdo":
        defaults.update(NEURAL_EPDO_BACKBONE_DEFAULTS)
    return MnistRotNet(layer=kind, num_classes=num_classes, **{**defaults, **(kwargs or {})})


class EqPdeNet(nn.Module):
    r"""PDE layer, linear reduction to one channel, then a fully connected network (Lagrave & Riou 2021, Fig. 3).

    Args:
        hidden: width h of the FCNN.
        n_pdes: PDEs per invariant set (paper: 2).
        invariant_sets: names of the invariant sets (paper: ``("se2", "scale")``).
        T, dt: final time and Euler step of every PDE (paper: not given; default 1.0 and 0.2, 5 steps).
        function: ``F_theta`` kind, ``"linear"`` (paper), ``"poly"`` or ``"mlp"``; ``function_kwargs``
            its options (``degree``, ``hidden``, ``init_std``).
        eps: guard of the scale invariants' quotients (:func:`epdo.pde.safe_div`); default ``1e-2``.
        padding: boundary handling of the stencils (default replicate).
        backbone: ``"fcnn"`` (paper) or, beyond the paper, an equivariant PDO network (``"pdo"``: steerable
            PDOs, ``"neural-epdo"``: Neural ePDOs; a small :class:`~epdo.models.mnist_rot.MnistRotNet`).
        backbone_kwargs: options of the PDO backbone (see :data:`PDO_BACKBONE_DEFAULTS`).
        image_size, num_classes: 28 and 10 for MNIST-rot.

    Shape:
        ``(B, 1, image_size, image_size) -> (B, num_classes)``: float images in [0, 1] (the PDE's ``eps`` is in
        those units); other dtypes raise ``TypeError``, other shapes and NaN/inf ``ValueError``, values far
        outside [0, 1] warn once.
    """

    def __init__(
        self,
        hidden: int = 64,
        n_pdes: int | Sequence[int] = 2,
        invariant_sets: Sequence[str] = ("se2", "scale"),
        T: float = 1.0,
        dt: float = 0.2,
        function: str = "linear",
        function_kwargs: dict | None = None,
        eps: float | None = None,
        padding: str = "replicate",
        backbone: str = "fcnn",
        backbone_kwargs: dict | None = None,
        image_size: int = 28,
        num_classes: int = 10,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        if isinstance(invariant_sets, str):
            invariant_sets = (invariant_sets,)
        sets = [scale_invariants(eps) if (s == "scale" and eps is not None) else get_invariant_set(s) for s in invariant_sets]
        self.input_shape = (1, image_size, image_size)
        self.pde = PDELayer(
            n_pdes, sets, T=T, dt=dt, out_channels=1, function=function, function_kwargs=function_kwargs,
            padding=padding, check_finite=check_finite,
        )
        self.backbone_kind = backbone
        self.head = _make_backbone(backbone, hidden, image_size, num_classes, backbone_kwargs)
        self.head.check_values = False  # its input is the PDE solution, not an image: dtype and shape checks only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(self, x, self.input_shape)
        return self.head(self.pde(x))


# ----------------------------------------------------------------------------------------------
# registry entries

_PAPER = "Lagrave & Riou (2021, EqPdeNet)"
#: Lagrave & Riou state no optimiser, learning rate, schedule, batch size or number of epochs; these defaults
#: are ours (Adam, constant lr 1e-3, batch 64, 20 epochs) and train on the 12k MNIST-rot images.
EQPDENET_TRAIN = TrainDefaults(optimizer="adam", lr=1e-3, schedule="constant", epochs=20, batch_size=64)


def _fmt(table: dict[str, Any]) -> str:
    return "; ".join(f"{k} {100 - m:.1f} +- {s:.1f}" for k, (m, s) in ((k, table[k]) for k in ("test", "iso", "sca")))


def _register(h: int) -> None:
    eq, fc = PAPER_TABLES["eqpdenet"][h], PAPER_TABLES["fcnn"][h]

    def build_eq(**kwargs: Any) -> EqPdeNet:
        kwargs.setdefault("hidden", h)
        return EqPdeNet(**kwargs)

    def build_fc(**kwargs: Any) -> FCNN:
        kwargs.setdefault("hidden", h)
        return FCNN(**kwargs)

    build_eq.__doc__ = f"EqPdeNet: PDE layer (2 SE(2) + 2 scale linear PDEs, 31 params) then FCNN 784-{h}-{h}-10."
    build_fc.__doc__ = f"FCNN baseline 784-{h}-{h}-10 with ReLU (Lagrave & Riou 2021, Table 2)."
    build_eq.__qualname__ = build_eq.__name__ = f"eqpdenet_h{h}"
    build_fc.__qualname__ = build_fc.__name__ = f"fcnn_h{h}"
    register_model(
        build_eq, name=f"eqpdenet-h{h}", paper_params=eq["params"], paper=f"{_PAPER}, Table 1, #param {eq['params']}",
        paper_error=_fmt(eq), train=EQPDENET_TRAIN,
    )
    register_model(
        build_fc, name=f"fcnn-h{h}", paper_params=fc["params"], paper=f"{_PAPER}, Table 2, #param {fc['params']}",
        paper_error=_fmt(fc), train=EQPDENET_TRAIN,
    )


for _h in HIDDEN_SIZES:
    _register(_h)
del _h
