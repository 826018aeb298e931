r"""Public test helpers (e3nn-style): :func:`assert_equivariant`, and the layer database
(:mod:`epdo.testing.module_db`) that drives the generic checks every layer inherits.

>>> import epdo, epdo.testing
>>> G = epdo.groups.dihedral(4)
>>> t = epdo.fields.FieldType(G, [G.regular] * 2)
>>> report = epdo.testing.assert_equivariant(epdo.nn.ReLU(t))   # raises AssertionError with a table if not
>>> len(report)
8
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..equivariance import EquivarianceReport, check_equivariance
from ..fields import FieldType
from ..groups import GroupElement

__all__ = ["assert_equivariant", "default_tolerances"]


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """``(atol, rtol)`` for exact elements: (1e-12, 1e-9) in float64, (1e-6, 1e-5) in float32, (1e-2, 1e-2)
    in lower precisions."""
    if dtype == torch.float64:
        return 1e-12, 1e-9
    if dtype == torch.float32:
        return 1e-6, 1e-5
    return 1e-2, 1e-2


def assert_equivariant(module: torch.nn.Module, in_type: FieldType | None = None, out_type: FieldType | None = None,
                       elements: Iterable[GroupElement] | None = None, atol: float | None = None,
                       rtol: float | None = None, dtype: torch.dtype = torch.float64, non_exact_rtol: float | None = None,
                       **kwargs) -> EquivarianceReport:
    r"""Raise AssertionError (with the table of errors) unless ``module`` is equivariant.

    Measured by :func:`epdo.check_equivariance` (eval mode, no autograd, in ``dtype``; ``kwargs`` go to it:
    ``input``, ``size``, ``batch``, ``seed``, ``margin``, ``x``). An exact element g passes when
    :math:`\|f(g\cdot x) - g\cdot f(x)\| \le \mathrm{atol}` or
    :math:`\|f(g\cdot x) - g\cdot f(x)\| \le \mathrm{rtol}\,\|f(x)\|` (defaults:
    :func:`default_tolerances` of ``dtype``). Elements that are not exact on the domain (interpolated) are
    asserted only when ``non_exact_rtol`` is given, against their relative error.

    Returns the :class:`~epdo.equivariance.EquivarianceReport` on success.
    """
    da, dr = default_tolerances(dtype)
    atol = da if atol is None else float(atol)
    rtol = dr if rtol is None else float(rtol)
    report = check_equivariance(module, in_type, out_type, elements=elements, dtype=dtype, **kwargs)
    bad = []
    for r in report:
        if r.exact:
            if not (r.error <= rtol or r.abs_error <= atol):
                bad.append(r)
        elif non_exact_rtol is not None and not r.error <= non_exact_rtol:
            bad.append(r)
    if not any(r.exact for r in report) and non_exact_rtol is None:
        raise ValueError(f"assert_equivariant: none of the {len(report)} elements is exact on "
                         f"{report and report[0].element.group.name}'s domain; pass non_exact_rtol= to assert them")
    if bad:
        name = type(module).__name__
        limits = f"atol={atol:g}, rtol={rtol:g}" + ("" if non_exact_rtol is None else f", non-exact rtol={non_exact_rtol:g}")
        raise AssertionError(f"{name} is not equivariant: {len(bad)} of {len(report)} elements exceed {limits} "
                             f"(worst: {max(r.error for r in bad):.3e} at {max(bad, key=lambda r: r.error).element!r})\n"
                             f"{report}")
    return report
