r"""Learnable equivariant matrices: parameters -> W in Hom_G(rho_in, rho_out), field block by field block.

For every distinct pair (input representation, output representation) the fields of that pair share one
:class:`~epdo.groups.intertwiners.HomStructure`; the parameters of the pair are a tensor
``(n_out_fields, n_in_fields, n_params)`` and expand as :math:`W = Q_{out} M(w) Q_{in}^{-1}` (no dense basis
is ever stored, so even D16 fields with order-4 PDOs build in milliseconds).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..groups import Representation
from ..groups.intertwiners import hom_structure
from .base import FullPrecisionConstants

__all__ = ["HomExpansion", "FieldBias", "RotatedPDOExpansion"]


def _channel_index(reps: Sequence[Representation], fields: Sequence[int]) -> np.ndarray:
    starts = np.cumsum([0] + [r.size for r in reps])
    return np.concatenate([np.arange(starts[f], starts[f + 1]) for f in fields])


class HomExpansion(FullPrecisionConstants):
    """Parameters of an equivariant linear map between two lists of field representations.

    ``forward()`` returns W of shape ``(sum d_out, sum d_in)`` with ``W rho_in(g) = rho_out(g) W``.
    """

    def __init__(self, in_reps: Sequence[Representation], out_reps: Sequence[Representation],
                 device=None, dtype=None):
        super().__init__()
        self.in_size = sum(r.size for r in in_reps)
        self.out_size = sum(r.size for r in out_reps)
        self.weights = nn.ParameterList()
        self._blocks: list[dict] = []
        uniq_in = list(dict.fromkeys(in_reps))
        uniq_out = list(dict.fromkeys(out_reps))
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        for ro in uniq_out:
            out_fields = [i for i, r in enumerate(out_reps) if r == ro]
            for ri in uniq_in:
                s = hom_structure(ri, ro)
                if s.n_params == 0:
                    continue
                in_fields = [i for i, r in enumerate(in_reps) if r == ri]
                k = len(self._blocks)
                self.weights.append(nn.Parameter(torch.empty(len(out_fields), len(in_fields), s.n_params, **fk)))
                self.register_constant(f"_q_out{k}", s.q_out, **fk)
                self.register_constant(f"_q_in_inv{k}", s.q_in_inv, **fk)
                self.register_constant(f"_val{k}", s.value, **fk)
                self.register_constant(f"_scale{k}", np.ones(s.n_params), **fk)
                self._blocks.append(dict(rho_in=ri, rho_out=ro, param=torch.tensor(s.param), row=torch.tensor(s.row),
                                         col=torch.tensor(s.col), d_out=ro.size, d_in=ri.size,
                                         rows=torch.as_tensor(_channel_index(out_reps, out_fields)),
                                         cols=torch.as_tensor(_channel_index(in_reps, in_fields))))
        self.reset_parameters()

    @property
    def num_params(self) -> int:
        return sum(w.numel() for w in self.weights)

    def reset_parameters(self) -> None:
        for w in self.weights:
            nn.init.normal_(w)

    def block_scales(self) -> list[tuple[Representation, Representation, torch.Tensor]]:
        """For each parameter block: (rho_in, rho_out, its per-parameter scale buffer).

        Layers use the scales to normalise basis elements (e.g. PDOConv: unit-norm discretised filters).
        """
        return [(b["rho_in"], b["rho_out"], getattr(self, f"_scale{k}")) for k, b in enumerate(self._blocks)]

    def forward(self) -> torch.Tensor:
        """W in the parameters' dtype; autocast is disabled here (the expansion is cheap, keep it exact)."""
        ref = self.weights[0] if len(self.weights) else None
        device_type = "cpu" if ref is None else ref.device.type
        with torch.autocast(device_type, enabled=False):
            return self._expand(ref)

    def _expand(self, ref: torch.Tensor | None) -> torch.Tensor:
        out = torch.zeros(self.out_size, self.in_size, device=None if ref is None else ref.device,
                          dtype=None if ref is None else ref.dtype)
        for k, (w, b) in enumerate(zip(self.weights, self._blocks)):
            no, ni, _ = w.shape
            m = w.new_zeros(no, ni, b["d_out"], b["d_in"])
            w = w * getattr(self, f"_scale{k}")
            m[:, :, b["row"], b["col"]] = w[:, :, b["param"]] * getattr(self, f"_val{k}")
            full = getattr(self, f"_q_out{k}") @ m @ getattr(self, f"_q_in_inv{k}")
            block = full.permute(0, 2, 1, 3).reshape(no * b["d_out"], ni * b["d_in"])
            if len(self._blocks) == 1 and no * b["d_out"] == self.out_size and ni * b["d_in"] == self.in_size \
                    and _is_identity(b["rows"]) and _is_identity(b["cols"]):
                return block
            out = out.index_put((b["rows"][:, None], b["cols"][None, :]), block)
        return out


def _is_identity(idx: torch.Tensor) -> bool:
    return bool(torch.equal(idx, torch.arange(len(idx))))


class FieldBias(FullPrecisionConstants):
    """A bias that is constant on the trivial-irrep components of the output fields, zero elsewhere.

    Only components transforming trivially can carry a bias without breaking equivariance.
    """

    def __init__(self, reps: Sequence[Representation], device=None, dtype=None):
        super().__init__()
        cols, embed = [], []
        start = 0
        for r in reps:
            q = r.change_of_basis
            for psi, sl in r.irrep_slices():
                if psi == r.group.trivial_irrep_id:
                    v = np.zeros(sum(x.size for x in reps))
                    v[start : start + r.size] = q[:, sl.start]
                    embed.append(v)
            start += r.size
        self.num_params = len(embed)
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        self.bias = nn.Parameter(torch.zeros(len(embed), **fk)) if embed else None
        if embed:
            self.register_constant("_embed", np.stack(embed, 1), **fk)

    def forward(self) -> torch.Tensor | None:
        return None if self.bias is None else self._embed @ self.bias


class RotatedPDOExpansion(FullPrecisionConstants):
    r"""PDO coefficients of one orientation, rotated to a set of group elements (PDO-eConvs, Shen et al. 2020).

    The free parameters are the coefficients of the identity orientation,
    :math:`X \in \mathbb{R}^{n_{out} \times |\Gamma_N| \times C_{in}}` (output row o, multi-index alpha,
    input channel c). The operator of orientation g is the identity one rotated by g,
    :math:`\Psi_g[f] = g\cdot\Psi_e[g^{-1}\cdot f]`, whose coefficients are

    .. math:: W_g = \hat\rho(g^{-1})^\top\, X\, \rho_{in}(g^{-1})
              \qquad(\text{i.e. } W_g = X\,(\hat\rho(g)\otimes\rho_{in}(g))^{-1} \text{ as a row}),

    with :math:`\hat\rho` the derivative representation (Lemma 1 of paper 000; :math:`\hat\rho(g) = D(g^{-1})`,
    :func:`epdo.diffops.derivative_rep`). Proof: by the chain rule :math:`D(f\circ A)(x) = D(A)(Df)(Ax)`, so
    :math:`\sum_\alpha (W_g)_\alpha \partial^\alpha f(x) = \sum_\beta X_\beta\,\partial^\beta(f\circ g)(g^{-1}x)`.

    Elements: ``elements`` (a fixed sequence, matrices precomputed as non-persistent buffers), or ``sampler``
    (a callable returning a sequence of elements, called anew at every forward pass; e.g. Haar samples of
    SO(2) for partial equivariance), or neither (all elements of a finite group, in ``G.elements`` order).
    The elements of the last forward pass are kept in :attr:`last_elements`. The matrices of sampled
    elements are computed in float64 and are not differentiable with respect to the sample.

    For a finite group with all its elements, the filters stacked over g are the PDO coefficients into
    ``n_out`` regular output fields (channel g of a regular field is orientation g), spanning
    :math:`\mathrm{Hom}_G(\hat\rho\otimes\rho_{in}, \rho_{reg})`, of dimension :math:`|\Gamma_N| C_{in}` per field:
    the space of the steerable basis, in other coordinates.

    ``forward()`` returns ``(n_out, n_elements, |Gamma_N|, C_in)``.

    >>> from epdo import groups, fields
    >>> G = groups.cyclic(4)
    >>> e = RotatedPDOExpansion(fields.FieldType(G, [G.regular]), n_out=2, order=1)
    >>> e().shape
    torch.Size([2, 4, 3, 4])
    """

    def __init__(self, in_type, n_out: int, order: int, elements=None, sampler=None, device=None, dtype=None):
        super().__init__()
        from ..diffops import derivative_representation
        from ..fields import FieldType

        if not isinstance(in_type, FieldType):
            raise TypeError(f"RotatedPDOExpansion: in_type must be an epdo.fields.FieldType, "
                            f"got {type(in_type).__name__}")
        for name, v, lo in (("n_out", n_out, 1), ("order", order, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"RotatedPDOExpansion: {name} must be an integer >= {lo}, got {v!r}")
        if elements is not None and sampler is not None:
            raise ValueError("RotatedPDOExpansion: pass elements or sampler, not both")
        if sampler is not None and not callable(sampler):
            raise TypeError(f"RotatedPDOExpansion: sampler must be callable, got {type(sampler).__name__}")
        G = in_type.group
        if elements is None and sampler is None:
            if not G.is_finite:
                raise ValueError(f"RotatedPDOExpansion: {G.name} is not finite; pass elements or a sampler")
            elements = G.elements
        self.in_type, self.order, self.sampler = in_type, int(order), sampler
        self._rho_hat = derivative_representation(G, self.order)
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        self.weight = nn.Parameter(torch.empty(int(n_out), self._rho_hat.size, in_type.size, **fk))
        self.elements = None if elements is None else tuple(self._check_elements(elements))
        self.last_elements = self.elements
        if self.elements is not None:
            a, b = self._matrices(self.elements)
            self.register_constant("_a", a, **fk)
            self.register_constant("_b", b, **fk)
        self.reset_parameters()

    def _check_elements(self, elements) -> list:
        els = list(elements)
        if not els:
            raise ValueError("RotatedPDOExpansion: the set of group elements is empty")
        G = self.in_type.group
        for g in els:
            if getattr(g, "group", G) != G:
                raise ValueError(f"RotatedPDOExpansion: element {g!r} is not an element of {G.name}")
        return els

    def _matrices(self, elements) -> tuple[np.ndarray, np.ndarray]:
        G = self.in_type.group
        inv = [G.inverse(g) for g in elements]
        return (np.stack([np.asarray(self._rho_hat(h)) for h in inv]),
                np.stack([np.asarray(self.in_type.representation(h)) for h in inv]))

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)

    def forward(self) -> torch.Tensor:
        if self.sampler is None:
            a, b = self._a, self._b
        else:
            els = self._check_elements(self.sampler())
            self.last_elements = tuple(els)
            a_np, b_np = self._matrices(els)
            a = torch.tensor(a_np, dtype=self.weight.dtype, device=self.weight.device)
            b = torch.tensor(b_np, dtype=self.weight.dtype, device=self.weight.device)
        return torch.einsum("gab,oac,gcd->ogbd", a, self.weight, b)  # W_g = rho_hat(g^-1)^T X rho_in(g^-1)

    def extra_repr(self) -> str:
        n = "sampled" if self.sampler is not None else len(self.elements)
        return f"{self.in_type}, n_out={self.weight.shape[0]}, order={self.order}, elements={n}"
