r"""Group elements for group convolutions and partial PDO layers: a finite group's grid, Haar Monte Carlo
samples, learned partial distributions (paper 004, sections 2.2 and 3). Used by :mod:`epdo.gconv` and by
``epdo.nn.PDOConv(partial=True)``.

Every sampler is a ``torch.nn.Module`` whose call returns an :class:`Elements` (planar point-group
elements :math:`r_\theta f^s` as tensors, with quadrature weights) and keeps it in ``current`` for the next
layer, whose *input* domain it is (PITFALLS 26: the distribution lives on a layer's output domain).

- :class:`FiniteElements`: all elements of C_N / D_N in ``G.elements`` order (channel order of a regular field);
  cos / sin are exact on multiples of 90 degrees.
- :class:`HaarSampler`: SO(2) / O(2) by Monte Carlo. Training: ``n`` i.i.d. uniform angles, drawn anew at
  every call (one draw per layer per batch); O(2): ``n / 2`` unflipped and ``n / 2`` flipped (stratified Haar
  samples). **Evaluation is deterministic**: the grid C_n (O(2): D_{n/2}).
- :class:`PartialSampler`: the learned distribution of 004 Eq. 8-10. Rotations
  :math:`u = \theta\,\varepsilon`, :math:`\varepsilon \sim U[-1, 1]` (the Lie algebra of SO(2) pushed to the
  group; reparameterisation trick, so the loss is differentiable in :math:`\theta`), with
  :math:`\lceil n\theta/\pi\rceil` samples (the count shrinks with :math:`\theta`: PITFALLS 24).
  Reflections: the flipped coset is included with learned probability p, drawn by straight-through
  Gumbel-softmax (the hard 0/1 draw enters as the weight of the flipped elements, its gradient is the soft
  one's). E(2) = the product of both. Evaluation: the grid :math:`\theta(-1 + 2j/n_\theta)` (at
  :math:`\theta = \pi` the C_n grid of :class:`HaarSampler`), the flipped coset iff p >= 1/2.

>>> from epdo import groups
>>> s = HaarSampler(groups.so2(0), 8).eval()
>>> s().angle.shape, s.count()
(torch.Size([8]), 8)
>>> p = PartialSampler(groups.so2(0), 8, theta=0.5)
>>> p.count()   # ceil(8 * 0.5)
4
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..groups import EuclideanGroup, Group, PlanarGroup
from .base import FullPrecisionConstants

__all__ = ["Elements", "ElementSampler", "FiniteElements", "HaarSampler", "PartialSampler", "point_group",
           "relative", "eval_elements", "input_elements", "interpolate_relative", "continuous_extension",
           "attach_input_sampler"]


class Elements(NamedTuple):
    r"""Elements :math:`u_i = r_{\theta_i} f^{s_i}` of a planar point group, acting on the plane by
    :math:`M_i = R(\theta_i) F^{s_i}` (F = diag(1, -1)); ``weight`` w_i are the quadrature weights of the
    next layer's sum (1, or the straight-through Bernoulli draw of a flipped coset); ``index`` the position
    in ``G.elements`` for finite groups (else None)."""

    angle: torch.Tensor
    flip: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    weight: torch.Tensor
    index: torch.Tensor | None = None

    def __len__(self) -> int:  # noqa: D105 - the number of elements (so do not use _replace / _make)
        return int(self.angle.shape[0])

    def matrices(self) -> torch.Tensor:
        """``(S, 2, 2)``: :math:`R(\\theta) F^s`."""
        c, s, sign = self.cos, self.sin, 1 - 2 * self.flip
        return torch.stack([torch.stack([c, -s * sign], -1), torch.stack([s, c * sign], -1)], -2)


def relative(u: Elements, v: Elements, group: PlanarGroup) -> tuple[torch.Tensor, ...]:
    r"""The relative elements :math:`u_i^{-1} v_j` as ``(cos, sin, flip, index)`` of shape ``(S_u, S_v)``.

    :math:`(s_u, \theta_u)^{-1}(s_v, \theta_v) = (s_u \oplus s_v, (-1)^{s_u}(\theta_v - \theta_u))`; cos and sin
    by the angle-difference formulas (exact where the inputs are); ``index`` for finite groups.
    """
    cu, su, fu = u.cos[:, None], u.sin[:, None], u.flip[:, None]
    cv, sv, fv = v.cos[None, :], v.sin[None, :], v.flip[None, :]
    cos = cv * cu + sv * su
    sin = (1 - 2 * fu) * (sv * cu - cv * su)
    flip = (fu - fv).abs()
    index = None
    if u.index is not None and v.index is not None:
        N = group.N
        ku, kv = u.index[:, None] % N, v.index[None, :] % N
        iu, iv = u.index[:, None] // N, v.index[None, :] // N
        rot = torch.where(iu == 1, ku - kv, kv - ku) % N
        index = (iu ^ iv) * N + rot
    return cos, sin, flip, index


def interpolate_relative(values: torch.Tensor, u: Elements, v: Elements, group: PlanarGroup) -> torch.Tensor:
    r"""A function on the finite group ``group`` (C_N or D_N), ``values`` of shape ``(..., |G|)`` indexed as
    ``G.elements``, evaluated at the relative elements :math:`u_i^{-1} v_j` of any planar elements:
    ``(..., S_u, S_v)``, linear in the angle of the rotation part between neighbouring grid angles (on the
    flip's coset for D_N). Exact on grid elements; piecewise linear, so differentiable in the angles except
    where a relative angle crosses a grid angle."""
    N = group.N
    cos, sin, flip, _ = relative(u, v, group)
    p = torch.remainder(torch.atan2(sin, cos) * (N / (2 * math.pi)), N)
    k0 = torch.floor(p).clamp(max=N - 1)
    t = (p - k0).to(values.dtype)
    k0 = k0.long()
    k1 = (k0 + 1) % N
    base = flip.long() * N if group.reflections else 0
    return values[..., base + k0] * (1 - t) + values[..., base + k1] * t


def continuous_extension(group: PlanarGroup) -> tuple[PlanarGroup, int]:
    """The group a partial layer on fields of ``group`` samples from, and its full sample count: C_N -> (SO(2),
    N), D_N -> (O(2), 2N), the mirror group D_1 -> (D_1, 2)."""
    from ..groups import dihedral, o2, so2

    if group.reflections and group.N == 1:
        return dihedral(1), 2
    return (o2(0), 2 * group.N) if group.reflections else (so2(0), group.N)


def attach_input_sampler(layer: nn.Module, in_elements, group: PlanarGroup, who: str) -> None:
    """Give a partial layer on fields of the finite ``group`` its input elements: ``in_elements`` (the previous
    layer's sampler, over ``group`` or its :func:`continuous_extension`; kept outside the layer's submodules,
    the previous layer owns it) or, if None, all elements of ``group`` (``layer.in_sampler``)."""
    if in_elements is None:
        layer.in_sampler = FiniteElements(group, dtype=layer._fk["dtype"], device=layer._fk["device"])
        return
    if not isinstance(in_elements, ElementSampler):
        raise TypeError(f"{who}: in_elements must be a sampler (previous_layer.sampler), got {type(in_elements).__name__}")
    g = in_elements.group
    cont = continuous_extension(group)[0]
    if not (g == group or g == cont or (not g.is_finite and not cont.is_finite and g.reflections == cont.reflections)):
        raise ValueError(f"{who}: in_elements are elements of {g.name}; this layer's input lives on {cont.name} (or "
                         f"all of {group.name})")
    layer.__dict__["_shared_in"] = in_elements


def attached_input_sampler(layer: nn.Module) -> ElementSampler | None:
    """The sampler :func:`attach_input_sampler` gave ``layer`` (None if none)."""
    return layer.__dict__.get("_shared_in", getattr(layer, "in_sampler", None))


def point_group(group: Group, who: str) -> PlanarGroup:
    """The planar point group of ``group`` (C_N, D_N, SO(2), O(2), or R^2 x| one of them); ValueError else."""
    g = group.point_group if isinstance(group, EuclideanGroup) else group
    if not isinstance(g, PlanarGroup):
        raise ValueError(f"{who}: group convolutions support C_N, D_N, SO(2), O(2) and SE(2) / E(2) "
                         f"(epdo.groups.cyclic, dihedral, so2, o2, se2, e2, euclidean), got {group!r}")
    return g


def check_count(n: object, who: str, name: str = "samples") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{who}: {name} must be an integer >= 1, got {n!r}")
    return int(n)


class ElementSampler(FullPrecisionConstants):
    """Base of the samplers: ``forward()`` returns :class:`Elements` and stores them in ``current``."""

    group: PlanarGroup

    def __init__(self, group: PlanarGroup, dtype=None, device=None):
        super().__init__()
        self.group = group
        self.register_buffer("_ref", torch.zeros((), dtype=dtype or torch.get_default_dtype(), device=device),
                             persistent=False)
        self.current: Elements | None = None

    @property
    def is_deterministic(self) -> bool:
        """True when a call returns the same elements every time (finite groups, eval mode)."""
        return not self.training

    def count(self) -> int:
        """The number of elements the next call returns."""
        raise NotImplementedError

    def _draw(self) -> Elements:
        raise NotImplementedError

    def forward(self) -> Elements:
        self.current = self._draw()
        return self.current

    def _make(self, angle: torch.Tensor, flip: torch.Tensor, weight: torch.Tensor | None = None) -> Elements:
        w = torch.ones_like(angle) if weight is None else weight
        return Elements(angle, flip.to(angle.dtype), torch.cos(angle), torch.sin(angle), w)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["current"] = None
        return state


def eval_elements(s: ElementSampler) -> Elements:
    """The sampler's deterministic (eval-mode) elements, whatever its mode (``current`` is not changed)."""
    was = s.training
    s.training = False
    try:
        return s._draw()
    finally:
        s.training = was


def input_elements(s: ElementSampler, eval_mode: bool, who: str) -> Elements:
    """The elements a layer reads its input on: the previous layer's sampler ``s``. Eval mode (``eval_mode`` or
    the sampler's own flag): its deterministic set; training: the draw the previous layer made in this forward
    pass (``s.current``; a RuntimeError naming ``who`` if it has not drawn)."""
    if eval_mode or s.is_deterministic:
        return eval_elements(s) if eval_mode or not s.training else s._draw()
    if s.current is None:
        raise RuntimeError(f"{who}: the input sampler has not drawn yet; run the previous layer first")
    return s.current


class FiniteElements(ElementSampler):
    """All elements of a finite planar group C_N / D_N, in ``G.elements`` order (exact cos / sin on
    multiples of 90 degrees, as ``PlanarElement.matrix``)."""

    def __init__(self, group: PlanarGroup, dtype=None, device=None):
        if not isinstance(group, PlanarGroup) or not group.is_finite:
            raise ValueError(f"FiniteElements: expected a finite planar group (cyclic(N), dihedral(N)), got {group!r}")
        super().__init__(group, dtype, device)
        els = group.elements
        mats = np.stack([g.matrix for g in els])
        fk = dict(dtype=self._ref.dtype, device=device)
        self.register_constant("_angle", [g.angle for g in els], **fk)
        self.register_buffer("_flip", torch.tensor([float(g.flip) for g in els], **fk), persistent=False)
        self.register_constant("_cos", mats[:, 0, 0], **fk)
        self.register_constant("_sin", mats[:, 1, 0], **fk)
        self.register_buffer("_index", torch.arange(len(els), device=device), persistent=False)

    @property
    def is_deterministic(self) -> bool:
        return True

    def count(self) -> int:
        return int(self.group.order)

    def _draw(self) -> Elements:
        return Elements(self._angle, self._flip, self._cos, self._sin, torch.ones_like(self._angle), self._index)

    def extra_repr(self) -> str:
        return f"{self.group.name}"


def _grid(n: int, ref: torch.Tensor) -> torch.Tensor:
    return 2 * math.pi * torch.arange(n, dtype=ref.dtype, device=ref.device) / n


class HaarSampler(ElementSampler):
    """Monte Carlo Haar samples of SO(2) / O(2) (``n`` elements; O(2): n even, n/2 per coset); the C_n /
    D_{n/2} grid in eval mode. Draws use torch's global generator (or ``generator``)."""

    def __init__(self, group: PlanarGroup, n: int, generator: torch.Generator | None = None, dtype=None, device=None):
        if not isinstance(group, PlanarGroup) or group.is_finite:
            raise ValueError(f"HaarSampler: expected SO(2) or O(2) (epdo.groups.so2, o2), got {group!r}")
        n = check_count(n, "HaarSampler", "n")
        if group.reflections and n % 2:
            raise ValueError(f"HaarSampler: O(2) needs an even number of samples (n/2 per coset), got {n}")
        super().__init__(group, dtype, device)
        self.n, self.generator = n, generator

    def count(self) -> int:
        return self.n

    def _draw(self) -> Elements:
        m = self.n // 2 if self.group.reflections else self.n
        ref = self._ref
        if self.training:
            angle = 2 * math.pi * torch.rand(self.n if not self.group.reflections else 2 * m, generator=self.generator,
                                             dtype=ref.dtype).to(ref.device)
        else:
            angle = _grid(m, ref).repeat(2 if self.group.reflections else 1)
        flip = torch.zeros_like(angle)
        if self.group.reflections:
            flip[m:] = 1
        return self._make(angle, flip)

    def extra_repr(self) -> str:
        return f"{self.group.name}, n={self.n}"


class _StraightThroughClamp(torch.autograd.Function):
    """clamp(t, 0, 1) forward, identity backward: theta can always move back inside the range."""

    @staticmethod
    def forward(ctx, t):
        return t.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, g):
        return g


class PartialSampler(ElementSampler):
    r"""A learned subset of SO(2), O(2) or the mirror group D_1 (paper 004, section 3.2).

    Args:
        group: ``so2`` / ``se2`` (rotations in :math:`[-\theta, \theta]`), ``o2`` / ``e2`` (their product with the
            flip Bernoulli), ``dihedral(1)`` (the flip Bernoulli alone).
        n: elements of the full group (SO(2): n; O(2): n / 2 rotations per coset; D_1: 2).
        theta: initial :math:`\theta / \pi` in [0, 1] (default 1: the full group, "a prior towards being
            equivariant"); stored as ``theta_raw`` and clamped (straight-through) to [0, 1].
        prob: initial probability of the flipped coset (default 0.99; 1.0 is stored as the logit 30).
        prob_lr_factor: the logit is ``prob_lr_factor * prob_raw``: under Adam (steps independent of the
            gradient's scale) the logit's learning rate is this factor (default 0.1, 004 section 7) times the
            rest, under SGD its square.
        theta_lr_factor: likewise :math:`\theta/\pi` = ``theta_lr_factor * theta_raw`` (default 1; short runs
            use more so that theta can travel in few steps).
        tau: Gumbel-softmax temperature.
    """

    def __init__(self, group: Group, n: int, theta: float = 1.0, prob: float = 0.99, prob_lr_factor: float = 0.1,
                 tau: float = 1.0, theta_lr_factor: float = 1.0, generator: torch.Generator | None = None, dtype=None, device=None):
        G = point_group(group, "PartialSampler")
        if G.is_finite and not (G.N == 1 and G.reflections):
            raise ValueError(f"PartialSampler: supported groups are SO(2), O(2) (SE(2), E(2)) and the mirror group "
                             f"dihedral(1), got {G.name}")
        n = check_count(n, "PartialSampler", "n")
        if G.reflections and not G.is_finite and n % 2:
            raise ValueError(f"PartialSampler: O(2) needs an even number of samples (n/2 per coset), got {n}")
        if not 0.0 <= float(theta) <= 1.0:
            raise ValueError(f"PartialSampler: theta is theta/pi and must lie in [0, 1] (an angle range in "
                             f"[0, pi]), got {theta!r}")
        if not 0.0 < float(prob) <= 1.0:
            raise ValueError(f"PartialSampler: prob must lie in (0, 1], got {prob!r}")
        if not float(prob_lr_factor) > 0 or not float(tau) > 0 or not float(theta_lr_factor) > 0:
            raise ValueError(f"PartialSampler: prob_lr_factor, theta_lr_factor and tau must be positive, got "
                             f"{prob_lr_factor!r}, {theta_lr_factor!r}, {tau!r}")
        super().__init__(G, dtype, device)
        fk = dict(dtype=self._ref.dtype, device=device)
        self.n, self.generator, self.tau, self.prob_lr_factor = n, generator, float(tau), float(prob_lr_factor)
        self.rotations = not G.is_finite
        self.reflections = G.reflections
        self.theta_lr_factor = float(theta_lr_factor)
        self.theta_raw = nn.Parameter(torch.tensor(float(theta) / self.theta_lr_factor, **fk)) if self.rotations else None
        if self.reflections:
            logit = 30.0 if prob >= 1.0 else math.log(prob / (1 - prob))
            self.prob_raw = nn.Parameter(torch.tensor(logit / self.prob_lr_factor, **fk))
        else:
            self.prob_raw = None

    # --- the learned parameters ---------------------------------------------------------------------
    def theta(self) -> torch.Tensor:
        """:math:`\\theta` in radians, in [0, pi] (0-dim tensor; pi for the mirror group)."""
        if not self.rotations:
            return torch.tensor(math.pi)
        return math.pi * _StraightThroughClamp.apply(self.theta_lr_factor * self.theta_raw)

    def logit(self) -> torch.Tensor | None:
        return None if self.prob_raw is None else self.prob_lr_factor * self.prob_raw

    def prob(self) -> float:
        """Probability of the flipped coset (1 without reflections)."""
        return 1.0 if self.prob_raw is None else float(torch.sigmoid(self.logit().detach()))

    def _per_coset(self) -> int:
        if not self.rotations:
            return 1
        return self.n // 2 if self.reflections else self.n

    def rotation_count(self) -> int:
        """:math:`\\max(1, \\lceil m\\,\\theta/\\pi\\rceil)` rotations per coset (m = n, or n/2 for O(2))."""
        if not self.rotations:
            return 1
        return max(1, math.ceil(self._per_coset() * self._t() - 1e-6))

    def _t(self) -> float:
        """theta / pi as a float."""
        return min(max(self.theta_lr_factor * float(self.theta_raw.detach()), 0.0), 1.0)

    def count(self) -> int:
        m = self.rotation_count()
        if self.reflections and not self.training and self.prob() < 0.5:
            return m
        return 2 * m if self.reflections else m

    # --- drawing ------------------------------------------------------------------------------------
    def _angles(self, m: int) -> torch.Tensor:
        ref = self._ref
        if not self.rotations:
            return torch.zeros(1, dtype=ref.dtype, device=ref.device)
        if self.training:
            eps = 2 * torch.rand(m, generator=self.generator, dtype=ref.dtype).to(ref.device) - 1
        else:
            eps = -1 + 2 * torch.arange(m, dtype=ref.dtype, device=ref.device) / m
        return self.theta() * eps

    def _flip_weight(self) -> torch.Tensor | None:
        """The straight-through Gumbel-softmax draw of the flipped coset (None: excluded, eval with p < 1/2)."""
        if not self.training:
            return self._ref.new_ones(()) if self.prob() >= 0.5 else None
        logits = torch.stack([self.logit(), torch.zeros_like(self.logit())])  # (keep, drop)
        u = torch.rand(2, generator=self.generator, dtype=self._ref.dtype).to(self._ref.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-12)))
        soft = torch.softmax((logits + gumbel) / self.tau, 0)
        hard = (soft[0] >= soft[1]).to(soft.dtype)
        return hard - soft[0].detach() + soft[0]

    def _draw(self) -> Elements:
        m = self.rotation_count()
        a0 = self._angles(m)
        if not self.reflections:
            return self._make(a0, torch.zeros_like(a0))
        w = self._flip_weight()
        if w is None:
            els = self._make(a0, torch.zeros_like(a0))
        else:
            a1 = self._angles(m) if self.training else a0
            angle = torch.cat([a0, a1])
            flip = torch.cat([torch.zeros_like(a0), torch.ones_like(a1)])
            els = self._make(angle, flip, torch.cat([torch.ones_like(a0), w.expand(m)]))
        if not self.rotations:  # the mirror group D_1: finite indices (flip * N + 0), exact cos / sin
            idx = els.flip.long()
            one = torch.ones_like(els.angle)
            els = Elements(els.angle, els.flip, one, torch.zeros_like(one), els.weight, idx)
        return els

    def report(self) -> dict:
        """``{"theta": theta / pi, "prob": p, "elements": count in eval mode}``."""
        out = {}
        if self.rotations:
            out["theta"] = self._t()
        if self.reflections:
            out["prob"] = self.prob()
        was = self.training
        self.train(False)
        out["elements"] = self.count()
        self.train(was)
        return out

    def extra_repr(self) -> str:
        return f"{self.group.name}, n={self.n}, " + ", ".join(f"{k}={v:.3g}" for k, v in self.report().items())
