"""Discretised elementary PDOs: finite differences (PDO-eConv) and Gaussian derivatives.

Every stencil set here is separable: the stencil of ``d^a/dx^a d^b/dy^b`` is the outer product of a 1-D
stencil of order ``b`` along y (rows, y up) and one of order ``a`` along x (columns). Stencils are
cross-correlation kernels for ``torch.nn.functional.conv2d`` with ``padding=k//2``.

Finite differences (Shen et al. 2020): the minimal central stencils, exact on polynomials of degree
``n + 1`` for derivative order ``n``::

    n=1: [-1/2, 0, 1/2]   n=2: [1, -2, 1]   n=3: [-1/2, 1, 0, -1, 1/2]   n=4: [1, -4, 6, -4, 1]

Gaussian derivatives (Jenner & Weiler 2021; paper 000 Eq. 15): ``d^alpha f ~ sum_n (d^alpha G)(x - x_n) f(x_n)``
with ``G(x, y) = g(x) g(y)`` and ``g`` the 1-D Gaussian of standard deviation ``sigma``. Normalisation: each
1-D stencil is divided by ``sum_m g(m)`` over the window, so the order-0 stencil sums to exactly one (a
constant image is preserved whatever the truncation); for windows of radius >= 6 sigma this equals the
continuous normalisation to ~1e-9, and the stencils reproduce the derivatives of the Gaussian-smoothed image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import factorial

import numpy as np
from numpy.polynomial import hermite_e

from .derivatives import multi_indices

__all__ = ["Discretization", "DISCRETIZATIONS", "fd_stencil_1d", "gaussian_stencil_1d", "stencils_1d", "stencils"]

DISCRETIZATIONS = ("fd", "gauss")


def _fd_radius(n: int) -> int:
    return (n + 1) // 2 if n % 2 else n // 2


@lru_cache(maxsize=None)
def fd_stencil_1d(n: int) -> np.ndarray:
    """Minimal central finite-difference stencil of derivative order ``n`` (length ``2r+1``, offsets -r..r).

    Solves the moment conditions ``sum_m w_m m^p / p! = delta_{pn}`` for ``p = 0..2r``.
    """
    r = _fd_radius(n)
    offsets = np.arange(-r, r + 1, dtype=np.float64)
    vander = np.stack([offsets**p / factorial(p) for p in range(2 * r + 1)])
    rhs = np.zeros(2 * r + 1)
    rhs[n] = 1.0
    w = np.linalg.solve(vander, rhs)
    w[np.abs(w) < 1e-12] = 0.0
    return w


def gaussian_stencil_1d(n: int, kernel_size: int, sigma: float) -> np.ndarray:
    """Sampled n-th derivative of a 1-D Gaussian as a correlation stencil, offsets -r..r (see module doc).

    ``s[m] = g^(n)(-m) / sum_m g(m)`` with ``g^(n)(t) = (-1/sigma)^n He_n(t/sigma) g(t)``.
    """
    r = kernel_size // 2
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    coeffs = np.zeros(n + 1)
    coeffs[n] = 1.0
    he = hermite_e.hermeval(-t / sigma, coeffs)
    return (-1.0 / sigma) ** n * he * g / g.sum()


@dataclass(frozen=True)
class Discretization:
    """How elementary PDOs become stencils.

    Args:
        method: ``"fd"`` (finite differences) or ``"gauss"`` (Gaussian derivatives).
        kernel_size: odd stencil width k.
        sigma: Gaussian standard deviation in pixels (``"gauss"`` only).
    """

    method: str = "fd"
    kernel_size: int = 5
    sigma: float | None = None

    def __post_init__(self) -> None:
        if self.method not in DISCRETIZATIONS:
            raise ValueError(f"unknown discretization {self.method!r}; expected one of {DISCRETIZATIONS}")
        k = self.kernel_size
        if not isinstance(k, (int, np.integer)) or k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {k!r}")
        if self.method == "gauss":
            if self.sigma is None or not self.sigma > 0:
                raise ValueError(f"discretization 'gauss' needs sigma > 0, got sigma={self.sigma!r}")
        elif self.sigma is not None:
            raise ValueError(f"sigma only applies to discretization 'gauss', got sigma={self.sigma!r} with 'fd'")

    def check_order(self, order: int) -> None:
        """Raise ValueError if the kernel is too small to hold derivatives up to ``order``."""
        if self.method == "fd":
            need = 2 * _fd_radius(order) + 1
            if self.kernel_size < need:
                raise ValueError(
                    f"kernel_size={self.kernel_size} is too small for finite differences of order {order}: "
                    f"need kernel_size >= {need}"
                )
        elif self.kernel_size < 3 and order > 0:
            raise ValueError(f"kernel_size={self.kernel_size} is too small for Gaussian derivatives of order {order}")


@lru_cache(maxsize=None)
def stencils_1d(order: int, disc: Discretization) -> np.ndarray:
    """1-D stencils of derivative orders 0..N as an array ``(N + 1, k)`` (offset -r..r along +x)."""
    disc.check_order(order)
    k = disc.kernel_size
    out = np.zeros((order + 1, k))
    for n in range(order + 1):
        if disc.method == "fd":
            s = fd_stencil_1d(n)
            pad = (k - len(s)) // 2
            out[n, pad : pad + len(s)] = s
        else:
            out[n] = gaussian_stencil_1d(n, k, float(disc.sigma))
    out.setflags(write=False)
    return out


@lru_cache(maxsize=None)
def stencils(order: int, disc: Discretization) -> np.ndarray:
    """Stencils of all ``d^alpha``, alpha in Gamma_N, as a float64 array ``(|Gamma_N|, k, k)``.

    ``stencil[alpha][u, v] = s_b[::-1][u] * s_a[v]`` (rows are y reversed because y points up).
    """
    s1 = stencils_1d(order, disc)
    out = np.stack([np.outer(s1[b][::-1], s1[a]) for a, b in multi_indices(order)])
    out.setflags(write=False)
    return out
