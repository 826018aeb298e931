r"""Tangent-plane derivative operators on the icosphere (paper 002, "Estimation of Partial Derivatives").

At each vertex P with frame :math:`s(P)` (:mod:`epdo.sphere.mesh`), a neighbour Q has tangent coordinates
:math:`x = (s(P)^T Q)_{1,2}` (orthographic chart) and the second-order Taylor row

.. math:: f(Q) - f(P) \approx [x_1,\ x_2,\ x_1^2/2,\ x_1 x_2,\ x_2^2/2]\; D_P,\qquad
          D_P = (f_1, f_2, f_{11}, f_{12}, f_{22})(P)

in the chart :math:`f\circ\varphi_P^{-1}`. :math:`D_P` is the weighted least-squares solution over the
**2-ring** of P (10 neighbours at level 0, 15-18 after), weights :math:`w_Q = (h / |x_Q|)^2` with h the mean
1-ring distance at P (the 1-ring dominates, the 2-ring makes the system well posed: the 12 icosahedron vertices
have only 5 one-ring neighbours for 5 unknowns). The weights depend on distances only, so a rotation of the
frame rotates :math:`D_P` exactly (the Taylor row space is closed under in-plane rotations); an icosahedral
rotation maps every stencil onto another one isometrically.

Each derivative is a sparse V x V matrix (row P: coefficients on the 2-ring and on P itself, rows summing to 0):
one sparse-dense product per derivative per layer.

>>> import torch
>>> from epdo.sphere.derivatives import derivative_matrices
>>> D = derivative_matrices(2)            # (5, ...) CSR, one per derivative
>>> len(D), D[0].shape, D[0].layout
(5, torch.Size([162, 162]), torch.sparse_csr)
>>> float((D[0] @ torch.ones(162, 1, dtype=torch.float64)).abs().max()) < 1e-12   # constants: zero
True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .mesh import Icosphere, icosphere

__all__ = ["Stencils", "stencils", "derivative_matrices", "dense_reference", "taylor_rows", "DERIVATIVES"]

#: the order of the derivatives everywhere in epdo.sphere
DERIVATIVES = ("f_1", "f_2", "f_11", "f_12", "f_22")


def taylor_rows(x: np.ndarray) -> np.ndarray:
    """The Taylor design rows [x1, x2, x1^2/2, x1 x2, x2^2/2] of tangent coordinates ``(..., 2)``."""
    x1, x2 = x[..., 0], x[..., 1]
    return np.stack([x1, x2, x1 * x1 / 2, x1 * x2, x2 * x2 / 2], axis=-1)


@dataclass(frozen=True, eq=False)
class Stencils:
    """The least-squares stencils of one level.

    Attributes:
        rows, cols: (E,) int64 entries (P, Q) of the 2-ring, P != Q, sorted by row.
        coef: (5, E) float64: derivative k at P is ``sum_Q coef[k, e] (f(Q) - f(P))``.
        coords: (E, 2) tangent coordinates of Q in P's frame.
        cond: (V,) condition numbers of the weighted design matrices.
    """

    rows: np.ndarray
    cols: np.ndarray
    coef: np.ndarray
    coords: np.ndarray
    cond: np.ndarray


@lru_cache(maxsize=None)
def stencils(level: int) -> Stencils:
    """Stencils of :func:`epdo.sphere.icosphere` ``(level)`` (cached)."""
    mesh = icosphere(level)
    return _stencils(mesh)


def _stencils(mesh: Icosphere) -> Stencils:
    v, s = mesh.vertices, mesh.frames
    indptr, cols = mesh.ring2
    n = len(v)
    deg = np.diff(indptr)
    rows = np.repeat(np.arange(n), deg)
    x = np.einsum("eji,ej->ei", s[rows], v[cols])[:, :2]  # (s(P)^T Q)_{1,2}
    # 1-ring mean distance per vertex, for the weight scale
    ip1, ix1 = mesh.ring1
    r1 = np.repeat(np.arange(n), np.diff(ip1))
    d1 = np.linalg.norm(np.einsum("eji,ej->ei", s[r1], v[ix1])[:, :2], axis=1)
    h = np.bincount(r1, d1, n) / np.diff(ip1)
    k = int(deg.max())
    pos = np.arange(len(rows)) - np.repeat(indptr[:-1], deg)
    A = np.zeros((n, k, 5))
    W = np.zeros((n, k))
    A[rows, pos] = taylor_rows(x)
    W[rows, pos] = (h[rows] ** 2) / (x ** 2).sum(1)
    Aw = A * np.sqrt(W)[..., None]
    # column scaling for conditioning: first-order columns by h, second-order by h^2
    scale = np.stack([h, h, h * h, h * h, h * h], axis=1)[:, None, :]
    As = Aw / scale
    gram = np.einsum("nki,nkj->nij", As, As)  # 5x5 normal equations (well conditioned after the scaling)
    ev = np.linalg.eigvalsh(gram)
    cond = np.sqrt(ev[:, -1] / ev[:, 0])
    pinv = np.linalg.solve(gram, As.transpose(0, 2, 1))  # (n, 5, k)
    C = pinv / scale.transpose(0, 2, 1) * np.sqrt(W)[:, None, :]  # (n, 5, k): D = C @ (f(Q) - f(P))
    coef = C[rows, :, pos].T.copy()
    for a in (rows, cols, coef, x, cond):
        a.setflags(write=False)
    return Stencils(rows, cols, coef, x, cond)


def _to_csr(rows, cols, vals, n, dtype) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "sparse CSR support is in beta"
        coo = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows, cols])), torch.as_tensor(vals), (n, n),
                                      check_invariants=False)
        return coo.coalesce().to_sparse_csr().to(dtype)


@lru_cache(maxsize=32)
def _matrices(level: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    st = stencils(level)
    n = icosphere(level).num_vertices
    diag = np.arange(n)
    out = []
    for k in range(5):
        c = st.coef[k]
        centre = -np.bincount(st.rows, c, n)
        out.append(_to_csr(np.concatenate([st.rows, diag]), np.concatenate([st.cols, diag]),
                           np.concatenate([c, centre]), n, dtype))
    return tuple(out)


def derivative_matrices(level: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """The five derivative operators (f_1, f_2, f_11, f_12, f_22) of ``level`` as V x V torch sparse CSR
    matrices (cached per level and dtype)."""
    return _matrices(int(level), dtype)


def dense_reference(level: int) -> np.ndarray:
    """(5, V, V) float64 dense operators, by an independent per-vertex ``numpy.linalg.lstsq`` loop (tests)."""
    mesh = icosphere(level)
    n = mesh.num_vertices
    out = np.zeros((5, n, n))
    for p in range(n):
        nb = mesh.neighbours(p, 2)
        x = (mesh.frames[p].T @ mesh.vertices[nb].T).T[:, :2]
        h = np.mean(np.linalg.norm((mesh.frames[p].T @ mesh.vertices[mesh.neighbours(p, 1)].T).T[:, :2], axis=1))
        w = np.sqrt(h * h / (x ** 2).sum(1))
        sol = np.linalg.lstsq(taylor_rows(x) * w[:, None], np.diag(w), rcond=None)[0]  # (5, k)
        out[:, p, nb] = sol
        out[:, p, p] = -sol.sum(1)
    return out
