r"""The PDE layer of EqPdeNet (Lagrave & Riou 2021, Fig. 3): several invariant PDEs from one input, combined linearly.

Every PDE starts from the input image, :math:`u_{t=0} = f_d`, and is integrated to time ``T``; the
``n_e`` solutions :math:`u_T^{\theta_1},\dots,u_T^{\theta_{n_e}}` are then combined pixelwise by a linear map
with bias (the paper's dimension-reduction layer, a 1x1 convolution). The paper's setting is two PDEs on
the SE(2) invariants and two on the scale invariants, all linear in their invariants, combined into one
channel: ``PDELayer(2, ("se2", "scale"))``, 2 * 6 + 2 * 7 + 5 = 31 parameters.

The combination starts as the mean of the solutions (weights ``1 / n_e``, bias 0), so that at
initialisation (nearly identity flows) the layer passes the image through almost unchanged.

>>> import torch
>>> layer = PDELayer(2, ("se2", "scale"))
>>> sum(p.numel() for p in layer.parameters())
31
>>> layer(torch.rand(4, 1, 28, 28)).shape
torch.Size([4, 1, 28, 28])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ._inputs import blame_input, check_field
from .integrate import PDEIntegrator, PDEStabilityError, check_state
from .invariants import Derivatives, InvariantSet, apply_stencils, get_invariant_set

__all__ = ["PDELayer"]


class PDELayer(nn.Module):
    r"""``n_pdes`` PDEs per invariant set, integrated in parallel from the same input, combined linearly.

    Args:
        n_pdes: PDEs per invariant set: an int (the same for every set) or one int per set.
        invariant_sets: names (``"se2"``, ``"scale"``) or :class:`~epdo.pde.invariants.InvariantSet`\ s.
        T, dt: final time and time step of every PDE (``floor(T / dt)`` Euler steps).
        out_channels: channels of the linear combination; ``None`` returns the solutions uncombined.
        **integrator_kwargs: passed to every :class:`~epdo.pde.integrate.PDEIntegrator` (``function``,
            ``function_kwargs``, ``disc``, ``padding``, ``check_finite``).

    Shape:
        ``(B, 1, H, W) -> (B, out_channels, H, W)`` (or ``(B, n_e, H, W)`` with ``out_channels=None``); real
        float images in [0, 1] (integer, boolean, complex: ``TypeError``; NaN/inf: ``ValueError``).
    """

    def __init__(
        self,
        n_pdes: int | Sequence[int] = 2,
        invariant_sets: Sequence[str | InvariantSet] = ("se2", "scale"),
        T: float = 1.0,
        dt: float = 0.1,
        out_channels: int | None = 1,
        **integrator_kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(invariant_sets, (str, InvariantSet)):
            invariant_sets = (invariant_sets,)
        sets = [get_invariant_set(s) for s in invariant_sets]
        if not sets:
            raise ValueError("PDELayer: invariant_sets must name at least one invariant set, got none")
        counts = [n_pdes] * len(sets) if isinstance(n_pdes, int) else list(n_pdes)
        if len(counts) != len(sets) or not all(isinstance(c, int) and c >= 1 for c in counts):
            raise ValueError(
                f"PDELayer: n_pdes must be a positive int or {len(sets)} positive ints (one per invariant set), "
                f"got {n_pdes!r}"
            )
        self.integrators = nn.ModuleList(
            PDEIntegrator(s, n_pdes=c, T=T, dt=dt, **integrator_kwargs) for s, c in zip(sets, counts)
        )
        self.n_total = sum(counts)
        self.counts = tuple(counts)
        steps = [integ.step for integ in self.integrators]
        # all PDEs share one stencil convolution per Euler step when their stencils agree
        self._fused = all(
            (st.order, st.disc, st.padding) == (steps[0].order, steps[0].disc, steps[0].padding) for st in steps
        )
        self.labels = tuple(f"{s.name}[{k}]" for s, c in zip(sets, counts) for k in range(c))
        if out_channels is None:
            self.combine = None
        else:
            if not isinstance(out_channels, int) or out_channels < 1:
                raise ValueError(f"PDELayer: out_channels must be a positive int or None, got {out_channels!r}")
            self.combine = nn.Conv2d(self.n_total, out_channels, 1)
        self.out_channels = self.n_total if out_channels is None else out_channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for integ in self.integrators:
            integ.step.function.reset_parameters()
        if self.combine is not None:
            nn.init.constant_(self.combine.weight, 1.0 / self.n_total)
            nn.init.zeros_(self.combine.bias)

    def evolve(self, x: torch.Tensor, return_trajectory: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """The solutions :math:`u_T` of all PDEs, ``(B, 1, H, W) -> (B, n_e, H, W)`` (ordered as ``labels``).

        With ``return_trajectory=True``, the list of the ``n_steps + 1`` states ``u_0, ..., u_T``.
        ``TypeError`` for integer, boolean or complex input, ``ValueError`` for NaN/inf; a
        :class:`~epdo.pde.PDEStabilityError` names an input far outside [0, 1] before the step size.
        """
        check_field(x, "PDELayer")
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"PDELayer: expected images (B, 1, H, W), got {tuple(x.shape)}")
        try:
            return self._evolve(x, return_trajectory)
        except PDEStabilityError as err:
            raise blame_input(err, x) from None

    def _evolve(self, x: torch.Tensor, return_trajectory: bool) -> torch.Tensor | list[torch.Tensor]:
        if not self._fused:
            trajs = [integ(x, return_trajectory=True) for integ in self.integrators]
            traj = [torch.cat(states, dim=1) for states in zip(*trajs)]
            return traj if return_trajectory else traj[-1]
        first = self.integrators[0]
        lead = first.step
        u = x.expand(-1, self.n_total, -1, -1)
        traj = [u]
        for ell in range(first.n_steps):
            parts = apply_stencils(u, lead.stencils, lead.padding).split(self.counts, dim=1)
            rhs = [
                integ.step.function(integ.step.invariant_set.compute(Derivatives(d, lead.order)))
                for integ, d in zip(self.integrators, parts)
            ]
            u = u + lead.dt * torch.cat(rhs, dim=1)
            if first.check_finite:
                check_state(u, ell + 1, first.n_steps, first.dt, first.T, f"PDE layer {self.labels}")
            if return_trajectory:
                traj.append(u)
        return traj if return_trajectory else u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.evolve(x)
        return u if self.combine is None else self.combine(u)

    def extra_repr(self) -> str:
        i = self.integrators[0]
        return f"pdes={self.labels}, T={i.T:g}, dt={i.dt:g}, out_channels={self.out_channels}"
