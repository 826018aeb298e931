from math import factorial

import numpy as np
import pytest

from epdo.diffops import Discretization, derivative_rep, multi_indices, rbf_fd_weights, stencils
from epdo.diffops.rbf import grid_offsets, phs_derivative

CASES = [(order, k) for order in range(5) for k in (3, 5, 7) if k - 1 >= order]


def _monomial_on_grid(k: int, p: int, q: int) -> np.ndarray:
    d = grid_offsets(k)
    return d[..., 0] ** p * d[..., 1] ** q


@pytest.mark.parametrize("order,k", CASES)
def test_rbf_exact_on_polynomials_up_to_the_augmented_degree(order, k):
    """sum_taps stencil[alpha] * x^p y^q = d^alpha(x^p y^q)(0) = alpha! [p, q == alpha] for p + q <= k - 1.

    Float64 bound relative to the size of the terms summed, max|s| sum|x^p y^q| (measured worst 2.5e-14 at k=7).
    """
    disc = Discretization("rbf", k)
    assert disc.params["poly_degree"] == k - 1
    st = stencils(order, disc)
    for i, (a, b) in enumerate(multi_indices(order)):
        for p, q in multi_indices(k - 1):
            exact = factorial(a) * factorial(b) if (p, q) == (a, b) else 0.0
            mono = _monomial_on_grid(k, p, q)
            got = float(np.sum(st[i] * mono))
            scale = np.abs(st[i]).max() * np.abs(mono).sum()
            assert abs(got - exact) <= 1e-12 * scale, f"alpha={(a, b)} on x^{p} y^{q}: {got} vs {exact}"


@pytest.mark.parametrize("poly_degree", [2, 3, 4])
def test_rbf_exact_off_centre_with_lower_poly_degree(poly_degree):
    """conv2d of the stencils with a random polynomial of degree poly_degree gives its derivatives at every
    interior pixel (translation: the grid exactness at 0 holds at every pixel)."""
    import torch
    import torch.nn.functional as F

    order, k = 2, 5
    st = stencils(order, Discretization("rbf", k, params={"poly_degree": poly_degree, "exponent": 5}))
    rng = np.random.default_rng(poly_degree)
    coef = {pq: rng.normal() for pq in multi_indices(poly_degree)}
    n = 13
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x, y = (j - 6.0) / 3, (6.0 - i) / 3  # scaled coordinates: derivatives pick up 3^-|alpha|
    f = sum(c * x**p * y**q for (p, q), c in coef.items())
    out = F.conv2d(torch.from_numpy(f)[None, None], torch.from_numpy(np.array(st))[:, None], padding=k // 2)[0].numpy()
    inner = (slice(2, -2), slice(2, -2))
    for idx, (a, b) in enumerate(multi_indices(order)):
        exact = np.zeros_like(f)
        for (p, q), c in coef.items():
            if p >= a and q >= b:
                exact += (c * factorial(p) / factorial(p - a) * factorial(q) / factorial(q - b)
                          * x ** (p - a) * y ** (q - b) / 3.0 ** (a + b))
        np.testing.assert_allclose(out[idx][inner], exact[inner], atol=1e-10, err_msg=f"alpha={(a, b)}")


def test_rbf_weights_on_scattered_nodes_are_exact_and_not_finite_differences():
    """rbf_fd_weights works on any node set: exact on polynomials of poly_degree on 30 random nodes."""
    rng = np.random.default_rng(0)
    nodes = rng.uniform(-2, 2, size=(30, 2))
    alphas = multi_indices(3)
    w = rbf_fd_weights(nodes, alphas, exponent=5, poly_degree=4)
    for i, (a, b) in enumerate(alphas):
        for p, q in multi_indices(4):
            exact = factorial(a) * factorial(b) if (p, q) == (a, b) else 0.0
            assert abs(w[i] @ (nodes[:, 0] ** p * nodes[:, 1] ** q) - exact) < 1e-9
    # on the 3x3 grid the RBF d/dx uses the corners too (tensor-product FD does not)
    st = stencils(1, Discretization("rbf", 3))
    assert abs(st[1][0, 0]) > 1e-3 and np.all(st[1][:, 1] == 0)


@pytest.mark.parametrize("order,k", [(2, 3), (4, 5), (4, 7)])
def test_raw_solve_respects_the_grid_symmetries(order, k):
    """Before symmetrisation the solver's weights already satisfy s(d) = D(A) s(Ad) to rounding (1e-9)."""
    offs = grid_offsets(k).reshape(-1, 2)
    w = rbf_fd_weights(offs, multi_indices(order), 7, k - 1)
    r = k // 2
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    moved = np.rint(offs @ rot.T).astype(int)
    idx = (r - moved[:, 1]) * k + moved[:, 0] + r
    np.testing.assert_allclose(derivative_rep(rot, order) @ w[:, idx], w, atol=1e-9)
    np.testing.assert_allclose(stencils(order, Discretization("rbf", k)).reshape(len(w), -1), w, atol=1e-9)


def test_phs_derivative_against_finite_differences():
    """Analytic derivatives of r^m against central differences of step 1e-4 at off-centre points."""
    rng = np.random.default_rng(1)
    z = rng.uniform(-1.5, 1.5, size=(6, 2))
    h = 1e-4
    for m in (5, 7):
        f = lambda pts: np.linalg.norm(pts, axis=-1) ** m  # noqa: E731
        dx = (f(z + [h, 0]) - f(z - [h, 0])) / (2 * h)
        dxy = (f(z + [h, h]) - f(z + [h, -h]) - f(z + [-h, h]) + f(z - [h, h])) / (4 * h * h)
        dyy = (f(z + [0, h]) - 2 * f(z) + f(z - [0, h])) / (h * h)
        np.testing.assert_allclose(phs_derivative((1, 0), m, z), dx, rtol=1e-5)
        np.testing.assert_allclose(phs_derivative((1, 1), m, z), dxy, rtol=1e-5)
        np.testing.assert_allclose(phs_derivative((0, 2), m, z), dyy, rtol=1e-5)
    assert phs_derivative((2, 2), 5, np.zeros((1, 2)))[0] == 0.0
    with pytest.raises(ValueError, match="order < exponent"):
        phs_derivative((3, 2), 5, z)


@pytest.mark.parametrize("order", range(5))
def test_rbf_minimum_kernel(order):
    """Smallest kernel: the smallest odd k with k - 1 >= order (P must have full rank): 1, 3, 3, 5, 5."""
    disc = Discretization("rbf", 3)
    need = [1, 3, 3, 5, 5][order]
    assert disc.min_kernel_size(order) == need
    stencils(order, Discretization("rbf", need))
    if need > 1:
        with pytest.raises(ValueError, match=f"expected kernel_size >= {need}"):
            stencils(order, Discretization("rbf", need - 2))


def test_rbf_order_zero_is_the_identity_and_lower_orders_do_not_depend_on_N():
    for k in (1, 3, 5):
        st = stencils(0, Discretization("rbf", k))
        expect = np.zeros((1, k, k))
        expect[0, k // 2, k // 2] = 1.0
        np.testing.assert_allclose(st, expect, atol=1e-13)
    d = Discretization("rbf", 5)
    np.testing.assert_array_equal(stencils(2, d), stencils(4, d)[:6])


@pytest.mark.parametrize("params,order,match", [
    ({"exponent": 4}, 1, "odd positive integer exponent"),
    ({"poly_degree": 5}, 1, r"poly_degree in 0..4"),
    ({"poly_degree": 2}, 3, "needs poly_degree >= 3"),
    ({"exponent": 3}, 3, "needs an exponent > 3"),
    ({"degree": 3}, 1, r"takes the parameters \['exponent', 'poly_degree'\], got unknown \['degree'\]"),
])
def test_rbf_bad_parameters(params, order, match):
    with pytest.raises(ValueError, match=match):
        stencils(order, Discretization("rbf", 5, params=params))


def test_rbf_singular_system_is_reported():
    nodes = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # collinear: cannot determine y
    with pytest.raises(ValueError, match="singular"):
        rbf_fd_weights(nodes, multi_indices(1), 3, 1)
