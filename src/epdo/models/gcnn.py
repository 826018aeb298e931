r"""G-CNNs and Partial G-CNNs of Romero & Lohit (2022, "Learning Partial Equivariances from Data", paper 004),
and their PDO versions.

The network of 004 Fig. 3: a lifting convolution, two residual blocks (group conv - batch norm - ReLU - group
conv - batch norm, plus a 1 x 1 group-conv shortcut onto the block's output elements, then ReLU), 32 channels,
SIREN kernels, projection (max over the group), global max pooling and a linear classifier. Here a 2 x 2
spatial max pool follows the lifting layer and the first block (28 -> 14 -> 7 pixels, for CPU cost).

Registered (N = group elements, 8 / 16 as in 004 Table 3; 2 classes, the MNIST6 data sets; any N through
``GCNN(samples=N)`` or ``--model-kw samples=N``):

- ``gcnn-se2-N`` / ``partial-gcnn-se2-N``: Monte Carlo SE(2) with N samples / learned subsets
  (:class:`~epdo.gconv.sampling.PartialSampler`, theta initialised to pi);
- ``gcnn-e2-N`` / ``partial-gcnn-e2-N``: E(2), N samples (N / 2 per coset) / learned rotations x flip;
- ``gcnn-mirror`` / ``partial-gcnn-mirror``: the mirror group {e, x -> -x} (MNIST6-M; the input is turned by
  90 degrees so that epdo's D_1 flip y -> -y acts as x -> -x on the image, PITFALLS 28);
- ``cnn-t2``: the same network on the trivial group (a T(2) CNN with SIREN kernels);
- ``pdo-se2-8`` / ``partial-pdo-se2-8``: the same with steered PDO kernels (order 2, 5 x 5 FD stencils,
  coefficients from a SIREN on the relative element, :mod:`epdo.gconv.partial`);
- ``partial-nepdo-se2-8``: the steered PDO lifting, then :class:`~epdo.gconv.NeuralGroupPDO`
  blocks (Neural ePDOs with per-pixel generated coefficients steered by each sampled element, order 2, 5 x 5 FD);
  the full-group version is ``GCNN(kernel="nepdo")`` (not registered, to keep the generic model tests short).
- ``pdoconv-c8`` / ``partial-pdoconv-c8``: :class:`PartialPDONet`, a network of the core's layers on C8 fields,
  ``epdo.nn.PDOConv`` and ``epdo.nn.NeuralEPDO``, full or with ``partial=True`` (learned orientations).

Evaluation is deterministic (the samplers' eval grids, :mod:`epdo.gconv.sampling`);
``partial_equivariance_report()`` lists the learned theta / probability per layer (``epdo evaluate`` prints it).

>>> import epdo.models
>>> m = epdo.models.create("partial-gcnn-se2-8", channels=4)
>>> m(torch.rand(2, 1, 28, 28)).shape
torch.Size([2, 2])
"""

from __future__ import annotations

import torch
from torch import nn

from .. import groups
from ..gconv import GroupConv, GroupProjection, LiftingConv, NeuralGroupPDO, partial_equivariance_report
from ._inputs import check_images
from .registry import TrainDefaults, register_model

__all__ = ["GroupBatchNorm", "GCNN", "GROUPS", "PartialPDONet"]

#: name -> (group factory, turn the input by 90 degrees)
GROUPS = {"se2": (groups.se2, False), "e2": (groups.e2, False), "mirror": (lambda: groups.dihedral(1), True),
          "t2": (lambda: groups.cyclic(1), False)}


class GroupBatchNorm(nn.Module):
    """Batch norm of group features ``(B, C * S, H, W)``: statistics per channel over batch, elements and pixels
    (invariant under the group acting on the element axis)."""

    def __init__(self, channels: int, device=None, dtype=None):
        super().__init__()
        self.channels = channels
        self.bn = nn.BatchNorm3d(channels, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        return self.bn(x.reshape(B, self.channels, -1, H, W)).reshape(x.shape)


class _Block(nn.Module):
    def __init__(self, G, channels, kernel_size, in_sampler, samples, partial, kw):
        super().__init__()
        finite = G.is_finite and not partial
        ins = {} if finite else dict(in_elements=in_sampler)
        s = {} if G.is_finite and not partial else dict(samples=samples)
        if kw["kernel"] == "nepdo":  # Neural ePDO blocks (steered generated PDO coefficients)
            nkw = {k: v for k, v in kw.items() if k != "kernel"}

            def conv(ins2):
                return NeuralGroupPDO(G, channels, channels, kernel_size=kernel_size, partial=partial, **ins2, **s,
                                      **nkw)
        else:
            def conv(ins2):
                return GroupConv(G, channels, channels, kernel_size, partial=partial, bias=False, **ins2, **s, **kw)
        self.conv1 = conv(ins)
        self.bn1 = GroupBatchNorm(channels)
        self.conv2 = conv({} if finite else dict(in_elements=self.conv1.sampler))
        self.bn2 = GroupBatchNorm(channels)
        # the skip connection maps the block's input elements onto conv2's output elements
        self.shortcut = None if finite else GroupConv(G, channels, channels, 1, in_elements=in_sampler,
                                                      out_elements=self.conv2.sampler, bias=False, kernel="siren")

    @property
    def sampler(self):
        return self.conv2.sampler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + (x if self.shortcut is None else self.shortcut(x)))


class GCNN(nn.Module):
    """The residual (Partial) G-CNN of 004 Fig. 3 (module doc).

    Args:
        group: ``"se2"``, ``"e2"``, ``"mirror"`` or ``"t2"``.
        samples: elements per layer (Monte Carlo / partial; ignored for finite groups).
        partial: learned subsets per layer (theta, prob, theta_lr_factor, prob_lr_factor: of
            :class:`~epdo.gconv.sampling.PartialSampler`). channels, kernel_size, blocks: the widths, filter size,
            residual blocks.
        kernel: ``"siren"``, ``"relu"``, ``"swish"``, ``"pdo"`` or ``"nepdo"`` (steered PDO lifting, then
            :class:`~epdo.gconv.NeuralGroupPDO` blocks: per-pixel generated, steered coefficients). num_classes: logits.
    """

    def __init__(self, group: str = "se2", samples: int = 8, partial: bool = False, channels: int = 32,
                 kernel_size: int = 5, blocks: int = 2, kernel: str = "siren", num_classes: int = 2,
                 theta: float = 1.0, prob: float = 0.99, order: int = 2, theta_lr_factor: float = 1.0,
                 prob_lr_factor: float = 0.1):
        super().__init__()
        if group not in GROUPS:
            raise ValueError(f"GCNN: group must be one of {tuple(GROUPS)}, got {group!r}")
        make, self.turn = GROUPS[group]
        G = make()
        finite = G.point_group.is_finite if hasattr(G, "point_group") else G.is_finite
        part = bool(partial) and group != "t2"
        s = None if finite and not part else samples
        kw = dict(kernel=kernel, theta=theta, prob=prob, theta_lr_factor=theta_lr_factor, prob_lr_factor=prob_lr_factor)
        if kernel in ("pdo", "nepdo"):
            kw["order"] = order
        lift_kw = {**kw, "kernel": "pdo"} if kernel == "nepdo" else kw
        self.lift = LiftingConv(G, 1, channels, kernel_size, samples=s, partial=part, bias=False, **lift_kw)
        self.bn0 = GroupBatchNorm(channels)
        self.pool = nn.MaxPool2d(2)
        sampler, mods = self.lift.sampler, []
        for _ in range(blocks):
            mods.append(_Block(self.lift.group, channels, kernel_size, sampler, s, part, kw))
            sampler = mods[-1].sampler
        self.blocks = nn.ModuleList(mods)
        self.project = GroupProjection(self.lift.group, channels, mode="max",
                                       **({} if finite and not part else dict(in_elements=sampler)))
        self.head = nn.Linear(channels, num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        check_images(self, x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.turn:
            x = torch.rot90(x, 1, (-2, -1))
        h = self.pool(torch.relu(self.bn0(self.lift(x))))
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == 0:
                h = self.pool(h)
        h = self.project(h)
        return self.head(h.amax((-2, -1)))

    def partial_equivariance_report(self) -> list[dict]:
        """Learned theta / pi, flip probability and eval-mode element count per partial layer."""
        return partial_equivariance_report(self)


class PartialPDONet(nn.Module):
    r"""A network of the core's PDO layers on C_N fields, full or partially equivariant (``partial=True``):

    lifting ``nn.PDOConv`` (1 -> ``channels`` regular fields) - batch norm - ReLU - 2 x 2 max pool, then per block
    :math:`h \leftarrow h + \mathrm{ReLU}(\mathrm{BN}(\mathrm{NeuralEPDO}(h)))` (diag mode, on the elements h lives
    on) and :math:`h \leftarrow \mathrm{ReLU}(\mathrm{BN}(\mathrm{PDOConv}(h)))` (onto new elements, learned when
    partial), a 2 x 2 max pool after the first block, max over the group (``gconv.GroupProjection``) and over
    the pixels, a linear classifier. Order 2, 5 x 5 finite differences, the PDOConvs in the ``pdo_econv`` basis
    (so the full and the partial network share their parameters: at theta = pi they compute the same function). With ``partial=True`` every PDOConv
    learns its orientations (:class:`~epdo.nn.sampling.PartialSampler`; theta, theta_lr_factor as there) and
    each NeuralEPDO runs on those of the PDOConv before it; without, the layers are exactly C_N-equivariant on
    regular fields.
    """

    def __init__(self, n: int = 8, channels: int = 8, blocks: int = 2, partial: bool = False, num_classes: int = 2,
                 theta: float = 1.0, theta_lr_factor: float = 1.0, order: int = 2, kernel_size: int = 5):
        super().__init__()
        from .. import fields
        from .. import nn as enn

        G = groups.cyclic(n)
        t1, t = fields.FieldType(G, [G.trivial]), fields.FieldType(G, [G.regular] * channels)
        kw = dict(order=order, kernel_size=kernel_size)
        # the full network takes the partial one's parameterisation (PDO-eConv coefficients; the same span)
        pk = dict(partial=True, theta=theta, theta_lr_factor=theta_lr_factor) if partial else {"basis": "pdo_econv"}
        self.partial = bool(partial)
        self.lift = enn.PDOConv(t1, t, bias=False, **kw, **pk)
        self.bn0 = GroupBatchNorm(channels)
        self.pool = nn.MaxPool2d(2)
        prev = self.lift
        neural, convs = [], []
        for _ in range(blocks):
            ins = dict(in_elements=prev.sampler) if partial else {}
            neural.append(enn.NeuralEPDO(t, **kw, **({"partial": True, **ins} if partial else {})))
            convs.append(enn.PDOConv(t, t, bias=False, **kw, **pk, **ins))
            prev = convs[-1]
        self.neural, self.convs = nn.ModuleList(neural), nn.ModuleList(convs)
        self.bn_a = nn.ModuleList(GroupBatchNorm(channels) for _ in range(blocks))
        self.bn_b = nn.ModuleList(GroupBatchNorm(channels) for _ in range(blocks))
        self.project = (GroupProjection(prev.continuous_group, channels, in_elements=prev.sampler, mode="max")
                        if partial else GroupProjection(G, channels, mode="max"))
        self.head = nn.Linear(channels, num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        check_images(self, x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h = self.pool(torch.relu(self.bn0(self.lift(x))))
        for i, (neural, bn_a, conv, bn_b) in enumerate(zip(self.neural, self.bn_a, self.convs, self.bn_b)):
            h = h + torch.relu(bn_a(neural(h)))
            h = torch.relu(bn_b(conv(h)))
            if i == 0:
                h = self.pool(h)
        return self.head(self.project(h).amax((-2, -1)))

    def partial_equivariance_report(self) -> list[dict]:
        """Learned theta / pi and eval-mode element count per partial PDOConv."""
        return partial_equivariance_report(self)


def _export_gcnn(model: GCNN) -> nn.Module:
    from ..export import _with_exported_children, to_graph_module

    new = _with_exported_children(model)
    new.check_input = lambda x: None  # shape checks branch on values, which fx cannot trace
    return to_graph_module(new.eval(), "GCNNExport")


def _register_export() -> None:
    from ..export import _EXPORTERS  # not register_exporter: see epdo.gconv.layers._register_exporters

    _EXPORTERS.setdefault(GCNN, _export_gcnn)
    _EXPORTERS.setdefault(PartialPDONet, _export_gcnn)


_register_export()

_PAPER = "Romero & Lohit 2022, Table 1 (MNIST6), Fig. 3"
_RECIPE = TrainDefaults(optimizer="adam", lr=1e-3, epochs=10, batch_size=64)


def _reg(name: str, doc: str, error: str = "", **fixed):
    def build(**kwargs) -> GCNN:
        return GCNN(**{**fixed, **kwargs})

    build.__doc__ = doc
    register_model(build, name=name, paper=_PAPER, paper_error=error, train=_RECIPE, num_classes=2)


for _n in (8, 16):
    _reg(f"gcnn-se2-{_n}", f"Monte Carlo SE(2) G-CNN, {_n} samples per layer (eval: the C{_n} grid).",
         "50.0", group="se2", samples=_n)
    _reg(f"partial-gcnn-se2-{_n}", f"Partial SE(2) G-CNN, up to {_n} samples, learned theta per layer.",
         "0.0", group="se2", samples=_n, partial=True)
    _reg(f"gcnn-e2-{_n}", f"Monte Carlo E(2) G-CNN, {_n} samples per layer ({_n // 2} per coset).",
         "50.0", group="e2", samples=_n)
    _reg(f"partial-gcnn-e2-{_n}", f"Partial E(2) G-CNN, up to {_n} samples, learned theta and flip probability.",
         "0.0", group="e2", samples=_n, partial=True)
_reg("pdo-se2-8", "SE(2) PDO G-CNN (steered PDO kernels, order 2), 8 samples.", group="se2", samples=8, kernel="pdo")
_reg("partial-pdo-se2-8", "Partial SE(2) PDO G-CNN (steered PDO kernels, order 2), up to 8 samples, learned theta.",
     group="se2", samples=8, kernel="pdo", partial=True)
_reg("partial-nepdo-se2-8", "Partial SE(2) Neural ePDO G-CNN (NeuralGroupPDO blocks, order 2), up to 8 samples, "
     "learned theta.", group="se2", samples=8, kernel="nepdo", partial=True)
_reg("gcnn-mirror", "Mirror G-CNN (the group {e, x -> -x}).", "50.0", group="mirror")
_reg("partial-gcnn-mirror", "Partial mirror G-CNN (learned probability of the flip).", "0.0",
     group="mirror", partial=True)
_reg("cnn-t2", "T(2) CNN: the same residual network on the trivial group, SIREN kernels.", group="t2")


def _reg_pdoconv(name: str, doc: str, error: str = "", **fixed):
    def build(**kwargs) -> PartialPDONet:
        return PartialPDONet(**{**fixed, **kwargs})

    build.__doc__ = doc
    register_model(build, name=name, paper="Romero & Lohit 2022 with He 2022's layers", paper_error=error,
                   train=_RECIPE, num_classes=2)


_reg_pdoconv("pdoconv-c8", "C8 network of nn.PDOConv and nn.NeuralEPDO layers (order 2), fully equivariant.", "50.0")
_reg_pdoconv("partial-pdoconv-c8", "The same with partial=True: learned orientations per PDOConv.", partial=True)
