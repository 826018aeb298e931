import numpy as np
import pytest

from epdo.diffops import derivative_rep, multi_indices, num_multi_indices


def test_multi_indices_order_and_size():
    assert multi_indices(0) == ((0, 0),)
    assert multi_indices(2) == ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))
    for n in range(8):
        assert len(multi_indices(n)) == num_multi_indices(n) == (n + 1) * (n + 2) // 2


@pytest.mark.parametrize("order", range(7))
def test_derivative_rep_is_antihomomorphism(order):
    rng = np.random.default_rng(order)
    for _ in range(5):
        a, b = rng.normal(size=(2, 2, 2))
        lhs = derivative_rep(a @ b, order)
        rhs = derivative_rep(b, order) @ derivative_rep(a, order)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(derivative_rep(np.eye(2), order), np.eye(num_multi_indices(order)), atol=0)


def _poly_derivatives(coef: dict, order: int, point) -> np.ndarray:
    """Exact derivatives (Gamma_N order) at `point` of p(x, y) = sum c_pq x^p y^q."""
    x, y = point
    out = []
    for a, b in multi_indices(order):
        total = 0.0
        for (p, q), c in coef.items():
            if p < a or q < b:
                continue
            fa = np.prod(np.arange(p - a + 1, p + 1)) if a else 1.0
            fb = np.prod(np.arange(q - b + 1, q + 1)) if b else 1.0
            total += c * fa * fb * x ** (p - a) * y ** (q - b)
        out.append(total)
    return np.array(out)


def _compose(coef: dict, a: np.ndarray) -> dict:
    """Coefficients of (p o A)(x, y) = p(A11 x + A12 y, A21 x + A22 y), expanded."""
    from numpy.polynomial import polynomial as P

    out: dict = {}
    for (p, q), c in coef.items():
        # (A11 x + A12 y)^p (A21 x + A22 y)^q as a 2-D coefficient grid
        lin1 = np.array([[0.0, a[0, 1]], [a[0, 0], 0.0]])  # grid[i, j] multiplies x^i y^j
        lin2 = np.array([[0.0, a[1, 1]], [a[1, 0], 0.0]])
        grid = np.array([[1.0]])
        for _ in range(p):
            grid = _mul2(grid, lin1)
        for _ in range(q):
            grid = _mul2(grid, lin2)
        for (i, j), v in np.ndenumerate(grid):
            out[(i, j)] = out.get((i, j), 0.0) + c * v
    return out


def _mul2(g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
    out = np.zeros((g1.shape[0] + g2.shape[0] - 1, g1.shape[1] + g2.shape[1] - 1))
    for (i, j), v in np.ndenumerate(g1):
        out[i : i + g2.shape[0], j : j + g2.shape[1]] += v * g2
    return out


@pytest.mark.parametrize("order", [1, 2, 3, 4, 6])
def test_derivative_rep_matches_chain_rule_on_polynomials(order):
    rng = np.random.default_rng(10 + order)
    coef = {(p, q): rng.normal() for p in range(order + 2) for q in range(order + 2 - p)}
    a = rng.normal(size=(2, 2))
    x = rng.normal(size=2)
    lhs = _poly_derivatives(_compose(coef, a), order, x)  # D(f o A)(x)
    rhs = derivative_rep(a, order) @ _poly_derivatives(coef, order, a @ x)  # D(A) (Df)(A x)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9, atol=1e-9)


def test_derivative_rep_rotation_is_orthogonal_on_order_one():
    t = 0.3
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    d = derivative_rep(r, 1)
    # gradient of f o R at x is R^T (grad f)(R x)
    np.testing.assert_allclose(d[1:, 1:], r.T, atol=1e-14)


@pytest.mark.parametrize("bad", [np.eye(3), np.ones(2)])
def test_derivative_rep_rejects_non_2x2(bad):
    with pytest.raises(ValueError, match="2x2"):
        derivative_rep(bad, 2)


def test_negative_order_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        multi_indices(-1)
