import numpy as np
import pytest
import torch

from epdo.diffops import (
    PADDINGS,
    Discretization,
    apply_stencils,
    correlate,
    correlate_separable,
    multi_indices,
    stencil_tensor,
    stencils,
    stencils_1d,
)

_NP_MODE = {"zeros": "constant", "replicate": "edge", "reflect": "reflect", "circular": "wrap"}
DISCS = [Discretization("fd", 5), Discretization("fd", 3), Discretization("gauss", 5), Discretization("gauss", 7, 1.3),
         Discretization("gauss", 11),
         Discretization("rbf", 5), Discretization("rbf", 3)]


def _reference(x: np.ndarray, st: np.ndarray, padding: str) -> np.ndarray:
    """float64 numpy cross-correlation, loop over taps: out[..., a, i, j] = sum_uv st[a, u, v] xp[..., i+u, j+v]."""
    k = st.shape[-1]
    r = k // 2
    h, w = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2) + [(r, r), (r, r)]
    xp = np.pad(x, pad, mode=_NP_MODE[padding])
    out = np.zeros(x.shape[:-2] + (len(st), h, w))
    for u in range(k):
        for v in range(k):
            out += st[:, u, v][:, None, None] * xp[..., None, u : u + h, v : v + w]
    return out


@pytest.mark.parametrize("disc", DISCS, ids=repr)
@pytest.mark.parametrize("padding", PADDINGS)
def test_apply_matches_float64_reference(disc, padding):
    order = 2 if disc.kernel_size == 3 else 4
    x = torch.randn(2, 3, 11, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = _reference(x.numpy(), np.array(stencils(order, disc)), padding)
    paths = ("dense", "separable") if disc.separable else ("dense",)
    for path in paths + ("auto",):
        out = apply_stencils(x, order, disc, padding=padding, path=path)
        assert out.shape == (2, 3, len(multi_indices(order)), 11, 9) and out.dtype == torch.float64
        np.testing.assert_allclose(out.numpy(), ref, atol=1e-12, err_msg=path)


@pytest.mark.parametrize("disc", [Discretization("fd", 5), Discretization("gauss", 5)], ids=repr)
def test_separable_equals_dense_in_float32(disc):
    x = torch.randn(4, 5, 13, 16, generator=torch.Generator().manual_seed(1))
    a = apply_stencils(x, 4, disc, path="separable")
    b = apply_stencils(x, 4, disc, path="dense")
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_shapes_and_leading_dimensions():
    d = Discretization("fd", 3)
    assert apply_stencils(torch.randn(6, 7), 2, d).shape == (6, 6, 7)
    assert apply_stencils(torch.randn(2, 6, 7), 1, d).shape == (2, 3, 6, 7)
    x = torch.randn(2, 3, 4, 6, 7)
    out = apply_stencils(x, 2, d)
    assert out.shape == (2, 3, 4, 6, 6, 7)
    torch.testing.assert_close(out[1, 2], apply_stencils(x[1, 2], 2, d))
    assert apply_stencils(torch.randn(0, 2, 5, 5), 2, d).shape == (0, 2, 6, 5, 5)
    assert apply_stencils(torch.randn(1, 1, 5, 5), 2, "rbf").shape == (1, 1, 6, 5, 5)  # a name: kernel 5


def test_derivatives_of_a_plane_in_the_x_right_y_up_frame():
    """f = 2x - 3y (x = column, y = -row): d/dx = 2, d/dy = -3 away from the border (FD and RBF-FD are exact
    on linear functions; truncated Gaussian derivatives are not)."""
    i, j = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
    f = (2 * j + 3 * i).double()
    for disc in (Discretization("fd", 3), Discretization("rbf", 3), Discretization("rbf", 5)):
        d = apply_stencils(f, 1, disc)
        torch.testing.assert_close(d[1, 3:-3, 3:-3], torch.full((3, 3), 2.0, dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close(d[2, 3:-3, 3:-3], torch.full((3, 3), -3.0, dtype=torch.float64), atol=1e-12,
                                   rtol=0)


@pytest.mark.parametrize("path", ["dense", "separable"])
def test_gradients_against_finite_differences(path):
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    disc = Discretization("gauss", 5)
    assert torch.autograd.gradcheck(lambda t: apply_stencils(t, 2, disc, path=path, padding="reflect"), (x,))


def test_works_in_inference_mode_and_then_with_autograd():
    """Cached stencil tensors are not inference tensors: a later call can be differentiated."""
    disc = Discretization("rbf", 3, params={"exponent": 5})
    with torch.inference_mode():
        apply_stencils(torch.randn(1, 1, 5, 5), 2, disc)
    x = torch.randn(1, 1, 5, 5, requires_grad=True)
    apply_stencils(x, 2, disc).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_low_level_functions_take_explicit_stencils():
    disc = Discretization("fd", 5)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    w = stencil_tensor(4, disc)
    assert w.shape == (15, 5, 5) and w.dtype == torch.float64
    torch.testing.assert_close(correlate(x, w), correlate(x, w[:, None]))
    s1 = torch.from_numpy(np.array(stencils_1d(4, disc)))
    torch.testing.assert_close(correlate_separable(x, s1, multi_indices(4)), correlate(x, w))


@pytest.mark.parametrize("call,err,match", [
    (lambda: apply_stencils(torch.ones(1, 1, 5, 5, dtype=torch.int64), 2, "fd"), TypeError, "floating-point"),
    (lambda: apply_stencils(torch.ones(5), 2, "fd"), ValueError, r"\(\.\.\., H, W\), got shape \(5,\)"),
    (lambda: apply_stencils(torch.ones(5, 5), 2, "fd", padding="same"), ValueError, "padding must be one of"),
    (lambda: apply_stencils(torch.ones(5, 5), 2, "rbf", path="separable"), ValueError, "separable"),
    (lambda: apply_stencils(torch.ones(5, 5), 2, "fd", path="fast"), ValueError, "path must be one of"),
    (lambda: apply_stencils(torch.ones(5, 5), True, "fd"), ValueError, "non-negative integer"),
    (lambda: apply_stencils(torch.ones(5, 5), 4, Discretization("fd", 3)), ValueError, "expected kernel_size >= 5"),
    (lambda: correlate(torch.ones(5, 5), torch.ones(3, 4, 4)), ValueError, "k odd"),
    (lambda: correlate_separable(torch.ones(5, 5), torch.ones(2, 3), ((2, 0),)), ValueError, "orders up to 2"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()
