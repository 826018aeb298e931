"""Euler steps, the integrator (stability guard, step count), F_theta variants and the PDE layer."""

import math

import pytest
import torch
import torch.nn.functional as F

from epdo.diffops import Discretization
from epdo.pde import (
    SE2,
    EulerStep,
    InvariantSet,
    LinearF,
    MLPF,
    PDEIntegrator,
    PDELayer,
    PDEStabilityError,
    PolynomialF,
    make_function,
)


def _set_linear(step, weight, bias=0.0):
    with torch.no_grad():
        step.function.weight.copy_(torch.as_tensor(weight, dtype=step.function.weight.dtype))
        step.function.bias.fill_(bias)


def test_euler_step_is_u_plus_dt_laplacian_for_the_heat_equation():
    step = EulerStep("se2", n_pdes=1, dt=0.2).double()
    _set_linear(step, [[0, 0, 1, 0, 0]])  # F = u_xx + u_yy
    u = torch.rand(2, 1, 10, 10, dtype=torch.float64)
    p = F.pad(u, (1, 1, 1, 1), mode="replicate")
    lap = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4 * u
    torch.testing.assert_close(step(u), u + 0.2 * lap, atol=1e-14, rtol=0)


def test_heat_equation_matches_gaussian_solution():
    """u_t = lap u from a Gaussian of variance s^2 gives variance s^2 + 2T. Measured max error 2.5e-3
    (relative to the peak) at s = 3, T = 1, dt = 0.05: the 5-point Laplacian's O(h^2) error."""
    n, s2, T = 33, 9.0, 1.0
    c = (n - 1) / 2
    i = torch.arange(n, dtype=torch.float64)
    r2 = (i.view(-1, 1) - c) ** 2 + (i.view(1, -1) - c) ** 2
    u0 = torch.exp(-r2 / (2 * s2))[None, None]
    integ = PDEIntegrator("se2", T=T, dt=0.05).double()
    _set_linear(integ.step, [[0, 0, 1, 0, 0]])
    exact = s2 / (s2 + 2 * T) * torch.exp(-r2 / (2 * (s2 + 2 * T)))
    assert (integ(u0)[0, 0] - exact).abs().max() / exact.max() < 4e-3


@pytest.mark.parametrize("T,dt,steps", [(1.0, 0.1, 10), (1.0, 0.2, 5), (0.25, 0.1, 2), (0.3, 0.1, 3), (1.0, 1.0, 1)])
def test_number_of_steps_is_floor_T_over_dt(T, dt, steps):
    assert PDEIntegrator("se2", T=T, dt=dt).n_steps == steps


def test_trajectory_and_broadcast_initial_condition():
    integ = PDEIntegrator("scale", n_pdes=3, T=0.5, dt=0.25)
    x = torch.rand(2, 1, 12, 12)
    traj = integ(x, return_trajectory=True)
    assert len(traj) == 3 and all(t.shape == (2, 3, 12, 12) for t in traj)
    assert torch.equal(traj[0], x.expand(-1, 3, -1, -1)) and torch.equal(traj[-1], integ(x))


def test_stability_guard_names_dt_and_step():
    integ = PDEIntegrator("se2", T=20.0, dt=1.0)
    _set_linear(integ.step, [[1e4, 0, 0, 0, 0]])  # u_t = 1e4 u: x 10001 per step, float32 overflows at step 10
    with pytest.raises(PDEStabilityError, match=r"Euler step 10/20 \(dt=1, T=20\)"):
        integ(torch.full((1, 1, 8, 8), 1.0))
    integ.check_finite = False
    assert not torch.isfinite(integ(torch.full((1, 1, 8, 8), 1.0))).all()
    layer = PDELayer(1, ("se2",), T=20.0, dt=1.0)
    _set_linear(layer.integrators[0].step, [[1e4, 0, 0, 0, 0]])
    with pytest.raises(PDEStabilityError, match=r"step 10/20 \(dt=1"):
        layer(torch.ones(1, 1, 8, 8))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_integrated_se2_pdes_commute_exactly_with_rotations_by_90_degrees(k):
    layer = PDELayer((3, 1), ("se2", "scale"), T=0.6, dt=0.2, out_channels=None).double()
    for integ in layer.integrators:
        with torch.no_grad():
            integ.step.function.weight.normal_(std=0.3)
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    g = lambda t: torch.rot90(t, k, (-2, -1))  # noqa: E731
    out_g, g_out = layer.evolve(g(x)), g(layer.evolve(x))
    torch.testing.assert_close(out_g[:, :3], g_out[:, :3], atol=1e-12, rtol=0)  # SE(2) PDEs
    if k == 2:  # the scale invariants are invariant under the half turn only
        torch.testing.assert_close(out_g[:, 3:], g_out[:, 3:], atol=1e-12, rtol=0)
    flip = lambda t: torch.flip(t, (-1,))  # noqa: E731
    torch.testing.assert_close(layer.evolve(flip(x))[:, :3], flip(layer.evolve(x))[:, :3], atol=1e-12, rtol=0)


def test_fused_and_per_set_integration_agree():
    layer = PDELayer(2, ("se2", "scale"), T=0.4, dt=0.1).double()
    for integ in layer.integrators:
        with torch.no_grad():
            integ.step.function.weight.normal_(std=0.2)
    x = torch.rand(3, 1, 14, 14, dtype=torch.float64)
    assert layer._fused
    fused = layer.evolve(x, return_trajectory=True)
    layer._fused = False
    ref = layer.evolve(x, return_trajectory=True)
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=0)


def test_paper_pde_layer_has_31_parameters_and_only_they_are_persistent():
    layer = PDELayer(2, ("se2", "scale"))
    assert sum(p.numel() for p in layer.parameters()) == 31
    assert layer.labels == ("se2[0]", "se2[1]", "scale[0]", "scale[1]")
    keys = set(layer.state_dict())
    assert keys == {n for n, _ in layer.named_parameters()}  # stencils are non-persistent buffers
    layer.eval()
    assert set(layer.state_dict()) == keys
    assert any(name.endswith("stencils") for name, _ in layer.named_buffers())


def test_pde_layer_starts_close_to_the_identity_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    layer = PDELayer(2, ("se2", "scale"), T=1.0, dt=0.2)
    x = torch.rand(4, 1, 28, 28)
    y = layer(x)
    assert (y - x).abs().max() < 0.3
    y.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("function,kwargs,n_params", [
    ("linear", {}, 2 * 6),
    ("poly", {"degree": 2}, 2 * (5 + 15 + 1)),
    ("mlp", {"hidden": 4}, 2 * (4 * 5 + 4 + 4 + 1)),
])
def test_function_variants(function, kwargs, n_params):
    step = EulerStep("se2", n_pdes=2, dt=0.1, function=function, function_kwargs=kwargs)
    assert sum(p.numel() for p in step.parameters()) == n_params
    u = torch.rand(3, 2, 9, 9, requires_grad=True)
    out = step(u)
    assert out.shape == u.shape
    out.sum().backward()
    assert torch.isfinite(u.grad).all()


def test_polynomial_of_degree_one_is_linear_and_stacked_or_list_inputs_agree():
    torch.manual_seed(1)
    lin, poly = LinearF(2, 5), PolynomialF(2, 5, degree=1)
    poly.load_state_dict(lin.state_dict())
    inv = torch.rand(3, 2, 5, 7, 7)
    torch.testing.assert_close(lin(inv), poly(inv))
    torch.testing.assert_close(lin(inv), lin(list(inv.unbind(2))))
    mlp = MLPF(2, 5)
    torch.testing.assert_close(mlp(inv), mlp(list(inv.unbind(2))))
    ref = lin.bias.view(1, -1, 1, 1) + torch.einsum("bkihw,ki->bkhw", inv, lin.weight)
    torch.testing.assert_close(lin(inv), ref)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kw,match", [
    ({"dt": 0.0}, r"dt must be a finite number > 0, got 0\.0"),
    ({"dt": -0.1}, r"dt must be a finite number > 0, got -0\.1"),
    ({"dt": float("nan")}, "dt must be a finite number > 0"),
    ({"dt": "x"}, "dt must be a positive number, got 'x'"),
    ({"T": 0}, "T must be a finite number > 0, got 0"),
    ({"T": -1.0}, "T must be a finite number > 0"),
    ({"T": 0.05, "dt": 0.1}, r"T must be >= dt \(at least one Euler step\), got T=0\.05 and dt=0\.1"),
])
def test_non_positive_dt_or_T_is_a_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        PDEIntegrator("se2", **kw)
    if set(kw) == {"dt"}:
        with pytest.raises(ValueError, match=match):
            EulerStep("se2", **kw)


def test_invariant_set_of_the_wrong_order_for_the_stencils_is_a_clear_error():
    with pytest.raises(ValueError, match=r"invariant set 'se2' needs stencils of order >= 2, got order=1"):
        EulerStep("se2", order=1)
    with pytest.raises(ValueError, match=r"invariant set 'scale' \(order 2\): kernel_size=1 is too small"):
        EulerStep("scale", disc=Discretization("fd", 1))
    third = InvariantSet("third", 3, ("u_xxx",), lambda d: [d["u_xxx"]])
    with pytest.raises(ValueError, match="too small for finite differences of order 3"):
        EulerStep(third, disc=Discretization("fd", 3))
    step = EulerStep(third)  # order 3 gets 5x5 stencils by default
    assert step.stencils.shape == (10, 1, 5, 5)
    liar = InvariantSet("liar", 1, ("u_xx",), lambda d: [d["u_xx"]])  # declares order 1, reads order 2
    with pytest.raises(ValueError, match=r"'liar' \(declared order 1\) read a derivative that was not computed"):
        EulerStep(liar)(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("shape", [(2, 28, 28), (2, 3, 28, 28), (28, 28)])
def test_images_of_the_wrong_shape_are_a_clear_error(shape):
    x = torch.rand(*shape)
    with pytest.raises(ValueError, match=r"expected images \(B, 1, H, W\), got " + re_shape(shape)):
        PDELayer(2, ("se2", "scale"))(x)
    with pytest.raises(ValueError, match=r"expected a field \(B, 2, H, W\), got " + re_shape(shape)):
        EulerStep("se2", n_pdes=2)(x)
    with pytest.raises(ValueError, match=r"expected an initial condition \(B, 1, H, W\) or \(B, 2, H, W\)"):
        PDEIntegrator("se2", n_pdes=2)(x)


def re_shape(shape):
    return r"\(" + ", ".join(map(str, shape)) + r"\)"


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="unknown F_theta kind 'cubic'"):
        EulerStep("se2", function="cubic")
    with pytest.raises(ValueError, match="unknown F_theta kind"):
        make_function("cubic", 1, 5)
    with pytest.raises(ValueError, match="n_pdes must be a positive integer"):
        EulerStep("se2", n_pdes=0)
    with pytest.raises(ValueError, match="2 positive ints"):
        PDELayer((2, 2, 2), ("se2", "scale"))
    with pytest.raises(ValueError, match="padding must be one of"):
        EulerStep("se2", padding="mirror")
    with pytest.raises(ValueError, match=r"expected invariants \(B, 2, 5, H, W\)"):
        LinearF(2, 5)(torch.rand(1, 2, 6, 4, 4))
    assert SE2.order == 2 and math.isclose(EulerStep("se2", dt=0.3).dt, 0.3)


# ---------------------------------------------------------------------------------------------- input contract


def _pde_classes():
    return [
        ("PDELayer", PDELayer(2, ("se2", "scale"))),
        ("PDEIntegrator", PDEIntegrator("scale", n_pdes=2)),
        ("EulerStep", EulerStep("se2", n_pdes=1)),
    ]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool, torch.complex64, torch.complex128])
def test_integer_boolean_and_complex_input_is_refused(dtype):
    """Integer input used to zero the stencils (cast to the input's dtype), complex input was accepted."""
    x = (torch.rand(2, 1, 12, 12) * 255).to(dtype)
    for who, module in _pde_classes():
        with pytest.raises(TypeError, match=rf"{who}: expected .*got dtype {dtype}"):
            module(x)
    f = LinearF(n_pdes=2, n_invariants=5)
    with pytest.raises(TypeError, match=rf"LinearF: expected real float invariants, got dtype {dtype}"):
        f(torch.zeros(3, 2, 5, 4, 4).to(dtype))
    with pytest.raises(TypeError, match="expected real float invariants"):
        PolynomialF(n_pdes=2, n_invariants=5)([torch.zeros(3, 2, 4, 4).to(dtype)] * 5)


def test_nan_input_is_blamed_not_the_step_size():
    x = torch.rand(2, 1, 12, 12)
    x[0, 0, 3, 4] = float("nan")
    for who, module in _pde_classes()[:2]:
        with pytest.raises(ValueError, match=rf"{who}: the input holds 1 NaN/inf value\(s\)"):
            module(x)


def test_instability_from_an_input_outside_unit_range_blames_the_input_first():
    """u_t = u^2 (blow-up time 1/u_0): stable to T = 0.5 from images in [0, 1], unstable from 0..255."""
    for layer in (PDEIntegrator("se2", T=0.5, dt=0.05, function="poly", function_kwargs={"degree": 2}),
                  PDELayer(1, ("se2",), T=0.5, dt=0.05, function="poly", function_kwargs={"degree": 2})):
        integ = layer if isinstance(layer, PDEIntegrator) else layer.integrators[0]
        f = integ.step.function
        with torch.no_grad():
            f.weight.zero_()
            f.weight[0, f.monomials.index((0, 0))] = 1.0
        x = torch.rand(2, 1, 12, 12)
        assert torch.isfinite(layer(x)).all()
        with pytest.raises(PDEStabilityError) as info:
            layer(x * 255)
        msg = str(info.value)
        assert msg.startswith("the input ranges over [") and "far outside the images in [0, 1]" in msg
        assert msg.index("divide 0..255 pixels by 255") < msg.index("reduce dt")
        assert msg.count("the input ranges over") == 1
    # an unstable step size on an input in range: the message is about the step size only
    integ = PDEIntegrator("se2", T=20.0, dt=1.0)
    _set_linear(integ.step, [[1e4, 0, 0, 0, 0]])
    with pytest.raises(PDEStabilityError, match=r"^PDE on invariant set 'se2' became non-finite .*reduce dt"):
        integ(torch.full((1, 1, 8, 8), 1.0))
