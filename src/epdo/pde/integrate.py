r"""Explicit Euler integration of invariant PDEs :math:`\partial_t u = F_\theta(\partial\phi_u^G)` (paper 001).

:class:`EulerStep` is the paper's *EulerConv* unit (Fig. 4): stencil convolutions give the derivatives,
the invariant set turns them into invariants, and

.. math::
    u_{\ell+1} = u_\ell + \Delta t\, F_\theta\big(\partial\phi^G_{u_\ell}\big).

:class:`PDEIntegrator` is *ConvInt* (Fig. 5): :math:`\ell_T = \lfloor T / \Delta t\rfloor` Euler steps sharing
one :math:`\theta` (the PDE is autonomous). Explicit Euler is only conditionally stable (for the heat
equation :math:`u_t = c\,\Delta u` with these 3x3 stencils, :math:`c\,\Delta t \le 1/4`), and a learned
:math:`F_\theta` can leave the stable region during training; the integrator then raises
:class:`PDEStabilityError` naming ``dt`` and the step instead of letting NaN or inf train the network.

>>> import torch
>>> integ = PDEIntegrator("se2", n_pdes=2, T=1.0, dt=0.25)
>>> integ.n_steps
4
>>> integ(torch.rand(3, 1, 28, 28)).shape
torch.Size([3, 2, 28, 28])
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from epdo.diffops import Discretization, as_discretization

from ._inputs import blame_input, check_field
from .functions import FUNCTIONS, make_function
from .invariants import PADDINGS, Derivatives, InvariantSet, apply_stencils, default_discretization, get_invariant_set, stencil_tensor

__all__ = ["EulerStep", "PDEIntegrator", "PDEStabilityError", "check_positive", "check_state"]


class PDEStabilityError(FloatingPointError):
    """The explicit Euler scheme produced NaN or inf (message names dt, T and the step)."""


def check_positive(name: str, value: Any) -> float:
    """``float(value)`` if it is a finite number > 0, else ``ValueError`` naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_state(u: torch.Tensor, step: int, n_steps: int, dt: float, T: float, what: str) -> None:
    """Raise :class:`PDEStabilityError` if ``u`` holds NaN or inf after Euler step ``step`` (1-based).

    One reduction on the fast path (the sum of a finite state is finite unless it overflows, in which case
    the elementwise check decides).
    """
    if torch.isfinite(u.detach().sum()) or bool(torch.isfinite(u.detach()).all()):
        return
    raise PDEStabilityError(
        f"{what} became non-finite at Euler step {step}/{n_steps} (dt={dt:g}, T={T:g}): the explicit scheme "
        f"is unstable for the current F_theta; reduce dt (or the learning rate)"
    )


class EulerStep(nn.Module):
    r"""One explicit Euler step :math:`u + \Delta t\,F_\theta(\text{invariants}(u))` for ``n_pdes`` PDEs.

    Args:
        invariant_set: ``"se2"``, ``"scale"`` or an :class:`~epdo.pde.invariants.InvariantSet`.
        n_pdes: number of independent PDEs (channels) integrated in parallel, each with its own theta.
        dt: time step :math:`\Delta t > 0`.
        function: ``F_theta``: ``"linear"`` (paper), ``"poly"`` or ``"mlp"`` (see :mod:`epdo.pde.functions`).
        function_kwargs: extra arguments of ``F_theta`` (``degree``, ``hidden``, ``init_std``).
        disc: stencil :class:`~epdo.diffops.Discretization` or a registered name; default: the smallest finite
            differences for the set's order (3x3 for order 2).
        order: derivative order of the stencils; default (and minimum) the invariant set's order.
        padding: boundary handling before the stencil convolution, one of ``PADDINGS`` (default replicate).

    Shape:
        ``(B, n_pdes, H, W) -> (B, n_pdes, H, W)``.

    >>> step = EulerStep("scale", n_pdes=2, dt=0.1)
    >>> sum(p.numel() for p in step.parameters())
    14
    """

    def __init__(
        self,
        invariant_set: str | InvariantSet = "se2",
        n_pdes: int = 1,
        dt: float = 0.1,
        function: str = "linear",
        function_kwargs: dict | None = None,
        disc: Discretization | str | None = None,
        order: int | None = None,
        padding: str = "replicate",
    ) -> None:
        super().__init__()
        self.invariant_set = get_invariant_set(invariant_set)
        self.dt = check_positive("dt", dt)
        if not isinstance(n_pdes, int) or n_pdes < 1:
            raise ValueError(f"n_pdes must be a positive integer, got {n_pdes!r}")
        if function not in FUNCTIONS:
            raise ValueError(f"unknown F_theta kind {function!r}; expected one of {FUNCTIONS}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        need = self.invariant_set.order
        order = need if order is None else order
        if not isinstance(order, int) or order < need:
            raise ValueError(
                f"invariant set {self.invariant_set.name!r} needs stencils of order >= {need}, got order={order!r}"
            )
        disc = default_discretization(order) if disc is None else as_discretization(disc)
        try:
            disc.check_order(order)
        except ValueError as err:
            raise ValueError(f"invariant set {self.invariant_set.name!r} (order {need}): {err}") from None
        self.n_pdes, self.order, self.disc, self.padding, self.function_kind = n_pdes, order, disc, padding, function
        self.register_buffer("stencils", stencil_tensor(order, disc), persistent=False)
        self.function = make_function(function, n_pdes, len(self.invariant_set), **(function_kwargs or {}))

    def derivatives(self, u: torch.Tensor) -> Derivatives:
        """Derivative dictionary of ``u`` (``(..., H, W)``) from this step's stencils and padding."""
        return Derivatives(apply_stencils(u, self.stencils, self.padding), self.order)

    def invariants(self, u: torch.Tensor) -> torch.Tensor:
        """``(B, n_pdes, H, W) -> (B, n_pdes, m, H, W)``."""
        return self.invariant_set(self.derivatives(u))

    def rhs(self, u: torch.Tensor) -> torch.Tensor:
        r""":math:`F_\theta(\text{invariants}(u))`, shape of ``u``."""
        self._check(u)
        return self.function(self.invariant_set.compute(self.derivatives(u)))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.dt * self.rhs(u)

    def _check(self, u: torch.Tensor) -> None:
        check_field(u, "EulerStep", finite=False)  # dtype only: NaN states are check_state's
        if u.dim() != 4 or u.shape[1] != self.n_pdes:
            raise ValueError(f"EulerStep: expected a field (B, {self.n_pdes}, H, W), got {tuple(u.shape)}")

    def extra_repr(self) -> str:
        return (
            f"invariant_set={self.invariant_set.name!r}, n_pdes={self.n_pdes}, dt={self.dt:g}, "
            f"function={self.function_kind!r}, stencils={self.disc}, padding={self.padding!r}"
        )


class PDEIntegrator(nn.Module):
    r"""Integrate ``n_pdes`` PDEs from ``u_0`` to time ``T`` with :math:`\lfloor T/\Delta t\rfloor` Euler steps.

    Args:
        invariant_set, n_pdes, function, function_kwargs, disc, order, padding: as :class:`EulerStep`.
        T: final time :math:`T > 0` (must be >= dt).
        dt: time step :math:`\Delta t > 0`.
        check_finite: after every step, raise :class:`PDEStabilityError` if the state holds NaN or inf.

    Shape:
        ``(B, 1, H, W)`` (the same initial condition for every PDE) or ``(B, n_pdes, H, W)``
        ``-> (B, n_pdes, H, W)``; with ``return_trajectory=True`` a list of the ``n_steps + 1`` states.
    """

    def __init__(
        self,
        invariant_set: str | InvariantSet = "se2",
        n_pdes: int = 1,
        T: float = 1.0,
        dt: float = 0.1,
        check_finite: bool = True,
        **step_kwargs: Any,
    ) -> None:
        super().__init__()
        self.T = check_positive("T", T)
        dt = check_positive("dt", dt)
        self.n_steps = int(math.floor(self.T / dt + 1e-9))
        if self.n_steps < 1:
            raise ValueError(f"T must be >= dt (at least one Euler step), got T={T!r} and dt={dt!r}")
        self.check_finite = bool(check_finite)
        self.step = EulerStep(invariant_set, n_pdes=n_pdes, dt=dt, **step_kwargs)

    @property
    def dt(self) -> float:
        return self.step.dt

    @property
    def n_pdes(self) -> int:
        return self.step.n_pdes

    def forward(self, u0: torch.Tensor, return_trajectory: bool = False) -> torch.Tensor | list[torch.Tensor]:
        check_field(u0, "PDEIntegrator")
        if u0.dim() != 4 or u0.shape[1] not in (1, self.n_pdes):
            raise ValueError(
                f"PDEIntegrator: expected an initial condition (B, 1, H, W) or (B, {self.n_pdes}, H, W), "
                f"got {tuple(u0.shape)}"
            )
        u = u0.expand(-1, self.n_pdes, -1, -1) if u0.shape[1] != self.n_pdes else u0
        traj = [u]
        for ell in range(self.n_steps):
            u = self.step(u)
            if self.check_finite:
                try:
                    check_state(u, ell + 1, self.n_steps, self.dt, self.T, f"PDE on invariant set {self.step.invariant_set.name!r}")
                except PDEStabilityError as err:
                    raise blame_input(err, u0) from None
            if return_trajectory:
                traj.append(u)
        return traj if return_trajectory else u

    def extra_repr(self) -> str:
        return f"T={self.T:g}, dt={self.dt:g}, n_steps={self.n_steps}, check_finite={self.check_finite}"
