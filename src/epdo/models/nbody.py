r"""N-body models (paper 003 section 9): ``model(pos, vel, charge)`` with ``(B, 5, 3)``, ``(B, 5, 3)``,
``(B, 5, 1)`` returns the predicted positions ``(B, 5, 3)`` 1,000 steps later (:mod:`epdo.data.nbody`).

Each system is a fully connected graph of its particles (batched as a disjoint union).

- ``egnn-nbody`` (Satorras et al. 2021, section 5.1): :math:`h^0_i = W|v_i|`, edge attributes
  :math:`(q_i q_j, \|x^0_i - x^0_j\|^2)` (the charge product and the squared distance of the *input* positions,
  fixed through the layers, as in the reference implementation), 4 :class:`~epdo.graph.EGNNLayer` s of width 64 with velocity updates; output the last
  positions (the last layer updates positions only: its features would not be read). E(3)-equivariant (positions, velocities), invariant to permutations.
- ``segnn-nbody`` (Brandstetter et al. 2022): node features :math:`(x_i - \bar x, v_i, \|v_i\|)` as
  ``2x1o + 1x0e``, l = 1 hidden features, edge attributes :math:`Y^{(\le 2)}(x_j - x_i)`, node attributes
  the average of their mean and :math:`Y^{(\le 2)}(v_i)`, edge scalar :math:`q_i q_j`; 4
  :class:`~epdo.graph.SEGNNLayer` s (mean aggregation, distances over 3); output a ``1x1o`` displacement.
  O(3)-equivariant.
- ``ponita-nbody`` (the lifted network; Bekkers et al. 2024): scalar fields on positions x 12 orientations,
  embedded from :math:`(o\cdot v_i, \|v_i\|, q_i)`, 4 :class:`~epdo.graph.LiftedConvLayer` s, displacement
  :math:`\frac1O \sum_a w^\top f_{ia}\, o_a`. The orientations are the icosahedron's vertices ``o`` turned
  into each system's principal axes (``frame="pca"``, the default): with :math:`R(X)` the eigenvectors of
  :math:`\sum_i (x_i - \bar x)(x_i - \bar x)^\top` (columns, any signs), the network runs on the grid
  :math:`R(X)\,o`. Under :math:`Q \in O(3)`, :math:`R(QX) = Q R(X) D` with D a diagonal of signs, and every
  such D maps the icosahedron in its standard orientation onto itself (its mirror planes are the coordinate
  planes), so the grid turns with the input and the network is exactly O(3)-equivariant, for any rotation or
  reflection (float64 <= 1e-9; where two principal moments coincide the axes are not unique and the result
  depends on the ones ``eigh`` picks). The frame carries no gradient (it does not depend on the weights).
  ``frame="fixed"`` keeps PONITA's global grid: exact only for the 120 elements of the icosahedral group with
  inversion (they permute the grid), elsewhere up to the sphere's sampling (9e-5 measured).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import graph
from ..graph.layers import _GatedTP, _mlp
from .registry import TrainDefaults, register_model

__all__ = ["EGNNNBody", "SEGNNNBody", "LiftedNBody", "nbody_example_inputs", "EGNNNBodyPlain", "SEGNNNBodyPlain",
           "LiftedNBodyPlain", "principal_axes"]

# Published N-body test MSE (003 section 9, the SEGNN paper's Table 2): linear 0.0819, SE(3)-Transformer 0.0244,
# TFN 0.0155, EGNN 0.0070, SEGNN 0.0043 (its best row has l_a = 1; segnn-nbody uses l_a = 2 as issue 13 asks).


def _check(pos, vel, charge, who: str) -> None:
    for name, t, last in (("pos", pos, 3), ("vel", vel, 3), ("charge", charge, 1)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{who}: expected {name} as a torch.Tensor (B, N, {last}), got {type(t).__name__}")
        if t.dim() != 3 or t.shape[-1] != last or t.shape[:2] != pos.shape[:2]:
            raise ValueError(f"{who}: expected pos (B, N, 3), vel (B, N, 3), charge (B, N, 1) with the same B, N; "
                             f"got {name} of shape {tuple(t.shape)} (pos {tuple(pos.shape)})")
        if not t.is_floating_point():
            raise TypeError(f"{who}: expected floating {name}, got dtype {t.dtype}")
    if pos.shape[1] < 2:
        raise ValueError(f"{who}: expected at least 2 particles per system, got pos of shape {tuple(pos.shape)}")


def _flat_graph(pos: torch.Tensor):
    b, n = pos.shape[:2]
    batch = torch.arange(b, device=pos.device).repeat_interleave(n)
    ei = graph.fully_connected_graph(batch.cpu()).to(pos.device)
    return ei, batch


def nbody_example_inputs(batch: int = 2, generator: torch.Generator | None = None, dtype=torch.float32,
                         n: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``(pos, vel, charge)`` of ``batch`` systems of ``n`` particles (charges +-1)."""
    pos = torch.randn(batch, n, 3, generator=generator, dtype=dtype)
    vel = 0.5 * torch.randn(batch, n, 3, generator=generator, dtype=dtype)
    charge = torch.randint(0, 2, (batch, n, 1), generator=generator).to(dtype) * 2 - 1
    return pos, vel, charge


def _egnn_edge_attributes(x: torch.Tensor, q: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """EGNN's N-body edge attributes (E, 2): charge product and squared distance of the input positions."""
    rel = x[dst] - x[src]
    return torch.cat([q[src] * q[dst], (rel * rel).sum(-1, keepdim=True)], dim=1)


class EGNNNBody(nn.Module):
    """EGNN for the charged N-body task (see the module doc)."""

    def __init__(self, hidden: int = 64, layers: int = 4, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.embed = nn.Linear(1, hidden, **fk)
        self.layers = nn.ModuleList(graph.EGNNLayer(hidden, hidden, hidden, edge_channels=2, velocity=True,
                                                    update_features=k < layers - 1, **fk) for k in range(layers))

    def forward(self, pos: torch.Tensor, vel: torch.Tensor, charge: torch.Tensor) -> torch.Tensor:
        _check(pos, vel, charge, "egnn-nbody")
        b, n = pos.shape[:2]
        ei, _ = _flat_graph(pos)
        x, v, q = pos.reshape(-1, 3), vel.reshape(-1, 3), charge.reshape(-1, 1)
        h = self.embed(v.norm(dim=1, keepdim=True))
        a = _egnn_edge_attributes(x, q, ei[0], ei[1])
        for layer in self.layers:
            h, x, _ = layer(h, x, ei, edge_attr=a, vel=v)
        return x.reshape(b, n, 3)


_SEGNN_CONFIGS = {
    # epdo's: l_a = 2 as issue 13 asks, mean aggregation, averaged node attributes, a near-zero linear head
    "epdo": dict(hidden="32x0e + 16x1o", lmax_attr=2, aggregation="mean", sh_normalization="component"),
    # the SEGNN code's N-body run (README: lmax_h = 1, lmax_attr = 1, 64 weight-balanced features, norm none)
    "reference": dict(hidden="32x0e + 32x1o", lmax_attr=1, aggregation="sum", sh_normalization="integral"),
}


class SEGNNNBody(nn.Module):
    """SEGNN for the charged N-body task (see the module doc); ``hidden`` irreps default l = 1.

    ``config="reference"`` follows the SEGNN code's N-body model instead (``hidden`` 32x0e + 32x1o, the
    weight-balanced irreps of its 64 features; l_a = 1; summed messages; "integral" harmonics; node attributes
    mean edge harmonic plus velocity harmonic, scalar part set to 1; the distance, not its square, in the
    messages; U(-k, k) initialisation with biases; a gated and a plain tensor product as the head).
    Keyword arguments given explicitly override the configuration's."""

    def __init__(self, hidden: str | None = None, layers: int = 4, lmax_attr: int | None = None,
                 aggregation: str | None = None, sh_normalization: str | None = None, config: str = "epdo",
                 device=None, dtype=None):
        super().__init__()
        from e3nn import o3

        if config not in _SEGNN_CONFIGS:
            raise ValueError(f"segnn-nbody: config must be one of {tuple(_SEGNN_CONFIGS)}, got {config!r}")
        given = dict(hidden=hidden, lmax_attr=lmax_attr, aggregation=aggregation, sh_normalization=sh_normalization)
        c = {**_SEGNN_CONFIGS[config], **{k: v for k, v in given.items() if v is not None}}
        self.config, ref = config, config == "reference"
        fk = {"device": device, "dtype": dtype}
        tk = {"init": "uniform" if ref else "normal", **fk}
        self.irreps_attr = o3.Irreps.spherical_harmonics(c["lmax_attr"])
        self.embed = _GatedTP("2x1o + 1x0e", self.irreps_attr, c["hidden"], False, **tk)
        self.layers = nn.ModuleList(graph.SEGNNLayer(
            self.embed.irreps_out, self.embed.irreps_out, c["hidden"], lmax_attr=c["lmax_attr"], edge_scalars=1,
            dist_scale=1.0 if ref else 3.0, aggregation=c["aggregation"], sh_normalization=c["sh_normalization"],
            distance="norm" if ref else "squared", node_attr_mode="given" if ref else "average", **tk)
            for _ in range(layers))
        self.pre_head = _GatedTP(self.embed.irreps_out, self.irreps_attr, c["hidden"], True, **tk) if ref else None
        self.head = _GatedTP(self.embed.irreps_out, self.irreps_attr, "1x1o", False, **tk)
        if not ref:
            with torch.no_grad():  # start near "the particles stay where they are", as EGNN's coordinate MLP does
                self.head.weight.mul_(0.01)

    def extra_repr(self) -> str:
        return "" if self.config == "epdo" else f"config={self.config!r}"

    def node_attributes(self, a_e: torch.Tensor, y_v: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
        """The node attributes the embedding and the head read (and, in the reference configuration, every
        layer): the average of the mean edge harmonic and the velocity harmonic; reference: their sum with the
        scalar part set to 1."""
        mean = graph.layers.scatter_mean(a_e, dst, n)
        if self.config != "reference":
            return (mean + y_v) / 2
        a_n = mean + y_v
        return torch.cat([torch.ones_like(a_n[:, :1]), a_n[:, 1:]], dim=1)

    def forward(self, pos: torch.Tensor, vel: torch.Tensor, charge: torch.Tensor) -> torch.Tensor:
        from e3nn import o3

        _check(pos, vel, charge, "segnn-nbody")
        b, n = pos.shape[:2]
        ei, _ = _flat_graph(pos)
        centred = (pos - pos.mean(dim=1, keepdim=True)).reshape(-1, 3)
        x, v, q = pos.reshape(-1, 3), vel.reshape(-1, 3), charge.reshape(-1, 1)
        f = torch.cat([centred, v, v.norm(dim=1, keepdim=True)], dim=1)
        layer0 = self.layers[0]
        a_e = layer0.edge_attributes(x, ei)
        y_v = o3.spherical_harmonics(self.irreps_attr, v, normalize=True, normalization=layer0.sh_normalization)
        a_n = self.node_attributes(a_e, y_v, ei[1], x.shape[0])  # what each layer uses
        qq = q[ei[0]] * q[ei[1]]
        h = self.embed(f, a_n)
        for layer in self.layers:
            h, _, _ = layer(h, x, ei, edge_attr=qq, node_attr=a_n if self.config == "reference" else y_v)
        if self.pre_head is not None:
            h = self.pre_head(h, a_n)
        return (x + self.head(h, a_n)).reshape(b, n, 3)


_FRAMES = ("pca", "fixed")


def principal_axes(pos: torch.Tensor) -> torch.Tensor:
    r"""(B, 3, 3) orthogonal matrices whose columns are the principal axes of each system ``pos`` (B, N, 3):
    the eigenvectors of :math:`\sum_i (x_i - \bar x)(x_i - \bar x)^\top` (ascending moments; signs as
    ``torch.linalg.eigh`` returns them). Equivariant up to column signs, :math:`R(QX) = Q R(X) D`; no gradient."""
    with torch.no_grad():
        c = pos - pos.mean(dim=1, keepdim=True)
        return torch.linalg.eigh(c.transpose(1, 2) @ c)[1]


class LiftedNBody(nn.Module):
    """The lifted (position x orientation) network for the charged N-body task (see the module doc)."""

    def __init__(self, channels: int = 32, layers: int = 4, hidden: int = 64, frame: str = "pca", device=None,
                 dtype=None):
        super().__init__()
        if frame not in _FRAMES:
            raise ValueError(f"ponita-nbody: frame must be one of {_FRAMES}, got {frame!r}")
        self.frame = frame
        fk = {"device": device, "dtype": dtype}
        self.register_buffer("orientations", graph.icosahedron_vertices().to(dtype or torch.get_default_dtype()))
        self.embed = _mlp([3, hidden, channels], nn.SiLU, fk)
        self.layers = nn.ModuleList(graph.LiftedConvLayer(channels, hidden, edge_scalars=1, **fk) for _ in range(layers))
        self.readout = nn.Linear(channels, 1, **fk)

    def forward(self, pos: torch.Tensor, vel: torch.Tensor, charge: torch.Tensor) -> torch.Tensor:
        _check(pos, vel, charge, "ponita-nbody")
        if self.frame == "pca":  # the network in each system's principal axes, its displacement turned back
            R = principal_axes(pos)
            return pos + (self._fixed(pos @ R, vel @ R, charge) - pos @ R) @ R.transpose(1, 2)
        return self._fixed(pos, vel, charge)

    def extra_repr(self) -> str:
        return f"frame={self.frame!r}"

    def _fixed(self, pos: torch.Tensor, vel: torch.Tensor, charge: torch.Tensor) -> torch.Tensor:
        b, n = pos.shape[:2]
        ei, _ = _flat_graph(pos)
        x, v, q = pos.reshape(-1, 3), vel.reshape(-1, 3), charge.reshape(-1, 1)
        o = self.orientations.to(x)
        nv = v.norm(dim=1, keepdim=True)
        inv = torch.stack([v @ o.T, nv.expand(-1, o.shape[0]), q.expand(-1, o.shape[0])], dim=-1)  # (N, O, 3)
        f = self.embed(inv)
        qq = q[ei[0]] * q[ei[1]]
        for layer in self.layers:
            f, _, _, _ = layer(f, x, o, ei, edge_attr=qq)
        shift = (self.readout(f) * o).mean(dim=1)  # (N, 3)
        return (x + shift).reshape(b, n, 3)


# --- registration -------------------------------------------------------------------------------

def _register(name: str, **kw):
    return register_model(name=name, inputs="nbody", task="regression", example_inputs=nbody_example_inputs,
                          input_shape=(5, 3), **kw)


@_register("egnn-nbody", paper="Brandstetter 2022, Table 2", paper_error="0.0070 MSE",
           train=TrainDefaults(optimizer="adam", lr=5e-4, epochs=1000, batch_size=100))
def egnn_nbody(**kwargs):
    """EGNN, 4 layers of width 64, for the charged N-body task."""
    return EGNNNBody(**kwargs)


@_register("segnn-nbody", paper="Brandstetter 2022, Table 2", paper_error="0.0043 MSE",
           train=TrainDefaults(optimizer="adam", lr=5e-4, epochs=1000, batch_size=100))
def segnn_nbody(**kwargs):
    """SEGNN with l = 1 features and l = 2 edge attributes, 4 layers, for the charged N-body task."""
    return SEGNNNBody(**kwargs)


@_register("ponita-nbody", paper="Bekkers et al. 2024 (PONITA); tutorial 003 section 9",
           train=TrainDefaults(optimizer="adam", lr=5e-4, epochs=1000, batch_size=100))
def ponita_nbody(**kwargs):
    """The lifted network on positions x 12 orientations (the icosahedron in each system's principal axes: exactly
    O(3)-equivariant), 4 layers, for the charged N-body task."""
    return LiftedNBody(**kwargs)


# --- export: the same functions in plain torch (and e3nn's modules), traced by torch.fx ----------------

def _plain_graph(pos: torch.Tensor):
    """(src, dst, particles per system) of the fully connected graphs of ``pos`` (B, N, 3), in plain torch."""
    b, n = pos.shape[0], pos.shape[1]
    batch = torch.arange(b, device=pos.device).repeat_interleave(n)
    same = batch[:, None] == batch[None, :]
    same = same & ~torch.eye(same.shape[0], dtype=torch.bool, device=pos.device)
    nz = same.nonzero()
    return nz[:, 1], nz[:, 0], n


def _sum_into(src: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return src.new_zeros(like.shape[0], src.shape[1]).index_add(0, index, src)


class EGNNNBodyPlain(nn.Module):
    """:class:`EGNNNBody`'s eval function in plain torch (its ``nn.Linear`` / ``nn.Sequential`` copied)."""

    def __init__(self, model: EGNNNBody):
        super().__init__()
        import copy

        self.embed = copy.deepcopy(model.embed)
        self.edge = nn.ModuleList(copy.deepcopy(L.edge_mlp) for L in model.layers)
        self.coord = nn.ModuleList(copy.deepcopy(L.coord_mlp) for L in model.layers)
        self.vel = nn.ModuleList(copy.deepcopy(L.vel_mlp) for L in model.layers)
        self.node = nn.ModuleList(copy.deepcopy(L.node_mlp) for L in model.layers[:-1])

    def forward(self, pos, vel, charge):
        src, dst, n = _plain_graph(pos)
        x, v, q = pos.reshape(-1, 3), vel.reshape(-1, 3), charge.reshape(-1, 1)
        h = self.embed(v.norm(dim=1, keepdim=True))
        a = _egnn_edge_attributes(x, q, src, dst)
        for k, (edge, coord, velm) in enumerate(zip(self.edge, self.coord, self.vel)):
            rel = x[dst] - x[src]
            m = edge(torch.cat([h[dst], h[src], (rel * rel).sum(-1, keepdim=True), a], 1))
            x = x + _sum_into(rel * coord(m), dst, x) / (n - 1) + velm(h) * v
            if k < len(self.node):
                h = h + self.node[k](torch.cat([h, _sum_into(m, dst, h)], 1))
        return x.reshape(pos.shape)


def _plain_tp(mod: _GatedTP, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    y = mod.tp(x, a, mod.weight * mod._weight_scale)
    k = 0
    for s, e in mod._bias_slices:
        y = torch.cat([y[:, :s], y[:, s:e] + mod.bias[k:k + e - s], y[:, e:]], 1)
        k += e - s
    return mod.gate(y) if mod.gate is not None else y


class SEGNNNBodyPlain(nn.Module):
    """:class:`SEGNNNBody`'s eval function calling e3nn's tensor products, gates and spherical harmonics
    directly (no epdo code)."""

    def __init__(self, model: SEGNNNBody):
        super().__init__()
        import copy

        self.model = copy.deepcopy(model)  # holds the e3nn modules; its epdo wrappers are not called
        self.sh = _SH(model.irreps_attr, model.layers[0].sh_normalization)

    def forward(self, pos, vel, charge):
        m = self.model
        src, dst, n = _plain_graph(pos)
        x, v, q = pos.reshape(-1, 3), vel.reshape(-1, 3), charge.reshape(-1, 1)
        centred = (pos - pos.mean(1, keepdim=True)).reshape(-1, 3)
        a_e = self.sh(x[src] - x[dst])
        y_v = self.sh(v)
        mean = _sum_into(a_e, dst, x) / (n - 1)
        if m.config == "reference":
            a_n = mean + y_v
            a_n = torch.cat([torch.ones_like(a_n[:, :1]), a_n[:, 1:]], 1)
        else:
            a_n = (mean + y_v) / 2
        qq = q[src] * q[dst]
        h = _plain_tp(m.embed, torch.cat([centred, v, v.norm(dim=1, keepdim=True)], 1), a_n)
        d2 = ((x[src] - x[dst]) ** 2).sum(-1, keepdim=True)
        for L in m.layers:
            d = d2 / L.dist_scale**2
            inp = torch.cat([h[dst], h[src], d.sqrt() if L.distance == "norm" else d, qq], 1)
            msg = _plain_tp(L.msg2, _plain_tp(L.msg1, inp, a_e), a_e)
            agg = _sum_into(msg, dst, h) / ((n - 1) if L.aggregation == "mean" else 1)
            h = h + _plain_tp(L.upd2, _plain_tp(L.upd1, torch.cat([h, agg], 1), a_n), a_n)
        if m.pre_head is not None:
            h = _plain_tp(m.pre_head, h, a_n)
        return (x + _plain_tp(m.head, h, a_n)).reshape(pos.shape)


class _SH(nn.Module):
    def __init__(self, irreps, normalization: str = "component"):
        super().__init__()
        from e3nn import o3

        self.sh = o3.SphericalHarmonics(irreps, normalize=True, normalization=normalization)

    def forward(self, x):
        return self.sh(x)


class LiftedNBodyPlain(nn.Module):
    """:class:`LiftedNBody`'s eval function in plain torch."""

    def __init__(self, model: LiftedNBody):
        super().__init__()
        import copy

        self.register_buffer("orientations", model.orientations.clone())
        self.frame = model.frame
        self.embed, self.readout = copy.deepcopy(model.embed), copy.deepcopy(model.readout)
        self.spatial = nn.ModuleList(copy.deepcopy(L.spatial) for L in model.layers)
        self.sphere = nn.ModuleList(copy.deepcopy(L.sphere) for L in model.layers)
        self.update = nn.ModuleList(copy.deepcopy(L.update) for L in model.layers)

    def forward(self, pos, vel, charge):
        if self.frame == "pca":
            c = pos - pos.mean(dim=1, keepdim=True)
            R = torch.linalg.eigh(c.transpose(1, 2) @ c)[1]
            return pos + (self._fixed(pos @ R, vel @ R, charge) - pos @ R) @ R.transpose(1, 2)
        return self._fixed(pos, vel, charge)

    def _fixed(self, pos, vel, charge):
        src, dst, n = _plain_graph(pos)
        x, v, q = pos.reshape(-1, 3), vel.reshape(-1, 3), charge.reshape(-1, 1)
        o = self.orientations.to(x)
        no = o.shape[0]
        inv = torch.stack([v @ o.T, v.norm(dim=1, keepdim=True).expand(-1, no), q.expand(-1, no)], dim=-1)
        f = self.embed(inv)
        qq = (q[src] * q[dst])[:, None, :].expand(-1, no, 1)
        rel = x[src] - x[dst]
        alpha = rel @ o.T
        beta = ((rel * rel).sum(-1, keepdim=True) - alpha * alpha).clamp_min(0)
        cos = (o @ o.T).unsqueeze(-1)
        for spatial, sphere, update in zip(self.spatial, self.sphere, self.update):
            k_s = spatial(torch.cat([alpha.unsqueeze(-1), beta.unsqueeze(-1), qq], -1))
            msg = torch.zeros_like(f).index_add(0, dst, k_s * f[src])
            f = f + update(torch.einsum("abc,nbc->nac", sphere(cos), msg) / no)
        return (x + (self.readout(f) * o).mean(1)).reshape(pos.shape)


class _E3nnLeafTracer(torch.fx.Tracer):
    """fx tracer that keeps e3nn's modules whole (their own forwards are code-generated)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("e3nn") or super().is_leaf_module(m, qualname)


def _trace(plain: nn.Module, name: str) -> torch.fx.GraphModule:
    tracer = _E3nnLeafTracer()
    g = tracer.trace(plain.eval())
    g._tracer_cls = None
    for node in g.nodes:
        node.type = None
    gm = torch.fx.GraphModule(tracer.root, g, class_name=name)
    gm._tracer_cls = None
    return gm.eval()


def _register_exporters() -> None:
    from ..export import register_exporter

    for cls, plain in ((EGNNNBody, EGNNNBodyPlain), (SEGNNNBody, SEGNNNBodyPlain), (LiftedNBody, LiftedNBodyPlain)):
        register_exporter(cls)(lambda model, plain=plain: _trace(plain(model), f"{type(model).__name__}Export"))


_register_exporters()
