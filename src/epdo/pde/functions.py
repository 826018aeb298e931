r"""Parametric right-hand sides :math:`F_\theta` of :math:`\partial_t u = F_\theta(I_1, \dots, I_m)`.

Each module holds the parameters of ``n_pdes`` independent PDEs and maps invariants
``(B, n_pdes, m, H, W)`` (or a list of ``m`` tensors ``(B, n_pdes, H, W)``, which avoids a stacking copy)
to ``(B, n_pdes, H, W)``, pointwise in space:

* ``"linear"`` (:class:`LinearF`, the paper's choice): :math:`F = b + \sum_i \theta_i I_i`, ``m + 1``
  parameters per PDE.
* ``"poly"`` (:class:`PolynomialF`): all monomials of the invariants of degree ``1..degree`` plus a bias.
* ``"mlp"`` (:class:`MLPF`): :math:`F = w_2^\top \tanh(W_1 I + b_1) + b_2` with ``hidden`` units per PDE
  (the paper's suggested extension, after Finzi et al. 2020).

Coefficients start small (normal, std ``init_std``) so that the initial flow is close to the identity
map and the explicit Euler scheme starts stable.

>>> f = LinearF(n_pdes=2, n_invariants=5)
>>> sum(p.numel() for p in f.parameters())
12
>>> f(torch.zeros(3, 2, 5, 4, 4)).shape
torch.Size([3, 2, 4, 4])
"""

from __future__ import annotations

from itertools import combinations_with_replacement
from typing import Sequence

import torch
from torch import nn

__all__ = ["FUNCTIONS", "LinearF", "MLPF", "PolynomialF", "make_function"]

FUNCTIONS = ("linear", "poly", "mlp")


class _BaseF(nn.Module):
    def __init__(self, n_pdes: int, n_invariants: int, init_std: float) -> None:
        super().__init__()
        for name, v in (("n_pdes", n_pdes), ("n_invariants", n_invariants)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive integer, got {v!r}")
        if not init_std >= 0:
            raise ValueError(f"{type(self).__name__}: init_std must be >= 0, got {init_std!r}")
        self.n_pdes, self.n_invariants, self.init_std = n_pdes, n_invariants, float(init_std)

    def _split(self, inv: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Validate and return the invariants as a list of ``m`` real float tensors ``(B, n_pdes, H, W)``."""
        if isinstance(inv, torch.Tensor):
            self._check_dtype(inv)
            if inv.dim() != 5 or inv.shape[1] != self.n_pdes or inv.shape[2] != self.n_invariants:
                raise ValueError(
                    f"{type(self).__name__}: expected invariants (B, {self.n_pdes}, {self.n_invariants}, H, W), "
                    f"got {tuple(inv.shape)}"
                )
            return list(inv.unbind(2))
        parts = list(inv)
        for p in parts:
            self._check_dtype(p)
        if len(parts) != self.n_invariants or any(p.dim() != 4 or p.shape[1] != self.n_pdes for p in parts):
            raise ValueError(
                f"{type(self).__name__}: expected {self.n_invariants} invariants (B, {self.n_pdes}, H, W), "
                f"got {[tuple(p.shape) for p in parts]}"
            )
        return parts

    def _check_dtype(self, t: object) -> None:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():  # also rejects complex
            got = f"dtype {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"{type(self).__name__}: expected real float invariants, got {got}")

    def extra_repr(self) -> str:
        return f"n_pdes={self.n_pdes}, n_invariants={self.n_invariants}"


class LinearF(_BaseF):
    r""":math:`F_k = b_k + \sum_i \theta_{k,i} I_{k,i}`; ``weight (n_pdes, m)``, ``bias (n_pdes,)``."""

    def __init__(self, n_pdes: int, n_invariants: int, init_std: float = 1e-2) -> None:
        super().__init__(n_pdes, n_invariants, init_std)
        self.weight = nn.Parameter(torch.empty(n_pdes, n_invariants))
        self.bias = nn.Parameter(torch.empty(n_pdes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.init_std)
        nn.init.zeros_(self.bias)

    def forward(self, inv: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.bias.view(1, -1, 1, 1)
        for i, p in enumerate(self._split(inv)):  # a loop of axpys beats stack + einsum on CPU
            out = out + self.weight[:, i].view(1, -1, 1, 1) * p
        return out


class PolynomialF(_BaseF):
    r"""Multivariate polynomial of degree ``degree`` in the invariants: all monomials
    :math:`\prod_j I_{i_j}`, :math:`1\le` degree, plus a bias. ``degree=1`` is :class:`LinearF`."""

    def __init__(self, n_pdes: int, n_invariants: int, degree: int = 2, init_std: float = 1e-2) -> None:
        super().__init__(n_pdes, n_invariants, init_std)
        if not isinstance(degree, int) or degree < 1:
            raise ValueError(f"PolynomialF: degree must be a positive integer, got {degree!r}")
        self.degree = degree
        self.monomials = tuple(
            c for d in range(1, degree + 1) for c in combinations_with_replacement(range(n_invariants), d)
        )
        self.weight = nn.Parameter(torch.empty(n_pdes, len(self.monomials)))
        self.bias = nn.Parameter(torch.empty(n_pdes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.init_std)
        nn.init.zeros_(self.bias)

    def forward(self, inv: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        parts = self._split(inv)
        out = self.bias.view(1, -1, 1, 1)
        terms: dict[tuple[int, ...], torch.Tensor] = {}
        for k, mono in enumerate(self.monomials):  # ordered by degree: reuse the product of the prefix
            terms[mono] = parts[mono[0]] if len(mono) == 1 else terms[mono[:-1]] * parts[mono[-1]]
            out = out + self.weight[:, k].view(1, -1, 1, 1) * terms[mono]
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", degree={self.degree}"


class MLPF(_BaseF):
    r""":math:`F_k = w_{2,k}^\top \tanh(W_{1,k} I_k + b_{1,k}) + b_{2,k}`, one small MLP per PDE."""

    def __init__(self, n_pdes: int, n_invariants: int, hidden: int = 8, init_std: float = 1e-2) -> None:
        super().__init__(n_pdes, n_invariants, init_std)
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"MLPF: hidden must be a positive integer, got {hidden!r}")
        self.hidden = hidden
        self.w1 = nn.Parameter(torch.empty(n_pdes, hidden, n_invariants))
        self.b1 = nn.Parameter(torch.empty(n_pdes, hidden))
        self.w2 = nn.Parameter(torch.empty(n_pdes, hidden))
        self.b2 = nn.Parameter(torch.empty(n_pdes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.w1, std=n_inv_std(self.n_invariants))
        nn.init.zeros_(self.b1)
        nn.init.normal_(self.w2, std=self.init_std)
        nn.init.zeros_(self.b2)

    def forward(self, inv: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        inv = torch.stack(self._split(inv), dim=2)
        h = torch.tanh(torch.einsum("bkihw,kji->bkjhw", inv, self.w1) + self.b1[None, :, :, None, None])
        return torch.einsum("bkjhw,kj->bkhw", h, self.w2) + self.b2.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", hidden={self.hidden}"


def n_inv_std(m: int) -> float:
    """LeCun-normal std of the first MLP layer."""
    return m**-0.5


def make_function(kind: str, n_pdes: int, n_invariants: int, **kwargs) -> _BaseF:
    """Build ``F_theta`` by name: ``"linear"``, ``"poly"`` (``degree=``) or ``"mlp"`` (``hidden=``)."""
    classes = {"linear": LinearF, "poly": PolynomialF, "mlp": MLPF}
    if kind not in classes:
        raise ValueError(f"unknown F_theta kind {kind!r}; expected one of {FUNCTIONS}")
    return classes[kind](n_pdes, n_invariants, **kwargs)
