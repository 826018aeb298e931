from math import comb

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from epdo.diffops import Discretization, derivative_rep, fd_stencil_1d, multi_indices, stencils, stencils_1d


def test_fd_stencils_are_the_pdo_econv_ones():
    np.testing.assert_array_equal(fd_stencil_1d(1), [-0.5, 0, 0.5])
    np.testing.assert_array_equal(fd_stencil_1d(2), [1, -2, 1])
    np.testing.assert_allclose(fd_stencil_1d(3), [-0.5, 1, 0, -1, 0.5], atol=1e-14)
    np.testing.assert_allclose(fd_stencil_1d(4), [1, -4, 6, -4, 1], atol=1e-13)


def _grid(size):
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    c = size // 2
    return (j - c).astype(float), (c - i).astype(float)  # x right, y up


def _apply(stencil: np.ndarray, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(image)[None, None]
    w = torch.from_numpy(np.array(stencil))[None, None]
    return F.conv2d(x, w, padding=stencil.shape[-1] // 2)[0, 0].numpy()


@pytest.mark.parametrize("order", [2, 4])
def test_fd_exact_on_polynomials_within_order(order):
    disc = Discretization("fd", 5)
    st = stencils(order, disc)
    x, y = _grid(15)
    inner = (slice(3, -3), slice(3, -3))
    for k, (a, b) in enumerate(multi_indices(order)):
        for p in range(a + 2):
            for q in range(b + 2):
                f = x**p * y**q
                exact = np.zeros_like(f)
                if p >= a and q >= b:
                    exact = (np.prod(np.arange(p - a + 1, p + 1)) * np.prod(np.arange(q - b + 1, q + 1))
                             * x ** (p - a) * y ** (q - b))
                np.testing.assert_allclose(_apply(st[k], f)[inner], exact[inner], atol=1e-9,
                                           err_msg=f"alpha={(a, b)} on x^{p} y^{q}")


def _gauss_moment(k: int, sigma: float) -> float:
    return 0.0 if k % 2 else sigma**k * float(np.prod(np.arange(k - 1, 0, -2)) if k else 1.0)


@pytest.mark.parametrize("sigma,rtol", [(1.0, 1e-3), (1.25, 1e-6), (1.5, 1e-6), (2.0, 1e-6)])
def test_gaussian_stencils_match_smoothed_polynomial_derivatives(sigma, rtol):
    """(G * x^p)(x) = sum_k C(p,k) x^(p-k) sigma^k E[Z^k]; its derivatives are analytic.

    The sampled sum differs from the integral by aliasing (Poisson summation), of order
    |omega|^n exp(-2 pi^2 sigma^2) at omega = 2 pi for the n-th derivative, and by truncation of the window.
    Measured worst relative errors over n <= 4, p <= 6: 5e-4 at sigma=1.0, 8e-8 at 1.25, 2e-8 at 1.5,
    3e-7 at 2.0 (and 0.23 at sigma=0.8: below sigma=1 high derivatives alias badly).
    """
    order = 4
    ks = 2 * int(np.ceil(7 * sigma)) + 1
    s1 = stencils_1d(order, Discretization("gauss", ks, sigma))
    r = ks // 2
    offsets = np.arange(-r, r + 1, dtype=float)
    x0 = 0.7
    for n in range(order + 1):
        for p in range(7):
            # smoothed polynomial h(x) = sum_k C(p,k) m_k x^(p-k); its n-th derivative at x0
            coeffs = [comb(p, k) * _gauss_moment(k, sigma) for k in range(p + 1)]
            exact = sum(c * np.prod(np.arange(p - k - n + 1, p - k + 1)) * x0 ** (p - k - n)
                        for k, c in enumerate(coeffs) if p - k >= n)
            approx = np.sum(s1[n] * (x0 + offsets) ** p)
            np.testing.assert_allclose(approx, exact, rtol=rtol, atol=rtol, err_msg=f"n={n} p={p}")


def test_gaussian_order_zero_sums_to_one():
    s = stencils(3, Discretization("gauss", 5, 1.25))
    assert abs(s[0].sum() - 1.0) < 1e-14


_R90 = np.array([[0.0, -1.0], [1.0, 0.0]])
_FLIP = np.array([[1.0, 0.0], [0.0, -1.0]])


@pytest.mark.parametrize("disc", [Discretization("fd", 5), Discretization("gauss", 5, 1.0),
                                  Discretization("gauss", 7, 1.3),
                                  Discretization("rbf", 5), Discretization("rbf", 7),
                                  Discretization("rbf", 5, params={"exponent": 5, "poly_degree": 4})])
@pytest.mark.parametrize("name,mat", [("rot90", _R90), ("flip", _FLIP), ("rot180", _R90 @ _R90),
                                      ("flip_x", -_FLIP), ("swap_xy", np.array([[0.0, 1.0], [1.0, 0.0]]))])
def test_stencils_transform_exactly_under_grid_symmetries(disc, name, mat):
    """Stencil of d^alpha applied to f o A equals sum_beta D(A)_{alpha beta} (stencil_beta * f) o A exactly."""
    order = 4
    st = stencils(order, disc)
    rng = np.random.default_rng(0)
    f = rng.normal(size=(17, 17))
    # (f o A) on the grid: for A = rot90 (x,y)->(-y,x), f(A p) is f rotated clockwise: np.rot90(f, -1)
    # flip_x (x, y) -> (-x, y) mirrors the columns; swap_xy (x, y) -> (y, x) is the anti-transpose
    transform = {"rot90": lambda z: np.rot90(z, -1), "flip": lambda z: z[::-1], "rot180": lambda z: np.rot90(z, 2),
                 "flip_x": lambda z: z[:, ::-1], "swap_xy": lambda z: z[::-1, ::-1].T}[name]
    fa = np.ascontiguousarray(transform(f))
    d = derivative_rep(mat, order)
    lhs = np.stack([_apply(s, fa) for s in st])
    rhs = np.einsum("ab,bij->aij", d, np.stack([np.ascontiguousarray(transform(_apply(s, f))) for s in st]))
    np.testing.assert_allclose(lhs, rhs, atol=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="nope"), r"unknown discretization 'nope'; expected one of \('fd', 'gauss', 'rbf'"),
    (dict(method="fd", kernel_size=4), "odd"),
    (dict(method="fd", kernel_size=5, sigma=1.0), "sigma only"),
])
def test_bad_discretization(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Discretization(**kwargs)


def test_gauss_without_sigma_uses_the_documented_default():
    """Gaussian derivatives no longer need sigma: sigma = 0.8 + 0.1 (k - 5) (0.8 px at k = 5, docs/results.md)."""
    assert Discretization("gauss", 5).sigma == 0.8
    assert Discretization("gauss", 5) == Discretization("gauss", 5, 0.8)
    assert Discretization("gauss", 9).sigma == 1.2 and Discretization("gauss", 3).sigma == 0.6
    assert Discretization("gauss", 1).sigma == 0.4
    np.testing.assert_array_equal(stencils(2, Discretization("gauss", 5)), stencils(2, Discretization("gauss", 5, 0.8)))


def test_kernel_too_small_for_order():
    with pytest.raises(ValueError, match="too small"):
        stencils(4, Discretization("fd", 3))
