r"""Measure how equivariant a module is, per group element, on any domain (:mod:`epdo.fields`).

For each element g two numbers are reported:

- ``error`` (relative): :math:`\|f(g\cdot x) - g\cdot f(x)\| / \|f(x)\|`;
- ``normalized``: :math:`\|f(g\cdot x) - g\cdot f(x)\| / \|f(x') - f(x)\|` with x' an independent input of
  the same kind: 0 means equivariant, about 1 means "no better than answering for an unrelated input". It
  is comparable across models (an untrained CNN whose output barely depends on its input has a tiny
  relative error but a normalized error near 1).

Elements that map the sampling points onto themselves (on the plane: multiples of 90 degrees and flips on
square images; on a ring: every element) are exact, and the error there should be round-off only. The
others are applied by interpolation (:meth:`epdo.fields.FieldType.transform`); their error also contains
discretisation and interpolation error, is measured inside the domain's mask (the centred disc on the
plane) and is meaningful on smooth (band-limited) input only, which is the default for them
(``input="auto"``). A *reference* row shows the same measurement for the module after a fixed random
unconstrained filter (not equivariant), so the numbers have a scale.

>>> import epdo
>>> from epdo import groups, fields, nn
>>> G = groups.cyclic(4)
>>> t = fields.FieldType(G, [G.regular])
>>> report = epdo.check_equivariance(nn.ReLU(t), size=9)
>>> report.max_error() < 1e-12
True
>>> report.reference.normalized > 0.1   # ReLU after an unconstrained 3x3 filter is not equivariant
True
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from .fields import FieldType, smooth_field
from .groups import GroupElement

__all__ = ["check_equivariance", "check_invariance", "EquivarianceReport", "EquivarianceRow", "smooth_field",
           "DEFINITION"]

_INPUTS = ("auto", "random", "smooth")

DEFINITION = ("rel. error = |f(g.x) - g.f(x)| / |f(x)|; norm. error = |f(g.x) - g.f(x)| / |f(x') - f(x)| for an "
              "independent input x' (0: equivariant, ~1: no better than an unrelated input); non-exact elements "
              "are interpolated and measured inside the domain's mask")


@dataclass(frozen=True)
class EquivarianceRow:
    """One group element's result (see the module documentation for ``error`` and ``normalized``)."""

    element: GroupElement
    angle: float  # degrees, in [0, 360) (NaN for elements without a rotation angle)
    flip: int
    error: float
    exact: bool  # the element maps the sampling points onto themselves
    normalized: float = math.nan
    input: str = "random"  # the kind of input it was measured on ("random", "smooth" or "given")
    sample_mean: float = math.nan  # mean and max over the batch of the per-sample relative error
    sample_max: float = math.nan
    abs_error: float = math.nan  # |f(g.x) - g.f(x)| (inside the mask)
    agreement: float = math.nan  # check_invariance of (B, K) logits: fraction of inputs whose argmax is unchanged


class EquivarianceReport(list):
    """A list of :class:`EquivarianceRow` with a table as ``str``, :meth:`max_error` and a ``reference`` row
    (the same measurement on a non-equivariant map; None when not measured)."""

    reference: EquivarianceRow | None = None
    title: str = ""

    def max_error(self, exact_only: bool = True) -> float:
        """Largest relative error over exact elements (``exact_only``) or over all elements."""
        errs = [r.error for r in self if r.exact or not exact_only]
        return max(errs, default=0.0)

    def max_normalized_error(self, exact_only: bool = True) -> float:
        """Largest normalized error over exact elements (``exact_only``) or over all elements."""
        errs = [r.normalized for r in self if (r.exact or not exact_only) and not math.isnan(r.normalized)]
        return max(errs, default=0.0)

    @staticmethod
    def _line(label: str, r: EquivarianceRow) -> str:
        return (f"{label:<28} {r.angle:8.2f} {r.flip:>4d} {r.error:11.3e} {r.normalized:11.3e} {r.input:>7}  "
                f"{'yes' if r.exact else 'no'}")

    def __str__(self) -> str:
        lines = [f"{'element':<28} {'angle':>8} {'flip':>4} {'rel. error':>11} {'norm. error':>11} {'input':>7}  exact"]
        lines += [self._line(str(r.element), r) for r in self]
        if self.reference is not None:
            lines.append(self._line(f"reference: {self.reference.element}", self.reference))
        lines.append(DEFINITION + ("; reference = the module after a fixed random unconstrained filter"
                                   if self.reference is not None else ""))
        return "\n".join(lines)

    def plot(self, path: str) -> None:
        """Save relative error vs angle (log scale) to ``path`` (needs matplotlib)."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("check_equivariance(plot=...) needs matplotlib: pip install matplotlib") from e
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for flip, marker in ((0, "o"), (1, "s")):
            rows = sorted((r for r in self if r.flip == flip), key=lambda r: r.angle)
            if rows:
                ax.semilogy([r.angle for r in rows], [max(r.error, 1e-17) for r in rows], marker=marker, ls="-",
                            label="rotation" if flip == 0 else "rotation after flip")
        if self.reference is not None and self.reference.error > 0:
            ax.axhline(self.reference.error, color="grey", ls="--", label="non-equivariant reference")
        ax.set_xlabel("angle (degrees)")
        ax.set_ylabel("relative equivariance error")
        if self.title:
            ax.set_title(self.title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _default_elements(group, n_angles: int = 24) -> tuple[GroupElement, ...]:
    if group.is_finite:
        return group.elements
    flips = (0, 1) if group.reflections else (0,)
    return tuple(group.element(s, 2 * math.pi * k / n_angles) for s in flips for k in range(n_angles))


def _angle_flip(g) -> tuple[float, int]:
    angle = getattr(g, "angle", None)
    return (math.degrees(angle) % 360.0 if angle is not None else math.nan), int(getattr(g, "flip", 0))


def _ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    num, den = float(num), float(den)
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def _per_sample(diff: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    if diff.dim() == 0 or diff.shape[0] == 0:
        return math.nan, math.nan
    num = torch.linalg.vector_norm(diff.reshape(diff.shape[0], -1), dim=1)
    den = torch.linalg.vector_norm(ref.reshape(ref.shape[0], -1), dim=1)
    rel = torch.where(den > 0, num / den.clamp_min(1e-300), torch.where(num == 0, 0.0, math.inf))
    return float(rel.mean()), float(rel.max())


def _move(x, device, dtype=None):
    """``x`` (a tensor, or a tuple / list / dict of them, as a domain's signals may be) on ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype if dtype is not None and x.is_floating_point() else x.dtype)
    if isinstance(x, (tuple, list)):
        return type(x)(_move(v, device, dtype) for v in x)
    if isinstance(x, dict):
        return {k: _move(v, device, dtype) for k, v in x.items()}
    return x


def _prepare(module: torch.nn.Module, dtype: torch.dtype):
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"check_equivariance: dtype must be a floating torch.dtype, got {dtype!r}")
    tensors = list(module.parameters()) + list(module.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    target = module
    if any(t.is_floating_point() and t.dtype != dtype for t in tensors):
        target = copy.deepcopy(module).to(dtype)
    return target, device


def _check_elements(elements, group, who: str) -> tuple:
    elements = _default_elements(group) if elements is None else tuple(elements)
    for g in elements:
        if not isinstance(g, GroupElement) or g.group != group:
            raise TypeError(f"{who}: elements must be elements of {group.name}, got {g!r}")
    return elements


def _measure(target: Callable, in_type: FieldType, act_out: Callable[[Any, GroupElement], Any],
             check_out: Callable[[Any], None], elements: tuple, input: str, size: int, batch: int, seed: int,
             dtype: torch.dtype, device, margin: float, reference: bool, x_given: torch.Tensor | None,
             mask_input: bool) -> EquivarianceReport:
    """The shared measurement of :func:`check_equivariance` and :func:`check_invariance`."""
    dom = in_type.domain
    shape = dom.input_shape(in_type, batch, size) if x_given is None else tuple(x_given.shape)
    inputs: dict[str, tuple] = {}

    def data(kind: str):
        """(x, x', in-mask) for an input kind, generated once (seeded per kind, the global RNG untouched)."""
        if kind not in inputs:
            if kind == "given":
                x = _move(x_given, device, dtype)
                x2 = torch.roll(x, 1, dims=0) if x.shape[0] >= 2 else None
            else:
                gen = torch.Generator().manual_seed(seed + (0 if kind == "random" else 7919))
                x = _move(dom.sample(shape, kind, gen, dtype), device)
                x2 = _move(dom.sample(shape, kind, gen, dtype), device)
            if mask_input:
                m = dom.input_mask(non_exact[0], shape, margin, dtype, device) if non_exact else None
                if m is not None:
                    x = x * m
                    x2 = None if x2 is None else x2 * m
            inputs[kind] = (x, x2)
        return inputs[kind]

    outputs: dict[tuple, tuple] = {}

    def run(fn, kind: str, key: str):
        if (key, kind) not in outputs:
            x, x2 = data(kind)
            y = fn(x)
            check_out(y)
            y2 = None if x2 is None else fn(x2)
            outputs[(key, kind)] = (y, y2)
        return outputs[(key, kind)]

    non_exact = [g for g in elements if not dom.is_exact(g, shape)]

    def row(fn, g, key: str) -> EquivarianceRow:
        exact = dom.is_exact(g, shape)
        kind = "given" if x_given is not None else (input if input != "auto" else ("random" if exact else "smooth"))
        x, _ = data(kind)
        y, y2 = run(fn, kind, key)
        gy = act_out(y, g)
        ygx = fn(in_type.transform(x, g))
        fy, fgy, fygx, fy2 = (v if v is None or isinstance(v, torch.Tensor) else dom.features(v)
                              for v in (y, gy, ygx, y2))
        m = None if (exact or mask_input) else dom.measurement_mask(g, tuple(fy.shape), shape, margin, dtype, device)
        m = 1.0 if m is None else m
        diff = (fygx - fgy) * m
        num = torch.linalg.vector_norm(diff)
        err = _ratio(num, torch.linalg.vector_norm(fy * m))
        norm = math.nan if fy2 is None else _ratio(num, torch.linalg.vector_norm((fy2 - fy) * m))
        mean, mx = _per_sample(diff, fy * m)
        agree = math.nan
        if mask_input and fy.dim() == 2 and fy.shape[0] > 0 and fy.shape[1] > 1:  # logits of an invariant model
            agree = float((fygx.argmax(1) == fy.argmax(1)).to(torch.float64).mean())
        angle, flip = _angle_flip(g)
        return EquivarianceRow(g, angle, flip, err, exact, norm, kind, mean, mx, float(num), agree)

    report = EquivarianceReport()
    for g in elements:
        report.append(row(target, g, "module"))
    if reference:
        ident = in_type.group.identity
        others = [g for g in elements if g != ident]
        if others:
            gen = torch.Generator().manual_seed(seed + 104729)
            ref_map = dom.reference_map(in_type.size, gen, dtype, device)
            report.reference = row(lambda v: target(ref_map(v)), others[0], "reference")
    return report


class _Modes:
    """Eval mode during a check; every submodule's mode restored afterwards."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def __enter__(self):
        self.modes = {m: m.training for m in self.module.modules()}
        self.module.eval()

    def __exit__(self, *exc):
        for m, mode in self.modes.items():
            m.training = mode


def _check_common(input: str, size: int, batch: int, who: str) -> None:
    if input not in _INPUTS:
        raise ValueError(f"{who}: input must be one of {_INPUTS}, got {input!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or isinstance(batch, bool) \
            or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"{who}: size and batch must be positive ints, got size={size!r}, batch={batch!r}")


@torch.no_grad()
def check_equivariance(module: torch.nn.Module, in_type: FieldType | None = None, out_type: FieldType | None = None,
                       elements: Iterable[GroupElement] | None = None, input: str = "auto", size: int = 17,
                       batch: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64, plot: str | None = None,
                       margin: float = 3.0, reference: bool = True, x: torch.Tensor | None = None
                       ) -> EquivarianceReport:
    r"""Equivariance error of ``module`` for each group element: ``f(g.x)`` against ``g.f(x)``.

    See the module documentation for the two numbers reported. Elements that are not exact on the domain
    are measured inside the domain's mask (on the plane the centred disc of radius
    ``(size - 1)/2 - margin`` pixels, scaled to the output size: the corners leave the image and bicubic
    interpolation needs ~2 pixels).

    The module runs in eval mode (its and its submodules' modes are restored afterwards), without
    autograd, in ``dtype``: if its floating parameters or buffers have another dtype, a converted deep copy is
    checked and the module itself is left untouched.

    Args:
        module: maps in_type-signals to out_type-signals on the same domain (on the plane: square images).
        in_type, out_type: default ``module.in_type`` / ``module.out_type``.
        elements: group elements of ``in_type.group``; default all elements of a finite group, and 24
            rotations (every 15 degrees, with and without flip for O(2)) of a continuous one.
        input: "auto" (random i.i.d. Gaussian for exact elements, smooth for the others), "random" or
            "smooth" (band-limited: :func:`smooth_field`, a Gaussian low-pass of sigma 2 px, on the plane).
        size, batch, seed: input shape (``domain.input_shape``) and random seed (the global RNG is untouched).
        dtype: computation dtype.
        plot: if a path, save error vs angle there (matplotlib, imported lazily).
        margin: points between the measurement mask and the border, for non-exact elements.
        reference: also measure the module after a fixed random unconstrained filter (``report.reference``).
        x: an input to use instead of generated ones (its batch rolled by one gives x').

    Returns:
        :class:`EquivarianceReport`, a list of rows (element, angle in degrees, flip, error, exact,
        normalized, input, per-sample mean and max).
    """
    in_type = getattr(module, "in_type", None) if in_type is None else in_type
    out_type = getattr(module, "out_type", None) if out_type is None else out_type
    for name, t in (("in_type", in_type), ("out_type", out_type)):
        if not isinstance(t, FieldType):
            raise TypeError(f"check_equivariance: {name} must be an epdo.fields.FieldType (the module has none), "
                            f"got {type(t).__name__}")
    if in_type.group != out_type.group:
        raise ValueError(f"check_equivariance: in_type is of {in_type.group.name}, out_type of {out_type.group.name}")
    if in_type.domain != out_type.domain:
        raise ValueError(f"check_equivariance: in_type lives on {in_type.domain}, out_type on {out_type.domain}")
    _check_common(input, size, batch, "check_equivariance")
    elements = _check_elements(elements, in_type.group, "check_equivariance")
    if x is not None:
        in_type.check(x, "check_equivariance: x")
    target, device = _prepare(module, dtype)
    dom = out_type.domain
    with _Modes(target):
        report = _measure(target, in_type, out_type.transform, lambda y: dom.check_output(y, out_type, "check_equivariance"),
                          elements, input, size, batch, seed, dtype, device, margin, reference, x, mask_input=False)
    report.title = type(module).__name__
    if plot is not None:
        report.plot(plot)
    return report


@torch.no_grad()
def check_invariance(model: torch.nn.Module, in_type: FieldType | None = None,
                     elements: Iterable[GroupElement] | None = None, input: str = "auto", size: int = 28,
                     batch: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64, plot: str | None = None,
                     margin: float = 1.0, reference: bool = True, x: torch.Tensor | None = None
                     ) -> EquivarianceReport:
    r"""Invariance error of a model whose output (e.g. logits ``(B, K)``) should not change: ``f(g.x)``
    against ``f(x)``, with the same two numbers as :func:`check_equivariance`.

    The output is not a field on the domain, so it cannot be masked: when some element is not exact, the
    *input* is restricted to the domain's input mask (on the plane the centred disc of radius
    ``(size - 1)/2 - margin``) so that transforming it loses no content. ``sample_mean`` / ``sample_max`` of
    each row are the mean and max over the images of the per-image relative error; for logits ``(B, K)``,
    ``agreement`` is the fraction of images whose predicted class (argmax) does not change.

    Args:
        model: maps in_type-signals to tensors ``(B, ...)``.
        in_type: the input's field type; default ``model.in_type``, else trivial fields of SO(2) with as
            many channels as ``x`` has (e.g. grey images).
        elements, input, size, batch, seed, dtype, plot, reference: as in :func:`check_equivariance`
            (``size`` and ``batch`` give the generated inputs' shape).
        margin: pixels between the input mask and the border.
        x: images to use instead of generated ones (e.g. test data); x' is x with its batch rolled by one.

    >>> import torch, epdo
    >>> G = epdo.groups.cyclic(4)
    >>> t = epdo.fields.FieldType(G, [G.trivial])
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(81, 3))   # not invariant
    >>> report = epdo.check_invariance(model, t, size=9)
    >>> report.max_error() > 0.1 and report.max_normalized_error() > 0.1
    True
    """
    from .groups import so2

    if in_type is None:
        in_type = getattr(model, "in_type", None)
    if in_type is None and x is not None:
        G = so2(0)
        in_type = FieldType(G, [G.trivial] * x.shape[1])
    if not isinstance(in_type, FieldType):
        raise TypeError(f"check_invariance: in_type must be an epdo.fields.FieldType (pass in_type= or x=), "
                        f"got {type(in_type).__name__}")
    _check_common(input, size, batch, "check_invariance")
    elements = _check_elements(elements, in_type.group, "check_invariance")
    if x is not None:
        in_type.check(x, "check_invariance: x")
    target, device = _prepare(model, dtype)

    def check_out(y):
        if not isinstance(y, torch.Tensor) or y.dim() < 1:
            raise ValueError(f"check_invariance: expected the model to return a tensor (B, ...), got "
                             f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")

    with _Modes(target):
        report = _measure(target, in_type, lambda y, g: y, check_out, elements, input, size, batch, seed, dtype,
                          device, margin, reference, x, mask_input=True)
    report.title = type(model).__name__
    if plot is not None:
        report.plot(plot)
    return report
