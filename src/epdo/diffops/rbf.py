r"""RBF-FD weights with polyharmonic splines and polynomial augmentation (float64, numpy).

For nodes :math:`x_1..x_n` around the evaluation point 0 and a linear operator :math:`L = \partial^\alpha`,
the weights :math:`w` of :math:`Lf(0) \approx \sum_j w_j f(x_j)` solve the saddle-point system

.. math::
    \begin{pmatrix} A & P \\ P^\top & 0 \end{pmatrix} \begin{pmatrix} w \\ \lambda \end{pmatrix}
    = \begin{pmatrix} L\phi \\ Lp \end{pmatrix},\qquad
    A_{ij} = \phi(|x_i - x_j|),\; P_{il} = p_l(x_i),\;
    (L\phi)_j = \partial^\alpha_x \phi(|x - x_j|)\big|_{x=0},\; (Lp)_l = \partial^\alpha p_l(0),

with :math:`\phi(r) = r^m` (m odd: a polyharmonic spline) and :math:`p_l` the monomials
:math:`x^p y^q`, :math:`p + q \le d`. The last block row, :math:`P^\top w = Lp`, makes the weights exact on
every polynomial of degree :math:`\le d`; the spline part spends the remaining freedom on a rotation-invariant
(radial) interpolant, which is what makes RBF-FD more isotropic than tensor-product finite differences.

Choices (documented defaults of ``Discretization("rbf", k)``): ``exponent`` m = 7 and ``poly_degree`` d = k - 1,
the highest degree that a k x k grid determines (P has full column rank iff d <= k - 1). m must exceed the
derivative order: the derivatives of :math:`r^m` of order :math:`< m` vanish continuously at r = 0, so the
centre node's right-hand side is 0; higher ones are singular there. Measured (2026-12-02) with
``benchmarks/pdoconv.py``'s 22.5-degree equivariance error of PDOConv (C16, 8 -> 8 regular fields, order 4,
5 x 5, median of 3 initialisations): m = 5 / 7 / 9 gave 0.091 / 0.090 / 0.089 (FD 0.093, Gaussian sigma 0.8
0.063); at 7 x 7 and 9 x 9 RBF-FD gave 0.080 and 0.077 (FD 0.093 at every size), and at 7 x 7 d = N = 4
gave 0.078, about the same as d = k - 1 = 6. d = k - 1 is kept because it does not depend on N (the stencils
of order <= n are the same for every N >= n) and is exact on the most polynomials. On single 5 x 5 stencils
(smooth random input, error of :math:`S(f\circ R) - D(R)S(f)` per order) m = 7 was at least as equivariant
as m = 5 at every order.

Polyharmonic splines are scale-free, :math:`\phi(sr) = s^m\phi(r)`, so the system is solved on nodes scaled
into [-1, 1] and the weights rescaled by :math:`s^{-|\alpha|}` (better conditioned, same weights).

>>> import numpy as np
>>> from epdo.diffops import Discretization, stencils
>>> st = stencils(2, Discretization("rbf", 3))
>>> np.round(st[3], 4)  # d^2/dx^2 on 3 x 3 (rows: y = 1, 0, -1; columns: x = -1, 0, 1)
array([[-0.1726,  0.3451, -0.1726],
       [ 1.3451, -2.6903,  1.3451],
       [-0.1726,  0.3451, -0.1726]])
"""

from __future__ import annotations

from math import factorial

import numpy as np

from .derivatives import multi_indices

__all__ = ["grid_offsets", "phs_derivative", "rbf_fd_stencils", "rbf_fd_weights", "symmetrize_stencils"]


def _falling(x: float, n: int) -> float:
    out = 1.0
    for i in range(n):
        out *= x - i
    return out


def phs_derivative(alpha: tuple[int, int], exponent: int, z: np.ndarray) -> np.ndarray:
    r""":math:`\partial_x^a\partial_y^b |z|^m` at the points ``z`` (shape ``(n, 2)``), 0 where z = 0.

    With :math:`F(t) = t^{m/2}` and :math:`|z|^m = F(x^2 + y^2)`, Faa di Bruno for :math:`x^2` gives
    :math:`\partial_x^a\partial_y^b F = \sum_{i\le a/2,\,j\le b/2} c_{a,i}c_{b,j}(2x)^{a-2i}(2y)^{b-2j}
    F^{(a+b-i-j)}(x^2+y^2)`, :math:`c_{a,i} = a!/(i!\,(a-2i)!)`. Each term is homogeneous of degree
    m - |alpha|, so the value at z = 0 is 0 for |alpha| < m (required).
    """
    a, b = alpha
    if a + b >= exponent:
        raise ValueError(f"d^{alpha} of r^{exponent} is not continuous at 0: need derivative order < exponent")
    z = np.asarray(z, dtype=np.float64)
    x, y = z[:, 0], z[:, 1]
    t = x * x + y * y
    nz = t > 0
    xs, ys, ts = x[nz], y[nz], t[nz]
    val = np.zeros(len(xs))
    for i in range(a // 2 + 1):
        ca = factorial(a) / (factorial(i) * factorial(a - 2 * i))
        for j in range(b // 2 + 1):
            cb = factorial(b) / (factorial(j) * factorial(b - 2 * j))
            n = a + b - i - j
            val += ca * cb * (2 * xs) ** (a - 2 * i) * (2 * ys) ** (b - 2 * j) * _falling(exponent / 2, n) * ts ** (
                exponent / 2 - n
            )
    out = np.zeros(len(z))
    out[nz] = val
    return out


def rbf_fd_weights(
    nodes: np.ndarray, alphas: tuple[tuple[int, int], ...], exponent: int = 7, poly_degree: int = 2
) -> np.ndarray:
    """RBF-FD weights ``(len(alphas), n)`` of ``d^alpha f(0) ~ sum_j w_j f(nodes[j])`` (module doc's system).

    ``nodes``: ``(n, 2)`` positions relative to the evaluation point, in any frame (x, y). Raises ValueError if
    the system is singular (e.g. the nodes do not determine polynomials of ``poly_degree``).
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    if nodes.ndim != 2 or nodes.shape[1] != 2 or len(nodes) == 0:
        raise ValueError(f"nodes must be an array (n, 2) with n >= 1, got shape {nodes.shape}")
    if any(a + b > poly_degree for a, b in alphas):
        raise ValueError(f"derivative orders {sorted({a + b for a, b in alphas})} need poly_degree >= their maximum, "
                         f"got poly_degree={poly_degree}")
    scale = float(np.max(np.abs(nodes))) or 1.0
    y = nodes / scale
    n = len(y)
    mons = multi_indices(poly_degree)
    a_mat = np.linalg.norm(y[:, None, :] - y[None, :, :], axis=-1) ** exponent
    p_mat = np.stack([y[:, 0] ** p * y[:, 1] ** q for p, q in mons], axis=1)
    m = len(mons)
    system = np.block([[a_mat, p_mat], [p_mat.T, np.zeros((m, m))]])
    rhs = np.zeros((n + m, len(alphas)))
    for col, alpha in enumerate(alphas):
        rhs[:n, col] = phs_derivative(alpha, exponent, -y)  # d^alpha_x |x - y_j|^m at x = 0
        rhs[n + mons.index(alpha), col] = factorial(alpha[0]) * factorial(alpha[1])
    try:
        sol = np.linalg.solve(system, rhs)
    except np.linalg.LinAlgError:
        sol = None
    bad = sol is None or not np.all(np.isfinite(sol))
    if bad or np.abs(system @ sol - rhs).max() > 1e-8 * max(1.0, np.abs(sol).max()):
        raise ValueError(
            f"RBF-FD system is singular for {n} nodes, exponent={exponent}, poly_degree={poly_degree}: the nodes must "
            f"determine polynomials of degree {poly_degree} (on a k x k grid: poly_degree <= k - 1)"
        )
    orders = np.array([a + b for a, b in alphas], dtype=np.float64)
    return sol[:n].T / scale ** orders[:, None]


def grid_offsets(kernel_size: int) -> np.ndarray:
    """(x, y) offsets of the taps of a k x k stencil, ``(k, k, 2)``: entry ``[u, v]`` is ``(v - r, r - u)``."""
    r = kernel_size // 2
    u, v = np.meshgrid(np.arange(kernel_size), np.arange(kernel_size), indexing="ij")
    return np.stack([v - r, r - u], axis=-1).astype(np.float64)


_D4 = tuple(np.array(m, dtype=np.float64) for m in (
    [[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]],
    [[1, 0], [0, -1]], [[-1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1], [-1, 0]],
))


def symmetrize_stencils(st: np.ndarray, order: int) -> np.ndarray:
    r"""Average ``(|Gamma_N|, k, k)`` stencils over the square's symmetries A in D4:
    :math:`ar s(d) = rac18\sum_A D(A)\,s(Ad)` (``D = derivative_rep``).

    Stencils that discretise :math:`\partial^lpha` by a rule that commutes with D4 (as RBF-FD on the grid
    does in exact arithmetic) satisfy :math:`s(d) = D(A)\,s(Ad)`; the average keeps them and removes the
    solver's rounding (~1e-11 at k = 7) from that identity.
    """
    from .derivatives import derivative_rep

    k = st.shape[-1]
    r = k // 2
    offs = grid_offsets(k).reshape(-1, 2)
    flat = st.reshape(st.shape[0], -1)
    out = np.zeros_like(flat)
    for a in _D4:
        moved = np.rint(offs @ a.T).astype(int)  # A d for every tap d
        idx = (r - moved[:, 1]) * k + (moved[:, 0] + r)  # tap index of A d
        out += derivative_rep(a, order) @ flat[:, idx]
    return (out / len(_D4)).reshape(st.shape)


def rbf_fd_stencils(order: int, kernel_size: int, exponent: int = 7, poly_degree: int | None = None) -> np.ndarray:
    """RBF-FD stencils of all alpha in Gamma_N on the k x k grid, ``(|Gamma_N|, k, k)`` float64.

    Cross-correlation kernels in the (x right, y up) frame: ``stencil[alpha][u, v]`` weighs offset ``(v - r, r - u)``.
    Symmetrised over the grid's D4 (:func:`symmetrize_stencils`), so they transform exactly by ``derivative_rep``.
    """
    deg = kernel_size - 1 if poly_degree is None else poly_degree
    k = kernel_size
    w = rbf_fd_weights(grid_offsets(k).reshape(-1, 2), multi_indices(order), exponent, deg)
    w = symmetrize_stencils(w.reshape(-1, k, k), order)
    w[np.abs(w) < 1e-13 * max(1.0, np.abs(w).max())] = 0.0
    return w
