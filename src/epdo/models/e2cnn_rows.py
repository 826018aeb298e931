r"""The E2CNN rows of He et al. (ICLR 2023) Table 2 (MNIST-rot), Weiler & Cesa's (NeurIPS 2019) final MNIST-rot
models, built with :class:`~epdo.nn.SteerableConv` (circular harmonics x Gaussian rings, e2cnn's default basis).

Paper 000 takes these rows from Weiler & Cesa: "E2CNN" 0.72 +- 0.03 % / 2.69M, "E2CNN (quotient)" 0.70 +- 0.03 % /
2.75M, "E2CNN (D16|5C16)" 0.68 +- 0.02 % / 5.36M. Their code (``QUVA-Lab/e2cnn_experiments``,
``experiments/mnist_final.sh``; models ``E2SFCNN`` and ``E2SFCNN_QUOT``; read, not copied) defines the network,
:class:`E2MnistNet` here:

* six steerable convolutions of kernel sizes 9, 7, 7, 7, 7, 5 (padding 0, 3, 3, 3, 3, 0) and widths
  24, 32, 36, 36, 64, 96 fields, each followed by batch norm (one statistic per field, e2cnn's
  ``InnerBatchNorm`` = :class:`~epdo.nn.FieldBatchNorm` on permutation fields) and ELU; 2x2 max pooling after
  layers 2 and 4; group pooling (max over each field) after the last layer, global spatial max pooling, then
  ``Dropout(0.3) - Linear(c, 96) - BatchNorm1d - ELU - Dropout(0.3) - Linear(96, 96) - BatchNorm1d - ELU -
  Dropout(0.3) - Linear(96, 10)``;
* e2cnn's default ``R2Conv`` basis (``frequencies_cutoff``, ``sigma``, ``maximum_offset`` all None: rings at
  integer radii, sigma 0.6 / 0.4, every aliased frequency under e2cnn's cut-off), which is
  :class:`~epdo.nn.SteerableConv`'s default: the per-pair basis dimensions are equal (tests/nn/test_steerable.py);
* ``fields="quotient"``: per unit 5 regular + 2 C16/C8 + 2 C16/C4 + 4 trivial fields (96 channels, 13 fields;
  ``E2SFCNN_QUOT.build_quotient_feature_type``: ``quotient_repr(round(n/2))`` is the quotient by the subgroup of
  order 8, of size 2, unlike J&W's C16/C2 mix in :mod:`~epdo.models.mnist_rot`), ``round(width / 6)`` units;
  its last layer pools over the group before the batch norm, as ``E2SFCNN_QUOT``;
* ``group="D16", restrict_after=5``: D16 regular fields in layers 1-5, restricted to C16 after the fifth layer's
  batch norm and ELU (:class:`~epdo.nn.RestrictToRotations`: each D16 regular field becomes two C16 regular
  fields); e2cnn restricts right after the convolution (``RestrictionModule`` + ``DisentangleModule``), but its
  ``InnerBatchNorm`` then still normalises each disentangled 32-channel field as one, which is the D16 batch
  norm: the same function and parameters. Layer 6 works on C16.

Input ``(B, 1, 28, 28)`` in [0, 1], normalised with the MNIST-rot statistics of :mod:`~epdo.models.mnist_rot`.
28 -> 20 -> 20 -> 10 -> 10 -> 10 -> 5 -> 5 -> 1: every pooling is symmetric, so the logits are invariant to
``torch.rot90`` up to round-off (tested). Weiler & Cesa pad MNIST-rot to 29 x 29 (29 -> 21 -> ... -> 1); the
parameter count does not depend on it.

**Parameter counts** (``epdo models 'e2cnn-*'``; :data:`PAPER_E2CNN`; :data:`E2CNN_R2CONV_COUNTS`):

=====================  =========  =====  ======  ==============================================================
model                  ours       paper  ratio   note
=====================  =========  =====  ======  ==============================================================
e2cnn-c16              2,692,690  2.69M  1.001   24-96 C16 regular fields, kernels 9, 7, 7, 7, 7, 5
e2cnn-c16-quotient     2,749,686  2.75M  1.000   4, 5, 6, 6, 11, 16 quotient units (13 fields each)
e2cnn-d16c16           5,363,794  5.36M  1.001   24-64 D16 fields, 128 C16 fields into 96 in layer 6
=====================  =========  =====  ======  ==============================================================

e2cnn's own ``R2Conv`` network of the same architecture (built by ``benchmarks/pdoconv.py --e2cnn-counts``, e2cnn
0.2.3 with :func:`patch_e2cnn_for_numpy2`) has exactly the same counts (:data:`E2CNN_R2CONV_COUNTS`).
**D16|5C16 widths**: ``mnist_final.sh`` passes ``--fixparams``, which in ``E2SFCNN`` divides the widths by
sqrt(|D16| / 16) = sqrt 2 (16, 22, 25, 25, 45 D16 fields, 96 C16 fields in layer 6); that network has
3,069,353 parameters here, not 5.36M. The full widths (24-64 D16 fields, 96 C16 fields) give the paper's 5.36M,
so the registered model uses them (``fix_params=True`` builds the other one).

Training recipe (``mnist_final_single.sh``): Adam, lr 0.015, batch 64, 40 epochs, learning rate x 0.8 per epoch
from epoch 15, rotation augmentation, the SFCNN regularisation groups (L2 1e-7 on conv weights, 1e-8 on hidden
linear weights, none on the classifier, biases and norms). epdo's recipe has one weight decay (1e-7 on the
"weights" scope) and no L1 term (e2cnn uses L1 1e-7 / 1e-8 as well): the differences.

>>> m = E2MnistNet(widths=(2, 2, 2, 2, 2, 2), group="C4", fc_hidden=8)
>>> m.eval()(torch.rand(3, 1, 28, 28)).shape
torch.Size([3, 10])
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .. import nn as enn
from ..fields import FieldType
from ..groups import Group, Representation
from .mnist_rot import MNIST_ROT_MEAN, MNIST_ROT_STD, MnistRotNet, _group
from .registry import TrainDefaults, register_model

__all__ = ["E2MnistNet", "PAPER_E2CNN", "E2CNN_R2CONV_COUNTS", "E2CNN_RECIPE", "e2cnn_quotient_unit",
           "patch_e2cnn_for_numpy2"]

#: He et al. (ICLR 2023), Table 2: model -> (parameters, test error in % as printed).
PAPER_E2CNN: dict[str, tuple[int, str]] = {
    "e2cnn-c16": (2_690_000, "0.72 +- 0.03"),
    "e2cnn-c16-quotient": (2_750_000, "0.70 +- 0.03"),
    "e2cnn-d16c16": (5_360_000, "0.68 +- 0.02"),
}

#: The same networks built with e2cnn 0.2.3's ``R2Conv`` (default basis), ``InnerBatchNorm`` and the same head:
#: total learnable parameters, measured by ``benchmarks/pdoconv.py --e2cnn-counts``.
E2CNN_R2CONV_COUNTS: dict[str, int] = {"e2cnn-c16": 2_692_690, "e2cnn-c16-quotient": 2_749_686,
                                        "e2cnn-d16c16": 5_363_794}

#: Weiler & Cesa's MNIST-rot recipe without its L1 term (see the module doc).
E2CNN_RECIPE = TrainDefaults(
    optimizer="adam", lr=0.015, weight_decay=1e-7, decay_scope="weights", schedule="exponential", lr_decay=0.8,
    burn_in=15, epochs=40, batch_size=64, augment_rotation=True,
)

E2_WIDTHS = (24, 32, 36, 36, 64, 96)
E2_KERNELS = (9, 7, 7, 7, 7, 5)
E2_PADDING = (0, 3, 3, 3, 3, 0)


def e2cnn_quotient_unit(G: Group) -> list[Representation]:
    """``E2SFCNN_QUOT``'s unit for C_N (4 | N): 5 regular, 2 C_N/C_{N/2}, 2 C_N/C_{N/4}, N/4 trivial fields."""
    if G.reflections or not G.is_finite or G.N % 4:
        raise ValueError(f"the e2cnn quotient unit needs C_N with N divisible by 4, got {G.name}")
    n = G.N
    return ([G.regular] * 5 + [G.quotient(G.subgroup(n // 2))] * 2 + [G.quotient(G.subgroup(n // 4))] * 2
            + [G.trivial] * (n // 4))


def _hidden(G: Group, width: float, fields: str) -> FieldType:
    if fields == "regular":
        return FieldType(G, [G.regular] * max(1, int(width)))
    unit = e2cnn_quotient_unit(G)
    units = max(1, int(round(width / (sum(r.size for r in unit) / G.order))))
    return FieldType(G, unit * units)


class E2MnistNet(MnistRotNet):
    r"""Weiler & Cesa's MNIST-rot network (``E2SFCNN`` / ``E2SFCNN_QUOT``) with :class:`~epdo.nn.SteerableConv`.

    Args:
        group: ``"C16"``, ``"D16"``, ... (``C<N>`` / ``D<N>``).
        fields: ``"regular"`` or ``"quotient"`` (C_N with 4 | N; see the module doc).
        widths, kernel_sizes, paddings: per layer (fields; for ``"quotient"`` regular-field equivalents).
        width: multiplier of ``widths`` (small variants).
        restrict_after: 1-based layer after whose convolution D_N fields become C_N fields (None: never).
        fix_params: divide the widths of layers on G by sqrt(|G| / 16) (e2cnn's ``fix_param``; regular only).
        pool_after: 1-based layers followed by 2x2 max pooling.
        fc_hidden: width of the two hidden linear layers. dropout: before each linear layer.
        num_classes, mean, std: logits and input normalisation.

    Shape ``(B, 1, H, W) -> (B, num_classes)``; the forward and the exporter are :class:`MnistRotNet`'s
    (normalise, equivariant features, global max over space, head).
    """

    def __init__(self, group: str = "C16", fields: str = "regular", widths: Sequence[int] = E2_WIDTHS,
                 kernel_sizes: Sequence[int] = E2_KERNELS, paddings: Sequence[int] = E2_PADDING, width: float = 1.0,
                 restrict_after: int | None = None, fix_params: bool = False, pool_after: Sequence[int] = (2, 4),
                 fc_hidden: int = 96, dropout: float = 0.3, num_classes: int = 10, mean: float = MNIST_ROT_MEAN,
                 std: float = MNIST_ROT_STD) -> None:
        nn.Module.__init__(self)
        self.config = dict(layer="steerable", group=group, fields=fields, widths=tuple(widths),
                           kernel_sizes=tuple(kernel_sizes), paddings=tuple(paddings), width=width,
                           restrict_after=restrict_after, fix_params=fix_params, pool_after=tuple(pool_after),
                           fc_hidden=fc_hidden, dropout=dropout, num_classes=num_classes, mean=mean, std=std)
        n = len(widths)
        if fields not in ("regular", "quotient"):
            raise ValueError(f"fields must be 'regular' or 'quotient', got {fields!r}")
        if not n or len(kernel_sizes) != n or len(paddings) != n:
            raise ValueError(f"widths, kernel_sizes and paddings need one entry per layer, got {len(widths)}, "
                             f"{len(kernel_sizes)}, {len(paddings)}")
        if any(int(w) != w or w < 1 for w in widths) or not width > 0:
            raise ValueError(f"widths must be positive integers and width > 0, got {list(widths)}, {width!r}")
        if any(not 1 <= p <= n for p in pool_after):
            raise ValueError(f"pool_after must index layers 1..{n}, got {list(pool_after)}")
        if not 0.0 <= dropout < 1.0 or not std > 0:
            raise ValueError(f"dropout must be in [0, 1) and std > 0, got {dropout}, {std}")
        if fix_params and fields != "regular":
            raise ValueError("fix_params applies to regular fields only (as in e2cnn's E2SFCNN)")
        G = _group(group)
        if restrict_after is not None and (not G.reflections or not 1 <= restrict_after < n):
            raise ValueError(f"restrict_after must be a layer in 1..{n - 1} of a dihedral group, got "
                             f"{restrict_after!r} for {group!r}")
        mods: list[enn.EquivariantModule] = []
        in_type = FieldType(G, [G.trivial])
        for i, (w, k, p) in enumerate(zip(widths, kernel_sizes, paddings), start=1):
            H = in_type.group
            w = w * width / (np.sqrt(H.order / 16) if fix_params else 1.0)
            out_type = _hidden(H, w, fields)
            mods.append(enn.SteerableConv(in_type, out_type, k, padding=p))
            if i == n and fields == "quotient":  # E2SFCNN_QUOT pools over the group before its last batch norm
                mods.append(enn.GroupPool(out_type, "max"))
                out_type = mods[-1].out_type
            mods += [enn.FieldBatchNorm(out_type), enn.ELU(out_type)]
            if i == restrict_after:  # after batch norm: statistics per D16 field, as e2cnn's InnerBatchNorm on
                mods.append(enn.RestrictToRotations(out_type))  # the disentangled (32-channel) fields
                out_type = mods[-1].out_type
            if i in pool_after:
                mods.append(enn.MaxPool2d(out_type, 2))
            in_type = out_type
        if fields != "quotient":
            mods.append(enn.GroupPool(in_type, "max"))  # after BN and ELU: the same as E2SFCNN's (ELU is monotone)
        self.features = enn.Sequential(*mods)
        head: list[nn.Module] = []
        dims = [len(in_type), fc_hidden, fc_hidden, num_classes]
        for j in range(3):
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            head.append(nn.Linear(dims[j], dims[j + 1]))
            if j < 2:
                head += [nn.BatchNorm1d(dims[j + 1]), nn.ELU()]
        self.head = nn.Sequential(*head)
        self.widths = tuple(len(m.out_type) for m in mods if isinstance(m, enn.SteerableConv))
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)


def _entry(name: str, row: str, note: str):
    params, error = PAPER_E2CNN[name]
    return register_model(name=name, paper_params=params, paper_error=error, train=E2CNN_RECIPE,
                          paper=f"He et al. (ICLR 2023), Table 2, {row} (Weiler & Cesa 2019); {note}",
                          test_kwargs=dict(width=0.125))  # the generic tests: an eighth of the fields


def _build(defaults: dict[str, Any], kwargs: dict[str, Any]) -> E2MnistNet:
    cfg = dict(defaults)
    cfg.update(kwargs)
    return E2MnistNet(**cfg)


@_entry("e2cnn-c16", "'E2CNN'", "E2SFCNN, C16 regular fields 24-96, kernels 9-5, SteerableConv")
def e2cnn_c16(**kwargs) -> E2MnistNet:
    """C16 regular fields (24, 32, 36, 36, 64, 96), kernels 9, 7, 7, 7, 7, 5: Weiler & Cesa's E2SFCNN."""
    return _build(dict(group="C16"), kwargs)


@_entry("e2cnn-c16-quotient", "'E2CNN(quotient)'", "E2SFCNN_QUOT, C16 quotient units 4-16")
def e2cnn_c16_quotient(**kwargs) -> E2MnistNet:
    """C16 quotient units (5 regular, 2 C16/C8, 2 C16/C4, 4 trivial fields): 4, 5, 6, 6, 11, 16 units."""
    return _build(dict(group="C16", fields="quotient"), kwargs)


@_entry("e2cnn-d16c16", "'E2CNN (D16|5C16)'", "E2SFCNN, D16 regular 24-64 restricted to C16 after conv 5, "
        "96 C16 fields")
def e2cnn_d16c16(**kwargs) -> E2MnistNet:
    """D16 regular fields (24-64) in layers 1-5, restricted to C16 after the fifth convolution, 96 C16 fields."""
    return _build(dict(group="D16", restrict_after=5), kwargs)



# --- e2cnn 0.2 under numpy 2 (for comparisons with e2cnn in tests and benchmarks) ---

class _Numpy2Array:
    """numpy with ``array(x, copy=False)`` meaning numpy 1's "copy if needed" (``asarray``)."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def array(obj, *args, copy=True, **kwargs):
        return np.asarray(obj, *args, **kwargs) if copy is False else np.array(obj, *args, copy=copy, **kwargs)


def patch_e2cnn_for_numpy2(setattr_=setattr) -> None:
    """Two numpy-2 incompatibilities of e2cnn 0.2 that break every D_N / O(2) ``R2Conv``: its irrep kernel bases
    hash ``ndarray.tostring()`` (removed) and ``e2cnn.kernels.utils`` calls ``np.array(x, copy=False)`` on
    scalars (now an error). Replaces those ``__hash__`` methods by the same hash on ``tobytes`` and that
    module's ``np`` by a proxy whose ``array(copy=False)`` is ``asarray``; e2cnn's results are unchanged.
    ``setattr_``: ``setattr`` (permanent) or pytest's ``monkeypatch.setattr`` (undone after the test)."""
    from e2cnn.kernels import irreps_basis as ib
    from e2cnn.kernels import utils as ku

    def _h(v):
        return hash(v.tobytes()) if hasattr(v, "tobytes") else hash(v)

    for cls in (ib.R2FlipsSolution, ib.R2DiscreteRotationsSolution, ib.R2ContinuousRotationsSolution,
                ib.R2FlipsDiscreteRotationsSolution, ib.R2FlipsContinuousRotationsSolution):
        setattr_(cls, "__hash__", lambda self: hash(self.in_irrep) + hash(self.out_irrep) + _h(self.mu)
                 + _h(self.gamma))
    setattr_(ku, "np", _Numpy2Array())
