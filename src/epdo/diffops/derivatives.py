"""Multi-indices Gamma_N and the representation of linear maps on derivative vectors (Lemma 1, paper 000).

A multi-index ``alpha = (a, b)`` names the elementary PDO ``d^alpha = d^a/dx^a d^b/dy^b`` in the plane's
(x right, y up) frame. ``multi_indices(N)`` lists Gamma_N = {alpha : |alpha| <= N} by total order, then by
decreasing power of x: ``(0,0), (1,0), (0,1), (2,0), (1,1), (0,2), ...``.
"""

from __future__ import annotations

from functools import lru_cache
import numpy as np
import torch

__all__ = ["multi_indices", "num_multi_indices", "derivative_rep", "derivative_rep_torch"]


@lru_cache(maxsize=None)
def multi_indices(order: int) -> tuple[tuple[int, int], ...]:
    """Gamma_N for ``N = order``: all (a, b) with a + b <= N, ordered by a + b, then by decreasing a.

    >>> multi_indices(2)
    ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))
    """
    if not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}")
    return tuple((n - j, j) for n in range(order + 1) for j in range(n + 1))


def num_multi_indices(order: int) -> int:
    """|Gamma_N| = (N + 1)(N + 2) / 2."""
    return (order + 1) * (order + 2) // 2


def derivative_rep(matrix: np.ndarray, order: int) -> np.ndarray:
    r"""The matrix D(A) of size |Gamma_N| x |Gamma_N| with :math:`D(f\circ A)(x) = D(A)\,(Df)(Ax)`.

    ``Df`` is the vector of derivatives :math:`(\partial^\alpha f)_{\alpha\in\Gamma_N}` in the order of
    :func:`multi_indices`. By the chain rule :math:`\partial_{x_k}(f\circ A) = \sum_l A_{lk}(\partial_l f)\circ A`,
    so :math:`\partial_x^a\partial_y^b (f\circ A)` is the polynomial
    :math:`(A_{11}X + A_{21}Y)^a (A_{12}X + A_{22}Y)^b` in :math:`X=\partial_x, Y=\partial_y`; D(A) is block
    diagonal over the orders. ``D(AB) = D(B) D(A)`` (an anti-homomorphism), hence
    :math:`\hat\rho(g) = D(g^{-1})` is the representation of Lemma 1 in paper 000 (Eq. 5).

    Works for any order N and any real 2x2 matrix (rotations, reflections, scalings, shears).
    """
    a = np.asarray(matrix, dtype=np.float64)
    if a.shape != (2, 2):
        raise ValueError(f"derivative_rep expects a 2x2 matrix, got shape {a.shape}")
    if not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}")
    return derivative_rep_torch(torch.tensor(a)[None], int(order))[0].numpy()


def _poly_mul_torch(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Batched product of homogeneous polynomials in (X, Y): ``(S, a + 1)`` x ``(S, b + 1)`` -> ``(S, a + b + 1)``
    (coefficient k multiplies X^(deg - k) Y^k)."""
    a, b = p.shape[1] - 1, q.shape[1] - 1
    out = p.new_zeros(p.shape[0], a + b + 1)
    for j in range(b + 1):
        out = out + torch.nn.functional.pad(p * q[:, j : j + 1], (j, b - j))
    return out


def derivative_rep_torch(matrices: torch.Tensor, order: int) -> torch.Tensor:
    r"""``(S, |Gamma_N|, |Gamma_N|)``: :math:`D(A)` of :func:`derivative_rep` for a batch ``(S, 2, 2)`` of
    matrices, differentiable in them (the one implementation: :func:`derivative_rep` calls it).
    :math:`\partial_x^a\partial_y^b(f\circ A)` is the polynomial :math:`(A_{11}X + A_{21}Y)^a (A_{12}X + A_{22}Y)^b`,
    block diagonal over the orders.

    >>> m = torch.tensor([[[0.6, -0.8], [0.8, 0.6]]], dtype=torch.float64)
    >>> derivative_rep_torch(m, 1)[0]
    tensor([[ 1.0000,  0.0000,  0.0000],
            [ 0.0000,  0.6000,  0.8000],
            [ 0.0000, -0.8000,  0.6000]], dtype=torch.float64)
    """
    if matrices.dim() != 3 or matrices.shape[1:] != (2, 2):
        raise ValueError(f"derivative_rep_torch: expected (S, 2, 2) matrices, got {tuple(matrices.shape)}")
    S = matrices.shape[0]
    col_x, col_y = matrices[:, :, 0], matrices[:, :, 1]  # d/dx (f o A) = A11 X + A21 Y; d/dy: A12 X + A22 Y
    size = (order + 1) * (order + 2) // 2
    rows, start = [], 0
    for n in range(order + 1):
        px, py = [matrices.new_ones(S, 1)], [matrices.new_ones(S, 1)]
        for _ in range(n):
            px.append(_poly_mul_torch(px[-1], col_x))
            py.append(_poly_mul_torch(py[-1], col_y))
        for j in range(n + 1):
            rows.append(torch.nn.functional.pad(_poly_mul_torch(px[n - j], py[j]), (start, size - start - n - 1)))
        start += n + 1
    return torch.stack(rows, 1)


def derivative_representation(group, order: int):
    r""":math:`\hat\rho` of Lemma 1 (paper 000) as an :class:`epdo.groups.Representation` of ``group``.

    :math:`\hat\rho(g) = D(g^{-1})` acts on the vector of derivatives of orders 0..N (Eq. 5); it is not
    orthogonal (its change of basis is not), and for finite groups its exact matrices are kept.
    """
    return _derivative_representation(group, order)


@lru_cache(maxsize=None)
def _derivative_representation(group, order: int):
    from ..groups import Representation

    def matrix(g):
        return derivative_rep(group.inverse(g).matrix, order)

    return Representation.from_matrices(group, matrix, num_multi_indices(order), f"rho_hat(N={order})",
                                        max_frequency=order,
                                        expr=f"epdo.diffops.derivative_representation({group!r}, {order})")
