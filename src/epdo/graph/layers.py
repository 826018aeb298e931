r"""Message-passing layers on point clouds (paper 003 section 9): EGNN, SEGNN and a lifted (position x
orientation) convolution, with their field types on :class:`~epdo.graph.PointCloud`.

All three are plain ``torch.nn.Module``\ s on plain tensors: ``layer(features, positions, edge_index)`` or
``layer(signal)`` with ``signal`` the tuple of the domain, returning the signal tuple of the output. Messages
run along the edges j -> i of ``edge_index`` (row 0 sources, row 1 targets) and are summed into the targets.

- :class:`EGNNLayer` (Satorras et al. 2021, Eqs. 3-6; 003 "E(n) equivariant GNN"):
  :math:`m_{ij} = \phi_e(h_i, h_j, \|x_i - x_j\|^2, a_{ij})` (two layers, SiLU after both, as the reference code),
  :math:`x_i' = x_i + \frac{1}{|N(i)|}\sum_j (x_i - x_j)\,\phi_x(m_{ij})` (with velocities:
  :math:`v_i' = \phi_v(h_i) v_i + \dots`, :math:`x_i' = x_i + v_i'`), :math:`h_i' = h_i + \phi_h(h_i, \sum_j m_{ij})`.
  Invariant (scalar) features, E(3)-equivariant positions.
- :class:`SEGNNLayer` (Brandstetter et al. 2022; 003 "steerable MLPs"): steerable features of given e3nn
  irreps; :math:`m_{ij} = \phi_m(f_i, f_j, \|x_j - x_i\|^2; a_{ij})`, :math:`f_i' = f_i + \phi_f(f_i, \sum_j m_{ij}; a_i)`
  where every :math:`\phi` is a steerable MLP: e3nn ``FullyConnectedTensorProduct`` with the edge attribute
  :math:`a_{ij} = Y^{(\le l_a)}(x_j - x_i)` (spherical harmonics; node attribute :math:`a_i` their mean over
  incoming edges, plus any given node attribute), followed by a gated nonlinearity (``e3nn.nn.Gate``).
  O(3)-equivariant (the spherical harmonics of degree l have parity (-1)^l).
- :class:`LiftedConvLayer` (003 "lifting to position-orientation space", PONITA-style separable
  convolution): scalar fields on :math:`\mathbb{R}^3\times S^2`; for the edge j -> i and orientations
  :math:`o_a` (at i), :math:`o_b` (at j) the invariants of :math:`g_i^{-1}g_j` are
  :math:`\alpha = o_a\cdot(x_j - x_i)`, :math:`\beta = \|x_j - x_i - \alpha o_a\|^2` and :math:`\gamma = o_a\cdot o_b`;
  :math:`m_{ia} = \sum_j k_s(\alpha, \beta) \odot f_{ja}`, :math:`f_{ia}' = f_{ia} + \psi(\frac{1}{O}\sum_b k_o(\gamma_{ab}) \odot m_{ib})`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..fields import FieldType
from .construction import GraphError
from .domain import PointCloud, PositionOrientationCloud, irreps_field_type

__all__ = ["EGNNLayer", "SEGNNLayer", "LiftedConvLayer", "check_euclidean", "sphere_grid", "icosahedron_vertices",
           "scatter_sum", "scatter_mean"]


def scatter_sum(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """:math:`out_i = \\sum_{e: index_e = i} src_e` (first axis)."""
    out = src.new_zeros((n, *src.shape[1:]))
    return out.index_add(0, index, src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """The mean of ``src`` over the entries with ``index == i`` (0 where there are none)."""
    count = torch.zeros(n, dtype=src.dtype, device=src.device).index_add(0, index, torch.ones_like(index, dtype=src.dtype))
    return scatter_sum(src, index, n) / count.clamp_min(1).view(-1, *([1] * (src.dim() - 1)))


def _o3(L: int, group=None):
    """``group`` (checked to act on 3-D points with degree >= L where it has one), default ``o3(L)``."""
    if group is None:
        from ..groups import o3

        return o3(L)
    PointCloud().check_group(group)
    if getattr(group, "max_degree", L) < L:
        raise ValueError(f"expected a group with irreps of degree <= {L} at least, got {group!r}")
    return group


def _signal(layer: nn.Module, args: tuple, arity: int) -> tuple:
    """The input signal tuple, from ``(signal,)`` or the tensors themselves; checked against ``in_type``."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        x = tuple(args[0])
    else:
        x = tuple(args)
    if len(x) != arity:
        raise TypeError(f"{type(layer).__name__}: expected {arity} tensors "
                        f"{layer.in_type.domain.signal_shape(layer.in_type.size)}, got {len(x)}")
    layer.in_type.check(x, type(layer).__name__)
    return x


def _mlp(sizes: list[int], act: type[nn.Module], factory: dict, last_bias: bool = True, last_gain: float = 1.0,
         act_last: bool = False) -> nn.Sequential:
    """Linear layers of the given widths with ``act`` between them (and after the last one if ``act_last``)."""
    mods: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        lin = nn.Linear(a, b, bias=last_bias or not last, **factory)
        if last and last_gain != 1.0:
            nn.init.xavier_uniform_(lin.weight, gain=last_gain)
        mods.append(lin)
        if not last or act_last:
            mods.append(act())
    return nn.Sequential(*mods)


def _mlp_params(sizes: list[int], last_bias: bool = True) -> int:
    """Parameters of :func:`_mlp` (independent formula: weights a*b, biases b)."""
    n = len(sizes) - 1
    return sum(a * b + (b if (k < n - 1 or last_bias) else 0) for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))


# --- EGNN --------------------------------------------------------------------------------------------

class EGNNLayer(nn.Module):
    r"""E(n)-equivariant graph convolution (Satorras et al. 2021; see the module doc for the equations).

    Args:
        in_channels, out_channels: scalar node features h (invariant).
        hidden: width of the edge, coordinate and node MLPs (two layers each).
        edge_channels: invariant edge attributes :math:`a_{ij}` passed as ``edge_attr`` (E, edge_channels).
        update_coords: move the points (else positions pass through unchanged).
        velocity: take ``vel`` (N, 3) and update :math:`x' = x + \phi_v(h) v + \text{mean}_j (x_i - x_j)\phi_x(m_{ij})`.
        residual: :math:`h' = h + \phi_h(\cdot)` when in_channels == out_channels.
        update_features: False: h passes through (no :math:`\phi_h`; a last layer whose h is not read);
            needs in_channels == out_channels.

    Field types: ``in_channels`` / ``out_channels`` trivial fields of ``group`` (default
    ``epdo.groups.o3(0)``; any group of 3x3 matrices) on :class:`~epdo.graph.PointCloud` (E(3) acts on the positions).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64, edge_channels: int = 0,
                 update_coords: bool = True, velocity: bool = False, residual: bool = True,
                 update_features: bool = True, act: type[nn.Module] = nn.SiLU, group=None, device=None, dtype=None):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"EGNNLayer: {name} must be a positive int, got {v!r}")
        fk = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels, self.hidden = in_channels, out_channels, hidden
        self.edge_channels, self.update_coords, self.velocity = int(edge_channels), bool(update_coords), bool(velocity)
        self.residual = bool(residual) and in_channels == out_channels
        self.update_features = bool(update_features)
        if not self.update_features and in_channels != out_channels:
            raise ValueError(f"EGNNLayer(update_features=False) keeps h: needs in_channels == out_channels, got "
                             f"{in_channels} -> {out_channels}")
        # the message m_ij ends in the activation, as in the reference code (E_GCL's edge_mlp)
        self.edge_mlp = _mlp([2 * in_channels + 1 + self.edge_channels, hidden, hidden], act, fk, act_last=True)
        if self.update_features:
            self.node_mlp = _mlp([in_channels + hidden, hidden, out_channels], act, fk)
        if self.update_coords:
            self.coord_mlp = nn.Sequential(_mlp([hidden, hidden, 1], act, fk, last_bias=False, last_gain=1e-3))
        if self.velocity:
            self.vel_mlp = _mlp([in_channels, hidden, 1], act, fk)
        G = _o3(0, group)
        self.in_type = FieldType(G, [G.trivial] * in_channels, PointCloud())
        self.out_type = FieldType(G, [G.trivial] * out_channels, PointCloud())

    @staticmethod
    def count_parameters(in_channels: int, out_channels: int, hidden: int = 64, edge_channels: int = 0,
                         update_coords: bool = True, velocity: bool = False, update_features: bool = True) -> int:
        """The number of parameters (independent formula, layer by layer)."""
        n = _mlp_params([2 * in_channels + 1 + edge_channels, hidden, hidden])
        n += _mlp_params([in_channels + hidden, hidden, out_channels]) if update_features else 0
        n += _mlp_params([hidden, hidden, 1], last_bias=False) if update_coords else 0
        return n + (_mlp_params([in_channels, hidden, 1]) if velocity else 0)

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.out_channels}, hidden={self.hidden}, edge_channels={self.edge_channels}, "
                f"update_coords={self.update_coords}, velocity={self.velocity}, residual={self.residual}"
                + ("" if self.update_features else ", update_features=False"))

    def forward(self, *args, edge_attr: torch.Tensor | None = None, vel: torch.Tensor | None = None):
        h, pos, ei = _signal(self, args, 3)
        src, dst = ei[0], ei[1]
        n, e = pos.shape[0], ei.shape[1]
        if self.edge_channels:
            if edge_attr is None or edge_attr.shape != (e, self.edge_channels):
                got = None if edge_attr is None else tuple(edge_attr.shape)
                raise GraphError(f"EGNNLayer: expected edge_attr of shape ({e}, {self.edge_channels}), got {got}")
        rel = pos[dst] - pos[src]  # x_i - x_j
        d2 = rel.pow(2).sum(-1, keepdim=True)
        parts = [h[dst], h[src], d2] + ([edge_attr.to(h)] if self.edge_channels else [])
        m = self.edge_mlp(torch.cat(parts, dim=1))
        if self.update_coords:
            shift = scatter_mean(rel * self.coord_mlp(m), dst, n)
            if self.velocity:
                if vel is None or vel.shape != pos.shape:
                    raise GraphError(f"EGNNLayer(velocity=True): expected vel of shape {tuple(pos.shape)}, got "
                                     f"{None if vel is None else tuple(vel.shape)}")
                shift = shift + self.vel_mlp(h) * vel
            pos = pos + shift
        if not self.update_features:
            return (h, pos, ei)
        out = self.node_mlp(torch.cat([h, scatter_sum(m, dst, n)], dim=1))
        return (h + out if self.residual else out, pos, ei)


# --- SEGNN -------------------------------------------------------------------------------------------

class _GatedTP(nn.Module):
    """A steerable linear layer (e3nn FullyConnectedTensorProduct of features with attributes, bias on the
    even scalars), followed, if ``gate``, by e3nn's Gate: SiLU on even scalars, tanh on odd ones, sigmoid
    gates on the l > 0 fields. ``irreps_out`` is the output's irreps.

    Parameterisation (that of SEGNN's ``O3TensorProduct``, and of ``torch.nn.Linear``): the parameter
    ``weight`` holds e3nn's path weights times k = fan_in^(-1/2) of their output field (fan_in:
    the products ``mul1 * mul2`` of all paths into that field); :meth:`path_weights` undoes the factor. The
    function is e3nn's and the initial path weights are e3nn's N(0, 1); what changes is training: Adam's step
    does not depend on the gradient's scale, so a path weight moves by lr / k per step instead of lr (10-30x at
    the N-body widths). With e3nn's own parameterisation segnn-nbody learned about 10x more slowly per epoch
    at the paper's lr (docs/results.md).
    """

    def __init__(self, irreps_in, irreps_attr, irreps_out, gate: bool, init: str = "normal", device=None,
                 dtype=None):
        super().__init__()
        if init not in ("normal", "uniform"):
            raise ValueError(f"tensor product: init must be 'normal' or 'uniform', got {init!r}")
        from e3nn import o3
        from e3nn.nn import Gate

        irreps_out = o3.Irreps(irreps_out).simplify()
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # e3nn's Clebsch-Gordan constants in float64, then cast
        try:
            if gate:
                scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
                gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
                gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
                self.gate = Gate(scalars, [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars],
                                 gates, [torch.sigmoid] * len(gates), gated)
                tp_out = self.gate.irreps_in
            else:
                self.gate = None
                tp_out = irreps_out
            self.tp = o3.FullyConnectedTensorProduct(irreps_in, irreps_attr, tp_out, internal_weights=False,
                                                     shared_weights=True)
        finally:
            torch.set_default_dtype(default)
        fan: dict[int, int] = {}
        paths = [ins for ins in self.tp.instructions if ins.has_weight]
        for ins in paths:
            fan[ins.i_out] = fan.get(ins.i_out, 0) + ins.path_shape[0] * ins.path_shape[1]
        scale = [torch.full((math.prod(ins.path_shape),), math.sqrt(fan[ins.i_out]), dtype=torch.float64)
                 for ins in paths]
        scale_t = torch.cat(scale) if scale else torch.zeros(0, dtype=torch.float64)
        self.register_buffer("_weight_scale", scale_t, persistent=False)
        # "normal": e3nn's N(0, 1) path weights, zero biases; "uniform": the SEGNN code's U(-1, 1) path weights
        # (U(-k, k) stored, k = fan_in^-1/2) and U(-k, k) biases
        w0 = torch.randn(self.tp.weight_numel, dtype=torch.float64) if init == "normal" else \
            2 * torch.rand(self.tp.weight_numel, dtype=torch.float64) - 1
        self.weight = nn.Parameter(w0 / scale_t)
        self.irreps_out = self.gate.irreps_out if gate else tp_out
        even = [(i, s) for i, ((m, ir), s) in enumerate(zip(self.tp.irreps_out, self.tp.irreps_out.slices()))
                if ir == o3.Irrep("0e")]
        self._bias_slices = [(s.start, s.stop) for _, s in even]
        nb = sum(b - a for a, b in self._bias_slices)
        b0 = torch.zeros(nb, dtype=torch.float64)
        if init == "uniform" and nb:
            k = torch.cat([torch.full((s.stop - s.start,), fan.get(i, 1) ** -0.5, dtype=torch.float64) for i, s in even])
            b0 = (2 * torch.rand(nb, dtype=torch.float64) - 1) * k
        self.bias = nn.Parameter(b0) if nb else None
        self.to(device=device, dtype=default if dtype is None else dtype)

    def path_weights(self) -> torch.Tensor:
        """e3nn's path weights (weight_numel,): the parameter divided by k (class docstring)."""
        return self.weight * self._weight_scale

    def forward(self, x: torch.Tensor, attr: torch.Tensor) -> torch.Tensor:
        dt = self.weight.dtype
        with torch.autocast(x.device.type, enabled=False):  # e3nn's contractions need one dtype: the weights'
            y = self.tp(x.to(dt), attr.to(dt), self.path_weights())
            if self._bias_slices:
                parts, k, last = [], 0, 0
                for a, b in self._bias_slices:
                    parts += [y[:, last:a], y[:, a:b] + self.bias[k:k + b - a]]
                    k, last = k + b - a, b
                y = torch.cat(parts + [y[:, last:]], dim=1)
            return self.gate(y) if self.gate is not None else y


class SEGNNLayer(nn.Module):
    r"""Steerable E(3)-equivariant graph layer (Brandstetter et al. 2022; see the module doc).

    Args:
        irreps_in, irreps_out: e3nn irreps of the node features (e.g. ``"2x1o + 1x0e"``).
        irreps_hidden: irreps of the messages and of the hidden update (gated).
        lmax_attr: the edge attribute is :math:`Y^{(\le l_a)}(x_j - x_i)` (normalised directions), degrees
            0..lmax_attr.
        sh_normalization: e3nn's normalisation of those spherical harmonics: ``"component"`` (default,
            :math:`\|Y^{(l)}\|^2 = 2l + 1`) or ``"integral"`` (the SEGNN code's; 1 / sqrt(4 pi) times that).
        edge_scalars: extra invariant edge features (E, edge_scalars) passed as ``edge_attr`` (concatenated
            to the message input with :math:`\|x_j - x_i\|^2`).
        residual: :math:`f' = f + \phi_f` when irreps_in == irreps_out.
        aggregation: "mean" (default) or "sum" of the messages :math:`m_{ij}` over j. SEGNN sums; the mean
            keeps the scale of the features independent of the degree (with sums, four layers of products
            grew the N-body features ~15x per layer at initialisation, measured).
        dist_scale: the message sees :math:`\|x_j - x_i\|^2 / \text{dist\_scale}^2`.
        distance: ``"squared"`` (default, the above) or ``"norm"``: :math:`\|x_j - x_i\| / \text{dist\_scale}`
            (the SEGNN code's).
        node_attr_mode: ``"average"`` (default): ``node_attr`` (N, dim of the attribute irreps) given to
            ``forward`` is averaged with the mean edge attribute, :math:`a_i = (\text{mean}_j a_{ij} +
            \text{node\_attr}_i) / 2`; ``"given"``: ``node_attr`` is used as it is (the caller builds it).
        init: initialisation of the tensor products (``"normal"`` or the SEGNN code's ``"uniform"``).
    Field types: the irreps as fields of ``group`` (default ``epdo.groups.o3(L)`` with L the largest degree;
    ``so3(L)`` for rotations only) on :class:`~epdo.graph.PointCloud`.
    """

    def __init__(self, irreps_in, irreps_out, irreps_hidden, lmax_attr: int = 2, edge_scalars: int = 0,
                 residual: bool = True, aggregation: str = "mean", dist_scale: float = 1.0,
                 sh_normalization: str = "component", distance: str = "squared", node_attr_mode: str = "average",
                 init: str = "normal", group=None, device=None, dtype=None):
        super().__init__()
        from e3nn import o3

        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in).simplify(), o3.Irreps(irreps_out).simplify()
        self.irreps_hidden = o3.Irreps(irreps_hidden).simplify()
        self.irreps_attr = o3.Irreps.spherical_harmonics(lmax_attr)
        self.lmax_attr, self.edge_scalars = int(lmax_attr), int(edge_scalars)
        if aggregation not in ("mean", "sum"):
            raise ValueError(f"SEGNNLayer: aggregation must be 'mean' or 'sum', got {aggregation!r}")
        if not dist_scale > 0:
            raise ValueError(f"SEGNNLayer: dist_scale must be > 0, got {dist_scale!r}")
        if sh_normalization not in ("component", "integral"):
            raise ValueError(f"SEGNNLayer: sh_normalization must be 'component' or 'integral', got {sh_normalization!r}")
        self.aggregation, self.dist_scale, self.sh_normalization = aggregation, float(dist_scale), sh_normalization
        if distance not in ("squared", "norm"):
            raise ValueError(f"SEGNNLayer: distance must be 'squared' or 'norm', got {distance!r}")
        if node_attr_mode not in ("average", "given"):
            raise ValueError(f"SEGNNLayer: node_attr_mode must be 'average' or 'given', got {node_attr_mode!r}")
        self.distance, self.node_attr_mode, self.init = distance, node_attr_mode, init
        fk = {"init": init, "device": device, "dtype": dtype}
        self.msg1 = _GatedTP(self.irreps_in + self.irreps_in + o3.Irreps(f"{1 + self.edge_scalars}x0e"),
                             self.irreps_attr, self.irreps_hidden, True, **fk)
        self.msg2 = _GatedTP(self.msg1.irreps_out, self.irreps_attr, self.irreps_hidden, True, **fk)
        self.upd1 = _GatedTP(self.irreps_in + self.msg2.irreps_out, self.irreps_attr, self.irreps_hidden, True, **fk)
        self.upd2 = _GatedTP(self.upd1.irreps_out, self.irreps_attr, self.irreps_out, False, **fk)
        self.residual = bool(residual) and self.irreps_in == self.irreps_out
        lmax = max([ir.l for _, ir in self.irreps_in + self.irreps_out + self.irreps_hidden] + [lmax_attr])
        G = _o3(lmax, group)
        self.in_type = irreps_field_type(self.irreps_in, G)
        self.out_type = irreps_field_type(self.irreps_out, G)

    def extra_repr(self) -> str:
        return (f"{self.irreps_in} -> {self.irreps_out}, hidden={self.irreps_hidden}, attr={self.irreps_attr}, "
                f"edge_scalars={self.edge_scalars}, residual={self.residual}, aggregation={self.aggregation!r}"
                + ("" if self.dist_scale == 1.0 else f", dist_scale={self.dist_scale:g}")
                + ("" if self.sh_normalization == "component" else f", sh_normalization={self.sh_normalization!r}")
                + ("" if self.distance == "squared" else f", distance={self.distance!r}")
                + ("" if self.node_attr_mode == "average" else f", node_attr_mode={self.node_attr_mode!r}")
                + ("" if self.init == "normal" else f", init={self.init!r}"))

    def edge_attributes(self, pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        r""":math:`Y^{(\le l_a)}(x_j - x_i)` per edge (E, attr dim)."""
        from e3nn import o3

        rel = pos[edge_index[0]] - pos[edge_index[1]]
        return o3.spherical_harmonics(self.irreps_attr, rel, normalize=True, normalization=self.sh_normalization)

    def forward(self, *args, edge_attr: torch.Tensor | None = None, node_attr: torch.Tensor | None = None):
        f, pos, ei = _signal(self, args, 3)
        src, dst = ei[0], ei[1]
        n, e = pos.shape[0], ei.shape[1]
        if self.edge_scalars and (edge_attr is None or edge_attr.shape != (e, self.edge_scalars)):
            raise GraphError(f"SEGNNLayer: expected edge_attr of shape ({e}, {self.edge_scalars}), got "
                             f"{None if edge_attr is None else tuple(edge_attr.shape)}")
        a_e = self.edge_attributes(pos, ei).to(f)
        a_n = scatter_mean(a_e, dst, n)
        if node_attr is not None:
            if node_attr.shape != a_n.shape:
                raise GraphError(f"SEGNNLayer: expected node_attr of shape {tuple(a_n.shape)} "
                                 f"({self.irreps_attr}), got {tuple(node_attr.shape)}")
            a_n = (a_n + node_attr.to(f)) / 2 if self.node_attr_mode == "average" else node_attr.to(f)
        elif self.node_attr_mode == "given":
            raise GraphError("SEGNNLayer: node_attr_mode='given' needs node_attr")
        d2 = (pos[src] - pos[dst]).pow(2).sum(-1, keepdim=True) / self.dist_scale**2
        if self.distance == "norm":
            d2 = d2.sqrt()
        parts = [f[dst], f[src], d2] + ([edge_attr.to(f)] if self.edge_scalars else [])
        m = self.msg2(self.msg1(torch.cat(parts, dim=1), a_e), a_e)
        agg = scatter_mean(m, dst, n) if self.aggregation == "mean" else scatter_sum(m, dst, n)
        out = self.upd2(self.upd1(torch.cat([f, agg], dim=1), a_n), a_n)
        return (f + out if self.residual else out, pos, ei)


def tensor_product_weights(irreps_in1, irreps_in2, irreps_out) -> int:
    """Weights of a fully connected tensor product, counted from the selection rules: every triple of
    fields (l1, p1), (l2, p2), (l, p) with |l1 - l2| <= l <= l1 + l2 and p = p1 p2 has mul1 * mul2 * mul weights."""
    from e3nn import o3

    n = 0
    for m1, a in o3.Irreps(irreps_in1):
        for m2, b in o3.Irreps(irreps_in2):
            for mo, c in o3.Irreps(irreps_out):
                if abs(a.l - b.l) <= c.l <= a.l + b.l and c.p == a.p * b.p:
                    n += m1 * m2 * mo
    return n


# --- lifted: positions x orientations -----------------------------------------------------------

def icosahedron_vertices(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The 12 unit vertices (0, +-1, +-phi) and their cyclic permutations: the icosahedral group (and the
    inversion) permutes them, so a lifted network on them is exactly equivariant to those 120 elements."""
    phi = (1 + math.sqrt(5)) / 2
    base = [(0.0, s1, s2 * phi) for s1 in (1, -1) for s2 in (1, -1)]
    pts = [v[k:] + v[:k] for k in range(3) for v in base]
    v = torch.tensor(pts, dtype=dtype)
    return v / v.norm(dim=1, keepdim=True)


def sphere_grid(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` nearly uniform unit vectors (the Fibonacci lattice), (n, 3)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"sphere_grid: expected a positive int, got {n!r}")
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * k / n
    phi = math.pi * (1 + math.sqrt(5)) * k
    r = (1 - z * z).sqrt()
    return torch.stack([r * phi.cos(), r * phi.sin(), z], dim=1).to(dtype)


class LiftedConvLayer(nn.Module):
    r"""Separable convolution on positions x orientations (see the module doc for the invariants).

    Args:
        channels: C scalar fields per orientation (in and out).
        hidden: width of the kernel MLPs and of the pointwise update :math:`\psi` (Linear-SiLU-Linear).
        edge_scalars: invariant edge features (E, edge_scalars) given as ``edge_attr``, fed to the spatial kernel.

    Field types: C trivial fields of ``group`` (default ``epdo.groups.o3(0)``) on
    :class:`~epdo.graph.PositionOrientationCloud`.
    """

    def __init__(self, channels: int, hidden: int = 64, edge_scalars: int = 0, act: type[nn.Module] = nn.SiLU,
                 group=None, device=None, dtype=None):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"LiftedConvLayer: channels must be a positive int, got {channels!r}")
        fk = {"device": device, "dtype": dtype}
        self.channels, self.hidden, self.edge_scalars = channels, hidden, int(edge_scalars)
        self.spatial = _mlp([2 + self.edge_scalars, hidden, channels], act, fk)
        self.sphere = _mlp([1, hidden, channels], act, fk)
        self.update = _mlp([channels, hidden, channels], act, fk)
        G = _o3(0, group)
        self.in_type = self.out_type = FieldType(G, [G.trivial] * channels, PositionOrientationCloud())

    @staticmethod
    def count_parameters(channels: int, hidden: int = 64, edge_scalars: int = 0) -> int:
        """The number of parameters (independent formula)."""
        return (_mlp_params([2 + edge_scalars, hidden, channels]) + _mlp_params([1, hidden, channels])
                + _mlp_params([channels, hidden, channels]))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}, edge_scalars={self.edge_scalars}"

    def forward(self, *args, edge_attr: torch.Tensor | None = None):
        f, pos, ori, ei = _signal(self, args, 4)
        src, dst = ei[0], ei[1]
        n, e = pos.shape[0], ei.shape[1]
        rel = pos[src] - pos[dst]  # x_j - x_i
        ori = ori.to(f)
        alpha = rel @ ori.T  # (E, O)
        beta = (rel.pow(2).sum(-1, keepdim=True) - alpha.pow(2)).clamp_min(0)
        inv = [alpha.unsqueeze(-1), beta.unsqueeze(-1)]
        if self.edge_scalars:
            if edge_attr is None or edge_attr.shape != (e, self.edge_scalars):
                raise GraphError(f"LiftedConvLayer: expected edge_attr of shape ({e}, {self.edge_scalars}), got "
                                 f"{None if edge_attr is None else tuple(edge_attr.shape)}")
            inv.append(edge_attr.to(f)[:, None, :].expand(e, ori.shape[0], self.edge_scalars))
        k_s = self.spatial(torch.cat(inv, dim=-1))  # (E, O, C)
        m = scatter_sum(k_s * f[src], dst, n)  # (N, O, C)
        k_o = self.sphere((ori @ ori.T).unsqueeze(-1))  # (O, O, C)
        m = torch.einsum("abc,nbc->nac", k_o, m) / ori.shape[0]
        return (f + self.update(m), pos, ori, ei)


# --- translations and permutations ------------------------------------------------------------------

def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(torch.linalg.vector_norm(b))
    num = float(torch.linalg.vector_norm(a - b))
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


@torch.no_grad()
def check_euclidean(module: nn.Module, x: Any, n_translations: int = 3, n_permutations: int = 3, seed: int = 0,
                    **kwargs) -> dict[str, float]:
    r"""Largest relative errors of ``module`` on the signal ``x`` under random translations
    (:math:`\|f(x + t) - (f(x) + t)\| / \|f(x)\|`, positions moved, features unchanged) and node
    permutations (:math:`\|f(Px) - P f(x)\| / \|f(x)\|`), measured on the domain's ``features`` (features and
    positions). ``kwargs`` go to the module (their node / edge axes are permuted too when they are tensors
    with N rows, e.g. ``vel``)."""
    dom_in, dom_out = module.in_type.domain, module.out_type.domain
    gen = torch.Generator().manual_seed(seed)
    y = dom_out.features(module(x, **kwargs))
    n = x[1].shape[0]
    worst = {"translation": 0.0, "permutation": 0.0}
    for _ in range(n_translations):
        t = 3 * torch.randn(3, generator=gen, dtype=torch.float64)
        yt = dom_out.features(module(dom_in.translate(x, t), **kwargs))
        ref = dom_out.features(dom_out.translate(module(x, **kwargs), t))
        worst["translation"] = max(worst["translation"], _rel(yt, ref))
    for _ in range(n_permutations):
        perm = torch.randperm(n, generator=gen)
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(n)
        kw = {k: (v[perm] if isinstance(v, torch.Tensor) and v.shape[:1] == (n,) else v) for k, v in kwargs.items()}
        yp = dom_out.features(module(dom_in.permute(x, perm), **kw))
        worst["permutation"] = max(worst["permutation"], _rel(yp, y[perm]))
    return worst
