r"""Steerable convolution with a circular-harmonic x Gaussian-ring kernel basis (paper 003 Secs. 5-7;
Weiler & Cesa 2019, e2cnn's ``R2Conv``).

The kernel :math:`K: \mathbb{R}^2 \to \mathbb{R}^{C_{out}\times C_{in}}` of a layer between fields
:math:`\rho_{in}` and :math:`\rho_{out}` of :math:`G \le O(2)` must satisfy the kernel constraint (003, Eq. 5.x)

.. math:: K(g y) = \rho_{out}(g)\, K(y)\, \rho_{in}(g)^{-1} \qquad \forall g \in G,\ y \in \mathbb{R}^2,

which makes the correlation :math:`[K \star f](x) = \sum_y K(y) f(x + y)` equivariant. The kernel is
expanded in band-limited functions :math:`\phi_{i,k}(y) = e^{-(|y| - r_i)^2 / 2\sigma_i^2}\, h_k(\arg y)`
with :math:`h_0 = 1` and :math:`h_k = (\cos k\theta, \sin k\theta)` for :math:`1 \le k \le F_i`, the angular
frequencies allowed on ring i. The vector :math:`\phi = (\phi_{i,k})` transforms as

.. math:: \phi(g y) = P(g)\,\phi(y), \qquad P = \bigoplus_i \Big(1 \oplus \bigoplus_{k=1}^{F_i} \psi_k\Big),
          \quad \psi_k(r_\alpha f^s) = R(k\alpha) F^s,

(the harmonics play the role that :math:`\hat\rho` plays for PDOs, :class:`~epdo.nn.PDOConv`), so
:math:`K(y) = W(\phi(y) \otimes I)` solves the constraint exactly when
:math:`W (P(g) \otimes \rho_{in}(g)) = \rho_{out}(g) W`, i.e.
:math:`W \in \mathrm{Hom}_G(P \otimes \rho_{in}, \rho_{out})`: the core's Hom solver
(:class:`~epdo.nn.HomExpansion`) gives W, for C_N, D_N, SO(2) and O(2) alike. For C_N the harmonics of
frequencies above N/2 are aliases of lower irreps and enter the solution automatically (e2cnn's
``maximum_offset=None``: every aliased frequency below the cut-off).

**Defaults** (those of e2cnn's ``R2Conv``, so that both have the same basis): rings at radii
``0, 1, ..., (k-1)//2`` times ``dilation`` pixels (``ceil(k/2)`` rings), widths sigma = 0.6 px (0.4 px on the
outermost ring, 0.005 px at radius 0: only the centre tap); frequency cut-off per ring of (integer) radius r
(e2cnn's default rule): :math:`F = 0` at r = 0, :math:`\min(2r, 2)` on the outermost ring ``r = k // 2``,
:math:`\min(2r, 2r - (r+1) \bmod 2)` otherwise (5x5: F = 0, 2, 2; 7x7: 0, 2, 3, 2; 9x9: 0, 2, 3, 6, 2).
``frequencies_cutoff`` as a float c keeps :math:`k \le c\, r` (e2cnn's float rule), as a sequence gives
F_i per ring. Each basis element's sampled filter is normalised to unit Frobenius norm (e2cnn normalises
too); parameters are then initialised He-style on the expanded filter (:meth:`reset_parameters`).

Harmonics :math:`k \ge 1` vanish at the centre pixel (where the angle is undefined).

**Two parameterisations of the same space.** The Hom solver works on :math:`P \otimes \rho_{in}`, whose
change of basis is dense: for C16 / D16 regular fields and 7x7 kernels it is 288 / 576 wide, and expanding
the filter costs more than the convolution. Kernels into *regular* fields of C_N / D_N from permutation fields
(regular, quotient, trivial) are therefore built by :class:`RegularOutputExpansion` by default (one free
orientation rotated by :math:`P(g^{-1})` and a channel gather, as PDO-eConvs / :class:`~epdo.nn.PDOConv`'s
``basis="pdo_econv"``); by Frobenius reciprocity it spans the same space with the same number of parameters
(tested against the solver's basis). ``expansion="hom"`` uses the solver everywhere.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..fields import FieldType
from ..groups import Group, Representation, directsum
from ..groups.intertwiners import hom_structure
from .base import ExpandedWeightsModule, FullPrecisionConstants
from .expansion import FieldBias, HomExpansion
from .pdo_base import PDOLayerBase, check_int

__all__ = ["SteerableConv", "RegularOutputExpansion", "harmonic_representation", "default_ring_frequencies",
           "steerable_basis"]


def harmonic_representation(group: Group, k: int) -> Representation:
    r"""How the circular harmonic pair :math:`(\cos k\theta, \sin k\theta)` (k >= 1; the constant for k = 0)
    transforms under ``group``: :math:`\psi_k(r_\alpha f^s) = R(k\alpha) F^s` (an irrep of SO(2) / O(2); for
    C_N, D_N with k >= N/2 a reducible alias, decomposed numerically).

    >>> from epdo import groups
    >>> harmonic_representation(groups.cyclic(4), 2).irreps   # R(2 alpha) = -I on C4: twice the sign irrep
    ((0, 2), (0, 2))
    """
    return _harmonic_representation(group, check_int(k, "k", "harmonic_representation", 0))


@lru_cache(maxsize=None)
def _harmonic_representation(group: Group, k: int) -> Representation:
    if not isinstance(group, Group) or not hasattr(group, "reflections"):
        raise TypeError(f"harmonic_representation: expected a planar group (C_N, D_N, SO(2), O(2)), got {group!r}")
    if k == 0:
        return group.trivial
    j = 1 if group.reflections else 0
    if not group.is_finite or 2 * k < group.N:
        return group.irrep(j, k)  # the planar irrep (j, k) is exactly R(k alpha) F^s

    def matrix(g):
        t = k * g.angle
        if (4 * k * int(g.rotation)) % group.N == 0:
            c, s = float(round(math.cos(t))), float(round(math.sin(t)))
        else:
            c, s = math.cos(t), math.sin(t)
        m = np.array([[c, -s], [s, c]])
        return m @ np.diag([1.0, -1.0]) if g.flip else m

    return Representation.from_matrices(group, matrix, 2, f"harmonic({k})",
                                        expr=f"epdo.nn.steerable.harmonic_representation({group!r}, {k})")


def default_ring_frequencies(kernel_size: int) -> tuple[int, ...]:
    """e2cnn's default frequency cut-off per ring (rings at integer radii 0..(k-1)//2; see the module doc)."""
    k = check_int(kernel_size, "kernel_size", "default_ring_frequencies", 1)
    outer = k // 2
    out = []
    for r in range((k - 1) // 2 + 1):
        if r == 0:
            out.append(0)
        elif r == outer:
            out.append(min(2 * r, 2))
        else:
            out.append(min(2 * r, 2 * r - (r + 1) % 2))
    return tuple(out)


def _ring_settings(kernel_size: int, dilation: int, rings, sigma, frequencies_cutoff, who: str
                   ) -> tuple[tuple[float, ...], tuple[float, ...], tuple[int, ...]]:
    """(radii in pixels, widths in pixels, max frequency per ring), validated."""
    n_default = math.ceil(kernel_size / 2)
    if rings is None:
        radii = tuple(float(r) * dilation for r in np.linspace(0, (kernel_size - 1) // 2, n_default))
    else:
        radii = tuple(float(r) for r in rings)
        if not radii or any(not math.isfinite(r) or r < 0 for r in radii):
            raise ValueError(f"{who}: rings must be a non-empty sequence of radii >= 0 (pixels), got {rings!r}")
    extent = dilation * (kernel_size // 2) * math.sqrt(2)
    if any(r > extent + 1e-9 for r in radii):
        raise ValueError(f"{who}: ring radii {radii} exceed the kernel's extent {extent:.3f} px "
                         f"(kernel_size={kernel_size}, dilation={dilation})")
    if sigma is None:
        widths = [0.6] * (len(radii) - 1) + [0.4]
        widths = [0.005 if r == 0 else s for r, s in zip(radii, widths)]
    elif isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        widths = [float(sigma)] * len(radii)
    else:
        widths = [float(s) for s in sigma]
    if len(widths) != len(radii) or any(not s > 0 for s in widths):
        raise ValueError(f"{who}: sigma must be a positive number or one per ring ({len(radii)}), got {sigma!r}")
    if frequencies_cutoff is None:
        if rings is None:
            freqs = default_ring_frequencies(kernel_size)
        else:  # e2cnn's rule on the rings given (radius in units of the dilation)
            outer = dilation * (kernel_size // 2)
            freqs = tuple(0 if r == 0 else int(min(2 * r / dilation, 2 if r == outer else
                                                   2 * r / dilation - (r / dilation + 1) % 2)) for r in radii)
    elif isinstance(frequencies_cutoff, (int, float)) and not isinstance(frequencies_cutoff, bool):
        if not frequencies_cutoff >= 0:
            raise ValueError(f"{who}: frequencies_cutoff must be >= 0, got {frequencies_cutoff!r}")
        freqs = tuple(int(math.floor(frequencies_cutoff * r / dilation + 1e-9)) for r in radii)
    else:
        freqs = tuple(check_int(f, "frequencies_cutoff[i]", who, 0) for f in frequencies_cutoff)
        if len(freqs) != len(radii):
            raise ValueError(f"{who}: frequencies_cutoff has {len(freqs)} entries for {len(radii)} rings")
    freqs = tuple(0 if r == 0 else f for r, f in zip(radii, freqs))  # no angle at the centre
    return radii, tuple(widths), freqs


def steerable_basis(kernel_size: int, radii: Sequence[float], sigmas: Sequence[float], freqs: Sequence[int],
                    dilation: int = 1) -> np.ndarray:
    r"""The sampled basis functions :math:`\phi_{i,k}` as float64 ``(J, k, k)`` correlation filters, in the order
    ring by ring, then ``1, cos theta, sin theta, cos 2theta, ...``. Tap ``[a, b]`` is the offset
    ``(x, y) = dilation * (b - c, c - a)`` (x right, y up; c = k // 2). ``J = sum_i (2 F_i + 1)``."""
    c = kernel_size // 2
    idx = np.arange(kernel_size) - c
    x = dilation * idx[None, :].astype(np.float64).repeat(kernel_size, 0)
    y = -dilation * idx[:, None].astype(np.float64).repeat(kernel_size, 1)
    rad = np.hypot(x, y)
    theta = np.arctan2(y, x)
    centre = rad == 0
    out = []
    for r, s, f in zip(radii, sigmas, freqs):
        prof = np.exp(-0.5 * ((rad - r) / s) ** 2)
        out.append(prof)
        for k in range(1, f + 1):
            for h in (np.cos(k * theta), np.sin(k * theta)):
                h = np.where(centre, 0.0, h)
                h[np.abs(h) < 1e-15] = 0.0
                out.append(prof * h)
    return np.stack(out)


@lru_cache(maxsize=None)
def _angular_representation(group: Group, freqs: tuple[int, ...]) -> Representation:
    """P: the direct sum over rings of the harmonic representations of frequencies 0..F_i."""
    return directsum(*[harmonic_representation(group, k) for f in freqs for k in range(f + 1)])


@lru_cache(maxsize=None)
def _kernel_field_rep(P: Representation, rep: Representation) -> Representation:
    return P.tensor(rep)


def _hom_filter_norms(rho_in: Representation, rho_out: Representation, gram: np.ndarray) -> np.ndarray:
    """Frobenius norm of the sampled filter of each Hom_G(P (x) rho, rho_out) basis element (rho_in = P (x) rho);
    ``gram`` is the J x J Gram matrix of the sampled basis functions (cached per pair and Gram matrix)."""
    g = np.ascontiguousarray(gram, dtype=np.float64)
    return _hom_filter_norms_cached(rho_in, rho_out, g.tobytes(), g.shape[0])


@lru_cache(maxsize=None)
def _hom_filter_norms_cached(rho_in: Representation, rho_out: Representation, gram: bytes, J: int) -> np.ndarray:
    s = hom_structure(rho_in, rho_out)
    gram_m = np.frombuffer(gram).reshape(J, J)
    norms = np.empty(s.n_params)
    for p in range(s.n_params):
        sel = s.param == p  # W_p = q_out[:, rows] diag(values) q_in_inv[cols, :] (a low-rank product)
        w = (s.q_out[:, s.row[sel]] * s.value[sel]) @ s.q_in_inv[s.col[sel], :]
        w = w.reshape(rho_out.size, J, -1)
        norms[p] = math.sqrt(max(float(np.einsum("ojc,jk,okc->", w, gram_m, w)), 0.0))
    norms.setflags(write=False)
    return norms


def _basis_major_permutation(in_type: FieldType, J: int) -> np.ndarray:
    """Column order taking W's per-field ``(j, c)`` blocks to a global ``(j, channel)`` order."""
    sizes = [r.size for r in in_type]
    starts = np.cumsum([0] + sizes)
    perm = np.empty(J * int(starts[-1]), dtype=np.int64)
    total = int(starts[-1])
    for f, d in enumerate(sizes):
        j, c = np.meshgrid(np.arange(J), np.arange(d), indexing="ij")
        perm[(j * total + starts[f] + c).ravel()] = (J * starts[f] + j * d + c).ravel()
    return perm


def _pair_int(v, name: str, who: str, minimum: int) -> int:
    if isinstance(v, (tuple, list)):
        if len(v) != 2 or v[0] != v[1]:
            raise ValueError(f"{who}: {name} must be one integer (the same in both directions), got {v!r}")
        v = v[0]
    return check_int(v, name, who, minimum)


class RegularOutputExpansion(FullPrecisionConstants):
    r"""The kernels into regular fields of a finite group from permutation input fields, by rotating one
    orientation (as :class:`~epdo.nn.expansion.RotatedPDOExpansion` rotates PDO coefficients):

    .. math:: K_g(y) = K_e(g^{-1} y)\, \rho_{in}(g)^{-1}, \qquad K_e(y) = \sum_j X_j\, \phi_j(y),
              \qquad \phi(g^{-1} y) = P(g^{-1})\, \phi(y),

    channel g of a regular output field being orientation g (:math:`\rho_{reg}(h) e_g = e_{hg}`). Free parameters
    :math:`X \in \mathbb{R}^{n_{out} \times J \times C_{in}}`: by Frobenius reciprocity
    :math:`\dim\mathrm{Hom}_G(V, \rho_{reg}) = \dim V`, so this is all of
    :math:`\mathrm{Hom}_G(P \otimes \rho_{in}, \rho_{reg})` in other coordinates (the Hom solver's count,
    tested). ``rho_in(g^-1)`` is a channel gather and the rotated basis is precomputed, so the cost is one
    ``(n_out |G| C_in J) x k^2`` contraction instead of the dense change of basis of the tensor product.
    Each (ring, frequency) block of the basis is scaled so that one coefficient's filter has unit norm
    (exactly on 90-degree groups). ``forward()`` returns the ``(n_out |G|, C_in, k, k)`` filter.
    """

    def __init__(self, in_type: FieldType, n_out: int, P: Representation, freqs: Sequence[int], basis: np.ndarray,
                 device=None, dtype=None):
        super().__init__()
        G = in_type.group
        els = G.elements
        reg = np.stack([np.asarray(G.regular(h)) for h in els])
        chan = reg[:, :, G.index(G.identity)].argmax(1)  # rho_reg(h) e_e = e_chan(h)
        order = np.argsort(chan)  # channel i of a regular output field is orientation els[order[i]]
        scale = np.ones(basis.shape[0])
        for block in _harmonic_blocks(freqs):  # one scale per P-block keeps the rotated basis exact
            rms = math.sqrt(np.mean([np.sum(basis[b] ** 2) for b in block]) * len(els))
            scale[block] = 1.0 / max(rms, 1e-12)
        base = basis * scale[:, None, None]
        inv = [G.inverse(els[o]) for o in order]
        rotated = np.stack([np.einsum("ij,jkl->ikl", np.asarray(P(h)), base) for h in inv])  # phi(g^-1 y)
        # rho_in(g^-1) e_c = e_sigma(c): column c of K_g is column sigma(c) of K_e(g^-1 y)
        per_rep = {r: np.stack([np.asarray(r(h)).argmax(0) for h in inv]) for r in dict.fromkeys(in_type)}
        gather = np.concatenate([per_rep[r] + sl.start for r, sl in zip(in_type, in_type.slices())], axis=1)
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        self.n_out, self.n_elements = int(n_out), len(els)
        self.weight = nn.Parameter(torch.empty(int(n_out), basis.shape[0], in_type.size, **fk))
        self.register_constant("_rotated", rotated, **fk)  # (|G|, J, k, k)
        self.register_buffer("_gather", torch.as_tensor(gather, dtype=torch.long), persistent=False)
        self.reset_parameters()

    @property
    def num_params(self) -> int:
        return self.weight.numel()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)

    def forward(self) -> torch.Tensor:
        x = self.weight[:, :, self._gather]  # (n_out, J, |G|, C_in): X_j rho_in(g)^-1 as a gather
        k = torch.einsum("fjgc,gjkl->fgckl", x, self._rotated)
        return k.reshape(self.n_out * self.n_elements, *k.shape[2:])


def _harmonic_blocks(freqs: Sequence[int]) -> list[list[int]]:
    """Index blocks of P's summands in basis order: per ring one for k = 0, then (cos, sin) for k = 1..F."""
    out, start = [], 0
    for f in freqs:
        out.append([start])
        out += [[start + 2 * k - 1, start + 2 * k] for k in range(1, f + 1)]
        start += 2 * f + 1
    return out


class SteerableConv(ExpandedWeightsModule):
    r"""R2Conv-style steerable convolution between field types of C_N, D_N, SO(2) or O(2).

    Kernel :math:`K(y) = \sum_{i,k} W_{i,k}\,\phi_{i,k}(y)` with
    :math:`W \in \mathrm{Hom}_G(P \otimes \rho_{in}, \rho_{out})` (see the module documentation for the basis,
    the constraint and the defaults, which are e2cnn's).

    Args:
        in_type, out_type: field types of the same planar group.
        kernel_size: odd filter width k (>= 1).
        padding: zero padding (default ``dilation * (k // 2)``: the same size at stride 1).
        stride, dilation: as in ``torch.nn.Conv2d`` (one integer each). With stride > 1 the output grid is
            rotation-symmetric (and the layer equivariant on 90-degree elements) when ``H + 2 padding - d (k-1) - 1``
            is divisible by the stride.
        groups: as in ``Conv2d``: in_type and out_type are each ``groups`` repetitions of one list of fields, and
            output block b sees input block b only.
        bias: learnable bias on the trivial components of the output fields.
        rings, sigma, frequencies_cutoff: ring radii (pixels, already dilated), Gaussian widths (pixels; one or
            per ring), angular cut-off (None: e2cnn's rule; a float c: k <= c r; a sequence: per ring).
        expansion: ``"auto"``: kernels into regular fields of C_N / D_N from permutation fields (regular,
            quotient, trivial) by rotating one orientation (:class:`RegularOutputExpansion`, fast), all others
            by the Hom solver (:class:`~epdo.nn.HomExpansion` on :math:`P \otimes \rho_{in}`); ``"hom"``: the Hom
            solver for every field. Both span the same kernel space (tested); ``num_coefficients`` is its
            dimension.

    Shape: ``(B, in_type.size, H, W) -> (B, out_type.size, H', W')``,
    ``H' = floor((H + 2 padding - dilation (k - 1) - 1) / stride) + 1``.

    In eval mode without a weight gradient the expanded filter is cached (:class:`ExpandedWeightsModule`).

    >>> import torch
    >>> from epdo import groups, fields, nn
    >>> G = groups.cyclic(8)
    >>> t = fields.FieldType(G, [G.regular] * 2)
    >>> conv = nn.SteerableConv(fields.FieldType(G, [G.trivial]), t, kernel_size=5)
    >>> conv(torch.randn(1, 1, 11, 11)).shape, conv.num_params        # 2 fields x 11 basis functions + 2 biases
    (torch.Size([1, 16, 11, 11]), 24)
    >>> conv.export()
    Conv2d(1, 16, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
    """

    def __init__(self, in_type: FieldType, out_type: FieldType, kernel_size: int = 5, padding: int | None = None,
                 stride: int = 1, dilation: int = 1, groups: int = 1, bias: bool = True,
                 rings: Sequence[float] | None = None, sigma: float | Sequence[float] | None = None,
                 frequencies_cutoff: float | Sequence[int] | None = None, expansion: str = "auto", device=None,
                 dtype=None):
        super().__init__(in_type, out_type)
        who = type(self).__name__
        G = in_type.group
        if out_type.group != G:
            raise ValueError(f"{who}: in_type is of {G.name} but out_type of {out_type.group.name}; "
                             f"both must be of the same group")
        if not hasattr(G, "reflections") or not hasattr(G, "N"):
            raise ValueError(f"{who}: the group must be C_N, D_N, SO(2) or O(2) (a planar group), got {G.name}")
        k = _pair_int(kernel_size, "kernel_size", who, 1)
        if k % 2 == 0:
            raise ValueError(f"{who}: kernel_size must be odd (the kernel is centred on a pixel), got {k}")
        self.kernel_size = k
        self.stride = _pair_int(stride, "stride", who, 1)
        self.dilation = _pair_int(dilation, "dilation", who, 1)
        self.padding = self.dilation * (k // 2) if padding is None else _pair_int(padding, "padding", who, 0)
        self.groups = check_int(groups, "groups", who, 1)
        self.radii, self.sigmas, self.frequencies = _ring_settings(k, self.dilation, rings, sigma,
                                                                   frequencies_cutoff, who)
        in_block = self._block_type(in_type, "in_type")
        self._block_type(out_type, "out_type")
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        basis = steerable_basis(k, self.radii, self.sigmas, self.frequencies, self.dilation)
        self.angular = _angular_representation(G, self.frequencies)
        assert self.angular.size == basis.shape[0]
        if expansion not in ("auto", "hom"):
            raise ValueError(f"{who}: expansion must be 'auto' or 'hom', got {expansion!r}")
        self.expansion_mode = expansion
        fast_ok = expansion == "auto" and G.is_finite and all(r.is_permutation() for r in in_block)
        fast = [fast_ok and r == G.regular for r in out_type]
        rows = [np.arange(sl.start, sl.stop) for sl in out_type.slices()]
        fast_rows = np.concatenate([rows[i] for i, f in enumerate(fast) if f] or [np.zeros(0, np.int64)])
        hom_rows = np.concatenate([rows[i] for i, f in enumerate(fast) if not f] or [np.zeros(0, np.int64)])
        self.expansion = None
        if len(hom_rows):
            self.expansion = HomExpansion([_kernel_field_rep(self.angular, r) for r in in_block],
                                          [r for r, f in zip(out_type, fast) if not f], **fk)
        self.regular_expansion = None
        if len(fast_rows):
            self.regular_expansion = RegularOutputExpansion(in_block, sum(fast), self.angular, self.frequencies,
                                                            basis, **fk)
        if self.num_coefficients == 0:
            raise ValueError(f"{who}: no equivariant kernel from {in_type} to {out_type} with angular frequencies "
                             f"{self.frequencies} (raise frequencies_cutoff or the kernel size)")
        self.register_constant("basis", basis, **fk)
        self.register_buffer("_perm", torch.as_tensor(_basis_major_permutation(in_block, basis.shape[0])),
                             persistent=False)
        self.register_buffer("_fast_rows", torch.as_tensor(fast_rows, dtype=torch.long), persistent=False)
        self.register_buffer("_hom_rows", torch.as_tensor(hom_rows, dtype=torch.long), persistent=False)
        self.bias_term = FieldBias(list(out_type), **fk) if bias else None
        if self.expansion is not None:
            gram = np.einsum("akl,bkl->ab", basis, basis)
            for k, (rho_in, rho_out, _) in enumerate(self.expansion.block_scales()):
                norms = _hom_filter_norms(rho_in, rho_out, gram)
                self.expansion.set_constant(f"_scale{k}", 1.0 / np.maximum(norms, 1e-12))
        self.init_gain = 2.0
        self.reset_parameters()

    def _block_type(self, t: FieldType, name: str) -> FieldType:
        """The field type of one of the ``groups`` blocks of ``t`` (ValueError if t is not ``groups`` copies)."""
        g = self.groups
        reps = list(t)
        if len(reps) % g:
            raise ValueError(f"{type(self).__name__}: groups={g} must divide the number of {name} fields, "
                             f"got {len(reps)} fields ({t})")
        n = len(reps) // g
        if g > 1 and any(reps[i] != reps[i % n] for i in range(len(reps))):
            raise ValueError(f"{type(self).__name__}: with groups={g}, {name} must be {g} repetitions of the "
                             f"same fields, got {t}")
        return FieldType(t.group, reps[:n]) if g > 1 else t

    @property
    def num_params(self) -> int:
        """All learnable scalars (kernel coefficients and biases)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def basis_size(self) -> int:
        """J, the number of sampled ring x harmonic functions."""
        return int(self.basis.shape[0])

    @property
    def num_coefficients(self) -> int:
        """The dimension of the kernel space: dim Hom_G(P (x) rho_in, rho_out) summed over the field pairs."""
        return sum(0 if e is None else e.num_params for e in (self.expansion, self.regular_expansion))

    # --- parameters -------------------------------------------------------------------------------
    def reset_parameters(self, gain: float | None = None) -> None:
        """Coefficients N(0, scale^2) such that the expected squared norm of an output channel's filter, averaged
        over the output channels, equals ``gain`` (default ``init_gain`` = 2, He for ReLU networks): with
        unit-norm basis filters, ``scale^2 = gain C_out / n_coefficients``. Biases zero."""
        if gain is not None:
            self.init_gain = float(gain)
        with torch.no_grad():
            scale = math.sqrt(self.init_gain * self.out_type.size / self.num_coefficients)
            for e in (self.expansion, self.regular_expansion):
                if e is not None:
                    e.reset_parameters()
                    for w in e.parameters():
                        w.mul_(scale)
            if self.bias_term is not None and self.bias_term.bias is not None:
                self.bias_term.bias.zero_()
        self.invalidate_cache()

    def _expand_filter(self) -> torch.Tensor:
        parts = []
        if self.regular_expansion is not None:
            parts.append((self._fast_rows, self.regular_expansion()))
        if self.expansion is not None:
            J, c_in = self.basis.shape[0], self.in_type.size // self.groups
            w = self.expansion()[:, self._perm].view(-1, J, c_in)
            parts.append((self._hom_rows, torch.einsum("ojc,jkl->ockl", w, self.basis)))
        if len(parts) == 1:
            rows, k = parts[0]
            if bool(torch.equal(rows, torch.arange(len(rows), device=rows.device))):
                return k
        ref = parts[0][1]
        out = ref.new_zeros(self.out_type.size, *ref.shape[1:])
        for rows, k in parts:
            out = out.index_copy(0, rows, k)
        return out

    def _expand(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._expand_filter(), None if self.bias_term is None else self.bias_term()

    def filter_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The expanded ``(C_out, C_in / groups, k, k)`` filter and ``(C_out,)`` bias (cached in eval mode
        where no weight gradient is needed)."""
        return self.expanded_weights()

    # --- forward / export -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        weight, bias = PDOLayerBase.cast_like(x, *self.filter_and_bias())
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding, dilation=self.dilation,
                        groups=self.groups)

    @torch.no_grad()
    def export(self) -> nn.Conv2d:
        """A plain ``torch.nn.Conv2d`` computing the same function (the expanded filter and bias)."""
        weight, bias = self._expand()
        conv = nn.Conv2d(self.in_type.size, self.out_type.size, self.kernel_size, stride=self.stride,
                         padding=self.padding, dilation=self.dilation, groups=self.groups, bias=bias is not None,
                         device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
        return conv.eval()

    def extra_repr(self) -> str:
        s = f"{self.in_type} -> {self.out_type}, kernel_size={self.kernel_size}"
        for name, value, default in (("padding", self.padding, self.dilation * (self.kernel_size // 2)),
                                     ("stride", self.stride, 1), ("dilation", self.dilation, 1),
                                     ("groups", self.groups, 1)):
            if value != default:
                s += f", {name}={value}"
        s += f", frequencies={self.frequencies}"
        if self.expansion_mode != "auto":
            s += f", expansion={self.expansion_mode!r}"
        return s + ("" if self.bias_term is not None else ", bias=False")
