"""Multi-indices Gamma_N and the representation of linear maps on derivative vectors (Lemma 1, paper 000).

A multi-index ``alpha = (a, b)`` names the elementary PDO ``d^alpha = d^a/dx^a d^b/dy^b`` in the plane's
(x right, y up) frame. ``multi_indices(N)`` lists Gamma_N = {alpha : |alpha| <= N} by total order, then by
decreasing power of x: ``(0,0), (1,0), (0,1), (2,0), (1,1), (0,2), ...``.
"""

from __future__ import annotations

from functools import lru_cache
import numpy as np

__all__ = ["multi_indices", "num_multi_indices", "derivative_rep"]


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


def _poly_mul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Product of two homogeneous polynomials in (X, Y); coefficient k multiplies X^(deg-k) Y^k."""
    return np.convolve(p, q)


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
    col_x = np.array([a[0, 0], a[1, 0]])  # d/dx (f o A) = A11 X + A21 Y
    col_y = np.array([a[0, 1], a[1, 1]])  # d/dy (f o A) = A12 X + A22 Y
    size = num_multi_indices(order)
    out = np.zeros((size, size))
    start = 0
    for n in range(order + 1):
        # powers[k] = col^k as coefficient vectors, computed incrementally
        px = [np.ones(1)]
        py = [np.ones(1)]
        for _ in range(n):
            px.append(_poly_mul(px[-1], col_x))
            py.append(_poly_mul(py[-1], col_y))
        for row, (ea, eb) in enumerate((n - j, j) for j in range(n + 1)):
            out[start + row, start : start + n + 1] = _poly_mul(px[ea], py[eb])
        start += n + 1
    return out


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
