r"""Test-time perturbation scenarios of EqPdeNet (Lagrave & Riou 2021, "Numerical Experiments").

* ``"test"``: the test images, unchanged.
* ``"iso"``: a random isometry per image: rotation by :math:`\theta\sim\mathcal U(-30, 30)` degrees about the
  image centre, then translation by :math:`(t_h, t_v)`, :math:`t_h, t_v\sim\mathcal U(-2, 2)` pixels.
* ``"sca"``: a random scaling :math:`(x, y)\mapsto(\lambda x, \lambda y)` about the image centre,
  :math:`\lambda\sim\mathcal U(2/3, 1)` (the digit shrinks).

Frame and conventions (``docs/design.md``, the same as :func:`epdo.data.rotate.rotate_images`): x is the
column index to the right, y points up, the centre is ``((H - 1) / 2, (W - 1) / 2)`` in pixel indices,
angles are counter-clockwise and :math:`t_v > 0` moves the digit up. A transformation ``p -> g p`` acts on
an image by :math:`(g\cdot I)(p) = I(g^{-1}p)`, sampled bilinearly (``grid_sample``, ``align_corners=True``)
with zero fill outside the image. Random numbers are drawn on the CPU from the given generator, in float64,
in this order: ``"iso"``: angles, then t_h, then t_v (each ``(N,)``); ``"sca"``: lambda ``(N,)``. So a seeded
generator gives the same perturbed test set on every machine.

>>> import torch
>>> x = torch.rand(5, 1, 28, 28)
>>> g = torch.Generator().manual_seed(0)
>>> apply_scenario(x, "iso", g).shape
torch.Size([5, 1, 28, 28])
>>> apply_scenario(x, "test", g) is x
True
"""

from __future__ import annotations

import math

import torch
from .._warp import warp_images

__all__ = ["SCENARIOS", "apply_scenario", "scenario_parameters", "warp_images"]

SCENARIOS = ("test", "iso", "sca")
ISO_MAX_ANGLE_DEG = 30.0
ISO_MAX_SHIFT = 2.0
SCA_RANGE = (2.0 / 3.0, 1.0)


def _check_scenario(scenario: object) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")


def scenario_parameters(n: int, scenario: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw the per-image parameters of a scenario (float64, CPU; see the module doc for the order).

    Returns ``{}`` for ``"test"``, ``{"angle_deg", "t_h", "t_v"}`` for ``"iso"``, ``{"scale"}`` for ``"sca"``.
    """
    _check_scenario(scenario)
    if scenario == "iso":
        u = lambda: torch.rand(n, generator=generator, dtype=torch.float64)  # noqa: E731
        angle = (2 * u() - 1) * ISO_MAX_ANGLE_DEG
        t_h = (2 * u() - 1) * ISO_MAX_SHIFT
        t_v = (2 * u() - 1) * ISO_MAX_SHIFT
        return {"angle_deg": angle, "t_h": t_h, "t_v": t_v}
    if scenario == "sca":
        lo, hi = SCA_RANGE
        return {"scale": lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)}
    return {}


def apply_scenario(images: torch.Tensor, scenario: str, generator: torch.Generator) -> torch.Tensor:
    """Perturb a batch of test images according to ``scenario`` (one random draw per image).

    Args:
        images: ``(N, 1, H, W)`` floating tensor (MNIST: ``(N, 1, 28, 28)`` in [0, 1]).
        scenario: one of ``SCENARIOS`` = ``("test", "iso", "sca")``.
        generator: a CPU ``torch.Generator`` (seed it for reproducible draws).

    Returns:
        ``images`` itself for ``"test"``; otherwise a new tensor of the same shape, dtype and device.
    """
    _check_scenario(scenario)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 1:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"apply_scenario: expected images (N, 1, H, W), got {got}")
    if not images.is_floating_point():
        raise ValueError(f"apply_scenario: expected a floating-point image tensor, got dtype {images.dtype}")
    if scenario == "test":
        return images
    n = images.shape[0]
    p = scenario_parameters(n, scenario, generator)
    if scenario == "iso":
        a = p["angle_deg"] * (math.pi / 180.0)
        c, s = torch.cos(a), torch.sin(a)
        # g p = R(a) p + t  =>  g^{-1} p = R(-a) p - R(-a) t
        inv = torch.stack((torch.stack((c, s), -1), torch.stack((-s, c), -1)), -2)  # R(-a)
        t = torch.stack((p["t_h"], p["t_v"]), -1)
        offset = -(inv @ t.unsqueeze(-1)).squeeze(-1)
    else:
        lam = p["scale"]
        inv = torch.diag_embed(torch.stack((1.0 / lam, 1.0 / lam), -1))
        offset = torch.zeros(n, 2, dtype=torch.float64)
    return warp_images(images, inv, offset)
