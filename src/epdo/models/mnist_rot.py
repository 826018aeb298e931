r"""The MNIST-rot models of He et al. (ICLR 2023), "Neural ePDOs: Spatially Adaptive Equivariant Partial
Differential Operator Based Networks", Table 2.

One configurable network, :class:`MnistRotNet`, the six-layer architecture of Jenner & Weiler (2021,
steerable PDOs; code ``ejnnr/steerable_pdo_experiments``, experiment ``diffop_5x5``) that He et al. say they
follows ("6 steerable PDO layers followed by two fully connected layers ... replacing the last 5 steerable
PDO layers with our Neural ePDO layers"):

* input images in [0, 1], ``(B, 1, 28, 28)``, normalised inside the model with the MNIST-rot training-set
  statistics (mean 0.1299588, std 0.29697534, the numbers of J&W's ``mnist_rot.py``);
* six equivariant layers of ``widths = (16, 24, 32, 32, 48, 64)`` C16 regular fields, kernel 5, each followed
  by :class:`~epdo.nn.FieldBatchNorm` and ELU; 2x2 max pooling after layers 2 and 3 (J&W's
  ``pool_positions: [1, 2]``, 0-based); the last layer has no padding (7x7 -> 3x3);
* group pooling (max over each field), global spatial max pooling, then the head
  ``Dropout(0.5) - Linear(64, 64) - BatchNorm1d - ELU - Dropout(0.5) - Linear(64, 10) - BatchNorm1d``.

``layer="pdo"`` uses :class:`~epdo.nn.PDOConv` (order 3, J&W's ``maximum_order: 3``) in every layer: the
"Steerable PDOs" rows. ``layer="neural-epdo"`` keeps a linear PDO (order 4) as first layer and replaces
layers 2-6 by :class:`~epdo.nn.NeuralEPDO` (order 4, diagonal coefficients, reduction r = 2, partition
p = 8, generator biases) on the input fields, each followed by a 1x1 :class:`~epdo.nn.PointwiseLinear` to the
next width (the projection of He et al., Sec. 4.3, also in layer 4 where the width stays 32: with it the count
is 233,983, without it 217,567): the "Neural ePDOs" rows.

**One deliberate change**: J&W pad the first layer by 1 (28 -> 26 -> pool 13 -> pool 6), which makes the
second pooling asymmetric, so their networks are not exactly invariant to 90-degree rotations of the input.
Here the first layer is padded by 2 (28 -> 28 -> 14 -> 7 -> 3): every pooling window is placed symmetrically
and the logits are invariant to ``torch.rot90`` up to float round-off (tested). Parameter counts do not change.
No input padding (J&W: ``pad: false``).

Variants (Table 2):

* ``fields="quotient"``: J&W's mix per unit ``5 regular + 2 C16/C2 + 2 C16/C4 + 4 trivial`` fields (108
  channels); ``round(width / 6.75)`` units per layer (J&W's rule), i.e. 2, 4, 5, 5, 7, 9 units. Neural ePDO:
  :class:`~epdo.nn.NeuralEPDO` needs r and p to divide the number of input fields (13 per unit) and p to
  respect the unit period, so r = 2, p = 8 are impossible (units 5, 7); we take r = p = units per layer: the
  generator's hidden layer is 13 regular fields (208 channels, about half the input's 216-756) and one unit's
  coefficients are shared by all units. The closest admissible alternative, 13 hidden fields replaced by one per
  unit (r = 13), gives 182,546 (0.80 x 229K).
* ``group="D16", restrict_after=5``: D16 regular fields in layers 1-5, then each D16 regular field is
  restricted to C16 and split into its two C16 regular fields (:class:`RestrictToRotations`), and layer 6
  works with C16 fields. Steerable PDO: J&W's widths ``round(w / sqrt 2)`` = 11, 17, 23, 23, 34 D16 fields and
  45 C16 fields in layer 6 (this reproduces the paper's 947K with e2cnn; see below). Neural ePDO: He et al.
  "enlarges the model": the full widths 16, 24, 32, 32, 48 as D16 fields and, as in the steerable model, 45 C16
  fields in layer 6 (64 would give 567K).

**Parameter counts** (``epdo models 'steerable-*'``; :data:`PAPER_TABLE2`; :func:`count_table`):

==============================  =========  =====  =====  ===============================================
model                           ours       paper  ratio  note
==============================  =========  =====  =====  ===============================================
steerable-pdo-fd / -gauss       1,091,206  941K   1.160  e2cnn basis: 941,958 (1.001)
steerable-pdo-gauss-quotient    1,099,354  951K   1.156  e2cnn basis: 951,072 (1.000)
steerable-pdo-gauss-d16c16      1,098,391  947K   1.160  e2cnn basis: 947,955 (1.001)
neural-epdo-fd / -gauss           233,983  234K   1.000  Table 1 + biases + projections
neural-epdo-gauss-quotient        270,068  229K   1.179  r = p = units (see above)
neural-epdo-gauss-d16c16          537,400  525K   1.024  16-48 D16 fields, 45 C16 fields in layer 6
neural-epdo-small                  41,869  --     --     C8, widths 8-32, r = 2, p = 4 (CPU preset)
==============================  =========  =====  =====  ===============================================

The steerable PDO rows of Table 2 are J&W's numbers. Building J&W's networks with e2cnn's ``R2Diffop``
(``maximum_order=3, maximum_offset=0``) gives exactly 941,958, 951,072 and 947,955 parameters (the last with
45 C16 fields in layer 6; with 64 it would be 1,127,524). e2cnn's PDO basis with ``maximum_offset=0`` leaves
out the *aliased* frequencies (a polynomial of angular frequency j may connect C16 irreps of frequencies m and
n only if n = m +- j exactly, not modulo 16): 138 instead of 160 parameters per pair of C16 regular fields,
276 instead of 320 per pair of D16 regular fields, and fewer for quotient fields
(:data:`E2CNN_PAIR_DIMS`). :class:`~epdo.nn.PDOConv` solves the full equivariance constraint, which includes
them, so the same architecture has about 16 % more parameters. :func:`e2cnn_equivalent_count` recomputes
J&W's count from the same architecture with e2cnn's per-pair dimensions (the tests check both).

Training recipe (``TrainDefaults`` of every paper entry): J&W ``diffop_5x5`` (``config/experiment/diffop_5x5.yaml``,
``config/data/mnist_rot.yaml``, ``diffop_experiments/utils.py``): Adam, the SFCNN weight-decay groups
(``decay_scope="weights"``), lr 0.05, weight decay 1e-5, learning rate x 0.7 per epoch after a burn-in of 5
epochs, 30 epochs, batch 64, random rotation augmentation, fc dropout 0.5. He et al. defer their recipe to a
supplement that is not in our copy, so the Neural ePDO entries reuse J&W's recipe (a guess). Gaussian
discretisation: sigma = 1.3 pixels (J&W's ``smoothing=1.3`` for 5x5 stencils; He et al. give no value),
a model kwarg.

>>> m = MnistRotNet(widths=(2, 2, 2, 2, 2, 2), group="C4", fc_hidden=8)
>>> x = torch.rand(3, 1, 28, 28)
>>> m.eval()(x).shape
torch.Size([3, 10])
>>> bool(torch.allclose(m(torch.rot90(x, 1, (2, 3))), m(x), atol=1e-4))
True
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .. import nn as enn
from ..fields import FieldType
from ..groups import Group, Representation, cyclic, dihedral
from ..nn.restriction import CenterCrop as _CenterCrop, RestrictToRotations  # moved to epdo.nn; re-exported
from ._inputs import check_images
from .registry import TrainDefaults, register_model

__all__ = [
    "MnistRotNet",
    "RestrictToRotations",
    "MNIST_ROT_MEAN",
    "MNIST_ROT_STD",
    "JW_WIDTHS",
    "PAPER_TABLE2",
    "E2CNN_PAIR_DIMS",
    "e2cnn_equivalent_count",
    "count_table",
]

#: Mean and std of the MNIST-rot training images (J&W ``diffop_experiments/mnist_rot.py``, no augmentation).
MNIST_ROT_MEAN = 0.1299588
MNIST_ROT_STD = 0.29697534

#: Field widths of the six layers (J&W ``channels``; e2cnn's C16 MNIST model).
JW_WIDTHS = (16, 24, 32, 32, 48, 64)

#: He et al. (ICLR 2023), Table 2 (MNIST-rot): model -> (parameters, test error in % as printed).
PAPER_TABLE2: dict[str, tuple[int, str]] = {
    "steerable-pdo-fd": (941_000, "1.54 +- 0.32"),
    "steerable-pdo-gauss": (941_000, "0.75 +- 0.02"),
    "steerable-pdo-gauss-quotient": (951_000, "0.74 +- 0.04"),
    "steerable-pdo-gauss-d16c16": (947_000, "0.78 +- 0.05"),
    "neural-epdo-fd": (234_000, "0.77 +- 0.05"),
    "neural-epdo-gauss": (234_000, "0.65 +- 0.04"),
    "neural-epdo-gauss-quotient": (229_000, "0.70 +- 0.06"),
    "neural-epdo-gauss-d16c16": (525_000, "0.59 +- 0.03"),
}

#: Dimension of e2cnn's ``R2Diffop`` basis (``maximum_order=3, maximum_offset=0``) for one input and one output
#: field, measured with e2cnn 0.2; keys (group, input field, output field). ``q2``/``q4``: C16/C2, C16/C4.
E2CNN_PAIR_DIMS: dict[tuple[str, str, str], int] = {
    ("C16", "regular", "regular"): 138, ("C16", "regular", "q2"): 68, ("C16", "regular", "q4"): 32,
    ("C16", "regular", "trivial"): 10, ("C16", "q2", "regular"): 68, ("C16", "q2", "q2"): 28,
    ("C16", "q2", "q4"): 14, ("C16", "q2", "trivial"): 4, ("C16", "q4", "regular"): 32, ("C16", "q4", "q2"): 14,
    ("C16", "q4", "q4"): 8, ("C16", "q4", "trivial"): 2, ("C16", "trivial", "regular"): 10,
    ("C16", "trivial", "q2"): 4, ("C16", "trivial", "q4"): 2, ("C16", "trivial", "trivial"): 2,
    ("D16", "regular", "regular"): 276, ("D16", "trivial", "regular"): 10,
}

_FIELDS = ("regular", "quotient")
_LAYERS = ("pdo", "neural-epdo")
_ACTIVATIONS = ("elu", "relu")


def _tuple(v):
    return v if isinstance(v, (int, np.integer)) else tuple(v)


def _group(name: str) -> Group:
    """``"C16"`` -> cyclic(16), ``"D16"`` -> dihedral(16)."""
    if isinstance(name, str) and len(name) > 1 and name[0] in "CD" and name[1:].isdigit() and int(name[1:]) >= 1:
        return (cyclic if name[0] == "C" else dihedral)(int(name[1:]))
    raise ValueError(f"group must be 'C<N>' or 'D<N>' (e.g. 'C16', 'D16'), got {name!r}")


def quotient_unit(G: Group) -> list[Representation]:
    """J&W's quotient mix: 5 regular, 2 G/C2, 2 G/C4 and 4 trivial fields (for C_N with 4 | N)."""
    if G.reflections or G.N % 4:
        raise ValueError(f"quotient fields need a cyclic group C_N with N divisible by 4, got {G.name}")
    return [G.regular] * 5 + [G.quotient(G.subgroup(2))] * 2 + [G.quotient(G.subgroup(4))] * 2 + [G.trivial] * 4


def hidden_type(G: Group, width: int, fields: str = "regular") -> FieldType:
    """``width`` regular fields, or (``fields="quotient"``) ``round(width * |G| / 108)`` quotient units.

    Quotient units are repeated whole (``unit, unit, ...``), so the type is ``p`` copies of one representation
    for every p dividing the number of units.
    """
    if fields == "regular":
        return FieldType(G, [G.regular] * width)
    unit = quotient_unit(G)
    units = max(1, int(round(width / (sum(r.size for r in unit) / G.order))))
    return FieldType(G, unit * units)


def _neural_epdo_block(in_type: FieldType, out_type: FieldType, last_valid: bool, **kw: Any) -> list[enn.EquivariantModule]:
    """NeuralEPDO on ``in_type`` (diag: same type out), then a 1x1 projection to ``out_type`` (in every layer:
    without it where the width does not change, layer 4, the regular model has 217,567 parameters instead of
    233,983 ~ the paper's 234K)."""
    from ..nn.neural_epdo import NeuralEPDO  # imported lazily: written in parallel with this module

    layer = NeuralEPDO(in_type, **kw)
    mods: list[enn.EquivariantModule] = [layer]
    if last_valid:
        mods.append(_CenterCrop(layer.out_type, kw["kernel_size"] // 2))
    mods.append(enn.PointwiseLinear(layer.out_type, out_type))  # also when out_type == in_type (paper's counts)
    return mods


class MnistRotNet(nn.Module):
    r"""Six equivariant layers, group pooling, global max pooling and a two-layer head (see the module doc).

    Args:
        layer: ``"pdo"`` (steerable PDOs in every layer) or ``"neural-epdo"`` (a PDO first layer, Neural ePDOs after).
        group: ``"C16"``, ``"D16"``, ... (``C<N>``/``D<N>``).
        fields: ``"regular"`` or ``"quotient"`` (J&W's mix; C_N with 4 | N).
        widths: fields per layer (for ``"quotient"``: regular-field equivalents); after ``restrict_after`` the
            widths count C_N fields.
        width: multiplier of ``widths`` (``max(1, round(w * width))``), for small variants.
        restrict_after: 1-based layer after which D_N fields are restricted to C_N (None: never).
        order: PDO order of layers 2-6 (steerable PDO) or of the Neural ePDOs.
        first_order: PDO order of the first layer (default ``order``).
        kernel_size, discretization, sigma: stencils (``"fd"`` or ``"gauss"`` with sigma in pixels).
        reduction, partition, mode: Neural ePDO generator (He et al. Sec. 5.1: r, p, ``"diag"``/``"full"``);
            ``reduction`` and ``partition`` are one int or one per Neural ePDO layer (layers 2, 3, ...).
        backend: NeuralEPDO product, ``"auto"`` (the fused CPU kernel when ``epdo build-ext`` has built it),
            ``"torch"`` or ``"cpp"``.
        pool_after: 1-based layers followed by 2x2 max pooling.
        first_padding: zero padding of the first layer (2: 'same'; J&W use 1, see the module doc).
        last_valid: no padding in the last layer (J&W).
        activation: ``"elu"`` (J&W) or ``"relu"``.
        fc_hidden: width of the hidden linear layer (0: none). dropout: before each linear layer.
        fc_batch_norm: batch norm after each linear layer, the last included (J&W).
        num_classes: logits. mean, std: input normalisation.

    Shape: ``(B, 1, H, W) -> (B, num_classes)``, float images in [0, 1] (the registered models: ``(B, 1, 28, 28)``;
    integer, boolean or complex dtypes raise ``TypeError``, other shapes and NaN/inf pixels ``ValueError``, values
    far outside [0, 1], e.g. 0..255, warn once); invariant to rotations by 90 degrees (C_N, D_N with 4 | N) when
    every pooled size is even (28x28 input).
    """

    def __init__(
        self,
        layer: str = "pdo",
        group: str = "C16",
        fields: str = "regular",
        widths: Sequence[int] = JW_WIDTHS,
        width: float = 1.0,
        restrict_after: int | None = None,
        order: int = 3,
        first_order: int | None = None,
        kernel_size: int = 5,
        discretization: str = "fd",
        sigma: float | None = None,
        reduction: int | Sequence[int] = 2,
        partition: int | Sequence[int] = 8,
        mode: str = "diag",
        backend: str = "auto",
        pool_after: Sequence[int] = (2, 3),
        first_padding: int = 2,
        last_valid: bool = True,
        activation: str = "elu",
        fc_hidden: int = 64,
        dropout: float = 0.5,
        fc_batch_norm: bool = True,
        num_classes: int = 10,
        mean: float = MNIST_ROT_MEAN,
        std: float = MNIST_ROT_STD,
    ) -> None:
        super().__init__()
        #: the constructor's arguments (``widths`` before the ``width`` multiplier)
        self.config = dict(layer=layer, group=group, fields=fields, widths=tuple(widths), width=width,
                           restrict_after=restrict_after, order=order, first_order=first_order, kernel_size=kernel_size,
                           discretization=discretization, sigma=sigma, reduction=_tuple(reduction), partition=_tuple(partition),
                           mode=mode, backend=backend, pool_after=tuple(pool_after), first_padding=first_padding, last_valid=last_valid,
                           activation=activation, fc_hidden=fc_hidden, dropout=dropout, fc_batch_norm=fc_batch_norm,
                           num_classes=num_classes, mean=mean, std=std)
        if layer not in _LAYERS:
            raise ValueError(f"layer must be one of {_LAYERS}, got {layer!r}")
        if fields not in _FIELDS:
            raise ValueError(f"fields must be one of {_FIELDS}, got {fields!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if not widths or any(int(w) != w or w < 1 for w in widths):
            raise ValueError(f"widths must be positive integers, got {list(widths)}")
        if not (isinstance(width, (int, float)) and width > 0):
            raise ValueError(f"width must be a positive number, got {width!r}")
        n_layers = len(widths)
        bad = [p for p in pool_after if not 1 <= p <= n_layers]
        if bad:
            raise ValueError(f"pool_after must index layers 1..{n_layers}, got {list(pool_after)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        G = _group(group)
        if restrict_after is not None:
            if not G.reflections:
                raise ValueError(f"restrict_after restricts D_N to C_N; group {group!r} has no reflections")
            if not 1 <= restrict_after < n_layers:
                raise ValueError(f"restrict_after must be a layer in 1..{n_layers - 1}, got {restrict_after}")
        if first_order is None:
            first_order = order
        per_layer = {}
        for key, v in (("reduction", reduction), ("partition", partition)):
            v = [v] * (n_layers - 1) if isinstance(v, (int, np.integer)) else list(v)
            if len(v) != n_layers - 1:
                raise ValueError(f"{key} must be an int or one int per layer 2..{n_layers}, got {v}")
            per_layer[key] = v
        widths = [max(1, int(round(w * width))) for w in widths]
        disc = dict(kernel_size=kernel_size, discretization=discretization, sigma=sigma)
        act = enn.ELU if activation == "elu" else enn.ReLU

        mods: list[enn.EquivariantModule] = []
        in_type = FieldType(G, [G.trivial])
        for i, w in enumerate(widths, start=1):
            out_type = hidden_type(in_type.group, w, fields)
            last = i == n_layers
            if i == 1:
                mods.append(enn.PDOConv(in_type, out_type, order=first_order, padding=first_padding, **disc))
            elif layer == "pdo":
                pad = 0 if last and last_valid else kernel_size // 2
                mods.append(enn.PDOConv(in_type, out_type, order=order, padding=pad, **disc))
            else:
                mods += _neural_epdo_block(in_type, out_type, last and last_valid, order=order, mode=mode, backend=backend,
                                           reduction=per_layer["reduction"][i - 2],
                                           partition=per_layer["partition"][i - 2], **disc)
            mods += [enn.FieldBatchNorm(out_type), act(out_type)]
            if i == restrict_after:
                mods.append(RestrictToRotations(out_type))
                out_type = mods[-1].out_type
            if i in pool_after:
                mods.append(enn.MaxPool2d(out_type, 2))
            in_type = out_type
        mods.append(enn.GroupPool(in_type, "max"))
        self.features = enn.Sequential(*mods)

        dims = [len(in_type)] + ([fc_hidden] if fc_hidden else []) + [num_classes]
        head: list[nn.Module] = []
        for k in range(len(dims) - 1):
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            head.append(nn.Linear(dims[k], dims[k + 1]))
            if fc_batch_norm:
                head.append(nn.BatchNorm1d(dims[k + 1]))
            if k < len(dims) - 2:
                head.append(nn.ELU() if activation == "elu" else nn.ReLU())
        self.head = nn.Sequential(*head)
        self.widths = tuple(widths)
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(self, x, 1)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        x = self.features(x)
        return self.head(x.amax(dim=(2, 3)))


# ----------------------------------------------------------------------------------------------
# parameter counts vs the paper


def _field_kind(rep: Representation) -> str:
    """'regular', 'trivial', 'q2', 'q4' (quotient by C2, C4) for the keys of :data:`E2CNN_PAIR_DIMS`."""
    if rep.name == "regular" or rep.name == "trivial":
        return rep.name
    if rep.name.startswith("quotient(") and rep.name.endswith("/C2)"):
        return "q2"
    if rep.name.startswith("quotient(") and rep.name.endswith("/C4)"):
        return "q4"
    raise ValueError(f"no e2cnn basis dimension recorded for field {rep}")


def e2cnn_equivalent_count(model: MnistRotNet) -> int:
    """The parameter count of ``model`` with e2cnn's PDO basis (``maximum_offset=0``) in its PDO layers.

    Every :class:`~epdo.nn.PDOConv` is counted with :data:`E2CNN_PAIR_DIMS` per pair of fields (+ its bias);
    all other parameters as they are. For J&W's steerable PDO networks this is the count they report.
    """
    total = 0
    for m in model.modules():
        if isinstance(m, enn.PDOConv):
            if m.order != 3:
                raise ValueError(f"E2CNN_PAIR_DIMS are for order 3, got a PDOConv of order {m.order}")
            g = m.in_type.group.name
            total += sum(E2CNN_PAIR_DIMS[(g, _field_kind(a), _field_kind(b))] for a in m.in_type for b in m.out_type)
            total += 0 if m.bias_term is None else m.bias_term.num_params
    pdo_params = {id(p) for m in model.modules() if isinstance(m, enn.PDOConv) for p in m.parameters()}
    return total + sum(p.numel() for p in model.parameters() if id(p) not in pdo_params)


def count_table(built: dict[str, nn.Module] | Sequence[str] | None = None) -> str:
    """A text table: model, parameters, paper's figure, ratio, and for steerable PDO models the count with
    e2cnn's basis (J&W's count) and its ratio. ``built``: names (built here) or ``{name: model}``."""
    from . import create_model, get_model_info

    if built is None:
        built = list(PAPER_TABLE2)
    if not isinstance(built, dict):
        built = {name: create_model(name) for name in built}
    rows = [("model", "params", "paper", "ratio", "e2cnn basis", "ratio")]
    for name, model in built.items():
        n = sum(p.numel() for p in model.parameters())
        paper = get_model_info(name).paper_params
        e2 = e2cnn_equivalent_count(model) if getattr(model, "config", {}).get("layer") == "pdo" else None
        rows.append((name, f"{n:,}", f"{paper:,}" if paper else "-", f"{n / paper:.3f}" if paper else "-",
                     f"{e2:,}" if e2 else "-", f"{e2 / paper:.3f}" if e2 and paper else "-"))
    w = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w[k]) if k == 0 else c.rjust(w[k]) for k, c in enumerate(r)).rstrip() for r in rows)


# ----------------------------------------------------------------------------------------------
# registry

#: J&W's recipe (``diffop_5x5.yaml`` + ``mnist_rot.yaml``): Adam with SFCNN weight-decay groups, lr 0.05, wd 1e-5,
#: lr x 0.7 per epoch after 5 epochs, 30 epochs, batch 64, random rotations of the training images.
JW_RECIPE = TrainDefaults(
    optimizer="adam", lr=0.05, weight_decay=1e-5, decay_scope="weights", schedule="exponential",
    lr_decay=0.7, burn_in=5, epochs=30, batch_size=64, augment_rotation=True,
)

_GAUSS_SIGMA = 1.3  # J&W's smoothing for 5x5 Gaussian-derivative stencils; He et al. give none
_STEERABLE = dict(layer="pdo", order=3)
_NEURAL = dict(layer="neural-epdo", order=4, first_order=4, reduction=2, partition=8, mode="diag")
_D16_STEERABLE = dict(group="D16", widths=(11, 17, 23, 23, 34, 45), restrict_after=5)
_D16_NEURAL = dict(group="D16", widths=(16, 24, 32, 32, 48, 45), restrict_after=5)


def _build(defaults: dict[str, Any], kwargs: dict[str, Any]) -> MnistRotNet:
    cfg = dict(defaults)
    cfg.update(kwargs)
    return MnistRotNet(**cfg)


def _entry(name: str, row: str, note: str = "", train: TrainDefaults = JW_RECIPE):
    params, error = PAPER_TABLE2[name]
    return register_model(name=name, paper_params=params, paper_error=error, train=train,
                          paper=f"He et al. (ICLR 2023), Table 2, {row}" + (f"; {note}" if note else ""))


_E2 = "J&W diffop_5x5 order 3{}; J&W's e2cnn basis gives {} (ours: full PDO space, see mnist_rot)"


@_entry("steerable-pdo-fd", "'Steerable PDOs' FD", _E2.format("", "941,958"))
def steerable_pdo_fd(**kwargs) -> MnistRotNet:
    """C16 regular fields (16-64), order-3 steerable PDOs with 5x5 finite differences in all six layers."""
    return _build(dict(_STEERABLE, discretization="fd"), kwargs)


@_entry("steerable-pdo-gauss", "'Steerable PDOs' Gauss", _E2.format(", sigma 1.3", "941,958"))
def steerable_pdo_gauss(**kwargs) -> MnistRotNet:
    """C16 regular fields (16-64), order-3 steerable PDOs, Gaussian derivatives (sigma 1.3) in all six layers."""
    return _build(dict(_STEERABLE, discretization="gauss", sigma=_GAUSS_SIGMA), kwargs)


@_entry("steerable-pdo-gauss-quotient", "'Steerable PDOs (quotient)' Gauss", _E2.format(", sigma 1.3", "951,072"))
def steerable_pdo_gauss_quotient(**kwargs) -> MnistRotNet:
    """C16 regular + C16/C2 + C16/C4 + trivial fields (J&W's mix), order-3 Gaussian steerable PDOs."""
    return _build(dict(_STEERABLE, fields="quotient", discretization="gauss", sigma=_GAUSS_SIGMA), kwargs)


@_entry("steerable-pdo-gauss-d16c16", "'Steerable PDOs (D16|5C16)' Gauss",
        _E2.format(", sigma 1.3, 11-34 D16 + 45 C16 fields", "947,955"))
def steerable_pdo_gauss_d16c16(**kwargs) -> MnistRotNet:
    """D16 regular fields in layers 1-5 (11-34), restricted to C16 for layer 6 (45 fields); Gaussian PDOs."""
    return _build(dict(_STEERABLE, **_D16_STEERABLE, discretization="gauss", sigma=_GAUSS_SIGMA), kwargs)


_NOTE = "PDO layer 1, Neural ePDO (N=4, diag, r=2, p=8) + 1x1 projection in layers 2-6; J&W's recipe (guess)"


@_entry("neural-epdo-fd", "'Neural ePDOs' FD", _NOTE)
def neural_epdo_fd(**kwargs) -> MnistRotNet:
    """C16 regular fields (16-64), PDO first layer then Neural ePDOs (order 4, diag, r=2, p=8), finite differences."""
    return _build(dict(_NEURAL, discretization="fd"), kwargs)


@_entry("neural-epdo-gauss", "'Neural ePDOs' Gauss", _NOTE + ", sigma 1.3")
def neural_epdo_gauss(**kwargs) -> MnistRotNet:
    """C16 regular fields (16-64), PDO first layer then Neural ePDOs (order 4, diag, r=2, p=8), Gaussian (sigma 1.3)."""
    return _build(dict(_NEURAL, discretization="gauss", sigma=_GAUSS_SIGMA), kwargs)


@_entry("neural-epdo-gauss-quotient", "'Neural ePDOs (quotient)' Gauss", _NOTE + ", J&W's quotient mix")
def neural_epdo_gauss_quotient(**kwargs) -> MnistRotNet:
    """J&W's quotient field mix, PDO first layer then Gaussian Neural ePDOs (r = p = quotient units per layer)."""
    cfg = dict(_NEURAL, fields="quotient", discretization="gauss", sigma=_GAUSS_SIGMA)
    cfg.update(kwargs)
    units = _quotient_units(cfg)[:-1]  # of the inputs of layers 2..6
    cfg["reduction"] = kwargs.get("reduction", units)  # hidden layer: 13 regular fields (one per field of a unit)
    cfg["partition"] = kwargs.get("partition", units)  # the coefficients of one unit, shared by all units
    return MnistRotNet(**cfg)


def _quotient_units(cfg: dict[str, Any]) -> list[int]:
    """Quotient units per layer of a ``fields="quotient"`` configuration."""
    G = _group(cfg.get("group", "C16"))
    widths = [max(1, int(round(w * cfg.get("width", 1.0)))) for w in cfg.get("widths", JW_WIDTHS)]
    return [len(hidden_type(G, w, "quotient")) // len(quotient_unit(G)) for w in widths]


@_entry("neural-epdo-gauss-d16c16", "'Neural ePDOs (D16|5C16)' Gauss", _NOTE + ", 16-48 D16 + 45 C16 fields")
def neural_epdo_gauss_d16c16(**kwargs) -> MnistRotNet:
    """D16 regular fields in layers 1-5 (16-48), restricted to C16 for layer 6 (45 fields); Gaussian Neural ePDOs."""
    return _build(dict(_NEURAL, **_D16_NEURAL, discretization="gauss", sigma=_GAUSS_SIGMA), kwargs)


#: CPU recipe of ``neural-epdo-small`` (ours): sized for under an hour on 2 CPU cores with 10k training images
#: (40 epochs of about 65 s with the pure-torch backend). The 12-epoch exponential schedule we tried first was
#: still at 4 % validation error after 6 epochs with a rapidly shrinking learning rate; cosine over 30 epochs
#: reached 1.53 % test error (seed 0), over 40 epochs 1.40 % (docs/results.md).
SMALL_RECIPE = TrainDefaults(
    optimizer="adam", lr=0.01, weight_decay=1e-5, decay_scope="weights", schedule="cosine",
    epochs=40, batch_size=64, augment_rotation=True,
)


@register_model(name="neural-epdo-small", paper_params=None, train=SMALL_RECIPE,
                paper="(none: a CPU preset of He et al. (ICLR 2023) Table 2's 'Neural ePDOs' Gauss; C8, widths 8-32)")
def neural_epdo_small(**kwargs) -> MnistRotNet:
    """C8 regular fields (8-32), PDO first layer then Gaussian Neural ePDOs (r=2, p=4), head dropout 0.3 (a narrow
    head: 0.5 underfits); 42k params, CPU preset."""
    return _build(dict(_NEURAL, group="C8", widths=(8, 12, 16, 16, 24, 32), partition=4, discretization="gauss",
                       sigma=_GAUSS_SIGMA, dropout=0.3), kwargs)
