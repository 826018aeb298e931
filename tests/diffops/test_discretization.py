import dataclasses
import importlib
import math
import pickle

import numpy as np
import pytest
import torch

from epdo import diffops
from epdo.diffops import (
    DISCRETIZATIONS,
    Discretization,
    DiscretizationBuilder,
    apply_stencils,
    as_discretization,
    fd_stencil_1d,
    gaussian_stencil_1d,
    register_discretization,
    stencils,
    stencils_1d,
)

stencils_module = importlib.import_module("epdo.diffops.stencils")

VALUES = [
    Discretization("fd", 5),
    Discretization("fd", 3),
    Discretization("gauss", 5, 0.8),
    Discretization("gauss", 7),
    Discretization("rbf", 5),
    Discretization("rbf", 7, params={"exponent": 5, "poly_degree": 4}),
]


@pytest.mark.parametrize("disc", VALUES, ids=repr)
def test_discretization_is_a_value(disc):
    assert eval(repr(disc), {"Discretization": Discretization}) == disc
    assert hash(eval(repr(disc), {"Discretization": Discretization})) == hash(disc)
    assert pickle.loads(pickle.dumps(disc)) == disc
    with pytest.raises(dataclasses.FrozenInstanceError):
        disc.kernel_size = 9
    with pytest.raises(TypeError):
        disc.params["exponent"] = 3  # read-only mapping
    assert not stencils(0, disc).flags.writeable


def test_defaults_are_filled_in_so_equal_stencils_mean_equal_values():
    assert Discretization("rbf", 5) == Discretization("rbf", 5, params={"exponent": 7, "poly_degree": 4})
    assert Discretization("rbf", 5) != Discretization("rbf", 5, params={"exponent": 5})
    assert Discretization("gauss", 5, 1) == Discretization("gauss", 5, 1.0)
    assert Discretization("fd", 5).params == {}
    assert {Discretization("gauss", 5), Discretization("gauss", 5, 0.8)} == {Discretization("gauss", 5)}


def test_separable_property():
    assert Discretization("fd", 5).separable and Discretization("gauss", 5).separable
    assert not Discretization("rbf", 5).separable
    with pytest.raises(ValueError, match="not separable"):
        stencils_1d(2, Discretization("rbf", 5))


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry for one test; stencil caches emptied before and after."""
    monkeypatch.setattr(stencils_module, "_REGISTRY", dict(stencils_module._REGISTRY))
    stencils_module.clear_stencil_caches()
    yield
    monkeypatch.undo()
    stencils_module.clear_stencil_caches()


def test_discretizations_reflects_the_registry(registry):
    assert "fd" in DISCRETIZATIONS and "gauss" in DISCRETIZATIONS and "rbf" in DISCRETIZATIONS
    assert tuple(DISCRETIZATIONS) == ("fd", "gauss", "rbf") == DISCRETIZATIONS
    assert "nope" not in DISCRETIZATIONS and 3 not in DISCRETIZATIONS
    register_discretization("wide-fd", _WideFD())
    assert "wide-fd" in DISCRETIZATIONS and len(DISCRETIZATIONS) == 4
    with pytest.raises(ValueError, match=r"expected one of \('fd', 'gauss', 'rbf', 'wide-fd'\)"):
        Discretization("nope", 5)


class _WideFD(DiscretizationBuilder):
    """Test kind: 1-D finite differences on all k taps (moment conditions up to degree k - 1), separable."""

    separable = True

    def min_kernel_size(self, order, **params):
        return order + 1 + order % 2

    def stencils_1d(self, order, kernel_size, **params):
        r = kernel_size // 2
        t = np.arange(-r, r + 1, dtype=float)
        vander = np.stack([t**p / math.factorial(p) for p in range(kernel_size)])
        return np.stack([np.linalg.solve(vander, np.eye(kernel_size)[n]) for n in range(order + 1)])


def test_registered_kind_is_used_everywhere(registry):
    register_discretization("wide-fd", _WideFD())
    d = as_discretization("wide-fd", 5)
    assert d.separable and d.min_kernel_size(4) == 5
    st = stencils(4, d)
    # separable kinds get the outer-product 2-D stencils from their 1-D factors (rows are y reversed)
    s1 = stencils_1d(4, d)
    np.testing.assert_allclose(st[4], np.outer(s1[1][::-1], s1[1]))  # alpha = (1, 1)
    np.testing.assert_allclose(s1[1], [1 / 12, -2 / 3, 0, 2 / 3, -1 / 12], atol=1e-14)  # the 5-point d/dx
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    np.testing.assert_allclose(apply_stencils(x, 4, d, path="separable"), apply_stencils(x, 4, d, path="dense"),
                               atol=1e-12)
    with pytest.raises(ValueError, match="expected kernel_size >= 5"):
        stencils(3, as_discretization("wide-fd", 3))


def test_register_rejects_duplicates_and_non_builders(registry):
    with pytest.raises(ValueError, match="already registered"):
        register_discretization("fd", _WideFD())
    with pytest.raises(TypeError, match="DiscretizationBuilder"):
        register_discretization("mine", lambda order, k: None)
    with pytest.raises(TypeError, match=r"must override \['min_kernel_size', 'stencils_2d'\]"):
        register_discretization("mine", DiscretizationBuilder())
    fd5 = Discretization("fd", 5)
    before = apply_stencils(torch.ones(1, 1, 7, 7, dtype=torch.float64), 4, fd5)
    register_discretization("fd", _WideFD(), overwrite=True)
    assert fd5.builder.__class__ is _WideFD
    # re-registration empties the caches: the new builder's stencils are used at once
    np.testing.assert_allclose(stencils(1, fd5)[1][2], [1 / 12, -2 / 3, 0, 2 / 3, -1 / 12], atol=1e-14)
    after = apply_stencils(torch.ones(1, 1, 7, 7, dtype=torch.float64), 4, fd5)
    assert not torch.allclose(before, after)


def test_as_discretization():
    assert as_discretization("fd") == Discretization("fd", 5)
    assert as_discretization("gauss", 7, 1.3) == Discretization("gauss", 7, 1.3)
    assert as_discretization("rbf", 5, exponent=5).params == {"exponent": 5, "poly_degree": 4}
    d = Discretization("gauss", 5)
    assert as_discretization(d) is d and as_discretization(d, 5, 0.8) is d
    with pytest.raises(ValueError, match=r"disagrees with the arguments kernel_size=7"):
        as_discretization(d, 7)
    with pytest.raises(ValueError, match="disagrees with the arguments exponent=3"):
        as_discretization(Discretization("rbf", 5), exponent=3)
    with pytest.raises(TypeError, match=r"a name in \('fd', 'gauss', 'rbf'\) or a Discretization, got int"):
        as_discretization(5)
    with pytest.raises(ValueError, match="unknown discretization 'FD'"):
        as_discretization("FD")


# ---- issue 10: validation gaps -------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [math.inf, -math.inf, math.nan, 0.0, -0.5, True, "1.0"])
def test_gauss_sigma_must_be_finite_and_positive(sigma):
    with pytest.raises(ValueError, match=r"sigma to be a finite number > 0, got sigma="):
        Discretization("gauss", 5, sigma)


def test_gaussian_stencil_1d_refuses_even_kernel():
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer, got 4"):
        gaussian_stencil_1d(1, 4, 1.0)
    with pytest.raises(ValueError, match="finite number > 0"):
        gaussian_stencil_1d(1, 5, math.inf)
    assert gaussian_stencil_1d(1, 5, 1.0).shape == (5,)


def test_fd_stencil_1d_names_expected_and_received():
    with pytest.raises(ValueError, match=r"derivative order n must be a non-negative integer, got -2 \(int\)"):
        fd_stencil_1d(-2)
    with pytest.raises(ValueError, match=r"got 1.5 \(float\)"):
        fd_stencil_1d(1.5)


def test_gaussian_kernel_size_error_names_the_minimum():
    with pytest.raises(ValueError, match=r"kernel_size=1 is too small for Gaussian derivatives of order 2: "
                                         r"expected kernel_size >= 3"):
        Discretization("gauss", 1, 0.5).check_order(2)
    Discretization("gauss", 1, 0.5).check_order(0)


@pytest.mark.parametrize("bad", [True, False, np.True_, -1, 2.0, "2"])
def test_check_order_refuses_bools_and_non_integers(bad):
    disc = Discretization("fd", 5)
    with pytest.raises(ValueError, match="order must be a non-negative integer"):
        disc.check_order(bad)
    with pytest.raises(ValueError, match="order must be a non-negative integer"):
        stencils(bad, disc)
    with pytest.raises(ValueError, match="order must be a non-negative integer"):
        diffops.check_order(bad)


@pytest.mark.parametrize("k", [True, 0, -3, 4, 5.0])
def test_kernel_size_must_be_a_positive_odd_int(k):
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        Discretization("fd", k)


def test_stencils_need_a_discretization_value():
    with pytest.raises(TypeError, match="expected a Discretization"):
        stencils(2, "fd")
